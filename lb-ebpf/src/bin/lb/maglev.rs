//! Backend selection from the VIP's live Maglev table.

use crate::maps::{table_size, BACKENDS, MAGLEV, MAGLEV_PREVIOUS};
use aya_ebpf::maps::Array;
use lb_common::{
    previous_half_backend, table_half_backend, table_half_is_moved, Backend, Stat, VipMeta,
    NO_BACKEND, SLOTS_PER_ELEMENT,
};

/// A backend id with its `BACKENDS` entry.
#[derive(Clone, Copy)]
pub struct Choice {
    pub id: u32,
    pub backend: &'static Backend,
}

/// The flow's slot in the VIP's active table: its `MAGLEV` half, and where to find the rest.
#[derive(Clone, Copy)]
pub struct Slot {
    index: u32,
    half: u16,
}

impl Slot {
    #[inline(always)]
    pub fn is_moved(&self) -> bool {
        table_half_is_moved(self.half)
    }

    /// Backend id for new flows, or `NO_BACKEND`.
    #[inline(always)]
    pub fn backend(&self) -> u32 {
        table_half_backend(self.half)
    }

    /// The backend a moved slot had before it moved (read only when needed).
    #[inline(always)]
    pub fn previous(&self) -> Option<Choice> {
        backend(previous_of(self.index))
    }
}

/// The previous backend's id, or `NO_BACKEND`. Out of line: the rare path's stack stays out of
/// the common one's frame (the benchmark twin inlines everything into one 512-byte stack).
#[inline(never)]
fn previous_of(index: u32) -> u32 {
    half(&MAGLEV_PREVIOUS, index)
        .and_then(previous_half_backend)
        .unwrap_or(NO_BACKEND)
}

#[inline(always)]
fn half(map: &Array<[u16; SLOTS_PER_ELEMENT as usize]>, index: u32) -> Option<u16> {
    let element = map.get(index / SLOTS_PER_ELEMENT)?;
    element.get((index % SLOTS_PER_ELEMENT) as usize).copied()
}

#[inline(always)]
pub fn slot(vip: &VipMeta, hash: u32) -> Result<Slot, Stat> {
    let size = table_size();
    if size == 0 {
        return Err(Stat::DropNoBackend);
    }
    let table = vip.id.wrapping_mul(2).wrapping_add(vip.active_table & 1);
    let index = table.wrapping_mul(size).wrapping_add(hash % size);
    let half = half(&MAGLEV, index).ok_or(Stat::DropNoBackend)?;
    Ok(Slot { index, half })
}

/// The backend behind an id from a slot, if there is one.
#[inline(always)]
pub fn backend(id: u32) -> Option<Choice> {
    if id == NO_BACKEND {
        return None;
    }
    BACKENDS.get(id).map(|backend| Choice { id, backend })
}
