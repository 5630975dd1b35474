//! Map keys and values shared by the XDP programs (`lb-ebpf`) and the agent (`lb-agent`).
//!
//! This crate is the only definition of every layout that crosses the kernel boundary.
//! Addresses and ports are kept exactly as they appear on the wire (network byte order),
//! loaded as native-endian integers, so the data path never swaps bytes; the helpers
//! below convert from `core::net` types for the agent and tests.
#![no_std]

pub mod consts;
pub mod hash;
pub mod maps;
mod prime;
mod stats;
pub mod trace;

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use consts::*;
pub use prime::is_prime;
pub use stats::{
    BenchStat, DecapStat, ProbeStat, Stat, BENCH_STAT_COUNT, DECAP_STAT_COUNT, PROBE_STAT_COUNT,
    STAT_COUNT,
};
pub use trace::{
    TraceControl, TraceEvent, TraceHeader, TraceScratch, TRACE_ANY, TRACE_SLOT_MOVED,
    TRACE_SLOT_NONE, TRACE_SLOT_STABLE,
};

/// Address family tag stored in keys and backends.
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// IPv4 lives in `addr[0]`, the other words are zero; `family` keeps the two spaces apart.
#[inline(always)]
pub fn addr_words(ip: IpAddr) -> ([u32; 4], u8) {
    match ip {
        IpAddr::V4(v4) => (v4_word(v4), FAMILY_V4),
        IpAddr::V6(v6) => (v6_words(v6), FAMILY_V6),
    }
}

/// An IPv4 address as the data path loads it from a packet.
#[inline(always)]
pub fn v4_word(ip: Ipv4Addr) -> [u32; 4] {
    [u32::from_ne_bytes(ip.octets()), 0, 0, 0]
}

/// An IPv6 address as the data path loads it from a packet.
#[inline(always)]
pub fn v6_words(ip: Ipv6Addr) -> [u32; 4] {
    let o = ip.octets();
    let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

/// Inverse of [`addr_words`].
pub fn words_addr(addr: [u32; 4], family: u8) -> Option<IpAddr> {
    match family {
        FAMILY_V4 => Some(IpAddr::V4(Ipv4Addr::from(addr[0].to_ne_bytes()))),
        FAMILY_V6 => {
            let mut o = [0u8; 16];
            for (i, w) in addr.iter().enumerate() {
                o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => None,
    }
}

/// Key of the `VIPS` hash map: one VIP is (address, port, protocol). Port 0 matches any port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VipKey {
    pub addr: [u32; 4],
    /// Network byte order, as in the TCP/UDP header.
    pub port: u16,
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub proto: u8,
    pub family: u8,
}

impl VipKey {
    /// The key as the data path builds it, five whole words (`port` in network order): built
    /// field by field from byte and half-word stores, its last word reached the map's hash
    /// through a failed store-to-load forward (about 5 ns a packet).
    #[inline(always)]
    pub fn from_words(addr: &[u32; 4], port: u16, proto: u8, family: u8) -> Self {
        let [p0, p1] = port.to_ne_bytes();
        let words = [
            addr[0],
            addr[1],
            addr[2],
            addr[3],
            u32::from_ne_bytes([p0, p1, proto, family]),
        ];
        // SAFETY: repr(C): four u32, then u16, u8, u8 (20 bytes, no padding), which is exactly
        // the byte layout of these words; `from_words_is_the_struct` checks it.
        unsafe { core::mem::transmute::<[u32; 5], VipKey>(words) }
    }

    pub fn new(ip: IpAddr, port: u16, proto: u8) -> Self {
        let (addr, family) = addr_words(ip);
        Self {
            addr,
            port: port.to_be(),
            proto,
            family,
        }
    }

    /// The key as five words, as `from_words` builds them.
    #[inline(always)]
    pub fn words(&self) -> [u32; 5] {
        // SAFETY: 20 bytes without padding (see `from_words`).
        unsafe { core::mem::transmute::<VipKey, [u32; 5]>(*self) }
    }
}

/// One slot of `VIP_INDEX`, the direct-mapped index in front of `VIPS`: the verifier inlines an
/// array lookup, where a hash-map lookup is a call (about a quarter of an IPv4 packet's cost).
/// A key lives in its home slot (`hash::vip_index_slot`) when that slot is free; a key whose
/// home is taken lives in `VIPS` only, and its home's `spill` tells the data path to look there.
///
/// The agent writes a slot's words one at a time, each an aligned 32-bit store (never a whole
/// value, which the kernel copies byte-wise at times): a key's words and meta before its `id`,
/// so a reader that sees the id sees them too; a key leaves by its `id` alone, and its slot
/// takes another key only after in-flight packets are long gone.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipSlot {
    pub key: VipKey,
    /// The VIP's id, or [`VIP_INDEX_EMPTY`].
    pub id: u32,
    pub flags: u32,
    pub active_table: u32,
    /// Non-zero: some VIP whose home this is lives in `VIPS` only.
    pub spill: u32,
    pub _pad: u32,
}

/// `VipSlot::id` of a slot that holds no key.
pub const VIP_INDEX_EMPTY: u32 = u32::MAX;
/// Slots of `VIP_INDEX` (a power of two): 64 times the default `max_vips`, so a key rarely
/// finds its home taken.
pub const VIP_INDEX_SLOTS: u32 = 4096;
const _: () = assert!(VIP_INDEX_SLOTS.is_power_of_two());
const _: () = assert!(core::mem::size_of::<VipSlot>().is_multiple_of(8));

/// Value of `VIPS`. Replaced as a whole by the agent, so a reader sees either the old or the new
/// `active_table`, never a mix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipMeta {
    /// Index of this VIP's two lookup tables and of its counters; `< max_vips`.
    pub id: u32,
    /// `VIP_F_*` bits.
    pub flags: u32,
    /// Which of the VIP's two Maglev tables is live (0 or 1); the agent fills the other, then flips.
    pub active_table: u32,
    pub _reserved: u32,
}

/// Hash on the client address only, so every connection of a client reaches one backend.
pub const VIP_F_HASH_SRC_ONLY: u32 = 1 << 0;

/// Value bits of `VIP_ADDRS`: which kinds of VIP an address carries. The data path reads only
/// whether the address carries any (a bad packet to it is dropped, not passed); the VIP lookup
/// itself goes through `VIP_INDEX`, where a missing port-0 key costs an inlined array load.
pub const ADDR_F_TCP_PORT: u32 = 1 << 0;
pub const ADDR_F_TCP_ANY_PORT: u32 = 1 << 1;
pub const ADDR_F_UDP_PORT: u32 = 1 << 2;
pub const ADDR_F_UDP_ANY_PORT: u32 = 1 << 3;

/// Key of `VIP_ADDRS` (every address that carries at least one VIP) and of the decap program's
/// `DECAP_DSTS` (addresses the backend decapsulates for).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AddrKey {
    pub addr: [u32; 4],
    pub family: u8,
    pub _pad: [u8; 3],
}

impl AddrKey {
    pub fn new(ip: IpAddr) -> Self {
        let (addr, family) = addr_words(ip);
        Self {
            addr,
            family,
            _pad: [0; 3],
        }
    }
}

/// Value of the `BACKENDS` array, indexed by backend id (what Maglev slots hold).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend {
    pub addr: [u32; 4],
    pub family: u8,
    pub _pad: [u8; 3],
    /// Bumped by the agent when the backend goes down or its id is reused. Connection-table
    /// entries remember the generation they were made with and are ignored once it changes.
    pub generation: u32,
    /// The VIP this backend id serves (ids are per VIP and backend), so a restarted agent can
    /// rebuild its id assignment from the pinned map. Not read by the data path.
    pub vip_id: u32,
}

impl Backend {
    pub fn new(ip: IpAddr, generation: u32, vip_id: u32) -> Self {
        let (addr, family) = addr_words(ip);
        Self {
            addr,
            family,
            _pad: [0; 3],
            generation,
            vip_id,
        }
    }

    /// A slot no VIP uses (family 0).
    pub fn is_free(&self) -> bool {
        self.family == 0
    }
}

/// Key of the `CONN_TABLE` LRU hash: the client's 5-tuple towards the VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

impl FlowKey {
    /// A flow as the data path reads it off the wire (addresses and ports in network order).
    #[inline(always)]
    pub const fn new(
        src: [u32; 4],
        dst: [u32; 4],
        src_port: u16,
        dst_port: u16,
        proto: u8,
        family: u8,
    ) -> Self {
        Self {
            src,
            dst,
            src_port,
            dst_port,
            proto,
            family,
            _pad: [0; 2],
        }
    }
}

/// Value of `CONN_TABLE`. Entries exist only for flows in moved slots (see [`Slot`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowState {
    pub backend: u32,
    /// The backend's `generation` when the entry was made.
    pub generation: u32,
    /// The VIP the flow belongs to: the agent's sweep finds the entry's slot through it.
    pub vip_id: u32,
    /// Seconds of CLOCK_MONOTONIC (coarse) at the flow's last packet; the agent's sweep removes
    /// entries idle longer than `flow_idle_timeout`.
    pub last_seen: u32,
}

/// One slot of a VIP's Maglev table: the backend new flows go to, and whether the slot is
/// *stable* or *moved*.
///
/// Stable: no table change has moved the slot away from a backend that is still up, so every
/// flow of the slot belongs to the slot's backend and the data path needs no connection
/// table. Moved: flows of the slot are looked up in `CONN_TABLE`, and one without an entry
/// goes to the backend the slot had before the move (none once that one is gone). The agent
/// returns a slot to stable once no live flow needs the old backend any more.
///
/// The two halves live in two tables of the same geometry: `MAGLEV` holds `table` (backend id
/// and [`TABLE_MOVED`]), which every packet reads, at two bytes a slot (128 KiB per table);
/// `MAGLEV_PREVIOUS` holds `previous`, read only for a flow without an entry in a moved slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slot {
    pub table: u16,
    pub previous: u16,
}

/// Bit of a `MAGLEV` half marking a moved slot; the other 15 bits are the backend id.
pub const TABLE_MOVED: u16 = 0x8000;
pub const TABLE_NO_BACKEND: u16 = 0x7fff;
pub const TABLE_NO_PREVIOUS: u16 = 0xffff;

const _: () = assert!(MAX_BACKENDS < TABLE_NO_BACKEND as u32);

impl Slot {
    /// A slot with no backend, stable (what an empty table holds).
    pub const EMPTY: Slot = Slot {
        table: TABLE_NO_BACKEND,
        previous: TABLE_NO_PREVIOUS,
    };

    /// A stable slot of `backend` ([`NO_BACKEND`] for none).
    pub fn stable(backend: u32) -> Slot {
        Slot {
            table: backend_half(backend),
            previous: TABLE_NO_PREVIOUS,
        }
    }

    /// A moved slot of `backend` whose flows from before the move belong to `previous`.
    pub fn moved(backend: u32, previous: Option<u32>) -> Slot {
        Slot {
            table: backend_half(backend) | TABLE_MOVED,
            previous: match previous {
                Some(p) if p < TABLE_NO_BACKEND as u32 => p as u16,
                _ => TABLE_NO_PREVIOUS,
            },
        }
    }

    /// Backend id for new flows, or [`NO_BACKEND`].
    pub fn backend(self) -> u32 {
        table_half_backend(self.table)
    }

    pub fn is_moved(self) -> bool {
        table_half_is_moved(self.table)
    }

    /// The backend the slot had before it moved, while that backend is up.
    pub fn previous(self) -> Option<u32> {
        if self.is_moved() {
            previous_half_backend(self.previous)
        } else {
            None
        }
    }
}

fn backend_half(backend: u32) -> u16 {
    if backend < TABLE_NO_BACKEND as u32 {
        backend as u16
    } else {
        TABLE_NO_BACKEND
    }
}

/// The backend id in a `MAGLEV` half, or [`NO_BACKEND`].
#[inline(always)]
pub fn table_half_backend(half: u16) -> u32 {
    match half & !TABLE_MOVED {
        TABLE_NO_BACKEND => NO_BACKEND,
        id => id as u32,
    }
}

#[inline(always)]
pub fn table_half_is_moved(half: u16) -> bool {
    half & TABLE_MOVED != 0
}

/// The backend id in a `MAGLEV_PREVIOUS` half.
#[inline(always)]
pub fn previous_half_backend(half: u16) -> Option<u32> {
    (half != TABLE_NO_PREVIOUS).then_some(half as u32)
}

/// Single element of the `CONFIG` array, written by the agent before VIPs are added.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LbConfig {
    /// Next hop of every encapsulated frame (the router in front of the balancer).
    pub gateway_mac: [u8; 6],
    /// Largest IP packet, outer header included, that may leave the interface.
    pub mtu: u16,
    /// Outer source of IPv4 encapsulation (network order).
    pub encap_src_v4: u32,
    /// Outer source of IPv6 encapsulation (network order words).
    pub encap_src_v6: [u32; 4],
    /// How many low bits of the outer source are replaced by flow-hash bits, so that backends'
    /// NICs spread flows over their receive queues (0 = fixed source).
    pub src_hash_bits_v4: u8,
    pub src_hash_bits_v6: u8,
    /// Outer TTL / hop limit.
    pub outer_ttl: u8,
    /// Non-zero once the agent has written a complete configuration.
    pub ready: u8,
    /// New connection-table entries allowed per CPU per second (SYN-flood guard); 0 = no limit.
    pub new_flows_per_sec: u32,
    /// Destination MACs the balancer forwards: the interface's own first, then configured extra
    /// ones (e.g. a VRRP virtual MAC); unused entries repeat the first. Frames to any other
    /// address (broadcast, multicast, another host) are the host's (`pass_not_our_mac`).
    pub local_macs: [[u8; 6]; LOCAL_MACS],
    /// Secret key of the flow hash (`hash::FlowHashKey`); all zero = the unkeyed hash.
    pub flow_hash_key: [u32; 4],
}

/// Entries of [`LbConfig::local_macs`]: the interface's MAC and up to three more.
pub const LOCAL_MACS: usize = 4;

/// Per-CPU state of the SYN-flood guard (`FLOOD_GUARD`, written only by the data path).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FloodWindow {
    pub window_start_ns: u64,
    pub inserts: u64,
}

/// Per-CPU packets and bytes of one VIP (`VIP_STATS`) or one backend (`BACKEND_STATS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TrafficCounters {
    pub packets: u64,
    pub bytes: u64,
}

/// Backend id stored in a Maglev slot that has no backend.
pub const NO_BACKEND: u32 = u32::MAX;

/// Bench harness template (`BENCH_FRAME`): the frame every iteration starts from.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchFrame {
    pub bytes: [u8; BENCH_FRAME_LEN],
    /// `BENCH_VARY_*`: give every iteration its own TCP source port (a new flow each time).
    pub vary_source_port: u32,
    /// With a `BENCH_VARY_*` mode: cycle through this many flows (iteration count modulo
    /// `flows`; the port takes the low 16 bits, the source address's last byte the rest).
    /// 0: the port is the iteration count itself, wrapping at 65536.
    pub flows: u32,
}

pub const BENCH_VARY_NONE: u32 = 0;
/// Untagged IPv4 + TCP template.
pub const BENCH_VARY_V4: u32 = 4;
/// Untagged IPv6 + TCP template.
pub const BENCH_VARY_V6: u32 = 6;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: every type is #[repr(C)], Copy, made of integers and byte arrays, and has
    // explicit padding fields, so any bit pattern is valid and no byte is uninitialised.
    unsafe impl aya::Pod for VipKey {}
    unsafe impl aya::Pod for VipMeta {}
    unsafe impl aya::Pod for VipSlot {}
    unsafe impl aya::Pod for AddrKey {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowState {}
    unsafe impl aya::Pod for LbConfig {}
    unsafe impl aya::Pod for FloodWindow {}
    unsafe impl aya::Pod for TrafficCounters {}
    unsafe impl aya::Pod for BenchFrame {}
    unsafe impl aya::Pod for crate::TraceControl {}
    unsafe impl aya::Pod for crate::TraceEvent {}
    unsafe impl aya::Pod for crate::TraceScratch {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<VipKey>(), 20);
        assert_eq!(size_of::<VipMeta>(), 16);
        assert_eq!(size_of::<AddrKey>(), 20);
        assert_eq!(size_of::<Backend>(), 28);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<FlowState>(), 16);
        assert_eq!(size_of::<LbConfig>(), 76);
        assert_eq!(size_of::<TrafficCounters>(), 16);
    }

    #[test]
    fn from_words_is_the_struct() {
        let addr = [0x0a00_12c6, 0xb80d_0120, 0, 0x1000_0000];
        for (port, proto, family) in [(0x5000, 6, 4), (0, 17, 6), (0xffff, 0xff, 0xff)] {
            let built = VipKey::from_words(&addr, port, proto, family);
            let literal = VipKey {
                addr,
                port,
                proto,
                family,
            };
            assert_eq!(built, literal);
        }
    }

    #[test]
    fn address_words_round_trip() {
        let v4: IpAddr = "198.18.0.10".parse().unwrap();
        let v6: IpAddr = "2001:db8::10".parse().unwrap();
        for ip in [v4, v6] {
            let (w, f) = addr_words(ip);
            assert_eq!(words_addr(w, f), Some(ip));
        }
        assert_eq!(words_addr([0; 4], 0), None);
    }

    #[test]
    fn slots_keep_their_backend_and_previous() {
        let stable = Slot::stable(7);
        assert_eq!(
            (stable.backend(), stable.is_moved(), stable.previous()),
            (7, false, None)
        );
        let moved = Slot::moved(7, Some(3));
        assert_eq!(
            (moved.backend(), moved.is_moved(), moved.previous()),
            (7, true, Some(3))
        );
        let orphan = Slot::moved(NO_BACKEND, None);
        assert_eq!(
            (orphan.backend(), orphan.is_moved(), orphan.previous()),
            (NO_BACKEND, true, None)
        );
        assert_eq!(Slot::stable(NO_BACKEND), Slot::EMPTY);
        assert_eq!(Slot::moved(0, Some(0)).previous(), Some(0));
        assert_eq!(Slot::moved(0, Some(NO_BACKEND)).previous(), None);
    }
}
