// Scratch loader for the aya vs libbpf-rs comparison in docs/xdp.md (run by
// ebpf/loader-compare/run.sh, which builds it in a temporary crate): load the
// clang-built object, attach to IFACE in MODE, write the port map, sleep
// WAIT_MS, print the per-CPU counters summed.
use aya::maps::{HashMap, PerCpuArray};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, Pod};

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Count { packets: u64, bytes: u64 }
unsafe impl Pod for Count {}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let (obj, iface, mode, wait) = (&a[1], &a[2], &a[3], a[4].parse::<u64>()?);
    let mode = match mode.as_str() { "generic" => XdpMode::Skb, "native" => XdpMode::Driver, _ => XdpMode::Default };
    let mut bpf = Ebpf::load_file(obj)?;
    let prog: &mut Xdp = bpf.program_mut("turnd_xdp").unwrap().try_into()?;
    prog.load()?;
    prog.attach(iface, mode)?;
    let mut ports: HashMap<_, u16, u8> = HashMap::try_from(bpf.map_mut("turnd_ports").unwrap())?;
    ports.insert(3478, 1, 0)?;
    println!("attached"); 
    std::thread::sleep(std::time::Duration::from_millis(wait));
    let counters: PerCpuArray<_, Count> = PerCpuArray::try_from(bpf.map("turnd_counters").unwrap())?;
    for i in 0..8u32 {
        let v = counters.get(&i, 0)?;
        println!("{i} {}", v.iter().map(|c| c.packets).sum::<u64>());
    }
    Ok(())
}
