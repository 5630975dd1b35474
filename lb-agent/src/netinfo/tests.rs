//! Netinfo against the host's own namespace: lo, a missing interface, sysctls.

use super::*;
use std::net::{IpAddr, Ipv4Addr};

#[tokio::test]
async fn loopback() {
    let lo = interface("lo").await.expect("lo exists");
    assert_eq!(lo.name, "lo");
    assert_eq!(lo.mtu, 65536);
    assert_eq!(lo.mac, [0; 6]);
    assert!(lo.index > 0);
    assert!(lo.up, "lo is up");
    assert!(
        lo.addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
        "lo has 127.0.0.1: {:?}",
        lo.addrs
    );
    let all = interfaces().await.expect("interfaces");
    assert!(all.iter().any(|i| i.name == "lo" && i.index == lo.index));
    let facts = link_facts("lo").await.expect("netlink").expect("lo exists");
    assert!(facts.admin_up && facts.carrier);
    assert_eq!(facts.port_of, None);
}

#[tokio::test]
async fn missing_interface() {
    assert_eq!(find_interface("lbdoc-nope0").await.expect("netlink"), None);
    let e = interface("lbdoc-nope0").await.unwrap_err().to_string();
    assert!(e.contains("no interface named \"lbdoc-nope0\""), "{e}");
    assert!(e.contains("agent.interface"), "{e}");
    let e = gateway_mac("lbdoc-nope0").await.unwrap_err().to_string();
    assert!(e.contains("no interface named"), "{e}");
}

/// The host's lo has no default route: the error says what to do (and nothing is sent).
#[tokio::test]
async fn no_default_route() {
    let e = format!("{:#}", gateway_mac("lo").await.unwrap_err());
    assert!(e.contains("no default route via lo"), "{e}");
    assert!(e.contains("agent.gateway_mac"), "{e}");
}

#[test]
fn mac_format() {
    assert_eq!(
        format_mac(&[0xaa, 0xbb, 0xcc, 0x0d, 0xee, 0xff]),
        "aa:bb:cc:0d:ee:ff"
    );
    assert_eq!(format_mac(&[0; 6]), "00:00:00:00:00:00");
}

#[test]
fn sysctl() {
    let slashed = read_sysctl("net/ipv4/conf/all/rp_filter").expect("readable");
    assert!(["0", "1", "2"].contains(&slashed.as_str()), "{slashed}");
    assert_eq!(read_sysctl("net.ipv4.conf.all.rp_filter").unwrap(), slashed);
    let e = format!(
        "{:#}",
        read_sysctl("net/ipv4/conf/lbdoc-nope0/rp_filter").unwrap_err()
    );
    assert!(e.contains("net.ipv4.conf.lbdoc-nope0.rp_filter"), "{e}");
}

#[test]
fn driver_of_loopback() {
    // lo has no ethtool driver info; a missing interface has none either.
    assert_eq!(driver("lbdoc-nope0"), None);
    let _ = driver("lo");
}

#[test]
fn hw_addr_reads_an_interface_mac_and_none_for_a_missing_one() {
    // Loopback exists in every network namespace and has no Ethernet address.
    assert_eq!(hw_addr("lo"), Some([0; 6]));
    assert_eq!(hw_addr("no-such-if0"), None);
    // Longer than IFNAMSIZ - 1: no interface can have it.
    assert_eq!(hw_addr("a-name-far-too-long-for-linux"), None);
}
