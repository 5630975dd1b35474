use super::*;
use crate::config::parse;
use crate::config::tests::{assert_rejected, line, rejected, vip, HEAD};

const BGP: &str = "\n[bgp]\nlocal_as = 65010\nrouter_id = \"198.18.0.2\"\ncommunities = [\"65010:100\"]\n\n[[bgp.neighbor]]\naddress = \"198.18.0.1\"\nremote_as = 65000\n";

#[test]
fn accepts_a_bgp_section_and_fills_defaults() {
    let text = format!("{HEAD}{}{BGP}", vip("web", "198.18.10.1", 80));
    let c = parse(&text, "lb.toml").unwrap();
    let b = c.bgp.unwrap();
    assert_eq!(b.local_as, 65010);
    assert_eq!(b.hold_time, 9);
    assert_eq!(b.communities, vec![Community::Standard(65010, 100)]);
    assert_eq!(b.announce_interface, "lb-announce");
    assert_eq!(
        b.include_file,
        PathBuf::from("/etc/bird/lb-agent/vips.conf")
    );
    assert_eq!(b.neighbors[0].remote_as, 65000);
    // No section: nothing announced, nothing else changes.
    assert!(parse(HEAD, "lb.toml").unwrap().bgp.is_none());
}

#[test]
fn rejects_hold_time_below_3() {
    let text =
        format!("{HEAD}{BGP}").replace("[[bgp.neighbor]]", "hold_time = 2\n[[bgp.neighbor]]");
    assert_rejected(
        &text,
        "bgp.hold_time",
        line(&text, "hold_time"),
        "at least 3",
    );
}

#[test]
fn rejects_a_bad_community() {
    let text = format!("{HEAD}{BGP}").replace("65010:100", "65010-100");
    assert_rejected(
        &text,
        "bgp.communities",
        line(&text, "communities"),
        "not a community",
    );
    let text = format!("{HEAD}{BGP}").replace("65010:100", "65010:70000");
    assert_rejected(
        &text,
        "bgp.communities",
        line(&text, "communities"),
        "not a community",
    );
}

#[test]
fn rejects_no_neighbor_and_duplicate_neighbors() {
    let none = format!("{HEAD}\n[bgp]\nlocal_as = 65010\nneighbor = []\n");
    assert_rejected(
        &none,
        "bgp.neighbor",
        line(&none, "neighbor ="),
        "at least one",
    );
    let twice = format!("{HEAD}{BGP}{}", &BGP[BGP.find("[[bgp").unwrap()..]);
    assert!(
        rejected(&twice).contains("duplicate neighbor 198.18.0.1"),
        "{twice}"
    );
}

#[test]
fn rejects_an_ipv6_vip_no_session_can_carry() {
    let text = format!(
        "{HEAD}encap_source_v6 = \"2001:db8::2\"\n{}{BGP}",
        vip("web6", "2001:db8:10::1", 80)
    );
    assert_rejected(
        &text,
        "vip[0].address",
        line(&text, "2001:db8:10::1"),
        "bgp.next_hop_v6",
    );
    let fixed = text.replace(
        "[[bgp.neighbor]]",
        "next_hop_v6 = \"2001:db8::2\"\n[[bgp.neighbor]]",
    );
    parse(&fixed, "lb.toml").unwrap();
}

#[test]
fn rejects_a_bad_interface_name_and_a_relative_include() {
    let text = format!("{HEAD}{BGP}").replace(
        "[[bgp.neighbor]]",
        "announce_interface = \"this-name-is-too-long\"\ninclude_file = \"vips.conf\"\n[[bgp.neighbor]]",
    );
    assert_rejected(
        &text,
        "bgp.announce_interface",
        line(&text, "announce_interface"),
        "not an interface name",
    );
    assert_rejected(
        &text,
        "bgp.include_file",
        line(&text, "include_file"),
        "absolute",
    );
}

#[test]
fn rejects_unknown_bgp_keys() {
    let text =
        format!("{HEAD}{BGP}").replace("remote_as = 65000", "remote_as = 65000\nremote_asn = 1");
    assert_rejected(
        &text,
        "bgp.neighbor[0].remote_asn",
        line(&text, "remote_asn"),
        "unknown field",
    );
}

/// BGP text with `keys` in `[bgp]` and `neighbor_keys` in its neighbor.
fn bgp_with(keys: &str, neighbor_keys: &str) -> String {
    format!("{HEAD}{BGP}{neighbor_keys}\n")
        .replace("[[bgp.neighbor]]", &format!("{keys}\n[[bgp.neighbor]]"))
}

#[test]
fn maintenance_and_bfd_defaults() {
    let b = parse(&bgp_with("", ""), "lb.toml").unwrap().bgp.unwrap();
    assert_eq!(b.maintenance_drain_ms, 30_000);
    assert_eq!((b.bfd_interval_ms, b.bfd_multiplier), (100, 3));
    assert!(!b.neighbors[0].bfd);
    let b = parse(
        &bgp_with(
            "maintenance_drain_ms = 0\nbfd_interval_ms = 50",
            "bfd = true",
        ),
        "lb.toml",
    )
    .unwrap()
    .bgp
    .unwrap();
    assert_eq!((b.maintenance_drain_ms, b.bfd_interval_ms), (0, 50));
    assert!(b.neighbors[0].bfd);
}

#[test]
fn rejects_a_drain_over_an_hour() {
    let text = bgp_with("maintenance_drain_ms = 3600001", "");
    assert_rejected(
        &text,
        "bgp.maintenance_drain_ms",
        line(&text, "maintenance_drain_ms"),
        "at most 3600000",
    );
    let text = bgp_with("maintenance_drain_ms = -1", "");
    assert!(rejected(&text).contains("maintenance_drain_ms"), "{text}");
}

#[test]
fn rejects_bfd_intervals_out_of_range() {
    for bad in ["5", "10001"] {
        let text = bgp_with(&format!("bfd_interval_ms = {bad}"), "bfd = true");
        assert_rejected(
            &text,
            "bgp.bfd_interval_ms",
            line(&text, "bfd_interval_ms"),
            &format!("must be 10 to 10000 milliseconds, got {bad}"),
        );
    }
    let text = bgp_with("bfd_multiplier = 0", "");
    assert_rejected(
        &text,
        "bgp.bfd_multiplier",
        line(&text, "bfd_multiplier"),
        "at least 1",
    );
    let text = bgp_with("bfd_multiplier = 300", "");
    assert!(rejected(&text).contains("bfd_multiplier"), "{text}");
}

#[test]
fn rejects_bfd_slower_than_the_hold_timer() {
    let text = bgp_with(
        "hold_time = 3\nbfd_interval_ms = 1000\nbfd_multiplier = 3",
        "bfd = true",
    );
    assert_rejected(
        &text,
        "bgp.bfd_multiplier",
        line(&text, "bfd_multiplier"),
        "3000 ms is not shorter than hold_time (3 s)",
    );
    // Without a BFD session the intervals are unused.
    let text = bgp_with(
        "hold_time = 3\nbfd_interval_ms = 1000\nbfd_multiplier = 3",
        "",
    );
    assert!(parse(&text, "lb.toml").is_ok());
}

#[test]
fn rejects_a_bfd_flag_that_is_not_a_bool() {
    let text = bgp_with("", "bfd = \"yes\"");
    let err = rejected(&text);
    assert!(
        err.contains(&format!("lb.toml:{}", line(&text, "bfd ="))) && err.contains("bool"),
        "{err}"
    );
}
