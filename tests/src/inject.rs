//! Raw frames straight onto a link (AF_PACKET), for the malformed-input flood. Bounded by the
//! caller's frame list.

use crate::netns::run_in;
use anyhow::{bail, Result};

/// Send every frame out of `dev` in namespace `ns`; returns how many were sent.
pub fn inject(ns: &str, dev: &str, frames: Vec<Vec<u8>>) -> Result<usize> {
    let dev = std::ffi::CString::new(dev)?;
    run_in(ns, move || {
        // SAFETY: plain socket calls with valid arguments; the fd is closed below.
        unsafe {
            let ifindex = libc::if_nametoindex(dev.as_ptr());
            if ifindex == 0 {
                bail!("no interface {:?}", dev);
            }
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            if fd < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex as i32;
            addr.sll_halen = 6;
            let mut sent = 0;
            for f in &frames {
                let n = libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                if n == f.len() as isize {
                    sent += 1;
                }
            }
            libc::close(fd);
            Ok(sent)
        }
    })
}

/// A deterministic mix of broken frames addressed to `dst_mac`, aimed at `vip` (IPv4): random
/// bytes, truncated headers, bad lengths, IHL < 5, fragments, options. `seed` varies the mix.
pub fn malformed_frames(dst_mac: [u8; 6], vip: [u8; 4], count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut x = seed | 1;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let good = |rand: &mut dyn FnMut() -> u64| {
        let mut f = Vec::with_capacity(64);
        f.extend_from_slice(&dst_mac);
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]);
        f.extend_from_slice(&[198, 18, 100, (rand() % 200) as u8 + 2]);
        f.extend_from_slice(&vip);
        f.extend_from_slice(&((rand() % 60000) as u16 + 1024).to_be_bytes());
        f.extend_from_slice(&80u16.to_be_bytes());
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&[0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
        f
    };
    (0..count)
        .map(|i| {
            let mut f = good(&mut rand);
            match i % 6 {
                // Random bytes after a valid Ethernet header (any EtherType).
                0 => {
                    let len = 14 + (rand() % 120) as usize;
                    f.truncate(12);
                    while f.len() < len {
                        f.push(rand() as u8);
                    }
                }
                // Cut inside the IP or TCP header.
                1 => f.truncate(15 + (rand() % 38) as usize),
                // Total length past the frame end.
                2 => f[16..18].copy_from_slice(&1500u16.to_be_bytes()),
                // IHL below 5.
                3 => f[14] = 0x40 | (rand() % 5) as u8,
                // A fragment.
                4 => f[20..22].copy_from_slice(&0x2000u16.to_be_bytes()),
                // Options announced (IHL 6..15) with whatever follows.
                _ => f[14] = 0x46 + (rand() % 10) as u8,
            }
            f
        })
        .collect()
}
