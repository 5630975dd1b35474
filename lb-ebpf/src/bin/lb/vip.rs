//! VIP lookup. Most host traffic is rejected by a bitmap test; flows to a VIP address look up
//! (address, port, protocol), then (address, any port, protocol) when the address has such a
//! VIP. Both maps are small and stay in cache.

use crate::maps::{ADDR_FILTER, VIPS, VIP_ADDRS};
use lb_common::{
    hash::addr_filter_bit, AddrKey, VipKey, VipMeta, ADDR_F_TCP_ANY_PORT, ADDR_F_UDP_ANY_PORT,
    IPPROTO_TCP,
};

/// False: certainly not a VIP address. True: probably one (false positives are rare).
#[inline(always)]
pub fn may_be_vip_address(addr: &[u32; 4], family: u8) -> bool {
    let bit = addr_filter_bit(addr, family);
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
    // SAFETY: the value is copied out before the next map operation.
    if let Some(meta) = unsafe { VIPS.get(VipKey::from_words(addr, port, proto, family)) } {
        return Some(*meta);
    }
    let any_port = if proto == IPPROTO_TCP {
        ADDR_F_TCP_ANY_PORT
    } else {
        ADDR_F_UDP_ANY_PORT
    };
    if address_flags(*addr, family)? & any_port == 0 {
        return None;
    }
    // SAFETY: as above.
    unsafe { VIPS.get(VipKey::from_words(addr, 0, proto, family)) }.copied()
}
