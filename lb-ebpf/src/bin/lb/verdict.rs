//! Every way the balancer ends a packet, with its reason. `xdp_lb` counts the reason of the
//! verdict it returns (and traces it, when a trace runs) in one place, `main::run`.

use aya_ebpf::bindings::xdp_action;
use lb_common::Stat;

#[derive(Clone, Copy)]
pub struct Verdict {
    pub action: u32,
    pub reason: Stat,
}

impl Verdict {
    #[inline(always)]
    const fn new(action: u32, reason: Stat) -> Self {
        Self { action, reason }
    }
}

/// Hand the frame to the host stack untouched.
#[inline(always)]
pub fn pass(reason: Stat) -> Verdict {
    Verdict::new(xdp_action::XDP_PASS, reason)
}

#[inline(always)]
pub fn drop(reason: Stat) -> Verdict {
    Verdict::new(xdp_action::XDP_DROP, reason)
}

/// Send the rewritten frame back out of the interface it came in on.
#[inline(always)]
pub fn tx(reason: Stat) -> Verdict {
    Verdict::new(xdp_action::XDP_TX, reason)
}
