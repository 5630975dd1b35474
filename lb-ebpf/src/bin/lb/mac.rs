//! Whose frame it is: only frames sent to one of the balancer's own MACs (`CONFIG.local_macs`:
//! the interface's, then configured extras such as a VRRP virtual MAC) are forwarded.
//! Broadcast, multicast and other hosts' unicast frames are the host's, whatever their IP
//! destination.

use lb_common::{LbConfig, LOCAL_MACS};

/// One comparison for a frame to the interface's own MAC (the common case).
#[inline(always)]
pub fn is_ours(dst: [u16; 3], cfg: &LbConfig) -> bool {
    // SAFETY: `local_macs` is 24 plain bytes at a 4-aligned offset of the map value.
    let macs: [[u16; 3]; LOCAL_MACS] =
        unsafe { *(cfg.local_macs.as_ptr() as *const [[u16; 3]; LOCAL_MACS]) };
    if dst == macs[0] {
        return true;
    }
    dst == macs[1] || dst == macs[2] || dst == macs[3]
}
