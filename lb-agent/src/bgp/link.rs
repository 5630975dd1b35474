//! The announce device: a tun interface that lives exactly as long as the agent. BIRD's VIP
//! routes point at it, so a crashed or killed agent (whose file descriptors the kernel closes)
//! takes its announcements down with it, with no cleanup code that could fail to run.

use anyhow::{bail, Context, Result};
use std::{
    fs::{File, OpenOptions},
    os::fd::AsRawFd,
    os::unix::fs::OpenOptionsExt,
};

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags in the union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

pub struct AnnounceLink {
    // Held open: closing it (also by the kernel when the process dies) removes the device.
    _tun: File,
    pub name: String,
}

impl AnnounceLink {
    pub async fn create(name: &str) -> Result<Self> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            bail!("announce interface name {name:?} must have 1 to 15 characters");
        }
        let tun = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .context("opening /dev/net/tun (is the tun module loaded?)")?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads an ifreq-sized struct from a valid pointer.
        let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            let hint = if err.raw_os_error() == Some(libc::EBUSY) {
                " (another process holds it: is a second lb-agent running?)"
            } else {
                ""
            };
            bail!("creating the announce device {name}: {err}{hint}");
        }
        crate::netinfo::set_link_up(name).await?;
        Ok(Self {
            _tun: tun,
            name: name.to_string(),
        })
    }
}
