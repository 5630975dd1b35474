//! Every constant the data path and the agent agree on, in one place.

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
/// Words of the `ADDR_FILTER` bitmap (64 bits each): 65536 bits, so a few hundred VIP addresses
/// leave well under 1% of other addresses to a false positive (which costs one lookup).
pub const ADDR_FILTER_WORDS: u32 = 1024;

/// Default SYN-flood guard: new connection-table entries per CPU per second (Katran's figure).
pub const DEFAULT_NEW_FLOWS_PER_SEC: u32 = 125_000;
/// Default outer TTL / hop limit.
pub const DEFAULT_OUTER_TTL: u8 = 64;
/// Length of the frame the bench harness restores before each iteration.
pub const BENCH_FRAME_LEN: usize = 128;

// Wire constants.
pub const ETH_HDR_LEN: usize = 14;
pub const VLAN_HDR_LEN: usize = 4;
pub const IPV4_HDR_LEN: usize = 20;
pub const IPV6_HDR_LEN: usize = 40;
pub const TCP_HDR_LEN: usize = 20;
pub const UDP_HDR_LEN: usize = 8;
pub const ICMP_HDR_LEN: usize = 8;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;

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
