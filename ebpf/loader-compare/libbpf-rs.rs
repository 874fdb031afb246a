// The libbpf-rs twin of aya.rs (see there). MODE "link" attaches through a
// bpf_link, which libbpf-rs offers without a choice of generic or native.
use libbpf_rs::{MapCore, MapFlags, ObjectBuilder, Xdp, XdpFlags};
use std::os::fd::AsFd;

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let (obj, iface, mode, wait) = (&a[1], &a[2], &a[3], a[4].parse::<u64>()?);
    let obj = ObjectBuilder::default().open_file(obj)?.load()?;
    let prog = obj.progs_mut().find(|p| p.name() == "turnd_xdp").unwrap();
    let ifindex = unsafe { libc_if_nametoindex(iface) };
    let _link;
    if mode == "link" {
        _link = Some(prog.attach_xdp(ifindex)?);
    } else {
        let flags = if mode == "generic" { XdpFlags::SKB_MODE } else { XdpFlags::DRV_MODE };
        Xdp::new(prog.as_fd()).attach(ifindex, flags)?;
        _link = None;
    }
    let ports = obj.maps().find(|m| m.name() == "turnd_ports").unwrap();
    ports.update(&3478u16.to_ne_bytes(), &[1u8], MapFlags::ANY)?;
    println!("attached");
    std::thread::sleep(std::time::Duration::from_millis(wait));
    let counters = obj.maps().find(|m| m.name() == "turnd_counters").unwrap();
    for i in 0..8u32 {
        let v = counters.lookup_percpu(&i.to_ne_bytes(), MapFlags::ANY)?.unwrap();
        let s: u64 = v.iter().map(|c| u64::from_ne_bytes(c[..8].try_into().unwrap())).sum();
        println!("{i} {s}");
    }
    Ok(())
}

unsafe fn libc_if_nametoindex(name: &str) -> i32 {
    unsafe extern "C" { fn if_nametoindex(n: *const std::os::raw::c_char) -> u32; }
    let c = std::ffi::CString::new(name).unwrap();
    unsafe { if_nametoindex(c.as_ptr()) as i32 }
}
