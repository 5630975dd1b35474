//! `cargo xtask run` and `demo`: build, then run something.

use std::process::Command;

use anyhow::Result;

use crate::build::{build, cargo_with_ebpf};
use crate::cmd::run;

/// Builds everything (release), then runs `target/release/lb-agent <args>`
/// from the current directory.
pub fn agent(args: &[String]) -> Result<()> {
    let agent = build(true)?;
    run(Command::new(agent).args(args))
}

/// Builds everything (release; the demo starts the agent binary), then
/// `cargo run --release -p lb-tests --bin demo -- [--keep]`.
pub fn demo(keep: bool) -> Result<()> {
    // One command from a fresh machine: install what is missing first.
    crate::setup::setup()?;
    build(true)?;
    let ebpf = crate::build::ebpf_dir(true);
    let mut c = cargo_with_ebpf(&ebpf);
    c.args(["run", "--release", "-p", "lb-tests", "--bin", "demo", "--"]);
    if keep {
        c.arg("--keep");
    }
    run(&mut c)
}
