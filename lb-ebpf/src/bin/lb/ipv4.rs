//! IPv4: validate, then hand the flow to forwarding. Anything not for a VIP address goes to the
//! host untouched; an invalid packet for a VIP address is dropped with its reason.

use crate::{
    forward::forward,
    icmp, l4,
    packet::{FlowKind, Packet},
    verdict::{drop, pass, Verdict},
    vip,
};
use aya_ebpf::programs::XdpContext;
use lb_common::{
    FlowKey, Stat, FAMILY_V4, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPV4_FRAG_OFFSET_MASK,
    IPV4_HDR_LEN, IPV4_MF,
};
use lb_ebpf::{
    hdr::Ipv4Hdr,
    l2::L2,
    packet::{holds, read_at},
};

/// Drop `reason` if `dst` carries a VIP; otherwise it is the host's packet.
#[inline(always)]
pub fn reject(dst: [u32; 4], family: u8, reason: Stat) -> Verdict {
    if vip::address_flags(dst, family).is_some() {
        drop(reason)
    } else {
        pass(Stat::PassNotVip)
    }
}

/// `L3`: where the IP header starts (14, or 18 behind a VLAN tag). A constant per
/// instantiation, so every packet offset the verifier checks is a constant.
#[inline(always)]
pub fn process<const L3: usize, const TRACED: bool>(ctx: &XdpContext, l2: &L2) -> Verdict {
    let Some(ip) = read_at::<Ipv4Hdr>(ctx, L3) else {
        return pass(Stat::PassMalformed);
    };
    let dst = [ip.dst, 0, 0, 0];
    if !vip::may_be_vip_address(&dst, FAMILY_V4) {
        return pass(Stat::PassNotVip);
    }
    if ip.vihl != 0x45 {
        // Options (IHL > 5) are legal but rare and make the transport offset variable: dropped
        // like Katran does. Any other version/IHL is malformed.
        let options = ip.vihl >> 4 == 4 && ip.vihl & 0x0f > 5;
        let reason = if options {
            Stat::DropIpv4Options
        } else {
            Stat::DropMalformed
        };
        return reject(dst, FAMILY_V4, reason);
    }
    let ip_len = u16::from_be(ip.tot_len) as usize;
    if ip_len < IPV4_HDR_LEN {
        return reject(dst, FAMILY_V4, Stat::DropMalformed);
    }
    // Later fragments carry no ports, so no fragment can be hashed consistently.
    if ip.frag & (IPV4_MF | IPV4_FRAG_OFFSET_MASK).to_be() != 0 {
        return reject(dst, FAMILY_V4, Stat::DropFragment);
    }
    let l4_off = L3 + IPV4_HDR_LEN;
    let (flow, kind) = match ip.proto {
        IPPROTO_TCP | IPPROTO_UDP => match l4::parse(ctx, l4_off, L3 + ip_len, ip.proto) {
            Ok(l4) => (
                FlowKey::new(
                    [ip.src, 0, 0, 0],
                    dst,
                    l4.ports.src,
                    l4.ports.dst,
                    ip.proto,
                    FAMILY_V4,
                ),
                l4.kind,
            ),
            Err(reason) => return reject(dst, FAMILY_V4, reason),
        },
        IPPROTO_ICMP => match icmp::error_flow_v4::<L3>(ctx, ip.dst) {
            Some(flow) => (flow, FlowKind::IcmpError),
            None => return pass(Stat::PassNotVip),
        },
        _ => return pass(Stat::PassNotVip),
    };
    // Checked after the transport header on purpose: done first, it lets LLVM drop the
    // per-header bounds checks as implied, which the verifier cannot follow.
    if !holds(ctx, L3 + ip_len) {
        return reject(dst, FAMILY_V4, Stat::DropMalformed);
    }
    let pkt = Packet {
        l2: *l2,
        family: FAMILY_V4,
        ip_len,
        tos: ip.tos,
    };
    forward::<L3, TRACED>(ctx, &pkt, &flow, kind)
}
