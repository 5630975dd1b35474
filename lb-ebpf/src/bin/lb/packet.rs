//! What the parsers hand to forwarding: where the IP packet sits and what the outer header copies.

use lb_ebpf::l2::L2;

/// The client's IP packet as received.
#[derive(Clone, Copy)]
pub struct Packet {
    pub l2: L2,
    /// FAMILY_V4 or FAMILY_V6.
    pub family: u8,
    /// IP total length (IPv4 `tot_len`, IPv6 40 + payload length).
    pub ip_len: usize,
    /// TOS / traffic class: DSCP and ECN, copied to the outer header.
    pub tos: u8,
}

/// How the connection table treats a packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum FlowKind {
    /// TCP SYN: a new connection, never looked up in the connection table.
    Syn,
    /// TCP segment other than a SYN.
    TcpOther,
    Udp,
    /// ICMP error about a VIP flow: follows the flow, never creates an entry.
    IcmpError,
}
