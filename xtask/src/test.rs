//! `cargo xtask test`: setup, eBPF build, format, lints, then the test suite.

use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::build::{build_ebpf, cargo_with_ebpf, ebpf_cargo};
use crate::cmd::{self, run};
use crate::package;
use crate::paths::is_root;
use crate::setup::setup;

pub fn test(extra: &[String]) -> Result<()> {
    if !is_root()? {
        bail!(
            "`cargo xtask test` must run as root: the tests load XDP programs and create \
             network namespaces (try `sudo -E env PATH=\"$PATH\" cargo xtask test`)"
        );
    }
    let start = Instant::now();
    let mut done: Vec<&str> = Vec::new();
    let mut step = |name: &'static str, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        eprintln!("==> test step {}: {name}", done.len() + 1);
        f().with_context(|| format!("test step `{name}` failed"))?;
        done.push(name);
        Ok(())
    };

    step("setup", &mut setup)?;

    let mut ebpf = None;
    step("build-ebpf", &mut || {
        ebpf = Some(build_ebpf(true)?);
        Ok(())
    })?;
    let ebpf = ebpf.context("build-ebpf produced no directory")?;

    step("fmt", &mut || {
        run(cmd::cargo().args(["fmt", "--all", "--check"]))
    })?;

    step("clippy (host)", &mut || {
        run(cargo_with_ebpf(&ebpf).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;

    step("clippy (eBPF)", &mut || {
        run(ebpf_cargo("clippy")?.args(["--", "-D", "warnings"]))
    })?;

    step("clippy (eBPF, ebpf-log variant)", &mut || {
        run(ebpf_cargo("clippy")?.args(["--features", "ebpf-log", "--", "-D", "warnings"]))
    })?;

    step("cargo test", &mut || {
        run(cargo_with_ebpf(&ebpf)
            .args(["test", "--workspace"])
            .args(extra))
    })?;

    // After the suite, never beside it: it puts /usr/bin/lb-agent and the units in place for
    // a moment (the tests run target/ binaries, never one from PATH).
    step("package (dpkg install test)", &mut || {
        package::verify(&package::package(Some(&ebpf))?)
    })?;

    eprintln!(
        "xtask test: all {} steps passed ({}) in {:.1}s",
        done.len(),
        done.join(", "),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
