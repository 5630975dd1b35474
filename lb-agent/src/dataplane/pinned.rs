//! Whose pins these are. bpffs is shared by every network namespace of a host (containers, our
//! own test harness), so a pin directory alone does not say which namespace's interface its
//! XDP link serves or whose addresses its maps hold. The first user of a pin directory records
//! its network namespace there (a subdirectory `netns-<cookie>`: bpffs holds no regular files);
//! a later one in another namespace is refused instead of adopting them. A pinned XDP link
//! says which interface index it serves (0 once that interface is gone: severed).

use anyhow::{bail, Context, Result};
use std::{
    ffi::CString,
    os::{fd::AsRawFd, fd::FromRawFd, fd::OwnedFd, unix::ffi::OsStrExt},
    path::{Path, PathBuf},
};

const RECORD_PREFIX: &str = "netns-";

/// The calling thread's network namespace cookie: unique for the boot, never reused (unlike
/// the namespace's inode number).
pub fn netns_cookie() -> Result<u64> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")
        .or_else(|_| std::net::UdpSocket::bind("[::1]:0"))
        .context("opening a socket to learn this network namespace's cookie")?;
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .context("SO_NETNS_COOKIE (Linux 5.14 or newer is needed)");
    }
    Ok(cookie)
}

fn record_path(dir: &Path, cookie: u64) -> PathBuf {
    dir.join(format!("{RECORD_PREFIX}{cookie}"))
}

/// The network namespace cookies recorded in `dir`.
fn recorded(dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            name.to_str()?.strip_prefix(RECORD_PREFIX)?.parse().ok()
        })
        .collect()
}

/// Make sure `dir` (created if missing) belongs to this network namespace, recording it if
/// nobody has. A directory recorded by another namespace is refused; `use_instead` turns the
/// suggested directory into what the operator should set (a flag or a configuration key).
pub fn claim(dir: &Path, use_instead: impl FnOnce(&Path) -> String) -> Result<()> {
    let mine = netns_cookie()?;
    let owners = recorded(dir);
    if let Some(other) = owners.iter().find(|c| **c != mine) {
        let mut suggestion = dir.as_os_str().to_owned();
        suggestion.push(format!("-ns{mine}"));
        bail!(
            "the pins in {dir} belong to another network namespace (netns cookie {other}, \
             recorded as {record}; this process runs in netns cookie {mine}): adopting them \
             would take over that namespace's XDP link and maps, so nothing was changed. Give \
             this namespace a pin directory of its own: {hint}. If that namespace is gone for \
             good, remove its pins first (rm -r {dir}).",
            dir = dir.display(),
            record = record_path(dir, *other).display(),
            hint = use_instead(Path::new(&suggestion)),
        );
    }
    if owners.is_empty() {
        let record = record_path(dir, mine);
        std::fs::create_dir_all(&record)
            .with_context(|| format!("recording the network namespace as {}", record.display()))?;
        tracing::info!(pin_dir = %dir.display(), netns_cookie = mine, "pin directory claimed for this network namespace");
    }
    Ok(())
}

/// Forget which namespace `dir` belongs to (its pins are gone).
pub fn release(dir: &Path) -> Result<()> {
    for cookie in recorded(dir) {
        let record = record_path(dir, cookie);
        std::fs::remove_dir(&record).with_context(|| format!("removing {}", record.display()))?;
    }
    Ok(())
}

/// What a pinned XDP link serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkState {
    pub id: u32,
    pub prog_id: u32,
    /// 0 once its interface is gone: the link is severed and can never forward again.
    pub ifindex: u32,
}

impl LinkState {
    pub fn severed(&self) -> bool {
        self.ifindex == 0
    }
}

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_TYPE_XDP: u32 = 6;

fn bpf(cmd: libc::c_long, attr: &mut [u64]) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a zeroed, large enough bpf_attr for `cmd`; the kernel reads and writes
    // only within the size given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

/// The interface (index) and program of the XDP link pinned at `pin` (bpf_link_info; aya
/// exposes no ifindex).
pub fn link_state(pin: &Path) -> Result<LinkState> {
    let path = CString::new(pin.as_os_str().as_bytes())
        .with_context(|| format!("{} contains a NUL byte", pin.display()))?;
    // bpf_attr for BPF_OBJ_GET: pathname, bpf_fd, file_flags.
    let mut attr = [0u64; 3];
    attr[0] = path.as_ptr() as u64;
    let fd = bpf(BPF_OBJ_GET, &mut attr)
        .with_context(|| format!("opening the pinned link {}", pin.display()))?;
    // SAFETY: BPF_OBJ_GET returned a new descriptor that nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // Map and program infos start differently: only read a link's.
    let kind = std::fs::read_link(format!("/proc/thread-self/fd/{}", fd.as_raw_fd()))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if kind != "anon_inode:bpf-link" {
        bail!(
            "{} is not a pinned link ({kind}): remove it or use another pin directory",
            pin.display()
        );
    }
    // bpf_link_info up to xdp.ifindex: type, id, prog_id, padding, then the union (8-aligned).
    let mut info = [0u32; 8];
    let mut attr = [0u64; 2];
    attr[0] = fd.as_raw_fd() as u64 | ((std::mem::size_of_val(&info) as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)
        .with_context(|| format!("reading the link info of {}", pin.display()))?;
    if info[0] != BPF_LINK_TYPE_XDP {
        bail!(
            "{} is not an XDP link (bpf link type {}): remove it or use another pin directory",
            pin.display(),
            info[0]
        );
    }
    Ok(LinkState {
        id: info[1],
        prog_id: info[2],
        ifindex: info[4],
    })
}

/// The index of interface `name` in the calling thread's network namespace, or None.
pub fn ifindex(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

#[cfg(test)]
mod tests;
