//! Reading the configuration file safely: only a regular file, at most [`MAX_BYTES`], and (for
//! the running agent) on a blocking thread with a time limit, so a FIFO, a device or a hung
//! filesystem at the configuration path never stalls the controller.

use anyhow::{anyhow, bail, Context as _, Result};
use std::{
    fs::{File, OpenOptions},
    io::Read as _,
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use super::Config;

/// Largest configuration file accepted (16 MiB: far above 10,000 backends' worth of TOML).
pub const MAX_BYTES: u64 = 16 << 20;

/// How long the running agent waits for a read and parse before giving up on it: below the
/// admin API's 5 s, so `POST /reload` gets the real reason rather than a timeout.
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// The text of the configuration file at `path`: a regular file of at most [`MAX_BYTES`] of
/// UTF-8. Never blocks on a FIFO or device (opened non-blocking, then refused by type).
pub fn read_text(path: &Path) -> Result<String> {
    let shown = path.display();
    let file = OpenOptions::new()
        .read(true)
        // Opening a FIFO for reading would wait for a writer; O_NONBLOCK returns at once and
        // does not change how a regular file reads.
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .with_context(|| format!("reading the configuration file {shown}"))?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading the configuration file {shown}: fstat"))?;
    if !meta.is_file() {
        bail!(
            "the configuration file {shown} is {}, not a regular file: point --config at a \
             regular file",
            kind_of(&meta.file_type())
        );
    }
    if meta.len() > MAX_BYTES {
        bail!("{}", too_big(path, meta.len()));
    }
    read_capped(file, path)
}

/// Reads at most one byte past the cap, so a file that grew after the size check is refused
/// rather than read without bound.
fn read_capped(file: File, path: &Path) -> Result<String> {
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading the configuration file {}", path.display()))?;
    if bytes.len() as u64 > MAX_BYTES {
        bail!("{}", too_big(path, bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| {
        anyhow!(
            "the configuration file {} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

fn too_big(path: &Path, len: u64) -> String {
    format!(
        "the configuration file {} is {len} bytes or more; at most {MAX_BYTES} bytes (16 MiB) \
         are accepted",
        path.display()
    )
}

fn kind_of(t: &std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Reads and parses configuration files off the async runtime, one at a time.
///
/// A blocking read cannot be cancelled: after a timeout its thread stays until the read
/// returns. While one does, further reads are refused at once instead of piling up threads on
/// a hung filesystem.
#[derive(Clone, Default)]
pub struct Reader {
    busy: Arc<AtomicBool>,
}

impl Reader {
    /// [`load`](super::load) of `path` on a blocking thread, at most `timeout`.
    pub async fn load(&self, path: PathBuf, timeout: Duration) -> Result<Config> {
        let shown = path.display().to_string();
        self.run(move || super::load(&path), timeout, &shown).await
    }

    /// `read` on a blocking thread, at most `timeout`; `what` names it in errors.
    pub async fn run<F>(&self, read: F, timeout: Duration, what: &str) -> Result<Config>
    where
        F: FnOnce() -> Result<Config> + Send + 'static,
    {
        if self.busy.swap(true, Ordering::AcqRel) {
            bail!(
                "an earlier read of the configuration file {what} has still not returned (a \
                 hung filesystem?); nothing was read"
            );
        }
        let busy = Busy(self.busy.clone());
        let task = tokio::task::spawn_blocking(move || {
            let _busy = busy;
            read()
        });
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(anyhow!("reading the configuration file {what}: {join}")),
            Err(_) => Err(anyhow!(
                "reading the configuration file {what} took longer than {} s (a hung \
                 filesystem?); nothing was applied",
                timeout.as_secs_f64()
            )),
        }
    }
}

/// Clears the reader's busy flag when the blocking read ends, however it ends.
struct Busy(Arc<AtomicBool>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests;
