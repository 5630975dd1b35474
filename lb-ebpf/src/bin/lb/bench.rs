//! Benchmark harness (not on any production path). BPF_PROG_TEST_RUN repeats a program on one
//! buffer, so each iteration would see the previous iteration's output: `restore` puts the
//! template frame back (head and bytes) in front of the balancer and of the MAC-swap floor alike.

use crate::{
    counters::count,
    maps::{BENCH_FRAME, STATS},
};
use aya_ebpf::programs::XdpContext;
use lb_common::{
    Stat, BENCH_FRAME_LEN, BENCH_VARY_V4, BENCH_VARY_V6, ETH_HDR_LEN, IPV4_HDR_LEN, IPV6_HDR_LEN,
};
use lb_ebpf::packet::{adjust_head, is_exactly, ptr_at};

/// Restore the template frame; false if the frame is not one the harness produced.
#[inline(always)]
pub fn restore(ctx: &XdpContext) -> bool {
    // Programs under test only ever grow the head, by an outer IPv4 or IPv6 header, so trimming
    // that restores the template's start; the tail never moves on the paths measured.
    for grown in [IPV6_HDR_LEN, IPV4_HDR_LEN] {
        if is_exactly(ctx, BENCH_FRAME_LEN + grown) && !adjust_head(ctx, grown as i32) {
            return false;
        }
    }
    if !is_exactly(ctx, BENCH_FRAME_LEN) {
        return false;
    }
    const WORDS: usize = BENCH_FRAME_LEN / 8;
    let (Some(template), Some(frame)) = (BENCH_FRAME.get(0), ptr_at::<[u64; WORDS]>(ctx, 0)) else {
        return false;
    };
    // SAFETY: ptr_at checked BENCH_FRAME_LEN bytes of frame; `bytes` starts the 8-aligned value.
    unsafe { *frame = *(template.bytes.as_ptr() as *const [u64; WORDS]) };
    match template.vary_source_port {
        BENCH_VARY_V4 => new_source_port::<{ ETH_HDR_LEN + IPV4_HDR_LEN }>(ctx),
        BENCH_VARY_V6 => new_source_port::<{ ETH_HDR_LEN + IPV6_HDR_LEN }>(ctx),
        _ => {}
    }
    count(Stat::BenchRestored);
    true
}

/// A new flow every iteration: this CPU's iteration count becomes the TCP source port.
#[inline(always)]
fn new_source_port<const AT: usize>(ctx: &XdpContext) {
    let n = STATS.get(Stat::BenchRestored as u32).copied().unwrap_or(0);
    if let Some(port) = ptr_at::<u16>(ctx, AT) {
        // SAFETY: bounds checked by ptr_at.
        unsafe { *port = (n as u16).to_be() };
    }
}
