//! Every constant the data path and the agent agree on, in one place.

use network_types::{
    eth::{EthHdr, EtherType},
    icmp::Icmpv4Hdr,
    ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};

/// Default Maglev table size per VIP (prime). A deployment may choose another prime at load time.
pub const DEFAULT_TABLE_SIZE: u32 = 65537;
/// Default capacity of the VIP maps; each VIP owns two tables of `table_size` slots.
pub const DEFAULT_MAX_VIPS: u32 = 64;
/// Slots per element of `MAGLEV` and `MAGLEV_PREVIOUS` (2-byte halves, `[u16; 4]`): the kernel
/// pads array elements to 8 bytes, so one 2-byte half per element would quadruple the tables'
/// cache and TLB footprint.
pub const SLOTS_PER_ELEMENT: u32 = 4;
/// Capacity of the `BACKENDS` array (backend ids are `0..MAX_BACKENDS`).
pub const MAX_BACKENDS: u32 = 16384;
/// Default connection-table capacity compiled into the object; the agent sets its own.
pub const DEFAULT_CONN_TABLE_ENTRIES: u32 = 65536;
/// Capacity of the decap program's `DECAP_DSTS` (the backend's own tunnel addresses).
pub const DECAP_MAX_LOCALS: u32 = 64;
/// Words of the `ADDR_FILTER` bitmap (64 bits each): 65536 bits, so a few hundred VIP addresses
/// leave well under 1% of other addresses to a false positive (which costs one lookup).
pub const ADDR_FILTER_WORDS: u32 = 1024;

/// Health-check probes through the tunnel (`tc_probe_encap`): the agent marks each probe socket
/// (SO_MARK) with this tag in the high half and the backend id in the low half; the TC egress
/// program encapsulates marked packets to that backend and leaves every other packet alone. A
/// tag rather than a bare id, so marks other software sets on this host are not mistaken for
/// probes (its high half spells "lb").
pub const PROBE_MARK_TAG: u32 = 0x6c62_0000;
/// The part of the mark that must equal [`PROBE_MARK_TAG`].
pub const PROBE_MARK_TAG_MASK: u32 = 0xffff_0000;
/// The part of the mark that holds the backend id (`MAX_BACKENDS` fits).
pub const PROBE_MARK_ID_MASK: u32 = 0x0000_ffff;

/// The mark of a probe for backend `id`.
pub const fn probe_mark(id: u32) -> u32 {
    PROBE_MARK_TAG | (id & PROBE_MARK_ID_MASK)
}

/// The backend id a probe mark names; `None` for any other mark.
#[inline(always)]
pub const fn probe_backend(mark: u32) -> Option<u32> {
    if mark & PROBE_MARK_TAG_MASK == PROBE_MARK_TAG {
        Some(mark & PROBE_MARK_ID_MASK)
    } else {
        None
    }
}

const _: () = assert!(MAX_BACKENDS <= PROBE_MARK_ID_MASK + 1);

/// Default SYN-flood guard: new connection-table entries per CPU per second (Katran's figure).
pub const DEFAULT_NEW_FLOWS_PER_SEC: u32 = 125_000;
/// Default outer TTL / hop limit.
pub const DEFAULT_OUTER_TTL: u8 = 64;
/// Length of the frame the bench harness restores before each iteration.
pub const BENCH_FRAME_LEN: usize = 128;

// Packet trace (`lb-agent trace`, `trace.rs`).
/// Bytes of each frame copied into an event, as received and as sent.
pub const TRACE_SNAP_LEN: usize = 256;
/// Size of the `TRACE_EVENTS` ring buffer (a power of two, a multiple of the page size):
/// about 450 events in flight.
pub const TRACE_RING_BYTES: u32 = 256 * 1024;
/// How long a renewal of `until_ns` keeps the trace on; the tracer renews it every second.
pub const TRACE_LEASE_NS: u64 = 3_000_000_000;

// Wire constants, taken from `network-types` (constants only: its header structs keep
// multi-byte fields as byte arrays, which the BPF backend reads byte by byte; see
// docs/design.md). EtherTypes are host order here; the data path compares `.to_be()`.
pub const ETH_HDR_LEN: usize = EthHdr::LEN;
pub const VLAN_HDR_LEN: usize = VlanHdr::LEN;
pub const IPV4_HDR_LEN: usize = Ipv4Hdr::LEN;
pub const IPV6_HDR_LEN: usize = Ipv6Hdr::LEN;
pub const TCP_HDR_LEN: usize = TcpHdr::LEN;
pub const UDP_HDR_LEN: usize = UdpHdr::LEN;
pub const ICMP_HDR_LEN: usize = Icmpv4Hdr::LEN;

pub const ETH_P_IP: u16 = u16::from_be(EtherType::Ipv4 as u16);
pub const ETH_P_IPV6: u16 = u16::from_be(EtherType::Ipv6 as u16);
pub const ETH_P_8021Q: u16 = u16::from_be(EtherType::Ieee8021q as u16);
pub const ETH_P_8021AD: u16 = u16::from_be(EtherType::Ieee8021ad as u16);

pub const IPPROTO_IPIP: u8 = IpProto::Ipv4 as u8;
pub const IPPROTO_TCP: u8 = IpProto::Tcp as u8;
pub const IPPROTO_UDP: u8 = IpProto::Udp as u8;
pub const IPPROTO_IPV6: u8 = IpProto::Ipv6 as u8;
pub const IPPROTO_ICMP: u8 = IpProto::Icmp as u8;
pub const IPPROTO_ICMPV6: u8 = IpProto::Ipv6Icmp as u8;

/// IPv6 extension headers the balancer drops in front of the transport header.
pub const NEXTHDR_HOP: u8 = IpProto::HopOpt as u8;
pub const NEXTHDR_ROUTING: u8 = IpProto::Ipv6Route as u8;
pub const NEXTHDR_FRAGMENT: u8 = IpProto::Ipv6Frag as u8;
pub const NEXTHDR_AUTH: u8 = IpProto::Ah as u8;
pub const NEXTHDR_DEST: u8 = IpProto::Ipv6Opts as u8;
pub const NEXTHDR_MOBILITY: u8 = IpProto::MobilityHeader as u8;
pub const NEXTHDR_HIP: u8 = IpProto::Hip as u8;
pub const NEXTHDR_SHIM6: u8 = IpProto::Shim6 as u8;

/// IPv4 flags/fragment-offset field: MF bit and offset mask (host order).
pub const IPV4_MF: u16 = 0x2000;
pub const IPV4_DF: u16 = 0x4000;
pub const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;

pub const TCP_FLAG_SYN: u8 = 0x02;
pub const TCP_FLAG_ACK: u8 = 0x10;

pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_FRAG_NEEDED: u8 = 4;
pub const ICMP_SOURCE_QUENCH: u8 = 4;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;
pub const ICMPV6_DEST_UNREACH: u8 = 1;
pub const ICMPV6_PKT_TOO_BIG: u8 = 2;
pub const ICMPV6_TIME_EXCEEDED: u8 = 3;
pub const ICMPV6_PARAM_PROB: u8 = 4;

/// Bytes of the offending packet quoted in a generated "fragmentation needed" (RFC 792 asks for
/// the IP header and 8 bytes; more helps the client match its socket).
pub const ICMP_V4_QUOTE_LEN: usize = 64;
/// Bytes quoted in a generated ICMPv6 "packet too big".
pub const ICMP_V6_QUOTE_LEN: usize = 128;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_marks_round_trip_and_foreign_marks_are_not_probes() {
        for id in [0, 1, 4242, MAX_BACKENDS - 1] {
            assert_eq!(probe_backend(probe_mark(id)), Some(id));
        }
        for foreign in [0, 1, 0x6c61_0001, 0x0000_6c62, 0xffff_ffff, 0x6c63_0000] {
            assert_eq!(probe_backend(foreign), None, "{foreign:#x}");
        }
    }

    /// The values the data path was written against (network-types is pinned, but a header
    /// length or protocol number changing under us must not go unnoticed).
    #[test]
    fn wire_constants_are_the_standard_ones() {
        assert_eq!(
            [ETH_HDR_LEN, VLAN_HDR_LEN, IPV4_HDR_LEN, IPV6_HDR_LEN],
            [14, 4, 20, 40]
        );
        assert_eq!([TCP_HDR_LEN, UDP_HDR_LEN, ICMP_HDR_LEN], [20, 8, 8]);
        assert_eq!(
            [ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD],
            [0x0800, 0x86dd, 0x8100, 0x88a8]
        );
        assert_eq!(
            [
                IPPROTO_ICMP,
                IPPROTO_IPIP,
                IPPROTO_TCP,
                IPPROTO_UDP,
                IPPROTO_IPV6,
                IPPROTO_ICMPV6
            ],
            [1, 4, 6, 17, 41, 58]
        );
        assert_eq!(
            [
                NEXTHDR_HOP,
                NEXTHDR_ROUTING,
                NEXTHDR_FRAGMENT,
                NEXTHDR_AUTH,
                NEXTHDR_DEST,
                NEXTHDR_MOBILITY,
                NEXTHDR_HIP,
                NEXTHDR_SHIM6
            ],
            [0, 43, 44, 51, 60, 135, 139, 140]
        );
    }
}
