//! The balancer: XDP program `xdp_lb`, read top to bottom:
//! `l2` (lb-ebpf) -> `ipv4` / `ipv6` (validate, `vip` address filter, `l4` / `icmp` flow) ->
//! `forward` (`vip` lookup; `mac`: addressed to us?; `trailer` cut; the flow's slot from
//! `maglev`, and `conntrack` only in a moved slot; MTU check with `icmp`; `counters`; `encap`)
//! -> `verdict`.
//! `tc_probe_encap` (TC egress, `probe`) encapsulates the agent's health-check probes as
//! `xdp_lb` encapsulates client packets.
//! `xdp_reflect` (MAC swap + XDP_TX) is the benchmark floor; `xdp_bench_lb` / `xdp_bench_reflect`
//! are the benchmark twins, `xdp_bench_gen` / `xdp_bench_sink` the forwarding benchmark's ends.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod bench;
mod conntrack;
mod counters;
mod encap;
mod forward;
mod icmp;
mod ipv4;
mod ipv6;
mod l4;
mod log;
mod mac;
mod maglev;
mod maps;
mod packet;
mod probe;
mod trace;
mod trailer;
mod verdict;
mod vip;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use lb_common::{Stat, ETH_HDR_LEN, ETH_P_IP, ETH_P_IPV6, VLAN_HDR_LEN};
use lb_ebpf::{hdr::EthHdr, l2, packet::ptr_at};
use verdict::Verdict;

// `#[inline(always)]` on the function the macro wraps: otherwise its body is a BPF-to-BPF call of
// its own, a second stack frame and a call per packet.
#[xdp]
#[inline(always)]
pub fn xdp_lb(ctx: XdpContext) -> u32 {
    run(&ctx)
}

/// The one place a verdict is counted, with its reason, and traced when a trace runs. The
/// traced packet takes a copy of the path of its own (`TRACED`): the forwarding path pays one
/// lookup and one branch for the trace, and keeps its registers and stack as they were.
#[inline(always)]
fn run(ctx: &XdpContext) -> u32 {
    // The logging variant has no stack to spare for the traced copy (docs/design.md).
    if cfg!(not(feature = "ebpf-log")) && trace::start(ctx) {
        let verdict = balance::<true>(ctx);
        counters::count(verdict.reason);
        log::verdict(ctx, &verdict);
        trace::finish(ctx, &verdict);
        return verdict.action;
    }
    let verdict = balance::<false>(ctx);
    counters::count(verdict.reason);
    log::verdict(ctx, &verdict);
    verdict.action
}

#[inline(always)]
fn balance<const TRACED: bool>(ctx: &XdpContext) -> Verdict {
    let Some(l2) = l2::parse(ctx) else {
        return verdict::pass(Stat::PassMalformed);
    };
    if l2.tag.is_some() {
        network::<{ ETH_HDR_LEN + VLAN_HDR_LEN }, TRACED>(ctx, &l2)
    } else {
        network::<ETH_HDR_LEN, TRACED>(ctx, &l2)
    }
}

#[inline(always)]
fn network<const L3: usize, const TRACED: bool>(ctx: &XdpContext, l2: &l2::L2) -> Verdict {
    if l2.proto == ETH_P_IP.to_be() {
        ipv4::process::<L3, TRACED>(ctx, l2)
    } else if l2.proto == ETH_P_IPV6.to_be() {
        ipv6::process::<L3, TRACED>(ctx, l2)
    } else {
        verdict::pass(Stat::PassNotVip)
    }
}

/// TC egress of the balancer's interface: health-check probes (marked by the agent) leave
/// encapsulated to their backend, as client packets do (`probe`); the rest untouched.
#[classifier]
pub fn tc_probe_encap(ctx: TcContext) -> i32 {
    probe::egress(&ctx)
}

/// Swap source and destination MAC and send the frame back: the least an XDP forwarder can do.
#[xdp]
#[inline(always)]
pub fn xdp_reflect(ctx: XdpContext) -> u32 {
    reflect(&ctx)
}

#[inline(always)]
fn reflect(ctx: &XdpContext) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: bounds checked by ptr_at.
    unsafe { core::mem::swap(&mut (*eth).src, &mut (*eth).dst) };
    xdp_action::XDP_TX
}

/// Benchmark twins: the same code as `xdp_lb` and `xdp_reflect`, inlined behind the harness
/// that restores the template frame before every iteration.
#[xdp]
#[inline(always)]
pub fn xdp_bench_lb(ctx: XdpContext) -> u32 {
    if !bench::restore(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    run(&ctx)
}

#[xdp]
#[inline(always)]
pub fn xdp_bench_reflect(ctx: XdpContext) -> u32 {
    if !bench::restore(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    reflect(&ctx)
}

/// Forwarding benchmark's generator, run with BPF_PROG_TEST_RUN in live-frames mode on the
/// veth in front of the balancer: each frame is the template (one of `flows` flows), sent out.
#[xdp]
pub fn xdp_bench_gen(ctx: XdpContext) -> u32 {
    if !bench::restore(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    xdp_action::XDP_TX
}

/// Forwarding benchmark's sink on that veth: counts and drops what the program under test sent.
#[xdp]
pub fn xdp_bench_sink(_ctx: XdpContext) -> u32 {
    bench::sink()
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable: the verifier rejects any program whose panic path it can reach.
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
