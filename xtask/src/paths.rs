//! Well-known locations: the workspace, its target directories, cargo's bin
//! directory and the LLVM prefix bpf-linker is built against.

use std::env;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or_else(|| manifest.join(".."), Path::to_path_buf)
}

/// Where host artifacts go: `$CARGO_TARGET_DIR` (or `$CARGO_BUILD_TARGET_DIR`)
/// if set, relative paths taken from the workspace root (every cargo command
/// here runs there), else `<workspace>/target`.
pub fn host_target_dir() -> PathBuf {
    let ws = workspace_root();
    ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"]
        .iter()
        .filter_map(env::var_os)
        .find(|v| !v.is_empty())
        .map_or_else(|| ws.join("target"), |dir| ws.join(dir))
}

/// The directory the eBPF build uses as `--target-dir`. It is always under the
/// workspace, whatever `CARGO_TARGET_DIR` says, so `LB_EBPF_DIR` is stable.
pub fn ebpf_target_dir() -> PathBuf {
    workspace_root().join("target").join("ebpf")
}

/// `$HOME`.
pub fn home() -> Result<PathBuf> {
    env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .context("$HOME is not set")
}

/// `$CARGO_HOME/bin`, defaulting to `$HOME/.cargo/bin`: where rustup's proxies
/// and `cargo install`ed tools (bpf-linker) live.
pub fn cargo_bin_dir() -> Result<PathBuf> {
    let cargo_home = match env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h),
        None => home()?.join(".cargo"),
    };
    Ok(cargo_home.join("bin"))
}

/// The LLVM "prefix" bpf-linker is built and run against:
/// `$HOME/.local/share/lb-llvm`, whose `lib/` holds symlinks to the nightly
/// toolchain's libLLVM. It lives outside `target/` so `cargo clean` cannot
/// break the installed bpf-linker (its RUNPATH points here).
pub fn llvm_prefix() -> Result<PathBuf> {
    Ok(home()?.join(".local").join("share").join("lb-llvm"))
}

/// Looks `name` up in the `PATH`-style list `path`, like a shell would.
pub fn find_in_path(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    env::split_paths(path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Whether the process runs with effective uid 0, read from
/// `/proc/self/status` (no libc needed).
pub fn is_root() -> Result<bool> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("reading /proc/self/status to find the effective uid")?;
    let uid_line = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .context("no Uid: line in /proc/self/status")?;
    // Real, effective, saved set, filesystem.
    let euid = uid_line
        .split_whitespace()
        .nth(1)
        .context("malformed Uid: line in /proc/self/status")?;
    Ok(euid == "0")
}
