//! Running code inside a network namespace. Only the network namespace is entered (setns on a
//! thread), never the mount namespace: `ip netns exec` remounts /sys, which would hide bpffs
//! and its pins.

use anyhow::{anyhow, bail, Context, Result};
use std::{fs::File, os::fd::AsRawFd, process::Command};

/// Move the calling thread into network namespace `ns`.
pub fn enter(ns: &str) -> Result<()> {
    let file =
        File::open(format!("/run/netns/{ns}")).with_context(|| format!("opening netns {ns}"))?;
    // SAFETY: setns on a valid namespace fd; affects only this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns({ns}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Run `f` on a thread inside `ns` and wait for it.
pub fn run_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter(&ns)?;
        f()
    })
    .join()
    .map_err(|_| anyhow!("thread in netns panicked"))?
}

/// Run an async block on a thread inside `ns` with its own runtime, and wait for it.
pub fn block_in<T, F>(ns: &str, f: impl FnOnce() -> F + Send + 'static) -> Result<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T>>,
{
    run_in(ns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("runtime")?
            .block_on(f())
    })
}

/// `program` run in `ns`'s network namespace only, through nsenter, which execs it: the child's
/// pid is the program's, and /sys with the bpffs pins stays visible.
pub fn command(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .arg(program);
    command
}

/// Run a command (`ip`, `sysctl`, `ethtool`, `nft`) in `ns` (network only), or on the host.
pub fn sh(ns: Option<&str>, cmd: &str) -> Result<String> {
    let mut parts = cmd.split_whitespace();
    let program = parts.next().unwrap_or_default();
    let mut command = match ns {
        Some(ns) => self::command(ns, program),
        None => Command::new(program),
    };
    let out = command
        .args(parts)
        .output()
        .with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!(
            "`{cmd}` in {}: {}",
            ns.unwrap_or("host"),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A tokio runtime whose worker threads live in a network namespace: futures handed to `run`
/// or `spawn` open their sockets there, and it stays up across test steps (long-lived
/// connections keep running while the test changes things elsewhere).
pub struct NsRuntime {
    rt: tokio::runtime::Runtime,
}

impl NsRuntime {
    pub fn new(ns: &str) -> Result<Self> {
        let ns = ns.to_string();
        // Threads inherit the namespace of the thread that creates them: build the runtime
        // (which starts its workers) on a thread that entered the namespace.
        let rt = std::thread::spawn(move || -> Result<tokio::runtime::Runtime> {
            enter(&ns)?;
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("runtime")
        })
        .join()
        .map_err(|_| anyhow!("runtime thread panicked"))??;
        Ok(Self { rt })
    }

    /// For spawning background work (it runs on the namespace's workers).
    pub fn rt_handle(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    /// Run `fut` on the namespace's workers and wait for it.
    pub fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T> {
        let handle = self.rt.spawn(fut);
        self.rt.block_on(handle).context("task in namespace failed")
    }
}

/// Run `f` on a scoped thread inside `ns` and wait for it: unlike `run_in`, `f` may borrow
/// (a loaded program to attach or to run).
pub fn scoped_in<T: Send>(ns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(ns)?;
            f()
        })
        .join()
        .map_err(|_| anyhow!("thread in netns panicked"))?
    })
}
