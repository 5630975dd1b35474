//! `cargo xtask setup`: everything the build and the tests need, installed
//! only when missing. Every check runs each time (no stamp files); when all is
//! present it costs a few quick process spawns.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd::{self, capture, run, stdout_of, toolchain_tool};
use crate::paths::{find_in_path, is_root, llvm_prefix};

/// The nightly toolchain the eBPF programs are built with.
pub const NIGHTLY: &str = "nightly";

/// The bpf-linker release line we build against (`cargo install --version`).
const BPF_LINKER_REQ: &str = "^0.13";
/// What `bpf-linker --version` must print for the installed one to be kept.
const BPF_LINKER_PREFIX: &str = "bpf-linker 0.13.";

/// A command the tests run, and the Debian package that provides it.
pub struct Package {
    pub command: &'static str,
    pub package: &'static str,
}

/// System tools the kernel-backed tests shell out to. Add new ones here.
pub const PACKAGES: &[Package] = &[
    Package {
        command: "ip",
        package: "iproute2",
    },
    Package {
        command: "ethtool",
        package: "ethtool",
    },
    Package {
        command: "ping",
        package: "iputils-ping",
    },
    Package {
        command: "sysctl",
        package: "procps",
    },
    Package {
        command: "nsenter",
        package: "util-linux",
    },
    Package {
        command: "curl",
        package: "curl",
    },
    // The TLS health-check test: its CA and certificate, and the backend's TLS server.
    Package {
        command: "openssl",
        package: "openssl",
    },
    // Blackholes a backend in the end-to-end failover scenario.
    Package {
        command: "nft",
        package: "nftables",
    },
    // BGP: the agent announces VIPs through BIRD; the fleet tests run BIRD on the router too.
    Package {
        command: "birdc",
        package: "bird2",
    },
    // Benchmarks: the proxy users would pick instead, and the HTTP load generator.
    Package {
        command: "haproxy",
        package: "haproxy",
    },
    Package {
        command: "wrk",
        package: "wrk",
    },
    // The package test: `man -w` finds the installed pages, systemd-analyze verifies the units.
    Package {
        command: "man",
        package: "man-db",
    },
    Package {
        command: "systemd-analyze",
        package: "systemd",
    },
    // The monitoring test: `promtool check rules` on dist/prometheus/lb-agent.rules.yml.
    Package {
        command: "promtool",
        package: "prometheus",
    },
    // The trace test reads `lb-agent trace --pcap` back with a real pcap reader.
    Package {
        command: "tcpdump",
        package: "tcpdump",
    },
    // Profiling the data path: `bpftool prog dump xlated/jited` of the loaded programs.
    Package {
        command: "bpftool",
        package: "bpftool",
    },
];

/// Services that installing a package of [`PACKAGES`] starts and enables, though the tests
/// only run its commands: stopped and disabled right after the install. Prometheus would
/// otherwise keep running on the host (port 9090), scraping itself, after every setup.
const UNWANTED_SERVICES: &[(&str, &str)] = &[("prometheus", "prometheus")];

/// Where sbin tools live even when a non-root `PATH` omits them.
const SBIN_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

const BPFFS: &str = "/sys/fs/bpf";

pub fn setup() -> Result<()> {
    let root = is_root()?;
    step("nightly toolchain", nightly_toolchain)?;
    step("rust-src for nightly", rust_src)?;
    let prefix = step("LLVM prefix for bpf-linker", llvm_symlinks)?;
    step("bpf-linker", || bpf_linker(&prefix))?;
    step("cargo-deb", crate::package::install_cargo_deb)?;
    step("system packages", || system_packages(root))?;
    step("bpffs", || bpffs(root))?;
    say("setup: done");
    Ok(())
}

fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    say(&format!("==> setup: {name}"));
    f().with_context(|| format!("setup step `{name}` failed"))
}

fn say(msg: &str) {
    eprintln!("{msg}");
}

/// (a) An undated `nightly-<host>` toolchain.
fn nightly_toolchain() -> Result<()> {
    let list = stdout_of(Command::new("rustup").args(["toolchain", "list"]))?;
    let present = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .any(is_plain_nightly);
    if present {
        say("    skip: nightly toolchain already installed");
        return Ok(());
    }
    say("    installing the nightly toolchain");
    run(Command::new("rustup").args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]))
}

/// `nightly` or `nightly-<host triple>`, not a dated `nightly-2025-01-01-...`.
fn is_plain_nightly(name: &str) -> bool {
    match name.strip_prefix(NIGHTLY) {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix('-')
            .and_then(|r| r.chars().next())
            .is_some_and(|c| !c.is_ascii_digit()),
        None => false,
    }
}

/// (b) rust-src, which `-Z build-std=core` compiles.
fn rust_src() -> Result<()> {
    let installed = stdout_of(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))?;
    if installed.lines().any(|l| l.trim() == "rust-src") {
        say("    skip: rust-src already installed");
        return Ok(());
    }
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

/// (c) `<prefix>/lib/{libLLVM.so, <soname>}` -> the nightly sysroot's libLLVM.
/// Returns the prefix.
fn llvm_symlinks() -> Result<PathBuf> {
    let (target, soname) = nightly_libllvm()?;
    let prefix = llvm_prefix()?;
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;

    for name in ["libLLVM.so", soname.as_str()] {
        ensure_symlink(&lib.join(name), &target)?;
    }
    // Links for an older nightly's soname: stale, and their targets are gone
    // once rustup updated the toolchain.
    for entry in fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
        let entry = entry.with_context(|| format!("reading {}", lib.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_link = entry.file_type().map(|t| t.is_symlink()).unwrap_or(false);
        if is_link && name.starts_with("libLLVM") && name != "libLLVM.so" && name != soname {
            let path = entry.path();
            say(&format!("    removing stale {}", path.display()));
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(prefix)
}

/// The nightly sysroot's `lib/libLLVM.so.<ver>-rust-...` and its file name.
fn nightly_libllvm() -> Result<(PathBuf, String)> {
    let sysroot = stdout_of(toolchain_tool("rustc", NIGHTLY)?.args(["--print", "sysroot"]))?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let mut found: Vec<String> = fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("libLLVM.so."))
        .collect();
    found.sort();
    let Some(soname) = found.pop() else {
        bail!(
            "no libLLVM.so.* in {} (is the nightly toolchain complete?)",
            lib.display()
        );
    };
    Ok((lib.join(&soname), soname))
}

fn ensure_symlink(link: &Path, target: &Path) -> Result<()> {
    match fs::read_link(link) {
        Ok(current) if current == target => {
            say(&format!(
                "    skip: {} already points at the nightly",
                link.display()
            ));
            return Ok(());
        }
        Ok(_) => {
            fs::remove_file(link).with_context(|| format!("removing {}", link.display()))?;
        }
        Err(_) if fs::symlink_metadata(link).is_ok() => {
            bail!("{} exists and is not a symlink; remove it", link.display());
        }
        Err(_) => {}
    }
    say(&format!(
        "    link {} -> {}",
        link.display(),
        target.display()
    ));
    symlink(target, link)
        .with_context(|| format!("symlinking {} -> {}", link.display(), target.display()))
}

/// The LLVM major version in a soname like `libLLVM.so.22.1-rust-1.97.0-nightly`.
fn llvm_major(soname: &str) -> Option<&str> {
    soname
        .strip_prefix("libLLVM.so.")?
        .split(['.', '-'])
        .next()
        .filter(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_digit()))
}

/// (d) bpf-linker 0.13 built against the nightly's LLVM (via the prefix).
fn bpf_linker(prefix: &Path) -> Result<()> {
    match bpf_linker_version()? {
        Ok(version) if version.starts_with(BPF_LINKER_PREFIX) => {
            say(&format!("    skip: {version} already installed"));
            return Ok(());
        }
        Ok(version) => say(&format!("    found `{version}`, need {BPF_LINKER_REQ}")),
        Err(why) => say(&format!("    bpf-linker unusable: {why}")),
    }

    let (_, soname) = nightly_libllvm()?;
    let major = llvm_major(&soname)
        .with_context(|| format!("cannot read the LLVM version from {soname}"))?;
    let feature = format!("llvm-{major}");
    let install = |locked: bool| -> Result<()> {
        let mut c = cmd::scrubbed("cargo")?;
        c.args(["install", "bpf-linker", "--version", BPF_LINKER_REQ]);
        if locked {
            c.arg("--locked");
        }
        c.args(["--no-default-features", "--features", &feature, "--force"]);
        c.env("LLVM_PREFIX", prefix);
        run(&mut c)
    };
    if let Err(e) = install(true) {
        say(&format!(
            "    --locked install failed ({e:#}); retrying without --locked"
        ));
        install(false)?;
    }

    match bpf_linker_version()? {
        Ok(version) if version.starts_with(BPF_LINKER_PREFIX) => {
            say(&format!("    installed {version}"));
            Ok(())
        }
        Ok(version) => bail!("after installing, bpf-linker reports `{version}`"),
        Err(why) => bail!("after installing, bpf-linker is still unusable: {why}"),
    }
}

/// `Ok(Ok(version line))`, or `Ok(Err(reason))` if bpf-linker is missing or
/// does not run (typically: libLLVM not found).
fn bpf_linker_version() -> Result<std::result::Result<String, String>> {
    let path = cmd::scrubbed_path()?;
    let Some(bin) = find_in_path("bpf-linker", &path) else {
        return Ok(Err("not found on PATH".into()));
    };
    let mut c = cmd::scrubbed("bpf-linker")?;
    c.arg("--version");
    let out = capture(&mut c)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Ok(Err(format!(
            "`{} --version` failed ({}): {}",
            bin.display(),
            out.status,
            stderr.trim()
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(Ok(stdout
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()))
}

/// (e) Debian packages for the commands in [`PACKAGES`], when missing.
fn system_packages(root: bool) -> Result<()> {
    let missing = missing_packages();
    if missing.is_empty() {
        let names: Vec<&str> = PACKAGES.iter().map(|p| p.command).collect();
        say(&format!("    skip: all present ({})", names.join(", ")));
        return Ok(());
    }
    let list = describe(&missing);
    if !root {
        say(&format!(
            "    warning: missing {list}; not root, so not installing (rerun as root)"
        ));
        return Ok(());
    }
    if find_in_path("apt-get", &search_path()).is_none() {
        bail!("missing {list}, and there is no apt-get to install them; install them by hand");
    }
    say(&format!("    installing {list}"));
    run(Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(missing.iter().map(|p| p.package))
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    let still = missing_packages();
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", describe(&still));
    }
    for (package, service) in UNWANTED_SERVICES {
        if missing.iter().any(|p| p.package == *package) {
            stop_service(service)?;
        }
    }
    Ok(())
}

/// Stops `service` if it runs and keeps it from starting at boot: through systemd when it is
/// the init system; else (a container, sysvinit) through the package's init script, which the
/// package started unless a `policy-rc.d` refused, and by removing the systemd enablement the
/// package made for a later boot.
fn stop_service(service: &str) -> Result<()> {
    let unit = format!("{service}.service");
    if Path::new("/run/systemd/system").is_dir() {
        say(&format!("    stopping and disabling {unit}"));
        return run(Command::new("systemctl").args(["disable", "--now", &unit]));
    }
    say(&format!(
        "    stopping {service} and keeping it from starting at boot"
    ));
    let init_script = Path::new("/etc/init.d").join(service).exists();
    if init_script {
        // Non-zero when it does not run or policy-rc.d refuses: either way it is stopped.
        let _ = capture(Command::new("invoke-rc.d").args([service, "stop"]))?;
    }
    if find_in_path("systemctl", &search_path()).is_some() {
        // Offline: removes the unit's boot symlinks, and the init script's (through
        // systemd-sysv-install).
        run(Command::new("systemctl").args(["--root=/", "disable", &unit]))
    } else if init_script {
        run(Command::new("update-rc.d").args([service, "disable"]))
    } else {
        Ok(())
    }
}

fn missing_packages() -> Vec<&'static Package> {
    let path = search_path();
    PACKAGES
        .iter()
        .filter(|p| find_in_path(p.command, &path).is_none())
        .collect()
}

fn describe(pkgs: &[&Package]) -> String {
    pkgs.iter()
        .map(|p| format!("`{}` (package {})", p.command, p.package))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `PATH` plus the sbin directories.
fn search_path() -> std::ffi::OsString {
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&inherited)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .collect::<Vec<_>>();
    std::env::join_paths(dirs).unwrap_or(inherited)
}

/// (f) bpffs at /sys/fs/bpf (root only).
fn bpffs(root: bool) -> Result<()> {
    if bpffs_mounted()? {
        say(&format!("    skip: bpffs already mounted at {BPFFS}"));
        return Ok(());
    }
    if !root {
        say(&format!(
            "    warning: bpffs not mounted at {BPFFS}; not root, so not mounting"
        ));
        return Ok(());
    }
    run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))?;
    if !bpffs_mounted()? {
        bail!("mounted bpffs but {BPFFS} still does not show up in /proc/mounts");
    }
    Ok(())
}

fn bpffs_mounted() -> Result<bool> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    Ok(mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&BPFFS) && f.get(2) == Some(&"bpf")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_nightly() {
        assert!(is_plain_nightly("nightly"));
        assert!(is_plain_nightly("nightly-x86_64-unknown-linux-gnu"));
        assert!(!is_plain_nightly(
            "nightly-2025-01-01-x86_64-unknown-linux-gnu"
        ));
        assert!(!is_plain_nightly("stable-x86_64-unknown-linux-gnu"));
        assert!(!is_plain_nightly("nightlyx"));
    }

    #[test]
    fn major() {
        assert_eq!(
            llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly"),
            Some("22")
        );
        assert_eq!(llvm_major("libLLVM.so.20-rust-1.87.0-nightly"), Some("20"));
        assert_eq!(llvm_major("libLLVM.so"), None);
    }
}
