//! Expected outputs, written from the RFCs independently of the data path's code: headers are
//! built with etherparse and checksums with a plain RFC 1071 sum.

use crate::frames::{LB_MAC, ROUTER_MAC};
use etherparse::{IpDscp, IpEcn, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// RFC 1071 over the concatenation of `parts` (each of even length but the last).
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u32 = 0;
    for chunk in bytes.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += word as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Where the IP packet starts in `frame` (after Ethernet and an optional 802.1Q tag).
pub fn l3_offset(frame: &[u8]) -> usize {
    if frame[12..14] == [0x81, 0x00] || frame[12..14] == [0x88, 0xa8] {
        18
    } else {
        14
    }
}

fn ip_len(ip: &[u8]) -> usize {
    if ip[0] >> 4 == 4 {
        u16::from_be_bytes([ip[2], ip[3]]) as usize
    } else {
        40 + u16::from_be_bytes([ip[4], ip[5]]) as usize
    }
}

fn tos(ip: &[u8]) -> u8 {
    if ip[0] >> 4 == 4 {
        ip[1]
    } else {
        ((u16::from_be_bytes([ip[0], ip[1]]) >> 4) & 0xff) as u8
    }
}

/// The link-layer header an encapsulated frame leaves with: to the gateway, from us, same tag.
fn l2_out(frame: &[u8], dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    let l3 = l3_offset(frame);
    let mut out = Vec::new();
    out.extend_from_slice(&dst);
    out.extend_from_slice(&src);
    if l3 == 18 {
        out.extend_from_slice(&frame[12..16]);
    }
    out.extend_from_slice(&ethertype.to_be_bytes());
    out
}

/// Outer header parameters the data path is configured with.
#[derive(Clone, Copy, Debug)]
pub struct Outer {
    pub src_v4: Ipv4Addr,
    pub src_v6: Ipv6Addr,
    pub ttl: u8,
}

/// `frame` (as received) encapsulated towards `backend`, with flow hash `hash`.
pub fn encapsulated(frame: &[u8], backend: IpAddr, outer: &Outer, hash: u32) -> Vec<u8> {
    let l3 = l3_offset(frame);
    let inner = &frame[l3..l3 + ip_len(&frame[l3..])];
    let inner_proto = if inner[0] >> 4 == 4 { 4 } else { 41 };
    let class = tos(inner);
    match backend {
        IpAddr::V4(dst) => {
            let mut out = l2_out(frame, ROUTER_MAC, LB_MAC, 0x0800);
            let mut h = Ipv4Header::new(
                inner.len() as u16,
                outer.ttl,
                IpNumber(inner_proto),
                outer.src_v4.octets(),
                dst.octets(),
            )
            .expect("valid IPv4 header");
            h.dont_fragment = true;
            h.identification = 0;
            h.dscp = IpDscp::try_new(class >> 2).expect("6-bit DSCP");
            h.ecn = IpEcn::try_new(class & 3).expect("2-bit ECN");
            h.header_checksum = h.calc_header_checksum();
            h.write(&mut out).expect("writing to a Vec");
            out.extend_from_slice(inner);
            out
        }
        IpAddr::V6(dst) => {
            let mut out = l2_out(frame, ROUTER_MAC, LB_MAC, 0x86dd);
            let h = Ipv6Header {
                traffic_class: class,
                flow_label: Ipv6FlowLabel::try_new(hash & 0xfffff).expect("20-bit label"),
                payload_length: inner.len() as u16,
                next_header: IpNumber(inner_proto),
                hop_limit: outer.ttl,
                source: outer.src_v6.octets(),
                destination: dst.octets(),
            };
            h.write(&mut out).expect("writing to a Vec");
            out.extend_from_slice(inner);
            out
        }
    }
}

/// ICMPv4 "fragmentation needed" answering `frame`, quoting its first `quote` bytes of IP.
pub fn frag_needed_v4(frame: &[u8], mtu: u16, quote: usize) -> Vec<u8> {
    let l3 = l3_offset(frame);
    let ip = &frame[l3..];
    let mut out = l2_out(frame, ROUTER_MAC, LB_MAC, 0x0800);
    let quoted = &ip[..quote];
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(quoted);
    let sum = internet_checksum(&[&icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut h = Ipv4Header::new(
        icmp.len() as u16,
        64,
        IpNumber::ICMP,
        [ip[16], ip[17], ip[18], ip[19]],
        [ip[12], ip[13], ip[14], ip[15]],
    )
    .expect("valid IPv4 header");
    h.dont_fragment = false;
    h.header_checksum = h.calc_header_checksum();
    h.write(&mut out).expect("writing to a Vec");
    out.extend_from_slice(&icmp);
    out
}

/// ICMPv6 "packet too big" answering `frame`.
pub fn packet_too_big_v6(frame: &[u8], mtu: u32, quote: usize) -> Vec<u8> {
    let l3 = l3_offset(frame);
    let ip = &frame[l3..];
    let src: [u8; 16] = ip[24..40].try_into().expect("16 bytes");
    let dst: [u8; 16] = ip[8..24].try_into().expect("16 bytes");
    let mut icmp = vec![2, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(&ip[..quote]);
    let len = (icmp.len() as u32).to_be_bytes();
    let sum = internet_checksum(&[&src, &dst, &len, &[0, 0, 0, 58], &icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut out = l2_out(frame, ROUTER_MAC, LB_MAC, 0x86dd);
    Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: icmp.len() as u16,
        next_header: IpNumber::IPV6_ICMP,
        hop_limit: 64,
        source: src,
        destination: dst,
    }
    .write(&mut out)
    .expect("writing to a Vec");
    out.extend_from_slice(&icmp);
    out
}

/// What the decap program leaves of a tunnel frame: same MACs, the inner packet.
pub fn decapsulated(frame: &[u8], outer_len: usize) -> Vec<u8> {
    let l3 = l3_offset(frame);
    let inner = &frame[l3 + outer_len..];
    let ethertype = if inner[0] >> 4 == 4 {
        0x0800u16
    } else {
        0x86dd
    };
    let mut out = frame[..12].to_vec();
    if l3 == 18 {
        out.extend_from_slice(&frame[12..16]);
    }
    out.extend_from_slice(&ethertype.to_be_bytes());
    out.extend_from_slice(inner);
    out
}
