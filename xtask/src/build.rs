//! `cargo xtask build-ebpf` and `cargo xtask build`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd::{self, run, toolchain_tool};
use crate::paths::{ebpf_target_dir, host_target_dir};
use crate::setup::NIGHTLY;

/// The eBPF package and its binaries (the files `LB_EBPF_DIR` must contain).
pub const EBPF_PACKAGE: &str = "lb-ebpf";
pub const EBPF_BINS: &[&str] = &["lb", "decap"];
pub const EBPF_TARGET: &str = "bpfel-unknown-none";
/// The variable lb-agent's build.rs reads to find the compiled objects.
pub const EBPF_DIR_ENV: &str = "LB_EBPF_DIR";

fn profile(release: bool) -> &'static str {
    if release {
        "release"
    } else {
        "debug"
    }
}

/// The directory holding the compiled `lb` and `decap` objects:
/// `<workspace>/target/ebpf/bpfel-unknown-none/{release,debug}`.
pub fn ebpf_dir(release: bool) -> PathBuf {
    ebpf_target_dir().join(EBPF_TARGET).join(profile(release))
}

/// `cargo +nightly <subcommand> -p lb-ebpf --target bpfel-unknown-none
/// -Z build-std=core --target-dir <ws>/target/ebpf`, with the stable
/// toolchain's environment scrubbed. Shared by build-ebpf and the test's
/// eBPF clippy run.
pub fn ebpf_cargo(subcommand: &str) -> Result<Command> {
    ebpf_cargo_in(subcommand, &ebpf_target_dir())
}

fn ebpf_cargo_in(subcommand: &str, target_dir: &Path) -> Result<Command> {
    let mut c = toolchain_tool("cargo", NIGHTLY)?;
    c.args([subcommand, "-p", EBPF_PACKAGE, "--target", EBPF_TARGET])
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(target_dir);
    Ok(c)
}

/// The `ebpf-log` variant of `lb` (aya-log of the rare events, `lb-agent run --ebpf-log`), next
/// to the default objects under this name.
pub const EBPF_LOG_BIN: &str = "lb-log";
const EBPF_LOG_FEATURE: &str = "ebpf-log";

/// Builds the eBPF objects, and the `ebpf-log` variant of `lb` as `lb-log`; returns their
/// directory (for `LB_EBPF_DIR`).
pub fn build_ebpf(release: bool) -> Result<PathBuf> {
    let mut c = ebpf_cargo("build")?;
    if release {
        c.arg("--release");
    }
    run(&mut c)?;
    let dir = ebpf_dir(release);
    // A target directory of its own: the same binary name with another feature would
    // overwrite the default object (and rebuild it on every switch).
    let log_dir = ebpf_target_dir().with_file_name("ebpf-log");
    let mut c = ebpf_cargo_in("build", &log_dir)?;
    c.args(["--features", EBPF_LOG_FEATURE, "--bin", "lb"]);
    if release {
        c.arg("--release");
    }
    run(&mut c)?;
    let built = log_dir.join(EBPF_TARGET).join(profile(release)).join("lb");
    std::fs::copy(&built, dir.join(EBPF_LOG_BIN))
        .with_context(|| format!("copying {} to {}", built.display(), dir.display()))?;
    for bin in EBPF_BINS {
        let obj = dir.join(bin);
        if !obj.is_file() {
            bail!("the eBPF build succeeded but {} is missing", obj.display());
        }
    }
    eprintln!(
        "eBPF objects: {}/{{{},{EBPF_LOG_BIN}}}",
        dir.display(),
        EBPF_BINS.join(",")
    );
    Ok(dir)
}

/// Host `cargo` with `LB_EBPF_DIR` pointing at `ebpf`.
pub fn cargo_with_ebpf(ebpf: &Path) -> Command {
    let mut c = cmd::cargo();
    c.env(EBPF_DIR_ENV, ebpf);
    c
}

/// Builds the eBPF objects, then lb-agent embedding them; returns the agent
/// binary's path.
pub fn build(release: bool) -> Result<PathBuf> {
    let ebpf = build_ebpf(release)?;
    build_agent(release, &ebpf)
}

/// lb-agent embedding the eBPF objects in `ebpf`; returns the binary's path.
pub fn build_agent(release: bool, ebpf: &Path) -> Result<PathBuf> {
    for bin in EBPF_BINS {
        if !ebpf.join(bin).is_file() {
            bail!(
                "no eBPF object {bin} in {} (cargo xtask build-ebpf)",
                ebpf.display()
            );
        }
    }
    let mut c = cargo_with_ebpf(ebpf);
    c.args(["build", "-p", "lb-agent"]);
    if release {
        c.arg("--release");
    }
    run(&mut c)?;
    let agent = host_target_dir().join(profile(release)).join("lb-agent");
    if !agent.is_file() {
        bail!(
            "lb-agent built but {} is missing (is a build.target or build.target-dir \
             configured somewhere?)",
            agent.display()
        );
    }
    Ok(agent)
}
