//! Every way the balancer ends a packet, each with its counter.

use crate::counters::count;
use aya_ebpf::bindings::xdp_action;
use lb_common::Stat;

/// Hand the frame to the host stack untouched, counting why.
#[inline(always)]
pub fn pass(reason: Stat) -> u32 {
    count(reason);
    xdp_action::XDP_PASS
}

#[inline(always)]
pub fn drop(reason: Stat) -> u32 {
    count(reason);
    xdp_action::XDP_DROP
}

/// Send the rewritten frame back out of the interface it came in on.
#[inline(always)]
pub fn tx(reason: Stat) -> u32 {
    count(reason);
    xdp_action::XDP_TX
}
