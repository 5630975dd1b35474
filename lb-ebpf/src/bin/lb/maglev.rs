//! Backend selection from the VIP's live Maglev table.

use crate::maps::{table_size, BACKENDS, MAGLEV};
use lb_common::{Backend, Stat, VipMeta, NO_BACKEND};

/// The backend owning the flow's slot in the VIP's active table.
#[inline(always)]
pub fn lookup(vip: &VipMeta, hash: u32) -> Result<(u32, Backend), Stat> {
    let size = table_size();
    if size == 0 {
        return Err(Stat::DropNoBackend);
    }
    let table = vip.id.wrapping_mul(2).wrapping_add(vip.active_table & 1);
    let index = table.wrapping_mul(size).wrapping_add(hash % size);
    let id = *MAGLEV.get(index).ok_or(Stat::DropNoBackend)?;
    if id == NO_BACKEND {
        return Err(Stat::DropNoBackend);
    }
    let backend = BACKENDS.get(id).ok_or(Stat::DropNoBackend)?;
    Ok((id, *backend))
}
