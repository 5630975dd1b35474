//! aya-log of the rare events, in the `ebpf-log` build variant only (`lb-agent run
//! --ebpf-log`): ICMP "too big" sent, moved-slot decisions, drops with their reason, each with
//! the packet's flow. Without the feature every function here is empty: the default data path
//! has no logging at all (docs/design.md says why).

use crate::verdict::Verdict;
use aya_ebpf::programs::XdpContext;
use lb_common::FlowKey;

#[cfg(feature = "ebpf-log")]
mod on {
    use aya_ebpf::programs::XdpContext;
    use aya_log_ebpf::{info, warn};
    use lb_common::{FlowKey, ETH_HDR_LEN, ETH_P_IP, ETH_P_IPV6, FAMILY_V4, VLAN_HDR_LEN};
    use lb_ebpf::{
        hdr::{Ipv4Hdr, Ipv6Hdr},
        l2,
        packet::read_at,
    };

    // Each record is a BPF subprogram of its own, called from `xdp_lb`, whose frame leaves
    // about 40 of the verifier's 512 stack bytes: only scalars (an IPv4 address as a number,
    // ports, ids) fit there. IPv6 records therefore carry no address (docs/design.md).
    fn v4(word: u32) -> u32 {
        u32::from_be(word)
    }

    pub fn too_big(ctx: &XdpContext, flow: &FlowKey) {
        let (sp, dp) = (u16::from_be(flow.src_port), u16::from_be(flow.dst_port));
        if flow.family == FAMILY_V4 {
            too_big_v4(ctx, v4(flow.src[0]), sp, v4(flow.dst[0]), dp)
        } else {
            too_big_v6(ctx, sp, dp)
        }
    }

    #[inline(never)]
    fn too_big_v4(ctx: &XdpContext, src: u32, sp: u16, dst: u32, dp: u16) {
        info!(
            ctx,
            "icmp too big sent to {:i}:{} for {:i}:{}", src, sp, dst, dp
        );
    }

    #[inline(never)]
    fn too_big_v6(ctx: &XdpContext, sp: u16, dp: u16) {
        info!(
            ctx,
            "icmp too big sent to an IPv6 client, port {} for VIP port {}", sp, dp
        );
    }

    pub fn moved(ctx: &XdpContext, flow: &FlowKey, backend: u32, reason: u32) {
        let sp = u16::from_be(flow.src_port);
        if flow.family == FAMILY_V4 {
            moved_v4(ctx, v4(flow.src[0]), sp, backend, reason)
        } else {
            moved_v6(ctx, sp, backend, reason)
        }
    }

    #[inline(never)]
    fn moved_v4(ctx: &XdpContext, src: u32, sp: u16, backend: u32, reason: u32) {
        info!(
            ctx,
            "moved slot: client {:i}:{} to backend #{} (reason #{})", src, sp, backend, reason
        );
    }

    #[inline(never)]
    fn moved_v6(ctx: &XdpContext, sp: u16, backend: u32, reason: u32) {
        info!(
            ctx,
            "moved slot: IPv6 client port {} to backend #{} (reason #{})", sp, backend, reason
        );
    }

    /// A drop can come before the flow is parsed (fragments, options, malformed headers): the
    /// frame's addresses, read again.
    #[inline(always)]
    fn drop_at<const L3: usize>(ctx: &XdpContext, proto: u16, reason: u32) {
        if proto == ETH_P_IP.to_be() {
            if let Some(ip) = read_at::<Ipv4Hdr>(ctx, L3) {
                return drop_v4(ctx, reason, v4(ip.src), v4(ip.dst), ip.proto);
            }
        } else if proto == ETH_P_IPV6.to_be() {
            if let Some(ip) = read_at::<Ipv6Hdr>(ctx, L3) {
                return drop_v6(ctx, reason, ip.next_hdr);
            }
        }
        drop_short(ctx, reason)
    }

    #[inline(never)]
    fn drop_v4(ctx: &XdpContext, reason: u32, src: u32, dst: u32, proto: u8) {
        warn!(
            ctx,
            "drop reason #{}: {:i} > {:i} proto {}", reason, src, dst, proto
        );
    }

    #[inline(never)]
    fn drop_v6(ctx: &XdpContext, reason: u32, next: u8) {
        warn!(ctx, "drop reason #{}: IPv6, next header {}", reason, next);
    }

    #[inline(never)]
    fn drop_short(ctx: &XdpContext, reason: u32) {
        warn!(ctx, "drop reason #{}: no IP header", reason);
    }

    #[inline(always)]
    pub fn drop(ctx: &XdpContext, reason: u32) {
        match l2::parse(ctx) {
            Some(l2) if l2.tag.is_some() => {
                drop_at::<{ ETH_HDR_LEN + VLAN_HDR_LEN }>(ctx, l2.proto, reason)
            }
            Some(l2) => drop_at::<ETH_HDR_LEN>(ctx, l2.proto, reason),
            None => drop_short(ctx, reason),
        }
    }
}

/// The flow's packet was answered with ICMP "too big".
#[inline(always)]
pub fn too_big(ctx: &XdpContext, flow: &FlowKey) {
    #[cfg(feature = "ebpf-log")]
    on::too_big(ctx, flow);
    #[cfg(not(feature = "ebpf-log"))]
    let _ = (ctx, flow);
}

/// A moved slot sent the flow to `backend`; `reason` is the decision's counter.
#[inline(always)]
pub fn moved(ctx: &XdpContext, flow: &FlowKey, backend: u32, reason: lb_common::Stat) {
    #[cfg(feature = "ebpf-log")]
    on::moved(ctx, flow, backend, reason as u32);
    #[cfg(not(feature = "ebpf-log"))]
    let _ = (ctx, flow, backend, reason);
}

/// Every drop, with its reason.
#[inline(always)]
pub fn verdict(ctx: &XdpContext, v: &Verdict) {
    #[cfg(feature = "ebpf-log")]
    if v.action == aya_ebpf::bindings::xdp_action::XDP_DROP {
        on::drop(ctx, v.reason as u32);
    }
    #[cfg(not(feature = "ebpf-log"))]
    let _ = (ctx, v);
}
