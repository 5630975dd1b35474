//! Writes Maglev tables straight into the kernel's arrays through a shared mapping
//! (BPF_F_MMAPABLE): a 65537-slot table costs microseconds instead of 65537 syscalls. One writer
//! per array: `MAGLEV` and `MAGLEV_PREVIOUS` hold the two 16-bit halves of each slot.
//!
//! Only the pages of the one table being written or read are mapped, and only while that
//! happens: the kernel maps a BPF array's pages into the process as soon as it is mmapped, so a
//! whole-map mapping made the agent's RSS `max_vips × 2 × table_size × 8` bytes (67 MB at the
//! defaults, 105 MB with 100 VIPs, when each slot took an 8-byte element) for memory the kernel
//! holds anyway.

use anyhow::{bail, Result};
use aya::maps::MapData;
use std::os::fd::{AsFd, AsRawFd};

/// Slots are packed `SLOTS_PER_ELEMENT` to an 8-byte array element, so the mapping is a dense
/// array of u16 halves.
const SLOT_STRIDE: usize = 2;

pub struct TableWriter {
    map: MapData,
    name: &'static str,
    table_size: u32,
    max_vips: u32,
}

/// Pages of an mmapable BPF array, mapped shared; unmapped on drop.
pub(super) struct Window {
    base: *mut u8,
    len: usize,
    /// Byte offset of the first byte asked for from `base`.
    start: usize,
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `Window::map` mapped.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

impl Window {
    /// Map the pages holding bytes `first..first + bytes` of `map` (created with
    /// BPF_F_MMAPABLE); `what` names them in errors.
    pub(super) fn map(map: &MapData, first: usize, bytes: usize, what: &str) -> Result<Self> {
        let page = page_size();
        let offset = first & !(page - 1);
        // Rounded up to whole pages: still within the map, whose size the kernel page-aligns.
        let len = (first + bytes - offset).next_multiple_of(page);
        let fd = map.fd().as_fd().as_raw_fd();
        let file_offset = libc::off_t::try_from(offset)
            .map_err(|_| anyhow::anyhow!("offset {offset} of {what} overflows off_t"))?;
        // SAFETY: mapping part of a BPF array created with BPF_F_MMAPABLE, page-aligned
        // offset, shared; the kernel rejects a range past the map's end.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                file_offset,
            )
        };
        if base == libc::MAP_FAILED {
            bail!("mmap of {what} failed: {}", std::io::Error::last_os_error());
        }
        Ok(Self {
            base: base.cast(),
            len,
            start: first - offset,
        })
    }

    /// The mapped byte `at` bytes after the first one asked for.
    pub(super) fn at(&self, at: usize) -> *mut u8 {
        debug_assert!(self.start + at < self.len);
        // SAFETY: inside the mapping for every `at` below the `bytes` asked for.
        unsafe { self.base.add(self.start + at) }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096)
}

impl TableWriter {
    pub fn new(map: MapData, name: &'static str, table_size: u32, max_vips: u32) -> Result<Self> {
        let writer = Self {
            map,
            name,
            table_size,
            max_vips,
        };
        // Fail at load, not at the first publication, if the map cannot be mapped.
        drop(writer.window(0, 0)?);
        Ok(writer)
    }

    /// Map the pages of table `which` (0 or 1) of VIP `vip_id`.
    fn window(&self, vip_id: u32, which: u32) -> Result<Window> {
        if vip_id >= self.max_vips || which > 1 {
            bail!(
                "table {which} of VIP {vip_id} is outside the {} map",
                self.name
            );
        }
        let table_bytes = self.table_size as usize * SLOT_STRIDE;
        let first = (vip_id as usize * 2 + which as usize) * table_bytes;
        Window::map(
            &self.map,
            first,
            table_bytes,
            &format!("table {which} of VIP {vip_id} in the {} map", self.name),
        )
    }

    /// Write table `which` (0 or 1) of VIP `vip_id`.
    pub fn write(&mut self, vip_id: u32, which: u32, slots: &[u16]) -> Result<()> {
        if slots.len() != self.table_size as usize {
            bail!(
                "table has {} slots, the data path expects {}",
                slots.len(),
                self.table_size
            );
        }
        let window = self.window(vip_id, which)?;
        for (i, slot) in slots.iter().enumerate() {
            // SAFETY: (i + 1) * SLOT_STRIDE <= table_bytes, inside the mapping; slots are
            // 2-byte aligned and the page-aligned base keeps them so.
            unsafe {
                window
                    .at(i * SLOT_STRIDE)
                    .cast::<u16>()
                    .write_volatile(*slot)
            };
        }
        // Make the slots visible before the caller flips the VIP to this table.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Read table `which` of VIP `vip_id` back.
    pub fn read(&self, vip_id: u32, which: u32) -> Result<Vec<u16>> {
        let window = self.window(vip_id, which)?;
        Ok((0..self.table_size as usize)
            .map(|i| {
                // SAFETY: inside the mapping, as in write().
                unsafe { window.at(i * SLOT_STRIDE).cast::<u16>().read_volatile() }
            })
            .collect())
    }
}
