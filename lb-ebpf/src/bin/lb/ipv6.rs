//! IPv6: as IPv4. Extension headers in front of the transport header are dropped when the
//! packet is for a VIP address (the fragment header as a fragment).

use crate::{
    forward::forward,
    icmp,
    ipv4::reject,
    l4,
    packet::{FlowKind, Packet},
    verdict::{pass, Verdict},
    vip,
};
use aya_ebpf::programs::XdpContext;
use lb_common::{
    FlowKey, Stat, FAMILY_V6, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IPV6_HDR_LEN, NEXTHDR_AUTH,
    NEXTHDR_DEST, NEXTHDR_FRAGMENT, NEXTHDR_HIP, NEXTHDR_HOP, NEXTHDR_MOBILITY, NEXTHDR_ROUTING,
    NEXTHDR_SHIM6,
};
use lb_ebpf::{
    hdr::Ipv6Hdr,
    l2::L2,
    packet::{holds, read_at},
};

/// `L3`: where the IP header starts (see ipv4.rs).
#[inline(always)]
pub fn process<const L3: usize, const TRACED: bool>(ctx: &XdpContext, l2: &L2) -> Verdict {
    let Some(ip) = read_at::<Ipv6Hdr>(ctx, L3) else {
        return pass(Stat::PassMalformed);
    };
    if !vip::may_be_vip_address(&ip.dst, FAMILY_V6) {
        return pass(Stat::PassNotVip);
    }
    if u32::from_be(ip.vtc_flow) >> 28 != 6 {
        return reject(ip.dst, FAMILY_V6, Stat::DropMalformed);
    }
    let ip_len = IPV6_HDR_LEN + u16::from_be(ip.payload_len) as usize;
    let l4_off = L3 + IPV6_HDR_LEN;
    let (flow, kind) = match ip.next_hdr {
        IPPROTO_TCP | IPPROTO_UDP => match l4::parse(ctx, l4_off, L3 + ip_len, ip.next_hdr) {
            Ok(l4) => (
                FlowKey::new(
                    ip.src,
                    ip.dst,
                    l4.ports.src,
                    l4.ports.dst,
                    ip.next_hdr,
                    FAMILY_V6,
                ),
                l4.kind,
            ),
            Err(reason) => return reject(ip.dst, FAMILY_V6, reason),
        },
        IPPROTO_ICMPV6 => match icmp::error_flow_v6::<L3>(ctx, &ip.dst) {
            Some(flow) => (flow, FlowKind::IcmpError),
            None => return pass(Stat::PassNotVip),
        },
        NEXTHDR_FRAGMENT => return reject(ip.dst, FAMILY_V6, Stat::DropFragment),
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_AUTH | NEXTHDR_DEST | NEXTHDR_MOBILITY
        | NEXTHDR_HIP | NEXTHDR_SHIM6 => return reject(ip.dst, FAMILY_V6, Stat::DropIpv6ExtHeader),
        _ => return pass(Stat::PassNotVip),
    };
    // After the transport header on purpose (see ipv4.rs).
    if !holds(ctx, L3 + ip_len) {
        return reject(ip.dst, FAMILY_V6, Stat::DropMalformed);
    }
    let pkt = Packet {
        l2: *l2,
        family: FAMILY_V6,
        ip_len,
        tos: ip.traffic_class(),
    };
    forward::<L3, TRACED>(ctx, &pkt, &flow, kind)
}
