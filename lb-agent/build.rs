//! Embeds the compiled XDP objects so the agent binary is self-contained.
//! `cargo xtask build` compiles them first and points LB_EBPF_DIR at them; a plain host build
//! without them still compiles (for clippy and unit tests) and the loader then reports how to
//! build the objects.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(lb_ebpf_missing)");
    println!("cargo::rerun-if-env-changed=LB_EBPF_DIR");
    let dir = env::var_os("LB_EBPF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/ebpf/bpfel-unknown-none/release")
        });
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut missing = false;
    for name in ["lb", "decap"] {
        let src = dir.join(name);
        println!("cargo::rerun-if-changed={}", src.display());
        let bytes = fs::read(&src).unwrap_or_else(|_| {
            missing = true;
            Vec::new()
        });
        fs::write(out.join(format!("{name}.o")), bytes).expect("write to OUT_DIR");
    }
    // The `ebpf-log` variant is optional: without it only `run --ebpf-log` fails (saying so).
    let src = dir.join("lb-log");
    println!("cargo::rerun-if-changed={}", src.display());
    fs::write(out.join("lb-log.o"), fs::read(&src).unwrap_or_default()).expect("write to OUT_DIR");
    if missing {
        println!("cargo::rustc-cfg=lb_ebpf_missing");
        println!(
            "cargo::warning=eBPF objects not found in {}: run `cargo xtask build`",
            dir.display()
        );
    }
}
