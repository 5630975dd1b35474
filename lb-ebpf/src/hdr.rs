//! Wire headers with naturally typed fields.
//!
//! Multi-byte fields are read and written as whole integers in network order (never swapped on
//! the hot path). Headers sit at 2-byte aligned offsets; BPF on x86-64 and arm64 accepts
//! unaligned packet access (the verifier only enforces alignment with BPF_F_STRICT_ALIGNMENT),
//! and whole-word access is several times cheaper than the byte-wise code that byte-array
//! layouts (as in `network-types`, whose constants lb-common uses) make the BPF backend emit.

#[repr(C)]
#[derive(Clone, Copy)]
pub struct EthHdr {
    pub dst: [u16; 3],
    pub src: [u16; 3],
    pub proto: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct VlanHdr {
    pub tci: u16,
    pub proto: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv4Hdr {
    pub vihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub src: u32,
    pub dst: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv6Hdr {
    /// Version, traffic class and flow label.
    pub vtc_flow: u32,
    pub payload_len: u16,
    pub next_hdr: u8,
    pub hop_limit: u8,
    pub src: [u32; 4],
    pub dst: [u32; 4],
}

impl Ipv6Hdr {
    /// Traffic class (DSCP and ECN) of a header read from the wire.
    #[inline(always)]
    pub fn traffic_class(&self) -> u8 {
        (u32::from_be(self.vtc_flow) >> 20) as u8
    }
}

/// The part of the TCP and UDP headers the balancer reads: ports first in both.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ports {
    pub src: u16,
    pub dst: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct IcmpHdr {
    pub kind: u8,
    pub code: u8,
    pub check: u16,
    /// Unused / next-hop MTU (ICMPv4) or MTU (ICMPv6), network order.
    pub rest: u32,
}

/// Offset of the flags byte in the TCP header.
pub const TCP_FLAGS_OFFSET: usize = 13;

// Our layouts and network-types' header lengths (lb-common's constants) must agree.
const _: () = {
    use core::mem::size_of;
    use lb_common::{ETH_HDR_LEN, ICMP_HDR_LEN, IPV4_HDR_LEN, IPV6_HDR_LEN, VLAN_HDR_LEN};
    assert!(size_of::<EthHdr>() == ETH_HDR_LEN);
    assert!(size_of::<VlanHdr>() == VLAN_HDR_LEN);
    assert!(size_of::<Ipv4Hdr>() == IPV4_HDR_LEN);
    assert!(size_of::<Ipv6Hdr>() == IPV6_HDR_LEN);
    assert!(size_of::<IcmpHdr>() == ICMP_HDR_LEN);
};
