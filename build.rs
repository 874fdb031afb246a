//! Build script: with the `xdp` feature, compiles the XDP program `ebpf/turnd_xdp.c` with clang
//! into `OUT_DIR/turnd_xdp.o`, which `src/shell/xdp` embeds. Without the feature it does
//! nothing, so a default build needs no clang (docs/xdp.md, Build).
//!
//! The program is C because stable Rust cannot target BPF (that needs nightly and bpf-linker);
//! clang is Debian's, `$CLANG` names another. The headers are libbpf-dev's `bpf_helpers.h` and
//! `bpf_endian.h` and the kernel's UAPI headers (`linux-libc-dev`, multiarch `asm/types.h`).

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CLANG");
    if env::var_os("CARGO_FEATURE_XDP").is_none() {
        return;
    }
    println!("cargo:rerun-if-changed=ebpf/turnd_xdp.c");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("turnd_xdp.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // The object's byte order is the target's: aya refuses an object of the other one.
    let target = match env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() {
        Ok("big") => "bpfeb",
        _ => "bpfel",
    };
    // Debian's multiarch include directory, where `asm/types.h` lives.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let status = Command::new(&clang)
        .args(["-target", target, "-O2", "-g", "-Wall", "-Werror"])
        .arg(format!("-I{multiarch}"))
        .args(["-c", "ebpf/turnd_xdp.c", "-o"])
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "the `xdp` feature: `{clang}` failed to compile ebpf/turnd_xdp.c ({s}); it needs \
             libbpf-dev (bpf/bpf_helpers.h) and linux-libc-dev ({multiarch}/asm/types.h)"
        ),
        Err(e) => panic!(
            "the `xdp` feature needs clang to compile ebpf/turnd_xdp.c, and `{clang}` could not \
             be run ({e}): install clang and libbpf-dev (apt-get install clang libbpf-dev), set \
             CLANG=/path/to/clang, or build without `--features xdp`"
        ),
    }
}
