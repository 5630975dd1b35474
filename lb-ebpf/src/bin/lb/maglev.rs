//! Backend selection from the VIP's live Maglev table.

use crate::maps::{table_size, BACKENDS, MAGLEV};
use lb_common::{Backend, Slot, Stat, VipMeta, NO_BACKEND, SLOTS_PER_ELEMENT};

/// A backend id with its `BACKENDS` entry.
#[derive(Clone, Copy)]
pub struct Choice {
    pub id: u32,
    pub backend: Backend,
}

/// The flow's slot in the VIP's active table.
#[inline(always)]
pub fn slot(vip: &VipMeta, hash: u32) -> Result<Slot, Stat> {
    let size = table_size();
    if size == 0 {
        return Err(Stat::DropNoBackend);
    }
    let table = vip.id.wrapping_mul(2).wrapping_add(vip.active_table & 1);
    let index = table.wrapping_mul(size).wrapping_add(hash % size);
    let pair = MAGLEV
        .get(index / SLOTS_PER_ELEMENT)
        .ok_or(Stat::DropNoBackend)?;
    pair.get((index % SLOTS_PER_ELEMENT) as usize)
        .map(|w| Slot(*w))
        .ok_or(Stat::DropNoBackend)
}

/// The backend behind an id from a slot, if there is one.
#[inline(always)]
pub fn backend(id: u32) -> Option<Choice> {
    if id == NO_BACKEND {
        return None;
    }
    BACKENDS.get(id).map(|backend| Choice {
        id,
        backend: *backend,
    })
}
