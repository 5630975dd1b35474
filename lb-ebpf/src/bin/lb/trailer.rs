//! Bytes after the IP packet (an Ethernet trailer, or the padding of a minimum-size frame) are
//! cut off before forwarding, so the frame encapsulated, counted, MTU-checked or answered is
//! exactly the IP packet.

use crate::counters::count;
use aya_ebpf::{helpers::bpf_xdp_get_buff_len, programs::XdpContext};
use lb_common::Stat;
use lb_ebpf::packet::{adjust_tail, holds, is_exactly};

/// Ethernet's minimum frame without FCS: shorter packets arrive padded to it.
const ETH_MIN_FRAME: usize = 60;

/// Make the frame end where the IP packet does (`len` = L3 + IP length). The common case costs
/// one comparison. `Err`: the frame is shorter than the IP length says (`drop_malformed`), or
/// the tail could not be moved (`encap_failed`).
#[inline(always)]
pub fn fit(ctx: &XdpContext, len: usize) -> Result<(), Stat> {
    if is_exactly(ctx, len) {
        return Ok(());
    }
    if !holds(ctx, len) {
        return Err(Stat::DropMalformed);
    }
    // The frame's length cannot be computed from its pointers (the verifier forbids arithmetic
    // on the end pointer): a padded minimum frame is recognised by comparison, anything else
    // asks the kernel.
    let have = if is_exactly(ctx, ETH_MIN_FRAME) {
        ETH_MIN_FRAME as u64
    } else {
        // SAFETY: plain helper call on the program's own context.
        unsafe { bpf_xdp_get_buff_len(ctx.ctx) }
    };
    let cut = have.wrapping_sub(len as u64);
    if cut == 0 || cut > u16::MAX as u64 || !adjust_tail(ctx, -(cut as i32)) {
        return Err(Stat::EncapFailed);
    }
    count(Stat::TrailerTrimmed);
    Ok(())
}
