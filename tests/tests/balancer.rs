//! Packet fixtures through the loaded balancer (BPF_PROG_TEST_RUN): each case states the input
//! frame, the expected verdict and the exact expected output bytes.

use anyhow::Result;
use lb_common::{
    probe_mark, ProbeStat, Stat, ICMP_V4_QUOTE_LEN, ICMP_V6_QUOTE_LEN, IPPROTO_TCP, IPPROTO_UDP,
    VIP_F_HASH_SRC_ONLY,
};
use lb_tests::{
    expect::{encapsulated, frag_needed_v4, packet_too_big_v6},
    frames::{self, fix_ipv4_checksum, Tcp, L3},
    lab::{backend_addr, flow_of, Lab, MTU},
    run::{run_tc_once, TC_ACT_OK, TC_ACT_SHOT, XDP_DROP, XDP_PASS, XDP_TX},
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 7);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 7);
const WEB: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const WEB6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
const V4_BACKENDS: [u32; 3] = [0, 1, 2];

fn web_lab() -> Result<(Lab, lb_common::VipKey)> {
    let mut lab = Lab::new()?;
    let key = lab.add_vip(WEB.into(), 80, IPPROTO_TCP, 0, &V4_BACKENDS)?;
    Ok((lab, key))
}

/// Run `frame`, expect XDP_TX with the frame encapsulated to `backend`, return the backend id.
fn assert_forwarded_to(lab: &mut Lab, frame: &[u8], backend: u32) -> Result<()> {
    let flow = flow_of(frame)?;
    let hash = lab.hash(&flow);
    let expected = encapsulated(frame, backend_addr(&lab.lb, backend)?, &lab.outer(), hash);
    let (verdict, out) = lab.run(frame)?;
    assert_eq!(verdict, XDP_TX, "verdict");
    assert_eq!(hex(&out), hex(&expected), "encapsulated frame");
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn assert_passed_untouched(lab: &mut Lab, frame: &[u8]) -> Result<()> {
    let (verdict, out) = lab.run(frame)?;
    assert_eq!(verdict, XDP_PASS, "verdict");
    assert_eq!(out, frame, "a passed frame must be byte-identical");
    Ok(())
}

fn assert_dropped(lab: &mut Lab, frame: &[u8], reason: Stat) -> Result<()> {
    let before = lab.lb.stat(reason)?;
    let (verdict, _) = lab.run(frame)?;
    assert_eq!(verdict, XDP_DROP, "verdict for {}", reason.name());
    assert_eq!(
        lab.lb.stat(reason)?,
        before + 1,
        "counter {}",
        reason.name()
    );
    Ok(())
}

#[test]
fn both_programs_pass_the_verifier() -> Result<()> {
    // Loading runs every program through the verifier; a rejection fails with its log.
    Lab::new()?;
    lb_agent::dataplane::Decap::load()?;
    Ok(())
}

#[test]
fn ipv4_tcp_syn_is_encapsulated_to_its_maglev_backend() -> Result<()> {
    let (mut lab, key) = web_lab()?;
    let frame = frames::tcp4(CLIENT, 40000, WEB, 80, Tcp::Syn, &[]);
    let backend = lab.predict(&key, &flow_of(&frame)?, &V4_BACKENDS)?;
    assert_forwarded_to(&mut lab, &frame, backend)?;
    assert_eq!(lab.lb.stat(Stat::StableSlot)?, 1);
    assert_eq!(lab.lb.stat(Stat::Forwarded)?, 1);
    let vip = lab.lb.vip_counters(lab.lb.vip(&key)?.id)?;
    assert_eq!((vip.packets, vip.bytes), (1, frame.len() as u64));
    let per_backend = lab.lb.backend_counters(backend)?;
    assert_eq!(
        (per_backend.packets, per_backend.bytes),
        (1, frame.len() as u64)
    );
    // A stable slot's flows all belong to its backend: nothing to remember.
    assert_eq!(lab.lb.flow(&flow_of(&frame)?), None);
    assert_eq!(lab.lb.stat(Stat::ConnMissSyn)?, 0);
    Ok(())
}

/// The batched reads `/status` and `/metrics` use give what one lookup per entry gives,
/// across batch boundaries and past the end of the map.
#[test]
fn batched_traffic_counters_match_entry_by_entry_reads() -> Result<()> {
    let (mut lab, key) = web_lab()?;
    for port in 40000..40030 {
        let frame = frames::tcp4(CLIENT, port, WEB, 80, Tcp::Syn, &[]);
        lab.run(&frame)?;
    }
    let counters = lab.lb.counters();
    let backends = counters.backends(1000)?;
    assert_eq!(backends.len(), 1000);
    for (id, sum) in backends.iter().enumerate() {
        assert_eq!(*sum, lab.lb.backend_counters(id as u32)?, "backend {id}");
    }
    let total: u64 = backends.iter().map(|t| t.packets).sum();
    assert_eq!(total, 30);
    let all = counters.backends(u32::MAX)?;
    assert_eq!(all.len() as u32, lb_common::MAX_BACKENDS);
    assert_eq!(all[..1000], backends[..]);
    let vip = lab.lb.vip(&key)?.id;
    let vips = counters.vips(vip + 1)?;
    assert_eq!(vips[vip as usize], lab.lb.vip_counters(vip)?);
    assert_eq!(vips[vip as usize].packets, 30);
    assert!(counters.backends(0)?.is_empty());
    Ok(())
}

#[test]
fn established_flow_in_a_stable_slot_never_touches_the_connection_table() -> Result<()> {
    let (mut lab, key) = web_lab()?;
    let syn = frames::tcp4(CLIENT, 40001, WEB, 80, Tcp::Syn, &[]);
    let ack = frames::tcp4(CLIENT, 40001, WEB, 80, Tcp::Ack, b"GET / HTTP/1.1\r\n\n");
    let backend = lab.predict(&key, &flow_of(&syn)?, &V4_BACKENDS)?;
    lab.run(&syn)?;
    assert_forwarded_to(&mut lab, &ack, backend)?;
    assert_eq!(lab.lb.stat(Stat::StableSlot)?, 2);
    for stat in [Stat::ConnHit, Stat::ConnMissNonSyn, Stat::ConnMissSyn] {
        assert_eq!(lab.lb.stat(stat)?, 0, "{}", stat.name());
    }
    assert_eq!(lab.lb.flow(&flow_of(&ack)?), None);
    Ok(())
}

#[test]
fn flow_from_before_a_table_change_keeps_its_backend_through_the_moved_slot() -> Result<()> {
    let (mut lab, key) = web_lab()?;
    let syn = frames::tcp4(CLIENT, 40002, WEB, 80, Tcp::Syn, &[]);
    let flow = flow_of(&syn)?;
    let backend = lab.predict(&key, &flow, &V4_BACKENDS)?;
    lab.run(&syn)?;
    // Every slot now points at `other`; `backend` is still up, so its slots are moved.
    let other = (backend + 1) % 3;
    lab.fill_table(&key, other)?;
    let ack = frames::tcp4(CLIENT, 40002, WEB, 80, Tcp::Ack, &[]);
    assert_forwarded_to(&mut lab, &ack, backend)?;
    assert_eq!(lab.lb.stat(Stat::ConnMissNonSyn)?, 1);
    assert_eq!(lab.lb.stat(Stat::MovedToPrevious)?, 1);
    // The slot's previous backend carries the flow: no entry (a spoofed segment could make
    // one for any 5-tuple), also through further changes, since a moved slot keeps its first
    // previous backend.
    assert_eq!(lab.lb.flow(&flow), None);
    lab.fill_table(&key, (backend + 2) % 3)?;
    assert_forwarded_to(&mut lab, &ack, backend)?;
    assert_eq!(lab.lb.stat(Stat::MovedToPrevious)?, 2);
    assert_eq!(lab.lb.stat(Stat::ConnHit)?, 0);
    // A new connection follows the table, and is remembered there.
    let new_syn = frames::tcp4(CLIENT, 40003, WEB, 80, Tcp::Syn, &[]);
    let now = (backend + 2) % 3;
    assert_forwarded_to(&mut lab, &new_syn, now)?;
    assert_eq!(lab.lb.stat(Stat::ConnMissSyn)?, 1);
    assert_eq!(
        lab.lb.flow(&flow_of(&new_syn)?).map(|e| e.backend),
        Some(now)
    );
    // A SYN never trusts an entry: a reused 5-tuple takes the table too.
    assert_forwarded_to(&mut lab, &syn, now)?;
    Ok(())
}

#[test]
fn flows_of_a_backend_that_went_down_take_the_new_table() -> Result<()> {
    let (mut lab, key) = web_lab()?;
    let syn = frames::tcp4(CLIENT, 40004, WEB, 80, Tcp::Syn, &[]);
    let flow = flow_of(&syn)?;
    let dead = lab.predict(&key, &flow, &V4_BACKENDS)?;
    lab.run(&syn)?;
    // The agent bumps the generation of a backend that goes down and republishes the table:
    // a slot leaving a dead backend is not moved, nothing remembers the dead one.
    let remaining: Vec<u32> = V4_BACKENDS.iter().copied().filter(|b| *b != dead).collect();
    lab.take_down(dead)?;
    lab.set_backends(&key, &remaining)?;
    let survivor = lab.predict(&key, &flow, &remaining)?;
    assert_ne!(survivor, dead);
    let ack = frames::tcp4(CLIENT, 40004, WEB, 80, Tcp::Ack, &[]);
    assert_forwarded_to(&mut lab, &ack, survivor)?;
    assert_eq!(lab.lb.stat(Stat::StableSlot)?, 2);
    assert_eq!(lab.lb.flow(&flow), None);
    Ok(())
}

#[test]
fn entry_of_a_backend_that_went_down_is_reselected() -> Result<()> {
    let (mut lab, key) = web_lab()?;
    let syn = frames::tcp4(CLIENT, 40005, WEB, 80, Tcp::Syn, &[]);
    let ack = frames::tcp4(CLIENT, 40005, WEB, 80, Tcp::Ack, &[]);
    let flow = flow_of(&syn)?;
    let first = lab.predict(&key, &flow, &V4_BACKENDS)?;
    let other = (first + 1) % 3;
    // Every slot moved, new flows to `first`: the SYN makes the flow's entry.
    lab.move_every_slot(&key, other, first)?;
    lab.run(&syn)?;
    assert_eq!(lab.lb.flow(&flow).map(|e| e.backend), Some(first));
    // `first` dies: its entry goes stale, and the slot forgets it as the previous backend.
    lab.take_down(first)?;
    lab.fill_table(&key, other)?;
    assert_forwarded_to(&mut lab, &ack, other)?;
    assert_eq!(lab.lb.stat(Stat::ConnStale)?, 1);
    assert_eq!(lab.lb.flow(&flow).map(|e| e.backend), Some(other));
    Ok(())
}

#[test]
fn udp_flow_keeps_its_backend_through_a_table_change() -> Result<()> {
    let mut lab = Lab::new()?;
    let dns = Ipv4Addr::new(198, 18, 0, 11);
    let key = lab.add_vip(dns.into(), 53, IPPROTO_UDP, 0, &V4_BACKENDS)?;
    let frame = frames::udp4(CLIENT, 5353, dns, 53, b"query");
    let backend = lab.predict(&key, &flow_of(&frame)?, &V4_BACKENDS)?;
    assert_forwarded_to(&mut lab, &frame, backend)?;
    assert_eq!(lab.lb.stat(Stat::StableSlot)?, 1);
    lab.fill_table(&key, (backend + 1) % 3)?;
    // UDP has no SYN: a flow without an entry in a moved slot is taken for one from before.
    assert_forwarded_to(&mut lab, &frame, backend)?;
    assert_eq!(lab.lb.stat(Stat::ConnMissUdp)?, 1);
    assert_eq!(lab.lb.stat(Stat::MovedToPrevious)?, 1);
    assert_forwarded_to(&mut lab, &frame, backend)?;
    assert_eq!(lab.lb.stat(Stat::MovedToPrevious)?, 2);
    assert_eq!(lab.lb.flow(&flow_of(&frame)?), None);
    Ok(())
}

#[test]
fn ipv6_tcp_is_encapsulated_in_ipv6() -> Result<()> {
    let mut lab = Lab::new()?;
    let key = lab.add_vip(WEB6.into(), 80, IPPROTO_TCP, 0, &[3, 4])?;
    let syn = frames::tcp6(CLIENT6, 50000, WEB6, 80, Tcp::Syn, &[]);
    let backend = lab.predict(&key, &flow_of(&syn)?, &[3, 4])?;
    assert_forwarded_to(&mut lab, &syn, backend)?;
    let ack = frames::tcp6(CLIENT6, 50000, WEB6, 80, Tcp::Ack, b"data");
    assert_forwarded_to(&mut lab, &ack, backend)?;
    assert_eq!(lab.lb.stat(Stat::StableSlot)?, 2);
    // The same through a moved slot, which looks the flow up by its IPv6 5-tuple.
    lab.fill_table(&key, if backend == 3 { 4 } else { 3 })?;
    assert_forwarded_to(&mut lab, &ack, backend)?;
    assert_forwarded_to(&mut lab, &ack, backend)?;
    assert_eq!(lab.lb.stat(Stat::MovedToPrevious)?, 2);
    // A SYN through the moved slot is remembered, and hit by its next segment.
    let syn = frames::tcp6(CLIENT6, 50002, WEB6, 80, Tcp::Syn, &[]);
    lab.run(&syn)?;
    lab.run(&frames::tcp6(CLIENT6, 50002, WEB6, 80, Tcp::Ack, &[]))?;
    assert_eq!(lab.lb.stat(Stat::ConnHit)?, 1);
    Ok(())
}

#[test]
fn ipv4_vip_with_ipv6_backend_is_encapsulated_in_ipv6() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.add_vip(WEB.into(), 80, IPPROTO_TCP, 0, &[3])?;
    let syn = frames::tcp4(CLIENT, 40005, WEB, 80, Tcp::Syn, &[]);
    assert_forwarded_to(&mut lab, &syn, 3)
}

#[test]
fn source_affinity_sends_every_port_of_a_client_to_one_backend() -> Result<()> {
    let mut lab = Lab::new()?;
    let sticky = lab.add_vip(
        WEB.into(),
        80,
        IPPROTO_TCP,
        VIP_F_HASH_SRC_ONLY,
        &V4_BACKENDS,
    )?;
    let other = Ipv4Addr::new(198, 18, 0, 12);
    let spread = lab.add_vip(other.into(), 80, IPPROTO_TCP, 0, &V4_BACKENDS)?;
    let first = frames::tcp4(CLIENT, 1000, WEB, 80, Tcp::Syn, &[]);
    let backend = lab.predict(&sticky, &flow_of(&first)?, &V4_BACKENDS)?;
    let mut spread_backends = std::collections::BTreeSet::new();
    for port in 1000..1020 {
        let frame = frames::tcp4(CLIENT, port, WEB, 80, Tcp::Syn, &[]);
        assert_forwarded_to(&mut lab, &frame, backend)?;
        let frame = frames::tcp4(CLIENT, port, other, 80, Tcp::Syn, &[]);
        spread_backends.insert(lab.predict(&spread, &flow_of(&frame)?, &V4_BACKENDS)?);
        let spread_backend = lab.predict(&spread, &flow_of(&frame)?, &V4_BACKENDS)?;
        assert_forwarded_to(&mut lab, &frame, spread_backend)?;
    }
    // The same client on a 5-tuple VIP does spread, so the sticky result is not luck.
    assert!(spread_backends.len() > 1, "{spread_backends:?}");
    Ok(())
}

#[test]
fn port_zero_vip_matches_any_port_and_exact_port_wins() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.add_vip(WEB.into(), 0, IPPROTO_TCP, 0, &[0])?;
    lab.add_vip(WEB.into(), 443, IPPROTO_TCP, 0, &[1])?;
    for port in [22, 8080, 65535] {
        let frame = frames::tcp4(CLIENT, 40010, WEB, port, Tcp::Syn, &[]);
        assert_forwarded_to(&mut lab, &frame, 0)?;
    }
    let frame = frames::tcp4(CLIENT, 40010, WEB, 443, Tcp::Syn, &[]);
    assert_forwarded_to(&mut lab, &frame, 1)?;
    // Port 0 is per protocol: UDP to the same address is not a VIP.
    assert_passed_untouched(&mut lab, &frames::udp4(CLIENT, 1, WEB, 53, b"x"))
}

/// VIPs whose `VIP_INDEX` home is taken live in `VIPS` only (the home's spill flag sends the
/// data path there): all of them forward, follow a table change, and leave with their removal
/// while the others keep forwarding; one moves into its home once that is free.
#[test]
fn vips_sharing_an_index_home_all_forward_and_leave_one_by_one() -> Result<()> {
    use lb_common::hash::vip_index_slot;
    let home = |ip: Ipv4Addr, port| {
        let key = lb_common::VipKey::new(ip.into(), port, IPPROTO_TCP);
        vip_index_slot(&key.words())
    };
    let other = Ipv4Addr::new(198, 18, 0, 11);
    let mut ports = (1..=u16::MAX).filter(|p| home(other, *p) == home(WEB, 80));
    let (Some(p1), Some(p2)) = (ports.next(), ports.next()) else {
        panic!("no two ports of {other} share {WEB}:80's home");
    };
    let mut lab = Lab::new()?;
    let web = lab.add_vip(WEB.into(), 80, IPPROTO_TCP, 0, &[0])?;
    let spilled = lab.add_vip(other.into(), p1, IPPROTO_TCP, 0, &[1])?;
    lab.add_vip(other.into(), p2, IPPROTO_TCP, 0, &[2])?;
    let syn = |ip, port| frames::tcp4(CLIENT, 40030, ip, port, Tcp::Syn, &[]);
    assert_forwarded_to(&mut lab, &syn(WEB, 80), 0)?;
    assert_forwarded_to(&mut lab, &syn(other, p1), 1)?;
    assert_forwarded_to(&mut lab, &syn(other, p2), 2)?;
    // A spilled VIP's table flips in VIPS.
    lab.set_backends(&spilled, &[0])?;
    assert_forwarded_to(&mut lab, &syn(other, p1), 0)?;
    // Another port of the same address shares the home too, and is no VIP.
    let mut strangers = ports.filter(|p| *p != p1 && *p != p2);
    if let Some(p3) = strangers.next() {
        assert_passed_untouched(&mut lab, &syn(other, p3))?;
    }
    // The VIP in the home leaves: the spilled ones still forward.
    lab.lb.remove_vip(&web)?;
    assert_passed_untouched(&mut lab, &syn(WEB, 80))?;
    assert_forwarded_to(&mut lab, &syn(other, p2), 2)?;
    // The spilled one moves into the free home with its next table, and keeps forwarding.
    lab.set_backends(&spilled, &[1])?;
    assert_forwarded_to(&mut lab, &syn(other, p1), 1)?;
    assert_forwarded_to(&mut lab, &syn(other, p2), 2)?;
    lab.lb.remove_vip(&spilled)?;
    assert_passed_untouched(&mut lab, &syn(other, p1))?;
    assert_forwarded_to(&mut lab, &syn(other, p2), 2)?;
    Ok(())
}

/// `VIP_INDEX` is not pinned: a balancer that adopts pinned maps rebuilds it from `VIPS`, so its
/// program forwards to every VIP before anyone sets a VIP again.
#[test]
fn adopting_pinned_maps_rebuilds_the_vip_index() -> Result<()> {
    /// Removes the pins however the test ends.
    struct Pins(std::path::PathBuf);
    impl Drop for Pins {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let pins = Pins(
        std::path::Path::new("/sys/fs/bpf")
            .join(format!("lb-test-vipindex-{}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&pins.0);
    let mut lab = Lab::pinned(&pins.0)?;
    let key = lab.add_vip(WEB.into(), 80, IPPROTO_TCP, 0, &V4_BACKENDS)?;
    let six = lab.add_vip(WEB6.into(), 80, IPPROTO_TCP, 0, &[3, 4])?;
    let frame = frames::tcp4(CLIENT, 40040, WEB, 80, Tcp::Syn, &[]);
    let frame6 = frames::tcp6(CLIENT6, 40040, WEB6, 80, Tcp::Syn, &[]);
    let backend = lab.predict(&key, &flow_of(&frame)?, &V4_BACKENDS)?;
    let backend6 = lab.predict(&six, &flow_of(&frame6)?, &[3, 4])?;
    assert_forwarded_to(&mut lab, &frame, backend)?;
    drop(lab);
    let mut lab = Lab::pinned(&pins.0)?;
    assert!(
        lab.lb.adopted(),
        "the second balancer did not adopt the pins"
    );
    assert_forwarded_to(&mut lab, &frame, backend)?;
    assert_forwarded_to(&mut lab, &frame6, backend6)
}

#[test]
fn non_vip_traffic_passes_byte_identical() -> Result<()> {
    let (mut lab, _) = web_lab()?;
    let cases = [
        frames::tcp4(
            CLIENT,
            40000,
            Ipv4Addr::new(198, 18, 5, 5),
            80,
            Tcp::Syn,
            &[],
        ),
        frames::tcp4(CLIENT, 40000, WEB, 81, Tcp::Syn, &[]),
        frames::udp4(CLIENT, 40000, WEB, 80, b"not tcp"),
        frames::tcp6(CLIENT6, 40000, WEB6, 80, Tcp::Syn, &[]),
        frames::arp_request(),
    ];
    for frame in &cases {
        assert_passed_untouched(&mut lab, frame)?;
    }
    assert_eq!(lab.lb.stat(Stat::PassNotVip)?, cases.len() as u64);
    assert_eq!(lab.lb.stat(Stat::Forwarded)?, 0);
    Ok(())
}

#[test]
fn vlan_tagged_frame_keeps_its_tag() -> Result<()> {
    let (mut lab, key) = web_lab()?;
    let frame = frames::tcp4_vlan(CLIENT, 40020, WEB, 80, 42);
    let backend = lab.predict(&key, &flow_of(&frame)?, &V4_BACKENDS)?;
    assert_forwarded_to(&mut lab, &frame, backend)
}

#[test]
fn dscp_and_ecn_are_copied_to_the_outer_header() -> Result<()> {
    let (mut lab, key) = web_lab()?;
    let mut frame = frames::tcp4(CLIENT, 40021, WEB, 80, Tcp::Syn, &[]);
    frame[L3 + 1] = (46 << 2) | 1; // EF, ECT(1)
    fix_ipv4_checksum(&mut frame);
    let backend = lab.predict(&key, &flow_of(&frame)?, &V4_BACKENDS)?;
    assert_forwarded_to(&mut lab, &frame, backend)?;
    let (_, out) = lab.run(&frame)?;
    assert_eq!(out[L3 + 1], (46 << 2) | 1);
    Ok(())
}

#[test]
fn outer_source_varies_per_flow_in_its_low_bits() -> Result<()> {
    let (mut lab, _) = web_lab()?;
    let mut config = lab.config;
    config.src_hash_bits_v4 = 8;
    lab.set_config(config)?;
    let mut sources = std::collections::BTreeSet::new();
    for port in 0..16 {
        let frame = frames::tcp4(CLIENT, 30000 + port, WEB, 80, Tcp::Syn, &[]);
        let hash = lab.hash(&flow_of(&frame)?);
        let (verdict, out) = lab.run(&frame)?;
        assert_eq!(verdict, XDP_TX);
        let src = &out[L3 + 12..L3 + 16];
        assert_eq!(src[..3], [198, 18, 0], "network bits kept");
        assert_eq!(src[3], hash as u8, "low bits from the flow hash");
        sources.insert(src[3]);
        // The header checksum covers the varied source.
        assert_eq!(lb_tests::expect::internet_checksum(&[&out[L3..L3 + 20]]), 0);
    }
    assert!(sources.len() > 8, "{sources:?}");
    Ok(())
}

#[test]
fn oversize_ipv4_gets_fragmentation_needed() -> Result<()> {
    let (mut lab, key) = web_lab()?;
    let payload = vec![0xab; MTU as usize - 40];
    let frame = frames::tcp4(CLIENT, 40030, WEB, 80, Tcp::Ack, &payload);
    assert_eq!(
        frame.len() - 14,
        MTU as usize,
        "inner packet is exactly the MTU"
    );
    let expected = frag_needed_v4(&frame, MTU - 20, ICMP_V4_QUOTE_LEN);
    let (verdict, out) = lab.run(&frame)?;
    assert_eq!(verdict, XDP_TX);
    assert_eq!(hex(&out), hex(&expected));
    assert_eq!(lab.lb.stat(Stat::IcmpTooBigSent)?, 1);
    // One byte less fits once encapsulated.
    let frame = frames::tcp4(
        CLIENT,
        40030,
        WEB,
        80,
        Tcp::Ack,
        &payload[..payload.len() - 20],
    );
    let backend = lab.predict(&key, &flow_of(&frame)?, &V4_BACKENDS)?;
    assert_forwarded_to(&mut lab, &frame, backend)
}

#[test]
fn oversize_ipv6_gets_packet_too_big() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.add_vip(WEB6.into(), 80, IPPROTO_TCP, 0, &[3, 4])?;
    let payload = vec![0xcd; MTU as usize - 60];
    let frame = frames::tcp6(CLIENT6, 50001, WEB6, 80, Tcp::Ack, &payload);
    let expected = packet_too_big_v6(&frame, (MTU - 40) as u32, ICMP_V6_QUOTE_LEN);
    let (verdict, out) = lab.run(&frame)?;
    assert_eq!(verdict, XDP_TX);
    assert_eq!(hex(&out), hex(&expected));
    assert_eq!(lab.lb.stat(Stat::IcmpTooBigSent)?, 1);
    Ok(())
}

/// An ICMP error from a router about a packet the backend sent to the client (VIP -> client).
fn icmp4_error_about(client_port: u16) -> Vec<u8> {
    let reply = frames::tcp4(WEB, 80, CLIENT, client_port, Tcp::Ack, &[]);
    let quoted = &reply[L3..L3 + 28];
    let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0x00];
    icmp.extend_from_slice(quoted);
    let sum = lb_tests::expect::internet_checksum(&[&icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let router = Ipv4Addr::new(198, 18, 50, 1);
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(frames::ROUTER_MAC, frames::LB_MAC)
        .ipv4(router.octets(), WEB.octets(), 60)
        .icmpv4_raw(3, 4, [0, 0, 0x05, 0x00])
        .write(&mut out, quoted)
        .expect("writing to a Vec");
    out
}

/// As [`icmp4_error_about`], quoting the backend's reply with `payload` bytes of data, so the
/// error's IP packet is 68 + `payload` bytes long.
fn icmp4_error_quoting(client_port: u16, payload: usize) -> Vec<u8> {
    let reply = frames::tcp4(WEB, 80, CLIENT, client_port, Tcp::Ack, &vec![0x5a; payload]);
    let router = Ipv4Addr::new(198, 18, 50, 1);
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(frames::ROUTER_MAC, frames::LB_MAC)
        .ipv4(router.octets(), WEB.octets(), 60)
        .icmpv4_raw(3, 4, [0, 0, 0x05, 0x00])
        .write(&mut out, &reply[L3..])
        .expect("writing to a Vec");
    out
}

#[test]
fn icmp_error_too_big_to_encapsulate_is_dropped_not_answered() -> Result<()> {
    let (mut lab, key) = web_lab()?;
    // 20 (IP) + 8 (ICMP) + 40 (quoted IP and TCP) + payload: one byte over once encapsulated.
    let payload = MTU as usize - 20 - 68 + 1;
    let error = icmp4_error_quoting(40050, payload);
    assert_eq!(error.len() - 14 + 20, MTU as usize + 1);
    assert_dropped(&mut lab, &error, Stat::DropIcmpErrorTooBig)?;
    assert_eq!(lab.lb.stat(Stat::IcmpTooBigSent)?, 0);
    assert_eq!(lab.lb.stat(Stat::EncapFailed)?, 0);
    // One byte less fits: forwarded to the flow's backend.
    let error = icmp4_error_quoting(40050, payload - 1);
    let flow = flow_of(&frames::tcp4(CLIENT, 40050, WEB, 80, Tcp::Ack, &[]))?;
    let backend = lab.predict(&key, &flow, &V4_BACKENDS)?;
    let expected = encapsulated(
        &error,
        backend_addr(&lab.lb, backend)?,
        &lab.outer(),
        lab.hash(&flow),
    );
    let (verdict, out) = lab.run(&error)?;
    assert_eq!(verdict, XDP_TX);
    assert_eq!(hex(&out), hex(&expected));
    assert_eq!(lab.lb.stat(Stat::IcmpErrorForwarded)?, 1);
    Ok(())
}

#[test]
fn oversize_frame_with_a_trailer_is_answered_without_it() -> Result<()> {
    let (mut lab, _) = web_lab()?;
    let payload = vec![0xab; MTU as usize - 40];
    let mut frame = frames::tcp4(CLIENT, 40031, WEB, 80, Tcp::Ack, &payload);
    // Bytes past the IP length (an Ethernet trailer): cut first, then the usual answer.
    frame.extend_from_slice(&[0xee; 4]);
    let expected = frag_needed_v4(&frame, MTU - 20, ICMP_V4_QUOTE_LEN);
    let (verdict, out) = lab.run(&frame)?;
    assert_eq!(verdict, XDP_TX);
    assert_eq!(hex(&out), hex(&expected));
    assert_eq!(lab.lb.stat(Stat::TrailerTrimmed)?, 1);
    assert_eq!(lab.lb.stat(Stat::IcmpTooBigSent)?, 1);
    assert_eq!(lab.lb.stat(Stat::IcmpTooBigFailed)?, 0);
    Ok(())
}

#[test]
fn trailing_bytes_are_cut_before_encapsulation_and_the_mtu_check() -> Result<()> {
    let (mut lab, key) = web_lab()?;
    let mut lab6 = Lab::new()?;
    let key6 = lab6.add_vip(WEB6.into(), 80, IPPROTO_TCP, 0, &[3, 4])?;
    // A pure ACK padded to Ethernet's 60-byte minimum.
    let mut padded = frames::tcp4(CLIENT, 40032, WEB, 80, Tcp::Ack, &[]);
    assert_eq!(padded.len(), 54);
    padded.resize(60, 0);
    // A trailer that makes the frame far larger than the MTU while the IP packet fits: the
    // packet is forwarded, exactly its IP length, not answered as too big.
    let mut long = frames::tcp4(CLIENT, 40033, WEB, 80, Tcp::Ack, &[0x11; 1000]);
    long.extend_from_slice(&vec![0xee; 2 * MTU as usize - long.len() + 14]);
    assert!(long.len() > 2 * MTU as usize);
    for frame in [&padded, &long] {
        let backend = lab.predict(&key, &flow_of(frame)?, &V4_BACKENDS)?;
        // `encapsulated` takes the inner packet by its IP length: the trailer is not in it.
        assert_forwarded_to(&mut lab, frame, backend)?;
    }
    assert_eq!(lab.lb.stat(Stat::TrailerTrimmed)?, 2);
    assert_eq!(lab.lb.stat(Stat::IcmpTooBigSent)?, 0);
    let mut v6 = frames::tcp6(CLIENT6, 50003, WEB6, 80, Tcp::Ack, b"data");
    v6.extend_from_slice(&[0xee; 7]);
    let backend = lab6.predict(&key6, &flow_of(&v6)?, &[3, 4])?;
    assert_forwarded_to(&mut lab6, &v6, backend)?;
    assert_eq!(lab6.lb.stat(Stat::TrailerTrimmed)?, 1);
    // Not a VIP flow: the host gets the frame as it came, trailer and all.
    let mut other = frames::tcp4(CLIENT, 40034, WEB, 81, Tcp::Ack, &[]);
    other.resize(60, 0);
    assert_passed_untouched(&mut lab, &other)?;
    assert_eq!(lab.lb.stat(Stat::TrailerTrimmed)?, 2);
    Ok(())
}

/// `frame` with another destination MAC.
fn to_mac(frame: &[u8], mac: [u8; 6]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[..6].copy_from_slice(&mac);
    f
}

#[test]
fn frames_not_addressed_to_our_mac_are_passed_never_forwarded_or_answered() -> Result<()> {
    let (mut lab, key) = web_lab()?;
    let mut lab6 = Lab::new()?;
    lab6.add_vip(WEB6.into(), 80, IPPROTO_TCP, 0, &[3, 4])?;
    let syn = frames::tcp4(CLIENT, 40035, WEB, 80, Tcp::Syn, &[]);
    let oversize = frames::tcp4(CLIENT, 40036, WEB, 80, Tcp::Ack, &vec![0xab; MTU as usize]);
    let syn6 = frames::tcp6(CLIENT6, 50004, WEB6, 80, Tcp::Syn, &[]);
    let broadcast = [0xff; 6];
    let multicast4 = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
    let multicast6 = [0x33, 0x33, 0x00, 0x00, 0x00, 0x01];
    let other_host = [0x02, 0, 0, 0, 0, 0x77];
    let vrrp = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x07];
    for mac in [broadcast, multicast4, other_host, vrrp] {
        for frame in [&syn, &oversize] {
            assert_passed_untouched(&mut lab, &to_mac(frame, mac))?;
        }
    }
    for mac in [broadcast, multicast6, other_host] {
        assert_passed_untouched(&mut lab6, &to_mac(&syn6, mac))?;
    }
    assert_eq!(lab.lb.stat(Stat::PassNotOurMac)?, 8);
    assert_eq!(lab6.lb.stat(Stat::PassNotOurMac)?, 3);
    for stat in [Stat::Forwarded, Stat::IcmpTooBigSent, Stat::ConnMissSyn] {
        assert_eq!(
            lab.lb.stat(stat)? + lab6.lb.stat(stat)?,
            0,
            "{}",
            stat.name()
        );
    }
    // A configured extra MAC (a VRRP virtual MAC) is ours: forwarded from it as well.
    let mut config = lab.config;
    config.local_macs[1] = vrrp;
    lab.set_config(config)?;
    let frame = to_mac(&syn, vrrp);
    let backend = lab.predict(&key, &flow_of(&frame)?, &V4_BACKENDS)?;
    let (verdict, out) = lab.run(&frame)?;
    assert_eq!(verdict, XDP_TX);
    let mut expected = encapsulated(&frame, backend_addr(&lab.lb, backend)?, &lab.outer(), 0);
    expected[6..12].copy_from_slice(&vrrp);
    assert_eq!(hex(&out), hex(&expected), "sent from the MAC it came to");
    assert_passed_untouched(&mut lab, &to_mac(&syn, other_host))
}

#[test]
fn no_icmp_error_toward_broadcast_multicast_unspecified_or_loopback_sources() -> Result<()> {
    let (mut lab, _) = web_lab()?;
    let mut lab6 = Lab::new()?;
    lab6.add_vip(WEB6.into(), 80, IPPROTO_TCP, 0, &[3, 4])?;
    let payload = vec![0xab; MTU as usize];
    for src in [
        "255.255.255.255",
        "224.0.0.1",
        "239.1.2.3",
        "240.0.0.1",
        "0.0.0.0",
        "0.1.2.3",
        "127.0.0.1",
    ] {
        let frame = frames::tcp4(src.parse()?, 40037, WEB, 80, Tcp::Ack, &payload);
        assert_dropped(&mut lab, &frame, Stat::DropTooBigUnanswerable)?;
    }
    for src in ["ff02::1", "ff05::2", "::", "::1"] {
        let frame = frames::tcp6(src.parse()?, 50005, WEB6, 80, Tcp::Ack, &payload);
        assert_dropped(&mut lab6, &frame, Stat::DropTooBigUnanswerable)?;
    }
    assert_eq!(
        lab.lb.stat(Stat::IcmpTooBigSent)? + lab6.lb.stat(Stat::IcmpTooBigSent)?,
        0
    );
    // An ordinary client still gets its answer.
    let frame = frames::tcp4(CLIENT, 40037, WEB, 80, Tcp::Ack, &payload);
    let (verdict, _) = lab.run(&frame)?;
    assert_eq!(verdict, XDP_TX);
    assert_eq!(lab.lb.stat(Stat::IcmpTooBigSent)?, 1);
    Ok(())
}

#[test]
fn spoofed_non_syn_packets_in_moved_slots_make_no_entries() -> Result<()> {
    let (mut lab, key) = web_lab()?;
    // Every slot moved, new flows to 1; flows from before go where the first table put them.
    lab.move_every_slot(&key, 0, 1)?;
    let syn = frames::tcp4(CLIENT, 43000, WEB, 80, Tcp::Syn, &[]);
    assert_forwarded_to(&mut lab, &syn, 1)?;
    assert_eq!(lab.lb.conn_entries()?, 1);
    let spoofer = Ipv4Addr::new(198, 18, 200, 1);
    for port in 43001..43201 {
        let ack = frames::tcp4(spoofer, port, WEB, 80, Tcp::Ack, &[]);
        let previous = lab.predict(&key, &flow_of(&ack)?, &V4_BACKENDS)?;
        assert_forwarded_to(&mut lab, &ack, previous)?;
    }
    assert_eq!(lab.lb.stat(Stat::ConnMissNonSyn)?, 200);
    assert_eq!(lab.lb.stat(Stat::MovedToPrevious)?, 200);
    assert_eq!(lab.lb.conn_entries()?, 1, "only the SYN's entry");
    assert_forwarded_to(
        &mut lab,
        &frames::tcp4(CLIENT, 43000, WEB, 80, Tcp::Ack, &[]),
        1,
    )?;
    assert_eq!(lab.lb.stat(Stat::ConnHit)?, 1);
    Ok(())
}

#[test]
fn icmp_error_follows_the_flow_it_is_about() -> Result<()> {
    let (mut lab, key) = web_lab()?;
    let syn = frames::tcp4(CLIENT, 40040, WEB, 80, Tcp::Syn, &[]);
    let flow = flow_of(&syn)?;
    let backend = lab.predict(&key, &flow, &V4_BACKENDS)?;
    lab.run(&syn)?;
    // Move the table away: only the moved slot still names `backend`.
    lab.fill_table(&key, (backend + 1) % 3)?;
    let error = icmp4_error_about(40040);
    let hash = lab.hash(&flow);
    let expected = encapsulated(&error, backend_addr(&lab.lb, backend)?, &lab.outer(), hash);
    let (verdict, out) = lab.run(&error)?;
    assert_eq!(verdict, XDP_TX);
    assert_eq!(hex(&out), hex(&expected));
    assert_eq!(lab.lb.stat(Stat::IcmpErrorForwarded)?, 1);
    // An echo request to the VIP address is the host's business.
    let mut ping = Vec::new();
    etherparse::PacketBuilder::ethernet2(frames::ROUTER_MAC, frames::LB_MAC)
        .ipv4(CLIENT.octets(), WEB.octets(), 60)
        .icmpv4_echo_request(1, 1)
        .write(&mut ping, b"ping")?;
    assert_passed_untouched(&mut lab, &ping)
}

#[test]
fn malformed_ipv4_frames_get_their_deliberate_verdicts() -> Result<()> {
    let (mut lab, _) = web_lab()?;
    let good = frames::tcp4(CLIENT, 40050, WEB, 80, Tcp::Syn, &[]);

    // Shorter than Ethernet: the kernel never hands such a frame to XDP (test runs refuse it).
    assert!(lab.run(&good[..6]).is_err());
    // Too short to name a destination: the host stack gets it (and drops it).
    for len in [14, 14 + 19] {
        let before = lab.lb.stat(Stat::PassMalformed)?;
        assert_passed_untouched(&mut lab, &good[..len])?;
        assert_eq!(
            lab.lb.stat(Stat::PassMalformed)?,
            before + 1,
            "cut at {len}"
        );
    }
    // Truncated inside the TCP header (IP length fixed to match, so only TCP is short).
    let mut short_tcp = good[..L3 + 20 + 10].to_vec();
    short_tcp[L3 + 2..L3 + 4].copy_from_slice(&30u16.to_be_bytes());
    fix_ipv4_checksum(&mut short_tcp);
    assert_dropped(&mut lab, &short_tcp, Stat::DropMalformed)?;
    // UDP header cut short.
    let udp = frames::udp4(CLIENT, 5353, WEB, 53, b"q");
    let mut short_udp = udp[..L3 + 20 + 4].to_vec();
    short_udp[L3 + 2..L3 + 4].copy_from_slice(&24u16.to_be_bytes());
    fix_ipv4_checksum(&mut short_udp);
    assert_dropped(&mut lab, &short_udp, Stat::DropMalformed)?;
    // Frame cut short: total length runs past the end of the frame.
    assert_dropped(&mut lab, &good[..good.len() - 4], Stat::DropMalformed)?;
    // IHL below 5.
    let mut bad = good.clone();
    bad[L3] = 0x44;
    assert_dropped(&mut lab, &bad, Stat::DropMalformed)?;
    // Version other than 4 in an IPv4 EtherType.
    let mut bad = good.clone();
    bad[L3] = 0x65;
    assert_dropped(&mut lab, &bad, Stat::DropMalformed)?;
    // Zero total length.
    let mut bad = good.clone();
    bad[L3 + 2..L3 + 4].copy_from_slice(&0u16.to_be_bytes());
    fix_ipv4_checksum(&mut bad);
    assert_dropped(&mut lab, &bad, Stat::DropMalformed)?;
    // TCP data offset below 5 words.
    let mut bad = good.clone();
    bad[L3 + 20 + 12] = 0x40;
    assert_dropped(&mut lab, &bad, Stat::DropMalformed)?;
    // Options (IHL 6): dropped for a VIP, as Katran does.
    let mut opts = good[..L3 + 20].to_vec();
    opts.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
    opts.extend_from_slice(&good[L3 + 20..]);
    opts[L3] = 0x46;
    let total = (opts.len() - L3) as u16;
    opts[L3 + 2..L3 + 4].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_checksum(&mut opts);
    assert_dropped(&mut lab, &opts, Stat::DropIpv4Options)?;
    // First fragment (MF) and a later fragment (offset only).
    for frag in [0x2000u16, 0x0010] {
        let mut f = good.clone();
        f[L3 + 6..L3 + 8].copy_from_slice(&frag.to_be_bytes());
        fix_ipv4_checksum(&mut f);
        assert_dropped(&mut lab, &f, Stat::DropFragment)?;
    }
    // The same defects towards a non-VIP address are the host's: passed untouched.
    let mut other = opts.clone();
    other[L3 + 16..L3 + 20].copy_from_slice(&[198, 18, 5, 5]);
    fix_ipv4_checksum(&mut other);
    assert_passed_untouched(&mut lab, &other)?;
    assert_eq!(lab.lb.stat(Stat::Forwarded)?, 0);
    Ok(())
}

#[test]
fn malformed_ipv6_frames_get_their_deliberate_verdicts() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.add_vip(WEB6.into(), 80, IPPROTO_TCP, 0, &[3, 4])?;
    let good = frames::tcp6(CLIENT6, 50010, WEB6, 80, Tcp::Syn, &[]);
    // IPv6 header cut short.
    let before = lab.lb.stat(Stat::PassMalformed)?;
    assert_passed_untouched(&mut lab, &good[..L3 + 39])?;
    assert_eq!(lab.lb.stat(Stat::PassMalformed)?, before + 1);
    // Payload length past the frame end; TCP cut short.
    assert_dropped(&mut lab, &good[..good.len() - 1], Stat::DropMalformed)?;
    let mut short_tcp = good[..L3 + 40 + 12].to_vec();
    short_tcp[L3 + 4..L3 + 6].copy_from_slice(&12u16.to_be_bytes());
    assert_dropped(&mut lab, &short_tcp, Stat::DropMalformed)?;
    // Extension headers in front of TCP: hop-by-hop, routing, destination options.
    for next in [0u8, 43, 60] {
        let mut ext = good.clone();
        ext[L3 + 6] = next;
        assert_dropped(&mut lab, &ext, Stat::DropIpv6ExtHeader)?;
    }
    // Fragment header.
    let mut frag = good.clone();
    frag[L3 + 6] = 44;
    assert_dropped(&mut lab, &frag, Stat::DropFragment)?;
    Ok(())
}

#[test]
fn vip_without_backends_drops_and_unconfigured_balancer_drops() -> Result<()> {
    let (mut lab, key) = web_lab()?;
    lab.set_backends(&key, &[])?;
    let syn = frames::tcp4(CLIENT, 40060, WEB, 80, Tcp::Syn, &[]);
    assert_dropped(&mut lab, &syn, Stat::DropNoBackend)?;
    lab.set_backends(&key, &V4_BACKENDS)?;
    let mut config = lab.config;
    config.ready = 0;
    lab.set_config(config)?;
    assert_dropped(&mut lab, &syn, Stat::DropUnconfigured)
}

#[test]
fn syn_flood_guard_stops_inserting_but_keeps_forwarding() -> Result<()> {
    let (mut lab, key) = web_lab()?;
    // Only moved slots insert entries.
    lab.move_every_slot(&key, 0, 1)?;
    let mut config = lab.config;
    config.new_flows_per_sec = 3;
    lab.set_config(config)?;
    let established = frames::tcp4(CLIENT, 41000, WEB, 80, Tcp::Syn, &[]);
    lab.run(&established)?;
    // A burst of new SYNs within the same second: the first two fit the budget of three.
    for port in 41001..41011 {
        let syn = frames::tcp4(CLIENT, port, WEB, 80, Tcp::Syn, &[]);
        assert_forwarded_to(&mut lab, &syn, 1)?;
    }
    assert_eq!(lab.lb.stat(Stat::ConnInsertSkipped)?, 8);
    assert!(lab.lb.flow(&flow_of(&established)?).is_some());
    assert!(lab
        .lb
        .flow(&flow_of(&frames::tcp4(
            CLIENT,
            41010,
            WEB,
            80,
            Tcp::Syn,
            &[]
        ))?)
        .is_none());
    Ok(())
}

#[test]
fn syn_flood_on_stable_slots_inserts_nothing() -> Result<()> {
    let (mut lab, key) = web_lab()?;
    for port in 42000..42100 {
        let syn = frames::tcp4(CLIENT, port, WEB, 80, Tcp::Syn, &[]);
        let backend = lab.predict(&key, &flow_of(&syn)?, &V4_BACKENDS)?;
        assert_forwarded_to(&mut lab, &syn, backend)?;
    }
    assert_eq!(lab.lb.stat(Stat::StableSlot)?, 100);
    assert_eq!(lab.lb.conn_entries()?, 0);
    Ok(())
}

#[test]
fn counters_account_for_every_frame() -> Result<()> {
    let (mut lab, _) = web_lab()?;
    lab.run(&frames::tcp4(CLIENT, 40070, WEB, 80, Tcp::Syn, &[]))?;
    lab.run(&frames::arp_request())?;
    lab.run(&frames::tcp4(CLIENT, 40070, WEB, 80, Tcp::Syn, &[])[..20])?;
    let stats = lab.lb.stats()?;
    let get = |s: Stat| stats.iter().find(|(k, _)| *k == s).map(|(_, v)| *v);
    assert_eq!(get(Stat::Forwarded), Some(1));
    assert_eq!(get(Stat::PassNotVip), Some(1));
    assert_eq!(get(Stat::PassMalformed), Some(1));
    let _ = IpAddr::from(WEB);
    Ok(())
}

/// The backend a forwarded IPv4-in-IPv4 frame was sent to (its outer destination).
fn outer_dst(out: &[u8]) -> [u8; 4] {
    out[L3 + 16..L3 + 20].try_into().expect("4 bytes")
}

/// Backends that `lab` picks for 1,000 flows (SYNs from one client, ports 20000..21000).
fn choices(lab: &mut Lab, key: &lb_common::VipKey) -> Result<Vec<[u8; 4]>> {
    let mut out = Vec::new();
    for port in 20000..21000 {
        let syn = frames::tcp4(CLIENT, port, WEB, 80, Tcp::Syn, &[]);
        let backend = lab.predict(key, &flow_of(&syn)?, &V4_BACKENDS)?;
        let (verdict, frame) = lab.run(&syn)?;
        assert_eq!(verdict, XDP_TX);
        let dst = outer_dst(&frame);
        // The agent's own slot computation (`table_slot` with the key) agrees with the kernel.
        assert_eq!(
            IpAddr::from(dst),
            backend_addr(&lab.lb, backend)?,
            "port {port}"
        );
        out.push(dst);
    }
    Ok(out)
}

fn keyed(key: [u32; 4]) -> Result<(Lab, lb_common::VipKey)> {
    let (mut lab, vip) = web_lab()?;
    let mut config = lab.config;
    config.flow_hash_key = key;
    lab.set_config(config)?;
    Ok((lab, vip))
}

#[test]
fn balancers_with_one_flow_hash_key_agree_and_other_keys_disagree() -> Result<()> {
    let fleet_key = lb_agent::hashkey::parse(b"00112233445566778899aabbccddeeff")?;
    let other_key = lb_agent::hashkey::parse(b"ffeeddccbbaa99887766554433221100")?;
    let (mut a, vip_a) = keyed(fleet_key)?;
    let (mut b, vip_b) = keyed(fleet_key)?;
    let (mut c, vip_c) = keyed(other_key)?;
    let (mut none, vip_none) = web_lab()?;
    let (a, b, c, none) = (
        choices(&mut a, &vip_a)?,
        choices(&mut b, &vip_b)?,
        choices(&mut c, &vip_c)?,
        choices(&mut none, &vip_none)?,
    );
    assert_eq!(a, b, "same key, same backend for every flow");
    let differ = |x: &[[u8; 4]], y: &[[u8; 4]]| x.iter().zip(y).filter(|(p, q)| p != q).count();
    // Three equal backends: unrelated hashes agree on about a third of the flows.
    assert!(differ(&a, &c) > 500, "{} of 1000 differ", differ(&a, &c));
    assert!(
        differ(&a, &none) > 500,
        "{} of 1000 differ",
        differ(&a, &none)
    );
    Ok(())
}

// ---- tc_probe_encap: health-check probes through the tunnel ---------------------------------

/// The balancer's own address: a probe's source, a reply's destination.
const LB_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const LB_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// A frame as the host stack sends it out of the interface: from the balancer, to the router.
fn outgoing(mut frame: Vec<u8>) -> Vec<u8> {
    let (dst, src) = frame.split_at_mut(6);
    dst.swap_with_slice(&mut src[..6]);
    frame
}

fn probe_stat(lab: &Lab, stat: ProbeStat) -> Result<u64> {
    Ok(lab
        .lb
        .probe_stats()?
        .into_iter()
        .find(|(s, _)| *s == stat)
        .map_or(0, |(_, v)| v))
}

fn run_tc(lab: &mut Lab, frame: &[u8], mark: u32) -> Result<(u32, Vec<u8>)> {
    run_tc_once(lab.lb.probe_program()?, frame, mark)
}

fn assert_probe_dropped(lab: &mut Lab, frame: &[u8], mark: u32, reason: ProbeStat) -> Result<()> {
    let before = probe_stat(lab, reason)?;
    let (verdict, _) = run_tc(lab, frame, mark)?;
    assert_eq!(verdict, TC_ACT_SHOT, "verdict for {}", reason.name());
    assert_eq!(probe_stat(lab, reason)?, before + 1, "{}", reason.name());
    Ok(())
}

/// The outer header of a probe is the one xdp_lb gives a client packet of the same flow to the
/// same backend (the same expectation as the XDP fixtures above): both families, both mixed.
#[test]
fn probe_is_encapsulated_to_its_marked_backend_exactly_as_client_packets() -> Result<()> {
    let mut lab = Lab::new()?;
    let probes = [
        outgoing(frames::tcp4(LB_ADDR, 41000, WEB, 80, Tcp::Syn, &[])),
        outgoing(frames::tcp6(
            LB_ADDR6,
            41001,
            WEB6,
            80,
            Tcp::Ack,
            b"GET / HTTP/1.1\r\n\r\n",
        )),
    ];
    let mut runs = 0;
    for frame in &probes {
        // 0 and 1: IPv4 backends, 3: IPv6 (IPv4 in IPv6, IPv6 in IPv4 included).
        for id in [0, 1, 3] {
            let hash = lab.hash(&flow_of(frame)?);
            let expected = encapsulated(frame, backend_addr(&lab.lb, id)?, &lab.outer(), hash);
            let (verdict, out) = run_tc(&mut lab, frame, probe_mark(id))?;
            assert_eq!(verdict, TC_ACT_OK, "backend {id}");
            assert_eq!(hex(&out), hex(&expected), "probe to backend {id}");
            runs += 1;
        }
    }
    assert_eq!(probe_stat(&lab, ProbeStat::ProbeEncapsulated)?, runs);
    // xdp_lb saw none of it.
    assert_eq!(lab.lb.stat(Stat::Forwarded)?, 0);
    Ok(())
}

#[test]
fn unmarked_packets_and_foreign_marks_leave_untouched() -> Result<()> {
    let mut lab = Lab::new()?;
    let frame = outgoing(frames::tcp4(LB_ADDR, 41000, WEB, 80, Tcp::Syn, &[]));
    let marks = [0, 0x1234, 0x6c63_0001, 0x0000_6c62];
    for mark in marks {
        let (verdict, out) = run_tc(&mut lab, &frame, mark)?;
        assert_eq!(verdict, TC_ACT_OK, "mark {mark:#x}");
        assert_eq!(out, frame, "mark {mark:#x}: untouched");
    }
    assert_eq!(
        probe_stat(&lab, ProbeStat::ProbePassUnmarked)?,
        marks.len() as u64
    );
    Ok(())
}

/// A marked packet is encapsulated or dropped: never sent as it is, towards the VIP.
#[test]
fn marked_packets_that_cannot_be_encapsulated_are_dropped_with_their_reason() -> Result<()> {
    let mut lab = Lab::new()?;
    let syn = outgoing(frames::tcp4(LB_ADDR, 41000, WEB, 80, Tcp::Syn, &[]));
    // A backend id no backend holds (the lab fills ids 0..5).
    assert_probe_dropped(
        &mut lab,
        &syn,
        probe_mark(100),
        ProbeStat::ProbeDropUnknownBackend,
    )?;
    let udp = outgoing(frames::udp4(LB_ADDR, 41000, WEB, 80, b"not a probe"));
    assert_probe_dropped(&mut lab, &udp, probe_mark(0), ProbeStat::ProbeDropMalformed)?;
    let arp = frames::arp_request();
    assert_probe_dropped(&mut lab, &arp, probe_mark(0), ProbeStat::ProbeDropMalformed)?;
    let payload = vec![0u8; MTU as usize - 40];
    let big = outgoing(frames::tcp4(LB_ADDR, 41000, WEB, 80, Tcp::Ack, &payload));
    assert_probe_dropped(&mut lab, &big, probe_mark(0), ProbeStat::ProbeDropTooBig)?;
    let mut config = lab.config;
    config.ready = 0;
    lab.set_config(config)?;
    assert_probe_dropped(
        &mut lab,
        &syn,
        probe_mark(0),
        ProbeStat::ProbeDropUnconfigured,
    )?;
    Ok(())
}

/// The backend answers a probe from the VIP to the balancer's own address, directly: xdp_lb
/// hands it to the host stack untouched (it is not addressed to a VIP).
#[test]
fn probe_reply_from_the_vip_to_the_balancer_passes_to_the_host() -> Result<()> {
    let (mut lab, _) = web_lab()?;
    let replies = [
        frames::tcp4(
            WEB,
            80,
            LB_ADDR,
            41000,
            Tcp::Ack,
            b"HTTP/1.1 200 OK\r\n\r\n",
        ),
        frames::tcp6(WEB6, 80, LB_ADDR6, 41001, Tcp::Ack, &[]),
    ];
    for frame in &replies {
        assert_passed_untouched(&mut lab, frame)?;
    }
    assert_eq!(lab.lb.stat(Stat::PassNotVip)?, replies.len() as u64);
    assert_eq!(lab.lb.stat(Stat::Forwarded)?, 0);
    Ok(())
}
