//! VIP lookup. Most host traffic is rejected by a bitmap test; flows to a VIP address look up
//! (address, port, protocol), then (address, any port, protocol). Each lookup tries the key's
//! home in `VIP_INDEX` (an inlined array load and five compares), and `VIPS` (a hash-map call)
//! only when the home says a key that lives there only may be it (`lb_common::VipSlot`).

use crate::maps::{ADDR_FILTER, VIPS, VIP_ADDRS, VIP_INDEX};
use core::ptr::read_volatile;
use lb_common::{hash::vip_index_slot, AddrKey, VipKey, VipMeta, VipSlot, VIP_INDEX_EMPTY};

/// False: certainly not a VIP address. True: probably one (false positives are rare).
#[inline(always)]
pub fn may_be_vip_address(addr: &[u32; 4], family: u8) -> bool {
    let bit = lb_common::hash::addr_filter_bit(addr, family);
    match ADDR_FILTER.get(bit >> 6) {
        Some(word) => *word & (1u64 << (bit & 63)) != 0,
        None => false,
    }
}

/// `ADDR_F_*` bits of `addr`, or `None` when no VIP uses that address.
#[inline(always)]
pub fn address_flags(addr: [u32; 4], family: u8) -> Option<u32> {
    let key = AddrKey {
        addr,
        family,
        _pad: [0; 3],
    };
    // SAFETY: the value is copied out before the next map operation.
    unsafe { VIP_ADDRS.get(key).copied() }
}

#[inline(always)]
pub fn lookup(addr: &[u32; 4], family: u8, port: u16, proto: u8) -> Option<VipMeta> {
    if let Some(meta) = find(&VipKey::from_words(addr, port, proto, family)) {
        return Some(meta);
    }
    find(&VipKey::from_words(addr, 0, proto, family))
}

/// What a key's home slot says of it.
enum Home {
    /// The key lives here.
    Found(VipMeta),
    /// It may live in `VIPS` only.
    Spilled,
    /// It is no VIP.
    Absent,
}

#[inline(always)]
fn find(key: &VipKey) -> Option<VipMeta> {
    let words = key.words();
    match home(&words) {
        Home::Found(meta) => Some(meta),
        // SAFETY: the value is copied out before the next map operation.
        Home::Spilled => unsafe { VIPS.get(key) }.copied(),
        Home::Absent => None,
    }
}

#[inline(always)]
fn home(words: &[u32; 5]) -> Home {
    let Some(slot) = VIP_INDEX.get(vip_index_slot(words)) else {
        return Home::Spilled;
    };
    let slot: *const VipSlot = slot;
    // SAFETY: a pointer into the map value from the lookup above. Volatile loads in this order:
    // the id before the words it vouches for (the agent stores them the other way round), and
    // no load merged or repeated, since the agent may be storing to the slot right now.
    unsafe {
        let id = read_volatile(&(*slot).id);
        let key = &raw const (*slot).key as *const u32;
        if id != VIP_INDEX_EMPTY
            && read_volatile(key) == words[0]
            && read_volatile(key.add(1)) == words[1]
            && read_volatile(key.add(2)) == words[2]
            && read_volatile(key.add(3)) == words[3]
            && read_volatile(key.add(4)) == words[4]
        {
            return Home::Found(VipMeta {
                id,
                flags: read_volatile(&(*slot).flags),
                active_table: read_volatile(&(*slot).active_table),
                _reserved: 0,
            });
        }
        if read_volatile(&(*slot).spill) != 0 {
            Home::Spilled
        } else {
            Home::Absent
        }
    }
}
