//! `cargo xtask package`: the Debian package (cargo-deb), and the test that installs it.
//!
//! The release binary (eBPF objects embedded) generates its own shell completions and man pages
//! (`lb-agent completions SHELL`, `lb-agent man DIR`, hidden commands) into
//! `<target>/release/package/`, where lb-agent's `[package.metadata.deb]` assets expect them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::build;
use crate::cmd::{self, capture, run, stdout_of};
use crate::paths::host_target_dir;

/// The cargo-deb release `cargo xtask setup` installs (`cargo install --locked`).
pub const CARGO_DEB_VERSION: &str = "3.8.0";

/// The package name, and the files the test checks by name.
const PACKAGE: &str = "lb-agent";
const BINARY: &str = "/usr/bin/lb-agent";
const CONFFILE: &str = "/etc/lb-agent/lb.toml";

/// Builds the release binary, its completions and man pages, then the .deb; returns its path.
/// `ebpf`: prebuilt eBPF objects to embed instead of building them.
pub fn package(ebpf: Option<&Path>) -> Result<PathBuf> {
    let agent = match ebpf {
        Some(dir) => build::build_agent(true, dir)?,
        None => build::build(true)?,
    };
    let assets = host_target_dir().join("release").join("package");
    if assets.exists() {
        fs::remove_dir_all(&assets)
            .with_context(|| format!("removing the old assets in {}", assets.display()))?;
    }
    completions(&agent, &assets.join("completions"))?;
    man_pages(&agent, &assets.join("man"))?;
    let out = host_target_dir().join("debian");
    // --no-build: the binary must be the one just built with LB_EBPF_DIR set.
    let printed = stdout_of(
        cmd::cargo()
            .args(["deb", "-p", PACKAGE, "--no-build", "--no-strip", "--output"])
            .arg(&out),
    )
    .context("running cargo-deb (installed by `cargo xtask setup`)")?;
    let deb = printed
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .with_context(|| format!("cargo deb printed no .deb path:\n{printed}"))?;
    if !deb.is_file() {
        bail!("cargo deb reported {} but it is not there", deb.display());
    }
    eprintln!("package: {}", deb.display());
    Ok(deb)
}

/// Setup step: cargo-deb at [`CARGO_DEB_VERSION`], unless that version is installed.
pub fn install_cargo_deb() -> Result<()> {
    let want = format!("cargo-deb {CARGO_DEB_VERSION}");
    let have = capture(cmd::cargo().args(["deb", "--version"]))
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if have.as_deref().is_some_and(|v| v.starts_with(&want)) {
        eprintln!("    skip: {want} already installed");
        return Ok(());
    }
    run(cmd::cargo().args([
        "install",
        "cargo-deb",
        "--locked",
        "--version",
        CARGO_DEB_VERSION,
    ]))
}

fn completions(agent: &Path, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // File names the shells look for in their vendor directories.
    for (shell, file) in [
        ("bash", "lb-agent"),
        ("zsh", "_lb-agent"),
        ("fish", "lb-agent.fish"),
    ] {
        let script = stdout_of(Command::new(agent).args(["completions", shell]))?;
        let path = dir.join(file);
        fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn man_pages(agent: &Path, dir: &Path) -> Result<()> {
    let listed = stdout_of(Command::new(agent).arg("man").arg(dir))?;
    let pages: Vec<&str> = listed.lines().filter(|l| !l.is_empty()).collect();
    if pages.is_empty() {
        bail!("`{} man {}` wrote no page", agent.display(), dir.display());
    }
    // Debian installs man pages compressed; -n keeps the package reproducible.
    run(Command::new("gzip").args(["-9nf"]).args(&pages))
}

/// Installs the package with dpkg, checks what an operator would run, removes it and checks
/// the files are gone. Refuses to run where lb-agent is already installed: it would replace it.
pub fn verify(deb: &Path) -> Result<()> {
    if installed()? || Path::new(BINARY).exists() {
        bail!(
            "{BINARY} or the {PACKAGE} package is already on this machine; the package test \
             installs and purges it, so remove it first (dpkg -P {PACKAGE})"
        );
    }
    run(Command::new("dpkg").arg("-i").arg(deb))?;
    // Purged whatever happens below, so a failed check leaves no /usr/bin/lb-agent behind.
    let purge = Purge;
    let files = installed_files()?;
    eprintln!("package files:\n{}", files.join("\n"));
    check_installed(&files)?;
    run(Command::new("dpkg").args(["-r", PACKAGE]))?;
    let left: Vec<&String> = files
        .iter()
        .filter(|f| f.as_str() != CONFFILE && Path::new(f).is_file())
        .collect();
    if !left.is_empty() {
        bail!("dpkg -r left files behind: {left:?}");
    }
    if !Path::new(CONFFILE).is_file() {
        bail!("dpkg -r removed the conffile {CONFFILE}; only a purge may");
    }
    drop(purge);
    if Path::new(CONFFILE).exists() || installed()? {
        bail!("dpkg -P left {CONFFILE} or the package's record behind");
    }
    eprintln!("package test: installed, checked, removed and purged");
    Ok(())
}

fn check_installed(files: &[String]) -> Result<()> {
    let version = stdout_of(Command::new(BINARY).arg("--version"))?;
    let want = format!("lb-agent {}", env!("CARGO_PKG_VERSION"));
    if version.trim() != want {
        bail!("`{BINARY} --version` printed {version:?}, expected {want:?}");
    }
    stdout_of(Command::new(BINARY).args(["check", "--config", CONFFILE]))
        .context("the example configuration must pass `lb-agent check`")?;
    for page in ["lb-agent", "lb-agent-run", "lb-agent-decap-attach"] {
        let found = stdout_of(Command::new("man").args(["-w", page])).with_context(|| {
            format!(
                "`man -w {page}`: is /usr/share/man excluded by a dpkg path-exclude in \
                 /etc/dpkg/dpkg.cfg.d/?"
            )
        })?;
        if !found.trim().starts_with("/usr/share/man/man1/") {
            bail!("`man -w {page}` found {found:?}, not the packaged page");
        }
    }
    for must in [
        "/lib/systemd/system/lb-agent.service",
        "/lib/systemd/system/lb-agent-decap@.service",
        "/usr/share/bash-completion/completions/lb-agent",
        "/usr/share/zsh/vendor-completions/_lb-agent",
        "/usr/share/fish/vendor_completions.d/lb-agent.fish",
        CONFFILE,
    ] {
        if !files.iter().any(|f| f == must) {
            bail!("the package lacks {must}");
        }
    }
    let conffiles = stdout_of(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]))?;
    if !conffiles.contains(CONFFILE) {
        bail!("{CONFFILE} is not a conffile: {conffiles:?}");
    }
    verify_units()
}

/// `systemd-analyze verify` on the installed units (it also checks the ExecStart= binaries
/// exist, hence after the install). Any output is a finding: it warns and still exits 0.
fn verify_units() -> Result<()> {
    let out = capture(Command::new("systemd-analyze").args([
        "verify",
        "/lib/systemd/system/lb-agent.service",
        "lb-agent-decap@eth0.service",
    ]))
    .context("systemd-analyze (package systemd, installed by `cargo xtask setup`)")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !said.trim().is_empty() {
        bail!(
            "systemd-analyze verify on the units ({}):\n{said}",
            out.status
        );
    }
    eprintln!("systemd-analyze verify: units clean");
    Ok(())
}

/// Installed or removed with its conffiles left: dpkg still has a record to purge.
fn installed() -> Result<bool> {
    let out = capture(Command::new("dpkg-query").args(["-W", "-f=${Status}", PACKAGE]))?;
    let status = String::from_utf8_lossy(&out.stdout);
    Ok(out.status.success() && !status.trim().is_empty() && !status.ends_with("not-installed"))
}

/// Regular files the installed package owns.
fn installed_files() -> Result<Vec<String>> {
    let listed = stdout_of(Command::new("dpkg").args(["-L", PACKAGE]))?;
    Ok(listed
        .lines()
        .filter(|f| Path::new(f).is_file())
        .map(String::from)
        .collect())
}

/// Purges the package when dropped.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        if let Err(e) = run(Command::new("dpkg").args(["-P", PACKAGE])) {
            eprintln!("warning: purging {PACKAGE}: {e:#}; run `dpkg -P {PACKAGE}`");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ebpf_dir_without_the_objects_is_refused_before_building() {
        let err =
            build::build_agent(true, Path::new("/nonexistent/ebpf")).expect_err("no objects there");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("no eBPF object lb in /nonexistent/ebpf"),
            "{msg}"
        );
    }
}
