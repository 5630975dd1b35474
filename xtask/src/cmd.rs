//! Running external commands: echo them, run them, attach context, and build
//! the scrubbed environment nightly cargo/rustc need.

use std::env;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

use crate::paths::{cargo_bin_dir, workspace_root};

/// Environment variables that `cargo xtask` (run by the stable toolchain)
/// passes down and that would make a nested `cargo +nightly` / `rustc
/// +nightly` use stable tools, a different target directory or target, or
/// host-only flags.
const LEAKY_ENV: &[&str] = &[
    // Set by rustup's proxy for the stable `cargo run`; overrides `+nightly`
    // for anything that goes through a proxy without an explicit `+`.
    "RUSTUP_TOOLCHAIN",
    "RUSTUP_TOOLCHAIN_SOURCE",
    // Set by `cargo run` to the stable cargo binary; nightly cargo would
    // report it to build scripts as `CARGO`.
    "CARGO",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    // Tool overrides.
    "RUSTC",
    "RUSTDOC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC",
    "CARGO_BUILD_RUSTDOC",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    // Target and target-dir overrides (the eBPF build sets both itself).
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    // Host flags (e.g. -C target-cpu=native) that make no sense for BPF.
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
];

/// Variables not worth echoing (long, and only ever adjusted by us).
const QUIET_ENV: &[&str] = &["PATH", "LD_LIBRARY_PATH"];

/// `cargo` for the host toolchain that runs `cargo xtask`, in the workspace
/// root, inheriting the environment.
pub fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root());
    cmd
}

/// `<tool> +<toolchain>` through rustup's proxy, in the workspace root, with
/// the stable toolchain's settings scrubbed from the environment and
/// `$CARGO_HOME/bin` first on `PATH` (so the proxy and bpf-linker are found).
pub fn toolchain_tool(tool: &str, toolchain: &str) -> Result<Command> {
    let mut cmd = scrubbed(tool)?;
    cmd.arg(format!("+{toolchain}"));
    Ok(cmd)
}

/// `<tool>` (resolved in `$CARGO_HOME/bin` first) with the leaky variables
/// removed, `PATH` fixed up and `LD_LIBRARY_PATH` cleaned, in the workspace
/// root.
pub fn scrubbed(tool: &str) -> Result<Command> {
    let path = scrubbed_path()?;
    let program = crate::paths::find_in_path(tool, &path).unwrap_or_else(|| PathBuf::from(tool));
    let mut cmd = Command::new(program);
    cmd.current_dir(workspace_root());
    for var in LEAKY_ENV {
        cmd.env_remove(var);
    }
    cmd.env("PATH", path);
    match scrubbed_ld_library_path() {
        Some(p) if !p.is_empty() => cmd.env("LD_LIBRARY_PATH", p),
        _ => cmd.env_remove("LD_LIBRARY_PATH"),
    };
    Ok(cmd)
}

/// The scrubbed `PATH`: `$CARGO_HOME/bin` first, then the inherited entries
/// minus toolchain directories (some rustup versions prepend the active
/// toolchain's `bin/`, which would make `cargo` mean stable cargo itself).
pub fn scrubbed_path() -> Result<OsString> {
    let bin = cargo_bin_dir()?;
    let inherited = env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(bin.clone())
        .chain(env::split_paths(&inherited).filter(|d| *d != bin && !is_toolchain_dir(d)));
    env::join_paths(dirs).context("building PATH for the nightly toolchain")
}

/// `cargo run` prepends the stable toolchain's `lib/` and the workspace's
/// target dirs to `LD_LIBRARY_PATH`; drop those entries, keep the user's.
fn scrubbed_ld_library_path() -> Option<OsString> {
    let inherited = env::var_os("LD_LIBRARY_PATH")?;
    let target = workspace_root().join("target");
    let kept: Vec<PathBuf> = env::split_paths(&inherited)
        .filter(|d| !d.as_os_str().is_empty() && !is_toolchain_dir(d) && !d.starts_with(&target))
        .collect();
    env::join_paths(kept).ok()
}

fn is_toolchain_dir(dir: &Path) -> bool {
    let rustup_home = env::var_os("RUSTUP_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| crate::paths::home().ok().map(|h| h.join(".rustup")));
    match rustup_home {
        Some(home) => dir.starts_with(home.join("toolchains")),
        None => false,
    }
}

/// Shell-like rendering of a command: `VAR=value program args...` (variables
/// removed or only tidied by us are not shown).
pub fn display(cmd: &Command) -> String {
    let mut out = String::new();
    for (key, value) in cmd.get_envs() {
        let Some(value) = value else { continue };
        if QUIET_ENV.iter().any(|q| OsStr::new(q) == key) {
            continue;
        }
        out.push_str(&format!("{}={} ", key.to_string_lossy(), quote(value)));
    }
    out.push_str(&quote(cmd.get_program()));
    for arg in cmd.get_args() {
        out.push(' ');
        out.push_str(&quote(arg));
    }
    out
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=+:,@^%".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn echo(cmd: &Command) -> String {
    let shown = display(cmd);
    match cmd.get_current_dir() {
        Some(dir) if dir != workspace_root() => {
            eprintln!("$ (cd {} && {shown})", dir.display());
        }
        _ => eprintln!("$ {shown}"),
    }
    shown
}

/// Echoes and runs `cmd` with inherited stdio; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = echo(cmd);
    let status = cmd.status().with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Echoes and runs `cmd`, capturing its output; the exit status is the
/// caller's to judge.
pub fn capture(cmd: &mut Command) -> Result<Output> {
    let shown = echo(cmd);
    cmd.output().with_context(|| format!("running {shown}"))
}

/// Echoes and runs `cmd`, returning its stdout; fails (showing stderr) unless
/// it exits 0.
pub fn stdout_of(cmd: &mut Command) -> Result<String> {
    let shown = display(cmd);
    let out = capture(cmd)?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("output of {shown} is not UTF-8"))
}
