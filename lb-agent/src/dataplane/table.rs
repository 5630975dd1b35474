//! Writes Maglev tables straight into the kernel's array through a shared mapping
//! (BPF_F_MMAPABLE): a 65537-slot table costs microseconds instead of 65537 syscalls.

use anyhow::{bail, Result};
use aya::maps::MapData;
use std::os::fd::{AsFd, AsRawFd};

/// BPF array elements are 8-byte aligned, so each u32 slot occupies 8 bytes of the mapping.
const SLOT_STRIDE: usize = 8;

pub struct TableWriter {
    // Keeps the map (and so the mapping's backing memory) alive.
    _map: MapData,
    base: *mut u8,
    len: usize,
    table_size: u32,
    max_vips: u32,
}

// SAFETY: the mapping is owned by this value and only written through &mut self.
unsafe impl Send for TableWriter {}

impl TableWriter {
    pub fn new(map: MapData, table_size: u32, max_vips: u32) -> Result<Self> {
        let len = max_vips as usize * 2 * table_size as usize * SLOT_STRIDE;
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: mapping a BPF array created with BPF_F_MMAPABLE, whole length, shared.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            bail!(
                "mmap of the MAGLEV map failed: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(Self {
            _map: map,
            base: base.cast(),
            len,
            table_size,
            max_vips,
        })
    }

    /// Write table `which` (0 or 1) of VIP `vip_id`.
    pub fn write(&mut self, vip_id: u32, which: u32, slots: &[u32]) -> Result<()> {
        if vip_id >= self.max_vips || which > 1 {
            bail!("table {which} of VIP {vip_id} is outside the MAGLEV map");
        }
        if slots.len() != self.table_size as usize {
            bail!(
                "table has {} slots, the data path expects {}",
                slots.len(),
                self.table_size
            );
        }
        let first = (vip_id as usize * 2 + which as usize) * self.table_size as usize;
        let end = (first + slots.len()) * SLOT_STRIDE;
        if end > self.len {
            bail!("table write past the end of the MAGLEV mapping");
        }
        for (i, slot) in slots.iter().enumerate() {
            // SAFETY: (first + i) * SLOT_STRIDE + 4 <= end <= len, inside the mapping; slots
            // are 8-byte aligned and the page-aligned mapping base keeps them so.
            unsafe {
                self.base
                    .add((first + i) * SLOT_STRIDE)
                    .cast::<u32>()
                    .write_volatile(*slot)
            };
        }
        // Make the slots visible before the caller flips the VIP to this table.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

impl TableWriter {
    /// Read table `which` of VIP `vip_id` back.
    pub fn read(&self, vip_id: u32, which: u32) -> Result<Vec<u32>> {
        if vip_id >= self.max_vips || which > 1 {
            bail!("table {which} of VIP {vip_id} is outside the MAGLEV map");
        }
        let first = (vip_id as usize * 2 + which as usize) * self.table_size as usize;
        Ok((0..self.table_size as usize)
            .map(|i| {
                // SAFETY: inside the mapping, as in write().
                unsafe {
                    self.base
                        .add((first + i) * SLOT_STRIDE)
                        .cast::<u32>()
                        .read_volatile()
                }
            })
            .collect())
    }
}

impl Drop for TableWriter {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}
