//! VIP lookup: address first (one lookup decides that most host traffic is not ours), then
//! (address, port, protocol), then (address, any port, protocol).

use crate::maps::{VIPS, VIP_ADDRS};
use lb_common::{
    AddrKey, VipKey, VipMeta, ADDR_F_TCP_ANY_PORT, ADDR_F_TCP_PORT, ADDR_F_UDP_ANY_PORT,
    ADDR_F_UDP_PORT, IPPROTO_TCP,
};

/// `ADDR_F_*` bits of `addr`, or `None` when no VIP uses that address.
#[inline(always)]
pub fn address_flags(addr: [u32; 4], family: u8) -> Option<u32> {
    let key = AddrKey {
        addr,
        family,
        _pad: [0; 3],
    };
    // SAFETY: the value is copied out before the next map operation.
    unsafe { VIP_ADDRS.get(&key).copied() }
}

#[inline(always)]
pub fn lookup(addr_flags: u32, addr: [u32; 4], family: u8, port: u16, proto: u8) -> Option<VipMeta> {
    let (exact_bit, any_bit) = if proto == IPPROTO_TCP {
        (ADDR_F_TCP_PORT, ADDR_F_TCP_ANY_PORT)
    } else {
        (ADDR_F_UDP_PORT, ADDR_F_UDP_ANY_PORT)
    };
    let mut key = VipKey {
        addr,
        port,
        proto,
        family,
    };
    if addr_flags & exact_bit != 0 {
        // SAFETY: the value is copied out before the next map operation.
        if let Some(meta) = unsafe { VIPS.get(&key) } {
            return Some(*meta);
        }
    }
    if addr_flags & any_bit != 0 {
        key.port = 0;
        // SAFETY: as above.
        if let Some(meta) = unsafe { VIPS.get(&key) } {
            return Some(*meta);
        }
    }
    None
}
