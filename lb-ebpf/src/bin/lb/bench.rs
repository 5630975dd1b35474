//! Benchmark harness (not on any production path). BPF_PROG_TEST_RUN repeats a program on one
//! buffer, so each iteration would see the previous iteration's output: this program puts the
//! template frame back (head and bytes) and tail-calls the program under test, the same way for
//! the balancer and for the MAC-swap floor, so its cost cancels out in their ratio.

use crate::{counters::count, maps::{BENCH_FRAME, BENCH_TARGET}};
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{BenchFrame, Stat, BENCH_FRAME_LEN, IPV4_HDR_LEN, IPV6_HDR_LEN};
use lb_ebpf::packet::{adjust_head, is_exactly, ptr_at};

#[inline(always)]
pub fn restore_and_run(ctx: &XdpContext) -> u32 {
    // Programs under test only ever grow the head, by an outer IPv4 or IPv6 header, so trimming
    // that restores the template's start; the tail never moves on the paths measured.
    for grown in [IPV6_HDR_LEN, IPV4_HDR_LEN] {
        if is_exactly(ctx, BENCH_FRAME_LEN + grown) && !adjust_head(ctx, grown as i32) {
            return xdp_action::XDP_ABORTED;
        }
    }
    if !is_exactly(ctx, BENCH_FRAME_LEN) {
        return xdp_action::XDP_ABORTED;
    }
    let (Some(template), Some(frame)) = (BENCH_FRAME.get(0), ptr_at::<BenchFrame>(ctx, 0)) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: ptr_at checked BENCH_FRAME_LEN bytes of frame.
    unsafe { *frame = *template };
    count(Stat::BenchRestored);
    // SAFETY: tail call into a program of the same type; returns only if the slot is empty.
    unsafe { BENCH_TARGET.tail_call(ctx, 0) };
    xdp_action::XDP_ABORTED
}
