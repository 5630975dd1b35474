//! ICMP: "fragmentation needed" / "packet too big" replies for frames that would exceed the MTU
//! once encapsulated, and the flow that an inbound ICMP error is about.

use crate::{
    packet::Packet,
    verdict::{drop, tx, Verdict},
};
use aya_ebpf::programs::XdpContext;
use lb_common::{
    FlowKey, Stat, DEFAULT_OUTER_TTL, ETH_P_IP, ETH_P_IPV6, FAMILY_V4, FAMILY_V6,
    ICMPV6_DEST_UNREACH, ICMPV6_PARAM_PROB, ICMPV6_PKT_TOO_BIG, ICMPV6_TIME_EXCEEDED,
    ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ICMP_HDR_LEN, ICMP_PARAMETER_PROBLEM, ICMP_SOURCE_QUENCH,
    ICMP_TIME_EXCEEDED, ICMP_V4_QUOTE_LEN, ICMP_V6_QUOTE_LEN, IPPROTO_ICMP, IPPROTO_ICMPV6,
    IPPROTO_TCP, IPPROTO_UDP, IPV4_HDR_LEN, IPV6_HDR_LEN,
};
use lb_ebpf::{
    csum,
    hdr::{IcmpHdr, Ipv4Hdr, Ipv6Hdr, Ports},
    l2,
    packet::{adjust_head, adjust_tail, is_exactly, ptr_at, read_at},
};

/// Answer the client with "too big" carrying `mtu` (the largest inner packet that fits).
#[inline(always)]
pub fn too_big<const L3: usize>(ctx: &XdpContext, pkt: &Packet, mtu: u16) -> Verdict {
    if !answerable::<L3>(ctx, pkt.family) {
        return drop(Stat::DropTooBigUnanswerable);
    }
    let sent = if pkt.family == FAMILY_V4 {
        too_big_v4::<L3>(ctx, pkt, mtu)
    } else {
        too_big_v6::<L3>(ctx, pkt, mtu)
    };
    match sent {
        Some(()) => tx(Stat::IcmpTooBigSent),
        None => drop(Stat::IcmpTooBigFailed),
    }
}

/// Whether the client's source may receive an ICMP error (RFC 1122 3.2.2, RFC 4443 2.4): not
/// an unspecified, loopback, multicast or broadcast address (IPv4: not 0/8, 127/8 or 224/3, which
/// covers 255.255.255.255; IPv6: not ::, ::1 or ff00::/8).
#[inline(always)]
fn answerable<const L3: usize>(ctx: &XdpContext, family: u8) -> bool {
    if family == FAMILY_V4 {
        let Some(ip) = read_at::<Ipv4Hdr>(ctx, L3) else {
            return false;
        };
        let first = u32::from_be(ip.src) >> 24;
        return first != 0 && first != 127 && first < 224;
    }
    let Some(ip) = read_at::<Ipv6Hdr>(ctx, L3) else {
        return false;
    };
    let s = ip.src;
    if u32::from_be(s[0]) >> 24 == 0xff {
        return false;
    }
    !(s[0] == 0 && s[1] == 0 && s[2] == 0 && (s[3] == 0 || s[3] == 1u32.to_be()))
}

/// Turn the frame into its own ICMP error: new headers in front, the original IP packet quoted
/// (cut to `quote` bytes), MACs reversed; the caller writes the IP and ICMP headers.
#[inline(always)]
fn reshape<const L3: usize>(
    ctx: &XdpContext,
    pkt: &Packet,
    headers: usize,
    quote: usize,
    ethertype: u16,
) -> Option<()> {
    if pkt.ip_len < quote {
        return None;
    }
    if !adjust_head(ctx, -(headers as i32)) {
        return None;
    }
    // The frame is the IP packet plus the new headers (`trailer` cut anything after the IP
    // packet); anything else is refused rather than guessed.
    let wanted = L3 + headers + quote;
    let now = L3 + headers + pkt.ip_len;
    if !is_exactly(ctx, now) || !adjust_tail(ctx, wanted as i32 - now as i32) {
        return None;
    }
    if !l2::write(ctx, pkt.l2.eth.src, pkt.l2.eth.dst, pkt.l2.tag, ethertype) {
        return None;
    }
    Some(())
}

#[inline(always)]
fn too_big_v4<const L3: usize>(ctx: &XdpContext, pkt: &Packet, mtu: u16) -> Option<()> {
    const HEADERS: usize = IPV4_HDR_LEN + ICMP_HDR_LEN;
    let orig: Ipv4Hdr = read_at(ctx, L3)?;
    reshape::<L3>(ctx, pkt, HEADERS, ICMP_V4_QUOTE_LEN, ETH_P_IP.to_be())?;
    let ip = ptr_at::<Ipv4Hdr>(ctx, L3)?;
    let icmp = ptr_at::<IcmpHdr>(ctx, L3 + IPV4_HDR_LEN)?;
    let quoted = ptr_at::<[u32; ICMP_V4_QUOTE_LEN / 4]>(ctx, L3 + HEADERS)?;
    let mut hdr = Ipv4Hdr {
        vihl: 0x45,
        tos: 0,
        tot_len: ((HEADERS + ICMP_V4_QUOTE_LEN) as u16).to_be(),
        id: 0,
        frag: 0,
        ttl: DEFAULT_OUTER_TTL,
        proto: IPPROTO_ICMP,
        check: 0,
        src: orig.dst,
        dst: orig.src,
    };
    hdr.check = crate::encap::ipv4_checksum(&hdr);
    let mut message = IcmpHdr {
        kind: ICMP_DEST_UNREACH,
        code: ICMP_FRAG_NEEDED,
        check: 0,
        rest: (mtu as u32).to_be(),
    };
    // SAFETY: all three pointers were bounds checked by ptr_at.
    unsafe {
        let mut sum = icmp_header_sum(&message);
        sum = csum::add_words(sum, &*quoted);
        message.check = csum::finish(sum);
        *ip = hdr;
        *icmp = message;
    }
    Some(())
}

#[inline(always)]
fn too_big_v6<const L3: usize>(ctx: &XdpContext, pkt: &Packet, mtu: u16) -> Option<()> {
    const HEADERS: usize = IPV6_HDR_LEN + ICMP_HDR_LEN;
    const ICMP_LEN: usize = ICMP_HDR_LEN + ICMP_V6_QUOTE_LEN;
    let orig: Ipv6Hdr = read_at(ctx, L3)?;
    reshape::<L3>(ctx, pkt, HEADERS, ICMP_V6_QUOTE_LEN, ETH_P_IPV6.to_be())?;
    let ip = ptr_at::<Ipv6Hdr>(ctx, L3)?;
    let icmp = ptr_at::<IcmpHdr>(ctx, L3 + IPV6_HDR_LEN)?;
    let quoted = ptr_at::<[u32; ICMP_V6_QUOTE_LEN / 4]>(ctx, L3 + HEADERS)?;
    let mut message = IcmpHdr {
        kind: ICMPV6_PKT_TOO_BIG,
        code: 0,
        check: 0,
        rest: (mtu as u32).to_be(),
    };
    // Pseudo-header: source, destination, upper-layer length, next header.
    let mut sum = icmp_header_sum(&message);
    for i in 0..4 {
        sum = csum::add32(sum, orig.dst[i]);
        sum = csum::add32(sum, orig.src[i]);
    }
    sum = csum::add32(sum, (ICMP_LEN as u32).to_be());
    sum = csum::add32(sum, (IPPROTO_ICMPV6 as u32).to_be());
    // SAFETY: all three pointers were bounds checked by ptr_at.
    unsafe {
        sum = csum::add_words(sum, &*quoted);
        message.check = csum::finish(sum);
        *ip = Ipv6Hdr {
            vtc_flow: (6u32 << 28).to_be(),
            payload_len: (ICMP_LEN as u16).to_be(),
            next_hdr: IPPROTO_ICMPV6,
            hop_limit: DEFAULT_OUTER_TTL,
            src: orig.dst,
            dst: orig.src,
        };
        *icmp = message;
    }
    Some(())
}

#[inline(always)]
fn icmp_header_sum(h: &IcmpHdr) -> u32 {
    // SAFETY: IcmpHdr is 8 plain bytes.
    let words: [u32; 2] = unsafe { core::mem::transmute(*h) };
    csum::add32(csum::add32(0, words[0]), words[1])
}

/// The client flow an ICMPv4 error (sent to `vip_addr`) is about: the quoted packet
/// went from the VIP to the client, so its tuple is reversed. `None`: not an error we route.
#[inline(always)]
pub fn error_flow_v4<const L3: usize>(ctx: &XdpContext, vip_addr: u32) -> Option<FlowKey> {
    let icmp: IcmpHdr = read_at(ctx, L3 + IPV4_HDR_LEN)?;
    if !matches!(
        icmp.kind,
        ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM | ICMP_SOURCE_QUENCH
    ) {
        return None;
    }
    let inner_off = L3 + IPV4_HDR_LEN + ICMP_HDR_LEN;
    let inner: Ipv4Hdr = read_at(ctx, inner_off)?;
    if inner.vihl != 0x45 || inner.src != vip_addr || !is_transport(inner.proto) {
        return None;
    }
    let ports: Ports = read_at(ctx, inner_off + IPV4_HDR_LEN)?;
    Some(FlowKey::new(
        [inner.dst, 0, 0, 0],
        [inner.src, 0, 0, 0],
        ports.dst,
        ports.src,
        inner.proto,
        FAMILY_V4,
    ))
}

/// As [`error_flow_v4`] for ICMPv6 errors.
#[inline(always)]
pub fn error_flow_v6<const L3: usize>(ctx: &XdpContext, vip_addr: &[u32; 4]) -> Option<FlowKey> {
    let icmp: IcmpHdr = read_at(ctx, L3 + IPV6_HDR_LEN)?;
    if !matches!(
        icmp.kind,
        ICMPV6_DEST_UNREACH | ICMPV6_PKT_TOO_BIG | ICMPV6_TIME_EXCEEDED | ICMPV6_PARAM_PROB
    ) {
        return None;
    }
    let inner_off = L3 + IPV6_HDR_LEN + ICMP_HDR_LEN;
    let inner: Ipv6Hdr = read_at(ctx, inner_off)?;
    if inner.src != *vip_addr || !is_transport(inner.next_hdr) {
        return None;
    }
    let ports: Ports = read_at(ctx, inner_off + IPV6_HDR_LEN)?;
    Some(FlowKey::new(
        inner.dst,
        inner.src,
        ports.dst,
        ports.src,
        inner.next_hdr,
        FAMILY_V6,
    ))
}

#[inline(always)]
fn is_transport(proto: u8) -> bool {
    proto == IPPROTO_TCP || proto == IPPROTO_UDP
}
