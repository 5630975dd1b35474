//! One owner per pin directory. Two agents on one `pin_path` would both program the same maps
//! (the second one's view of health or VIPs overwriting the first's), so whoever changes the
//! pins first takes an exclusive `flock` on the pin directory and keeps it while it runs.
//!
//! The lock is on the directory itself, not on a lock file: bpffs holds only pins and
//! directories (creating a regular file there fails with EPERM), and a file elsewhere (/run)
//! would not protect a pin directory that two mount namespaces share. The holder's pid comes
//! from the kernel's lock table (/proc/locks), so it is never stale: a killed agent's lock goes
//! with its last file descriptor.

use anyhow::{bail, Context, Result};
use std::{
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt, unix::fs::OpenOptionsExt},
    path::{Path, PathBuf},
};

/// Held for as long as the pins may change; dropping it (or the process dying) releases it.
#[derive(Debug)]
pub struct PinLock {
    _dir: File,
    path: PathBuf,
}

impl PinLock {
    /// Take the lock on `dir` (created if missing) without waiting. `hint` finishes the error
    /// when another process holds it: what the operator should do instead.
    pub fn acquire(dir: &Path, hint: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the pin directory {}", dir.display()))?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(dir)
            .with_context(|| format!("opening the pin directory {}", dir.display()))?;
        // SAFETY: flock on a descriptor we own; LOCK_NB so it never blocks.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Self {
                _dir: file,
                path: dir.to_path_buf(),
            });
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err)
                .with_context(|| format!("locking the pin directory {} (flock)", dir.display()));
        }
        let meta = file
            .metadata()
            .with_context(|| format!("reading {}", dir.display()))?;
        let holder = std::fs::read_to_string("/proc/locks")
            .ok()
            .and_then(|text| holder_pid(&text, meta.dev(), meta.ino()));
        let who = match holder {
            Some(pid) => match process_name(pid) {
                Some(name) => format!("pid {pid} ({name})"),
                None => format!("pid {pid}"),
            },
            None => "another process (its pid is not visible from here)".to_string(),
        };
        bail!(
            "the pin path {} is in use by {who}, which owns the pins there; nothing was \
             changed. {hint}",
            dir.display()
        )
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn process_name(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let comm = comm.trim();
    (!comm.is_empty()).then(|| comm.to_string())
}

/// Major and minor number of a `dev_t` as the kernel prints them in /proc/locks (glibc's
/// encoding: 12 bits of major and 20 of minor, split across the 64 bits).
fn major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// The pid holding a granted `flock` on inode `ino` of device `dev`, from the text of
/// /proc/locks. Lines are `N: FLOCK ADVISORY WRITE PID MAJ:MIN:INO START END` with MAJ and MIN
/// in hex; waiters (`N: -> FLOCK ...`) are skipped, and pid 0 (a holder outside our pid
/// namespace) counts as unknown.
fn holder_pid(proc_locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let (major, minor) = major_minor(dev);
    proc_locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&"FLOCK") {
            return None;
        }
        let mut id = fields.get(5)?.split(':');
        let maj = u64::from_str_radix(id.next()?, 16).ok()?;
        let min = u64::from_str_radix(id.next()?, 16).ok()?;
        let inode: u64 = id.next()?.parse().ok()?;
        let pid: u32 = fields.get(4)?.parse().ok()?;
        (maj == major && min == minor && inode == ino && pid != 0).then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lb-pinlock-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn parses_the_holder_and_skips_waiters_and_other_files() {
        // st_dev 0x27 is 00:27; 0x800010 is 08:10 (sda) in glibc's encoding.
        let text = "1: FLOCK  ADVISORY  READ 25430 fe:00:10133506 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 25752 00:27:25352 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 26000 00:27:25352 0 EOF\n\
                    3: POSIX  ADVISORY  WRITE 999 08:10:77 0 EOF\n\
                    4: FLOCK  ADVISORY  WRITE 0 08:10:78 0 EOF\n";
        assert_eq!(holder_pid(text, 0x27, 25352), Some(25752));
        assert_eq!(holder_pid(text, 0x27, 25353), None);
        assert_eq!(
            holder_pid(text, 0x810, 77),
            None,
            "POSIX locks are not ours"
        );
        assert_eq!(holder_pid(text, 0x810, 78), None, "pid 0: not visible");
        assert_eq!(holder_pid("", 0x27, 25352), None);
    }

    #[test]
    fn major_minor_follow_the_kernels_encoding() {
        assert_eq!(major_minor(0x27), (0, 0x27));
        assert_eq!(major_minor(0xfe00), (0xfe, 0));
        assert_eq!(major_minor(0x0810), (8, 0x10));
        // A minor above 255 goes to the high bits.
        assert_eq!(
            major_minor((0x12_3400 << 12) | (8 << 8) | 0x56),
            (8, 0x12_3456)
        );
    }

    #[test]
    fn a_second_lock_fails_naming_the_holder_and_the_path_until_the_first_is_dropped() {
        let dir = temp_dir("second");
        let first = PinLock::acquire(&dir, "try later").expect("first lock");
        assert!(dir.is_dir(), "the directory is created");
        assert_eq!(first.path(), dir.as_path());
        // flock conflicts between two open file descriptions even in one process.
        let err = PinLock::acquire(&dir, "try later").expect_err("second lock must fail");
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "names the holder: {msg}"
        );
        assert!(msg.contains(&dir.display().to_string()), "{msg}");
        assert!(msg.ends_with("try later"), "{msg}");
        drop(first);
        let again = PinLock::acquire(&dir, "try later").expect("free again after drop");
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_uncreatable_directory_is_an_error_naming_it() {
        let dir = temp_dir("file");
        std::fs::write(&dir, b"not a directory").expect("write");
        let err = PinLock::acquire(&dir, "").expect_err("a file is no pin directory");
        assert!(format!("{err:#}").contains(&dir.display().to_string()));
        let _ = std::fs::remove_file(&dir);
    }
}
