//! Benchmark harness (not on any production path). BPF_PROG_TEST_RUN repeats a program on one
//! buffer, so each iteration would see the previous iteration's output: `restore` puts the
//! template frame back (head and bytes) in front of the balancer and of the MAC-swap floor alike.
//! The same restore makes the live-frames generator (`xdp_bench_gen`): in that mode the kernel
//! recycles pages that may still hold what the balancer wrote, so every frame is written whole.

use crate::maps::{BENCH_FRAME, BENCH_STATS};
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{
    BenchStat, BENCH_FRAME_LEN, BENCH_VARY_V4, BENCH_VARY_V6, ETH_HDR_LEN, IPV4_HDR_LEN,
    IPV6_HDR_LEN,
};
use lb_ebpf::{
    increment,
    packet::{adjust_head, is_exactly, ptr_at},
};

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
    // Word by word, volatile: a plain copy of the array compiles to 128 byte loads and stores
    // (the map value is only 4-aligned as LLVM sees it), 90 ns of a 100 ns harness; this is 6.
    let (src, dst) = (template.bytes.as_ptr() as *const u64, frame as *mut u64);
    for i in 0..WORDS {
        // SAFETY: ptr_at checked BENCH_FRAME_LEN bytes of frame; `bytes` is BENCH_FRAME_LEN
        // bytes at the start of the map value, which the kernel allocates 8-aligned.
        unsafe { core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i))) };
    }
    let flows = template.flows;
    match template.vary_source_port {
        BENCH_VARY_V4 => new_flow::<V4_SRC_LAST, { ETH_HDR_LEN + IPV4_HDR_LEN }>(ctx, flows),
        BENCH_VARY_V6 => new_flow::<V6_SRC_LAST, { ETH_HDR_LEN + IPV6_HDR_LEN }>(ctx, flows),
        _ => {}
    }
    increment(&BENCH_STATS, BenchStat::Restored as u32);
    true
}

/// Last byte of the IPv4 / IPv6 source address in an untagged frame.
const V4_SRC_LAST: usize = ETH_HDR_LEN + 15;
const V6_SRC_LAST: usize = ETH_HDR_LEN + 23;

/// A flow per iteration from this CPU's iteration count: as is (port only, wrapping at 65536)
/// or modulo `flows`, whose bits above the port's 16 go into the source address's last byte.
#[inline(always)]
fn new_flow<const ADDR: usize, const PORT: usize>(ctx: &XdpContext, flows: u32) {
    let n = BENCH_STATS
        .get(BenchStat::Restored as u32)
        .copied()
        .unwrap_or(0);
    let flow = match n.checked_rem(flows as u64) {
        Some(flow) => {
            if let Some(byte) = ptr_at::<u8>(ctx, ADDR) {
                // SAFETY: bounds checked by ptr_at.
                unsafe { *byte = (*byte).wrapping_add((flow >> 16) as u8) };
            }
            flow
        }
        None => n,
    };
    if let Some(port) = ptr_at::<u16>(ctx, PORT) {
        // SAFETY: bounds checked by ptr_at.
        unsafe { *port = (flow as u16).to_be() };
    }
}

/// Counting sink of the forwarding benchmark: what the balancer sent back arrives here.
#[inline(always)]
pub fn sink() -> u32 {
    increment(&BENCH_STATS, BenchStat::Sunk as u32);
    xdp_action::XDP_DROP
}
