//! `tc_probe_encap`, on TC egress of the balancer's interface: health-check probes take the
//! client's path. The agent's probe sockets connect to VIP:port and carry the mark
//! `PROBE_MARK_TAG | backend id` (SO_MARK); this program wraps each marked packet in the outer
//! header `xdp_lb` puts on that backend's client packets (`encap::outer_v4` / `outer_v6`, same
//! flow hash, encap source, TTL and gateway MAC), so the backend's decapsulation, VIP address,
//! listener and firewall are all exercised. A marked packet is encapsulated or dropped, never
//! sent as it is (it would reach the VIP, i.e. this balancer, and be balanced to any backend).
//! Unmarked packets leave untouched.

use crate::{
    encap::{inner_proto, outer_len, outer_v4, outer_v6},
    maps::{BACKENDS, CONFIG, PROBE_STATS},
};
use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV6, TC_ACT_OK, TC_ACT_SHOT,
    },
    programs::TcContext,
};
use lb_common::{
    hash::flow_key_hash, probe_backend, Backend, FlowKey, LbConfig, ProbeStat, ETH_HDR_LEN,
    ETH_P_IP, ETH_P_IPV6, FAMILY_V4, FAMILY_V6, IPPROTO_TCP, IPV4_HDR_LEN, IPV6_HDR_LEN,
};
use lb_ebpf::{
    hdr::{EthHdr, Ipv4Hdr, Ipv6Hdr, Ports},
    increment,
};

/// The probe's IP packet: what the outer header and the flow hash are made of.
struct Inner {
    flow: FlowKey,
    ip_len: usize,
    tos: u8,
}

#[inline(always)]
fn verdict(stat: ProbeStat, action: i32) -> i32 {
    increment(&PROBE_STATS, stat as u32);
    action
}

#[inline(always)]
fn shot(stat: ProbeStat) -> i32 {
    verdict(stat, TC_ACT_SHOT)
}

#[inline(always)]
pub fn egress(ctx: &TcContext) -> i32 {
    // SAFETY: the context's sk_buff pointer is valid for the whole run.
    let (mark, gso_size) = unsafe { ((*ctx.skb.skb).mark, (*ctx.skb.skb).gso_size) };
    let Some(id) = probe_backend(mark) else {
        return verdict(ProbeStat::ProbePassUnmarked, TC_ACT_OK);
    };
    let backend = match BACKENDS.get(id) {
        Some(b) if !b.is_free() => *b,
        _ => return shot(ProbeStat::ProbeDropUnknownBackend),
    };
    let cfg = match CONFIG.get(0) {
        Some(cfg) if cfg.ready != 0 => cfg,
        _ => return shot(ProbeStat::ProbeDropUnconfigured),
    };
    let Some(inner) = parse(ctx) else {
        return shot(ProbeStat::ProbeDropMalformed);
    };
    // A GSO packet is cut to its segment size (which adjust_room shrinks by the outer header)
    // after this program; only a single packet can be too big here.
    if gso_size == 0 && inner.ip_len + outer_len(&backend) > cfg.mtu as usize {
        return shot(ProbeStat::ProbeDropTooBig);
    }
    if encapsulate(ctx, &inner, &backend, cfg).is_none() {
        return shot(ProbeStat::ProbeEncapFailed);
    }
    verdict(ProbeStat::ProbeEncapsulated, TC_ACT_OK)
}

/// TCP over IPv4 without options or over IPv6 without extension headers, right behind an
/// untagged Ethernet header: the only packets the agent's probe sockets send.
#[inline(always)]
fn parse(ctx: &TcContext) -> Option<Inner> {
    let eth: EthHdr = ctx.load(0).ok()?;
    let (flow, ip_len, tos, l4) = if eth.proto == ETH_P_IP.to_be() {
        let ip: Ipv4Hdr = ctx.load(ETH_HDR_LEN).ok()?;
        if ip.vihl != 0x45 || ip.proto != IPPROTO_TCP {
            return None;
        }
        let flow = FlowKey::new(
            [ip.src, 0, 0, 0],
            [ip.dst, 0, 0, 0],
            0,
            0,
            ip.proto,
            FAMILY_V4,
        );
        let len = u16::from_be(ip.tot_len) as usize;
        (flow, len, ip.tos, ETH_HDR_LEN + IPV4_HDR_LEN)
    } else if eth.proto == ETH_P_IPV6.to_be() {
        let ip: Ipv6Hdr = ctx.load(ETH_HDR_LEN).ok()?;
        if ip.next_hdr != IPPROTO_TCP {
            return None;
        }
        let flow = FlowKey::new(ip.src, ip.dst, 0, 0, ip.next_hdr, FAMILY_V6);
        let len = IPV6_HDR_LEN + u16::from_be(ip.payload_len) as usize;
        (flow, len, ip.traffic_class(), ETH_HDR_LEN + IPV6_HDR_LEN)
    } else {
        return None;
    };
    let ports: Ports = ctx.load(l4).ok()?;
    Some(Inner {
        flow: FlowKey {
            src_port: ports.src,
            dst_port: ports.dst,
            ..flow
        },
        ip_len,
        tos,
    })
}

/// Room for the outer header between Ethernet and the probe's IP header (the kernel updates the
/// packet's protocol, encapsulation and GSO state from the flags), then Ethernet towards the
/// gateway and the outer header written over it.
#[inline(always)]
fn encapsulate(ctx: &TcContext, inner: &Inner, backend: &Backend, cfg: &LbConfig) -> Option<()> {
    // The hash xdp_lb computes for the same 5-tuple (vip flags 0), so a probe's outer source
    // is the one a client packet of this flow would get.
    let hash = flow_key_hash(&inner.flow, 0, &cfg.flow_hash_key);
    let proto = inner_proto(inner.flow.family);
    let outer = outer_len(backend);
    let v4 = backend.family == FAMILY_V4;
    let flags = if v4 {
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4
    } else {
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV6
    };
    ctx.adjust_room(outer as i32, BPF_ADJ_ROOM_MAC, flags as u64)
        .ok()?;
    let mut eth: EthHdr = ctx.load(0).ok()?;
    // SAFETY: gateway_mac is 6 bytes at offset 0 of a 4-aligned map value.
    eth.dst = unsafe { *(cfg.gateway_mac.as_ptr() as *const [u16; 3]) };
    if v4 {
        eth.proto = ETH_P_IP.to_be();
        outer_v4!(hdr, inner.tos, inner.ip_len, proto, backend, hash, cfg);
        ctx.store(ETH_HDR_LEN, &hdr, 0).ok()?;
    } else {
        eth.proto = ETH_P_IPV6.to_be();
        let hdr: Ipv6Hdr;
        outer_v6!(hdr, inner.tos, inner.ip_len, proto, backend, hash, cfg);
        ctx.store(ETH_HDR_LEN, &hdr, 0).ok()?;
    }
    ctx.store(0, &eth, 0).ok()
}
