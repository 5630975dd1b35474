//! Input frames, built with etherparse (an implementation independent of ours).

use etherparse::{PacketBuilder, VlanId};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The router in front of the balancer (source of client frames, gateway of encapsulated ones).
pub const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
/// The balancer's interface.
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

pub const SEQ: u32 = 0x0102_0304;
pub const WINDOW: u16 = 64240;

/// Flags of a TCP segment the tests send.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tcp {
    Syn,
    Ack,
}

pub fn tcp4(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: Tcp,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(ROUTER_MAC, LB_MAC)
        .ipv4(src.octets(), dst.octets(), 63)
        .tcp(sport, dport, SEQ, WINDOW);
    let b = match flags {
        Tcp::Syn => b.syn(),
        Tcp::Ack => b.ack(7),
    };
    let mut out = Vec::new();
    b.write(&mut out, payload).expect("writing to a Vec");
    out
}

pub fn tcp4_vlan(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, vlan: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(ROUTER_MAC, LB_MAC)
        .single_vlan(VlanId::try_new(vlan).expect("valid VLAN id"))
        .ipv4(src.octets(), dst.octets(), 63)
        .tcp(sport, dport, SEQ, WINDOW)
        .syn();
    let mut out = Vec::new();
    b.write(&mut out, &[]).expect("writing to a Vec");
    out
}

pub fn udp4(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(ROUTER_MAC, LB_MAC)
        .ipv4(src.octets(), dst.octets(), 63)
        .udp(sport, dport);
    let mut out = Vec::new();
    b.write(&mut out, payload).expect("writing to a Vec");
    out
}

pub fn tcp6(
    src: Ipv6Addr,
    sport: u16,
    dst: Ipv6Addr,
    dport: u16,
    flags: Tcp,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(ROUTER_MAC, LB_MAC)
        .ipv6(src.octets(), dst.octets(), 63)
        .tcp(sport, dport, SEQ, WINDOW);
    let b = match flags {
        Tcp::Syn => b.syn(),
        Tcp::Ack => b.ack(7),
    };
    let mut out = Vec::new();
    b.write(&mut out, payload).expect("writing to a Vec");
    out
}

/// An ARP request, as any host on the link sends.
pub fn arp_request() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&ROUTER_MAC);
    f.extend_from_slice(&[0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&ROUTER_MAC);
    f.extend_from_slice(&[198, 18, 0, 1]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[198, 18, 0, 2]);
    f
}

/// Offset of the IPv4/IPv6 header in an untagged frame.
pub const L3: usize = 14;

/// Recompute the IPv4 header checksum of an untagged frame after a test edited the header.
pub fn fix_ipv4_checksum(frame: &mut [u8]) {
    let ihl = (frame[L3] & 0x0f) as usize * 4;
    frame[L3 + 10] = 0;
    frame[L3 + 11] = 0;
    let sum = crate::expect::internet_checksum(&[&frame[L3..L3 + ihl]]);
    frame[L3 + 10..L3 + 12].copy_from_slice(&sum.to_be_bytes());
}
