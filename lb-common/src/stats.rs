//! Per-CPU event counters, one list per program: each program's counter array holds exactly the
//! counters that program can move, so a readout never shows another program's zeros.
//!
//! - [`Stat`]: the balancer (`xdp_lb`), array `STATS` of the lb object (pinned).
//! - [`DecapStat`]: the backend's `xdp_decap`, array `DECAP_STATS` of the decap object.
//! - [`ProbeStat`]: the TC egress program `tc_probe_encap` (health-check probes through the
//!   tunnel), array `PROBE_STATS` of the lb object (pinned).
//! - [`BenchStat`]: the benchmark harness inside the lb object, array `BENCH_STATS` (not pinned).

/// A counter enum, its `ALL` list in index order, its `name()`s and its array size.
macro_rules! counters {
    (
        $(#[$meta:meta])*
        pub enum $enum:ident, count $count:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $name:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $enum {
            $( $(#[$vmeta])* $variant, )*
        }

        impl $enum {
            /// Every counter, in index order.
            pub const ALL: &'static [$enum] = &[$($enum::$variant),*];

            /// Stable snake_case name, used for metrics labels and `stats` output.
            pub const fn name(self) -> &'static str {
                match self {
                    $($enum::$variant => $name,)*
                }
            }
        }

        /// Size of the counter array.
        pub const $count: u32 = $enum::ALL.len() as u32;
    };
}

counters! {
    /// Index into the balancer's per-CPU `STATS` array (one u64 each): every verdict of
    /// `xdp_lb` and every connection-table event. Append only: the array is pinned and outlives
    /// an agent upgrade, so an index must keep its meaning.
    pub enum Stat, count STAT_COUNT {
        /// Not addressed to a VIP: handed to the host stack untouched.
        PassNotVip => "pass_not_vip",
        /// Invalid header that cannot be tied to a VIP address: handed to the host, which drops
        /// it.
        PassMalformed => "pass_malformed",
        /// Forwarded (XDP_TX) to a backend, encapsulated.
        Forwarded => "forwarded",
        /// Routed by a stable slot of the VIP's table: no connection-table access.
        StableSlot => "stable_slot",
        /// Moved slot: a live connection-table entry gave the backend.
        ConnHit => "conn_hit",
        /// Moved slot, TCP SYN: the slot's backend, and a new entry.
        ConnMissSyn => "conn_miss_syn",
        /// Moved slot, TCP non-SYN without an entry: a flow from before the move (or one that
        /// moved between balancers or was evicted).
        ConnMissNonSyn => "conn_miss_non_syn",
        ConnMissUdp => "conn_miss_udp",
        /// Moved slot, no entry: sent to the slot's previous backend, where it began.
        MovedToPrevious => "moved_to_previous",
        /// Moved slot, an entry whose backend went down or was replaced: re-selected from the
        /// table.
        ConnStale => "conn_stale",
        /// New entry not stored because the per-CPU new-flow rate was above the limit.
        ConnInsertSkipped => "conn_insert_skipped",
        /// ICMP error about a VIP flow, forwarded to that flow's backend.
        IcmpErrorForwarded => "icmp_error_forwarded",
        /// "Fragmentation needed" / "packet too big" sent back to a client.
        IcmpTooBigSent => "icmp_too_big_sent",
        /// bpf_xdp_adjust_head failed, or the frame was too short, while adding the outer
        /// header; or bpf_xdp_adjust_tail failed while cutting a trailer.
        EncapFailed => "encap_failed",
        DropFragment => "drop_fragment",
        DropIpv4Options => "drop_ipv4_options",
        DropIpv6ExtHeader => "drop_ipv6_ext_header",
        DropMalformed => "drop_malformed",
        /// The VIP's table has no backend (all down with `all_down = "drop"`, or not yet
        /// filled).
        DropNoBackend => "drop_no_backend",
        /// The agent has not written `CONFIG` yet.
        DropUnconfigured => "drop_unconfigured",
        /// ICMP error about a VIP flow too big for `mtu` once encapsulated: dropped, since an
        /// ICMP error is never answered with another (RFC 1122 3.2.2, RFC 4443 2.4).
        DropIcmpErrorTooBig => "drop_icmp_error_too_big",
        /// A client packet too big for `mtu` whose "too big" answer could not be built (packet
        /// shorter than the quote, or a head/tail adjustment failed): dropped.
        IcmpTooBigFailed => "icmp_too_big_failed",
        /// A frame to a VIP whose destination MAC is not one of `CONFIG.local_macs` (broadcast,
        /// multicast, another host's unicast): handed to the host untouched, never forwarded.
        PassNotOurMac => "pass_not_our_mac",
        /// A client packet too big for `mtu` from a source no ICMP error may be sent to
        /// (broadcast, multicast, unspecified, loopback, IPv4 class E): dropped unanswered.
        DropTooBigUnanswerable => "drop_too_big_unanswerable",
        /// Bytes after the IP length (an Ethernet trailer or padding) cut off before
        /// forwarding; the frame goes on.
        TrailerTrimmed => "trailer_trimmed",
    }
}

counters! {
    /// Index into the decap program's per-CPU `DECAP_STATS` array.
    pub enum DecapStat, count DECAP_STAT_COUNT {
        /// Tunnel packet for this host, outer header removed.
        Decapsulated => "decapsulated",
        /// Anything else, untouched.
        Pass => "decap_pass",
        /// Tunnel packet whose inner header is invalid.
        DropMalformed => "decap_drop_malformed",
    }
}

counters! {
    /// Index into `tc_probe_encap`'s per-CPU `PROBE_STATS` array: every verdict on a packet
    /// leaving the balancer's interface. Append only (pinned, like `STATS`).
    pub enum ProbeStat, count PROBE_STAT_COUNT {
        /// No probe mark: the host's own packet, left untouched.
        ProbePassUnmarked => "probe_pass_unmarked",
        /// A probe, encapsulated to its backend as `xdp_lb` encapsulates client packets.
        ProbeEncapsulated => "probe_encapsulated",
        /// A probe whose mark names a free backend id (the backend was removed while its probe
        /// ran): dropped, never sent unencapsulated.
        ProbeDropUnknownBackend => "probe_drop_unknown_backend",
        /// A probe before the agent wrote `CONFIG`: dropped.
        ProbeDropUnconfigured => "probe_drop_unconfigured",
        /// A probe that is not TCP over IPv4 (without options) or IPv6 (without extension
        /// headers), as the agent's probe sockets always are: dropped.
        ProbeDropMalformed => "probe_drop_malformed",
        /// A probe too big for `mtu` once encapsulated (probes clamp their MSS, so this means a
        /// misconfigured `mtu`): dropped.
        ProbeDropTooBig => "probe_drop_too_big",
        /// bpf_skb_adjust_room or a header write failed: dropped.
        ProbeEncapFailed => "probe_encap_failed",
    }
}

counters! {
    /// Index into the benchmark harness's per-CPU `BENCH_STATS` array (lb object).
    pub enum BenchStat, count BENCH_STAT_COUNT {
        /// Frame restored before an iteration; also the iteration count new flows derive from.
        Restored => "bench_restored",
        /// Frames the forwarding benchmark's sink received.
        Sunk => "bench_sunk",
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn check(all: &[(u32, &'static str)]) {
        for (i, (index, name)) in all.iter().enumerate() {
            assert_eq!(*index as usize, i, "{name}");
            for (_, other) in &all[i + 1..] {
                assert_ne!(name, other);
            }
        }
    }

    #[test]
    fn counter_names_are_unique_and_indexed_in_order() {
        let lb: Vec<_> = Stat::ALL.iter().map(|s| (*s as u32, s.name())).collect();
        let decap: Vec<_> = DecapStat::ALL
            .iter()
            .map(|s| (*s as u32, s.name()))
            .collect();
        let probe: Vec<_> = ProbeStat::ALL
            .iter()
            .map(|s| (*s as u32, s.name()))
            .collect();
        let bench: Vec<_> = BenchStat::ALL
            .iter()
            .map(|s| (*s as u32, s.name()))
            .collect();
        check(&lb);
        check(&decap);
        check(&probe);
        check(&bench);
        let mut every: Vec<_> = lb
            .iter()
            .chain(&decap)
            .chain(&probe)
            .chain(&bench)
            .map(|c| c.1)
            .collect();
        every.sort_unstable();
        every.dedup();
        assert_eq!(
            every.len(),
            lb.len() + decap.len() + probe.len() + bench.len()
        );
    }

    /// The pinned `STATS` array keeps its indices across upgrades (new counters are appended).
    #[test]
    fn balancer_counter_indices_are_stable() {
        assert_eq!(Stat::PassNotVip as u32, 0);
        assert_eq!(Stat::DropUnconfigured as u32, 19);
        assert_eq!(Stat::DropIcmpErrorTooBig as u32, 20);
        assert_eq!(Stat::IcmpTooBigFailed as u32, 21);
        assert_eq!(Stat::PassNotOurMac as u32, 22);
        assert_eq!(Stat::TrailerTrimmed as u32, 24);
    }
}
