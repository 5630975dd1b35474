//! Backend side of direct server return: `xdp_decap` strips the outer IPv4/IPv6 header of
//! IPIP, IPv6-in-IPv6, IPv4-in-IPv6 and IPv6-in-IPv4 packets addressed to this host (addresses in
//! `DECAP_DSTS`) and passes the client's packet up the stack, which answers it from the VIP on
//! loopback straight to the client. Everything else passes untouched.
//! `xdp_pass` passes everything: veth peers need an XDP program to receive XDP_TX frames.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

use aya_ebpf::{
    bindings::xdp_action,
    macros::xdp,
    maps::{HashMap, PerCpuArray},
    programs::XdpContext,
};
use lb_common::{
    AddrKey, DecapStat, DECAP_MAX_LOCALS, DECAP_STAT_COUNT, ETH_P_IP, ETH_P_IPV6, FAMILY_V4,
    FAMILY_V6, IPPROTO_IPIP, IPPROTO_IPV6, IPV4_FRAG_OFFSET_MASK, IPV4_HDR_LEN, IPV4_MF,
    IPV6_HDR_LEN,
};
use lb_ebpf::{
    hdr::{Ipv4Hdr, Ipv6Hdr},
    increment,
    l2::{self, L2},
    named_map,
    packet::{adjust_head, ptr_at, read_at},
};

named_map! {
    /// Local addresses this host decapsulates for (value unused), written by `lb-agent decap`.
    static DECAP_DSTS: HashMap<AddrKey, u32> = HashMap::with_max_entries(DECAP_MAX_LOCALS, 0);
}

named_map! {
    static DECAP_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DECAP_STAT_COUNT, 0);
}

#[inline(always)]
fn count(stat: DecapStat) {
    increment(&DECAP_STATS, stat as u32)
}

/// A tunnel packet to strip: outer header length and the inner EtherType.
struct Tunnel {
    outer_len: usize,
    inner_proto: u16,
}

enum Verdict {
    Strip(Tunnel),
    Pass,
    Malformed,
}

#[xdp]
pub fn xdp_decap(ctx: XdpContext) -> u32 {
    let Some(l2) = l2::parse(&ctx) else {
        count(DecapStat::Pass);
        return xdp_action::XDP_PASS;
    };
    let verdict = if l2.proto == ETH_P_IP.to_be() {
        classify_v4(&ctx, &l2)
    } else if l2.proto == ETH_P_IPV6.to_be() {
        classify_v6(&ctx, &l2)
    } else {
        Verdict::Pass
    };
    match verdict {
        Verdict::Pass => {
            count(DecapStat::Pass);
            xdp_action::XDP_PASS
        }
        Verdict::Malformed => {
            count(DecapStat::DropMalformed);
            xdp_action::XDP_DROP
        }
        Verdict::Strip(tunnel) => strip(&ctx, &l2, &tunnel),
    }
}

#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn is_local(addr: [u32; 4], family: u8) -> bool {
    let key = AddrKey {
        addr,
        family,
        _pad: [0; 3],
    };
    // SAFETY: only presence is checked.
    unsafe { DECAP_DSTS.get(key).is_some() }
}

#[inline(always)]
fn classify_v4(ctx: &XdpContext, l2: &L2) -> Verdict {
    let Some(ip) = read_at::<Ipv4Hdr>(ctx, l2.header_len()) else {
        return Verdict::Pass;
    };
    // The balancer never sends options or fragments; anything else is the host's business.
    if ip.vihl != 0x45 || ip.frag & (IPV4_MF | IPV4_FRAG_OFFSET_MASK).to_be() != 0 {
        return Verdict::Pass;
    }
    if ip.proto != IPPROTO_IPIP && ip.proto != IPPROTO_IPV6 {
        return Verdict::Pass;
    }
    if !is_local([ip.dst, 0, 0, 0], FAMILY_V4) {
        return Verdict::Pass;
    }
    inner(ctx, l2.header_len() + IPV4_HDR_LEN, IPV4_HDR_LEN, ip.proto)
}

#[inline(always)]
fn classify_v6(ctx: &XdpContext, l2: &L2) -> Verdict {
    let Some(ip) = read_at::<Ipv6Hdr>(ctx, l2.header_len()) else {
        return Verdict::Pass;
    };
    if ip.next_hdr != IPPROTO_IPIP && ip.next_hdr != IPPROTO_IPV6 {
        return Verdict::Pass;
    }
    if !is_local(ip.dst, FAMILY_V6) {
        return Verdict::Pass;
    }
    inner(
        ctx,
        l2.header_len() + IPV6_HDR_LEN,
        IPV6_HDR_LEN,
        ip.next_hdr,
    )
}

/// Check the inner header is the version the outer one announces.
#[inline(always)]
fn inner(ctx: &XdpContext, off: usize, outer_len: usize, proto: u8) -> Verdict {
    let Some(first) = read_at::<u8>(ctx, off) else {
        return Verdict::Malformed;
    };
    let (version, inner_proto, long_enough) = if proto == IPPROTO_IPIP {
        (
            4,
            ETH_P_IP,
            ptr_at::<[u8; IPV4_HDR_LEN]>(ctx, off).is_some(),
        )
    } else {
        (
            6,
            ETH_P_IPV6,
            ptr_at::<[u8; IPV6_HDR_LEN]>(ctx, off).is_some(),
        )
    };
    if first >> 4 != version || !long_enough {
        return Verdict::Malformed;
    }
    Verdict::Strip(Tunnel {
        outer_len,
        inner_proto: inner_proto.to_be(),
    })
}

/// Move the link-layer header forward over the outer IP header and drop the space in front.
#[inline(always)]
fn strip(ctx: &XdpContext, l2: &L2, tunnel: &Tunnel) -> u32 {
    if !adjust_head(ctx, tunnel.outer_len as i32)
        || !l2::write(ctx, l2.eth.dst, l2.eth.src, l2.tag, tunnel.inner_proto)
    {
        count(DecapStat::DropMalformed);
        return xdp_action::XDP_DROP;
    }
    count(DecapStat::Decapsulated);
    xdp_action::XDP_PASS
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable: the verifier rejects any program whose panic path it can reach.
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
