//! Packet fixtures through the loaded backend-side decap program.

use anyhow::Result;
use lb_agent::dataplane::{Decap, DECAP_PROGRAM};
use lb_common::DecapStat;
use lb_tests::{
    expect::{decapsulated, encapsulated, Outer},
    frames::{self, Tcp},
    run::{run_once, XDP_DROP, XDP_PASS},
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 7);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 7);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
const HOST: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);

const OUTER: Outer = Outer {
    src_v4: Ipv4Addr::new(198, 18, 0, 2),
    src_v6: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2),
    ttl: 64,
};

fn decap() -> Result<Decap> {
    let mut d = Decap::load()?;
    d.add_local(HOST.into())?;
    d.add_local(HOST6.into())?;
    Ok(d)
}

fn run(d: &mut Decap, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
    run_once(d.program(DECAP_PROGRAM)?, frame)
}

#[test]
fn every_tunnel_combination_is_stripped_to_the_inner_frame() -> Result<()> {
    let mut d = decap()?;
    let v4 = frames::tcp4(CLIENT, 40000, VIP, 80, Tcp::Syn, &[]);
    let v6 = frames::tcp6(CLIENT6, 40000, VIP6, 80, Tcp::Syn, b"hello");
    let cases: [(&[u8], IpAddr, usize); 4] = [
        (&v4, HOST.into(), 20),  // IPIP
        (&v6, HOST6.into(), 40), // IPv6-in-IPv6
        (&v4, HOST6.into(), 40), // IPv4-in-IPv6
        (&v6, HOST.into(), 20),  // IPv6-in-IPv4
    ];
    for (inner, host, outer_len) in cases {
        let tunnel = encapsulated(inner, host, &OUTER, 0x12345);
        let (verdict, out) = run(&mut d, &tunnel)?;
        assert_eq!(verdict, XDP_PASS);
        assert_eq!(out, decapsulated(&tunnel, outer_len), "outer {host}");
        // The inner frame keeps the tunnel frame's MACs and carries the client's packet intact.
        assert_eq!(&out[14..], &inner[14..]);
    }
    assert_eq!(d.stat(DecapStat::Decapsulated)?, 4);
    Ok(())
}

#[test]
fn vlan_tagged_tunnel_keeps_its_tag() -> Result<()> {
    let mut d = decap()?;
    let inner = frames::tcp4_vlan(CLIENT, 40000, VIP, 80, 7);
    let tunnel = encapsulated(&inner, HOST.into(), &OUTER, 1);
    let (verdict, out) = run(&mut d, &tunnel)?;
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(out, decapsulated(&tunnel, 20));
    // Tag and client packet as the balancer received them.
    assert_eq!(&out[12..], &inner[12..]);
    Ok(())
}

#[test]
fn other_traffic_is_untouched() -> Result<()> {
    let mut d = decap()?;
    let plain = frames::tcp4(CLIENT, 40000, HOST, 22, Tcp::Syn, &[]);
    let to_someone_else = encapsulated(&plain, Ipv4Addr::new(198, 18, 1, 99).into(), &OUTER, 0);
    for frame in [
        plain.clone(),
        to_someone_else,
        frames::arp_request(),
        plain[..20].to_vec(),
    ] {
        let (verdict, out) = run(&mut d, &frame)?;
        assert_eq!(verdict, XDP_PASS);
        assert_eq!(out, frame);
    }
    assert_eq!(d.stat(DecapStat::Pass)?, 4);
    assert_eq!(d.stat(DecapStat::Decapsulated)?, 0);
    Ok(())
}

#[test]
fn tunnel_with_a_broken_inner_header_is_dropped() -> Result<()> {
    let mut d = decap()?;
    let inner = frames::tcp4(CLIENT, 40000, VIP, 80, Tcp::Syn, &[]);
    let mut tunnel = encapsulated(&inner, HOST.into(), &OUTER, 0);
    // Protocol 4 announces IPv4, but the inner version nibble says 6.
    tunnel[14 + 20] = 0x65;
    let (verdict, _) = run(&mut d, &tunnel)?;
    assert_eq!(verdict, XDP_DROP);
    // Inner header cut short.
    let tunnel = encapsulated(&inner, HOST.into(), &OUTER, 0);
    let (verdict, _) = run(&mut d, &tunnel[..14 + 20 + 10])?;
    assert_eq!(verdict, XDP_DROP);
    assert_eq!(d.stat(DecapStat::DropMalformed)?, 2);
    Ok(())
}
