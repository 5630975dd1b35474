use crate::config::{
    parse,
    tests::{assert_rejected, line, rejected, vip, with_check, HEAD},
};

// ---- rejected: agent --------------------------------------------------------------------------

#[test]
fn rejects_empty_interface() {
    let text = "[agent]\ninterface = \"\"\n";
    assert_rejected(text, "agent.interface", 2, "must not be empty");
}

#[test]
fn rejects_ipv4_backend_without_encap_source_v4() {
    let text = r#"[agent]
interface = "eth0"
encap_source_v6 = "2001:db8::2"

[[vip]]
name = "web"
address = "2001:db8::10"
port = 80
protocol = "tcp"
backend = [
  { address = "2001:db8:1::1" },
  { address = "2001:db8:1::2" },
  { address = "198.18.1.3" },   # v4
]
"#;
    assert_rejected(
        text,
        "vip[0].backend[2].address",
        line(text, "# v4"),
        "agent.encap_source_v4",
    );
}

#[test]
fn rejects_ipv6_backend_without_encap_source_v6() {
    let text = format!(
        "{HEAD}[[vip]]\nname = \"web\"\naddress = \"198.18.0.10\"\nport = 80\n\
         protocol = \"tcp\"\n[[vip.backend]]\naddress = \"198.18.1.1\"\n\
         [[vip.backend]]\naddress = \"2001:db8:1::1\" # v6\n"
    );
    assert_rejected(
        &text,
        "vip[0].backend[1].address",
        line(&text, "# v6"),
        "agent.encap_source_v6",
    );
}

#[test]
fn rejects_encap_source_hash_bits_above_16() {
    let text = format!("{HEAD}encap_source_hash_bits = 17\n");
    assert_rejected(&text, "agent.encap_source_hash_bits", 4, "got 17");
}

#[test]
fn rejects_table_size_not_prime() {
    let text = format!("{HEAD}table_size = 65536\n");
    assert_rejected(&text, "agent.table_size", 4, "prime");
}

#[test]
fn rejects_table_size_below_101() {
    let text = format!("{HEAD}table_size = 97\n");
    assert_rejected(&text, "agent.table_size", 4, ">= 101, got 97");
}

#[test]
fn rejects_table_size_too_small_for_the_backends() {
    let text = format!(
        "{HEAD}table_size = 101\n\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.10\"\n\
         port = 80\nprotocol = \"tcp\"\n\n[[vip.backend]] # first\naddress = \"198.18.1.1\"\n\
         [[vip.backend]]\naddress = \"198.18.1.2\"\n"
    );
    assert_rejected(
        &text,
        "vip[0].backend",
        line(&text, "# first"),
        "table_size 101 is too small for 2 backends: keep it above 100 x the backend count",
    );
}

#[test]
fn rejects_max_vips_zero() {
    let text = format!("{HEAD}max_vips = 0\n");
    assert_rejected(&text, "agent.max_vips", 4, "at least 1");
}

#[test]
fn rejects_max_vips_below_the_vip_count() {
    let text = format!(
        "{HEAD}max_vips = 1\n[[vip]]\nname = \"a\"\naddress = \"198.18.0.10\"\nport = 80\n\
         protocol = \"tcp\"\n[[vip]]\nname = \"b\"\naddress = \"198.18.0.11\"\nport = 80\n\
         protocol = \"tcp\"\n"
    );
    assert_rejected(
        &text,
        "agent.max_vips",
        4,
        "2 VIPs are configured but max_vips is 1",
    );
}

#[test]
fn rejects_too_many_vips_for_the_default_max_vips_at_the_agent_table() {
    // `max_vips` is absent: the error points at `[agent]`.
    let mut text = String::from("# comment\n[agent]\ninterface = \"eth0\"\n");
    for i in 0..=lb_common::DEFAULT_MAX_VIPS {
        text += &format!(
            "[[vip]]\nname = \"v{i}\"\naddress = \"198.18.0.10\"\nport = {}\nprotocol = \"tcp\"\n",
            i + 1
        );
    }
    assert_rejected(&text, "agent.max_vips", 2, "VIPs are configured");
}

#[test]
fn rejects_short_flow_idle_timeout() {
    let text = format!("{HEAD}flow_idle_timeout_ms = 999\n");
    assert_rejected(&text, "agent.flow_idle_timeout_ms", 4, "at least 1000");
}

#[test]
fn rejects_small_conn_table_size() {
    let text = format!("{HEAD}conn_table_size = 1023\n");
    assert_rejected(&text, "agent.conn_table_size", 4, "at least 1024");
}

#[test]
fn rejects_mtu_below_576() {
    let text = format!("{HEAD}mtu = 575\n");
    assert_rejected(&text, "agent.mtu", 4, "at least 576, got 575");
    // 576 is fine without IPv6.
    parse(&format!("{HEAD}mtu = 576\n"), "lb.toml").unwrap();
}

#[test]
fn rejects_mtu_below_1280_with_ipv6() {
    let text = format!(
        "{HEAD}mtu = 1279\n[[vip]]\nname = \"web\"\naddress = \"2001:db8::10\"\nport = 80\n\
         protocol = \"tcp\"\n"
    );
    assert_rejected(&text, "agent.mtu", 4, "at least 1280");
}

#[test]
fn rejects_mtu_above_9216() {
    let text = format!("{HEAD}mtu = 9217\n");
    assert_rejected(&text, "agent.mtu", 4, "at most 9216");
}

#[test]
fn rejects_outer_ttl_zero() {
    let text = format!("{HEAD}outer_ttl = 0\n");
    assert_rejected(&text, "agent.outer_ttl", 4, "at least 1");
}

#[test]
fn rejects_bad_log_level() {
    let text = format!("{HEAD}log_level = \"lb_agent=loud\"\n");
    assert_rejected(&text, "agent.log_level", 4, "\"lb_agent=loud\"");
}

// ---- rejected: VIPs ---------------------------------------------------------------------------

#[test]
fn rejects_empty_vip_name() {
    let text = format!("{HEAD}{}", vip("", "198.18.0.10", 80));
    assert_rejected(
        &text,
        "vip[0].name",
        line(&text, "name ="),
        "must not be empty",
    );
}

#[test]
fn rejects_bad_characters_in_vip_name() {
    let text = format!(
        "{HEAD}{}{}",
        vip("ok", "198.18.0.9", 80),
        vip("web site", "198.18.0.10", 80)
    );
    assert_rejected(
        &text,
        "vip[1].name",
        line(&text, "web site"),
        "may only contain letters, digits",
    );
}

#[test]
fn rejects_duplicate_vip_name() {
    let text = format!(
        "{HEAD}{}{}",
        vip("web", "198.18.0.10", 80),
        vip("web", "198.18.0.11", 80).replace("name", "name ") // marker: "name  ="
    );
    assert_rejected(
        &text,
        "vip[1].name",
        line(&text, "name  ="),
        "duplicate VIP name \"web\" (also vip[0].name)",
    );
}

#[test]
fn rejects_duplicate_vip_address_port_protocol() {
    let text = format!(
        "{HEAD}{}{}{}",
        vip("a", "198.18.0.10", 80),
        vip("b", "198.18.0.10", 443),
        vip("c", "198.18.0.10", 80).replace("[[vip]]", "[[vip]] # c")
    );
    assert_rejected(
        &text,
        "vip[2]",
        line(&text, "# c"),
        "address 198.18.0.10 port 80 protocol tcp is already used by vip[0]",
    );
    // Same address and port, other protocol: fine.
    let text = format!(
        "{HEAD}{}{}",
        vip("a", "198.18.0.10", 80),
        vip("b", "198.18.0.10", 80).replace("tcp", "udp")
    );
    parse(&text, "lb.toml").unwrap();
}

// ---- rejected: backends -----------------------------------------------------------------------

#[test]
fn rejects_duplicate_backend_address() {
    let text = format!(
        "{HEAD}{}[[vip.backend]]\naddress = \"198.18.1.1\"\n[[vip.backend]]\n\
         address = \"198.18.1.2\"\n[[vip.backend]]\naddress = \"198.18.1.1\" # again\n",
        vip("web", "198.18.0.10", 80)
    );
    assert_rejected(
        &text,
        "vip[0].backend[2].address",
        line(&text, "# again"),
        "duplicate backend address 198.18.1.1 (also vip[0].backend[0].address)",
    );
}

#[test]
fn rejects_backend_weight_zero() {
    let text = format!(
        "{HEAD}{}[[vip.backend]]\naddress = \"198.18.1.1\"\n[[vip.backend]]\n\
         address = \"198.18.1.2\"\nweight = 0\n",
        vip("web", "198.18.0.10", 80)
    );
    assert_rejected(
        &text,
        "vip[0].backend[1].weight",
        line(&text, "weight = 0"),
        "must be between 1 and 10000, got 0",
    );
    assert!(rejected(&text).contains("drain"));
}

#[test]
fn rejects_backend_weight_above_10000() {
    let text = format!(
        "{HEAD}{}backend = [{{ address = \"198.18.1.1\", weight = 10001 }}]\n",
        vip("web", "198.18.0.10", 80)
    );
    assert_rejected(
        &text,
        "vip[0].backend[0].weight",
        line(&text, "10001"),
        "must be between 1 and 10000, got 10001",
    );
}

#[test]
fn rejects_more_than_max_backends_in_total() {
    // 28 VIPs x 600 backends: each VIP fits table_size 65537, the total does not.
    let per_vip = 600;
    let mut text = String::from(HEAD);
    let mut expected_line = 0;
    for i in 0..28 {
        text += &vip(&format!("v{i}"), &format!("198.18.0.{}", 10 + i), 80);
        for j in 0..per_vip {
            if i * per_vip + j == lb_common::MAX_BACKENDS as usize {
                expected_line = text.lines().count() + 1;
            }
            text += &format!(
                "[[vip.backend]]\naddress = \"10.{i}.{}.{}\"\n",
                j / 256,
                j % 256
            );
        }
    }
    let n = lb_common::MAX_BACKENDS as usize; // 0-based index of the first one too many
    let path = format!("vip[{}].backend[{}]", n / per_vip, n % per_vip);
    assert_eq!(path, "vip[27].backend[184]");
    assert_rejected(&text, &path, expected_line, "at most 16384 across all VIPs");
}

// ---- rejected: health checks ------------------------------------------------------------------

#[test]
fn rejects_check_interval_below_10ms() {
    let text = with_check("interval_ms = 9\ntimeout_ms = 5");
    assert_rejected(
        &text,
        "vip[0].health_check.interval_ms",
        line(&text, "interval_ms"),
        "between 10 and 3600000 (1 hour), got 9",
    );
}

#[test]
fn rejects_check_timeout_zero() {
    let text = with_check("timeout_ms = 0");
    assert_rejected(
        &text,
        "vip[0].health_check.timeout_ms",
        line(&text, "timeout_ms"),
        "at least 1, got 0",
    );
}

#[test]
fn rejects_check_timeout_above_interval() {
    let text = with_check("interval_ms = 100\ntimeout_ms = 101");
    assert_rejected(
        &text,
        "vip[0].health_check.timeout_ms",
        line(&text, "timeout_ms"),
        "must not exceed interval_ms (100), got 101",
    );
}

#[test]
fn rejects_check_rise_zero() {
    let text = with_check("rise = 0");
    assert_rejected(
        &text,
        "vip[0].health_check.rise",
        line(&text, "rise"),
        "at least 1",
    );
}

#[test]
fn rejects_check_fall_zero() {
    let text = with_check("fall = 0");
    assert_rejected(
        &text,
        "vip[0].health_check.fall",
        line(&text, "fall"),
        "at least 1",
    );
}

#[test]
fn rejects_check_path_without_slash() {
    let text = with_check("kind = \"http\"\npath = \"healthz\"");
    assert_rejected(
        &text,
        "vip[0].health_check.path",
        line(&text, "healthz"),
        "must start with '/', got \"healthz\"",
    );
}

#[test]
fn rejects_check_expect_status_out_of_range() {
    for status in [0, 99, 600] {
        let text = with_check(&format!("kind = \"http\"\nexpect_status = {status}"));
        assert_rejected(
            &text,
            "vip[0].health_check.expect_status",
            line(&text, "expect_status"),
            &format!("between 100 and 599, got {status}"),
        );
    }
}

#[test]
fn rejects_any_port_vip_without_check_port_at_the_vip_table() {
    // No `[vip.health_check]` at all (default kind tcp): points at `[[vip]]`.
    let text = format!("{HEAD}{}", vip("any", "198.18.0.10", 0));
    assert_rejected(
        &text,
        "vip[0].health_check.port",
        line(&text, "[[vip]]"),
        "required",
    );
    // kind = "none" needs no port.
    parse(
        &with_check("kind = \"none\"").replace("port = 80", "port = 0"),
        "lb.toml",
    )
    .unwrap();
}

#[test]
fn rejects_any_port_vip_without_check_port_at_the_check_table() {
    let text = with_check("kind = \"http\"").replace("port = 80", "port = 0");
    assert_rejected(
        &text,
        "vip[0].health_check.port",
        line(&text, "[vip.health_check]"),
        "required",
    );
    // With a check port it is fine.
    let ok = with_check("kind = \"http\"\nport = 8080").replace("port = 80\n", "port = 0\n");
    assert_eq!(parse(&ok, "lb.toml").unwrap().vips[0].check_port(), 8080);
}

#[test]
fn rejects_check_port_zero() {
    let text = with_check("port = 0");
    assert_rejected(
        &text,
        "vip[0].health_check.port",
        line(&text, "port = 0"),
        "between 1 and 65535",
    );
}

// ---- the corpus of unusable values ------------------------------------------------------------

/// A valid configuration; each line a corpus case replaces ends in a `# marker` comment.
const CORPUS_BASE: &str = r#"[agent]
interface = "eth0" # iface
encap_source_v4 = "198.18.0.2" # src4
encap_source_v6 = "2001:db8::2" # src6
table_size = 65537 # table
max_vips = 64 # maxv

[[vip]]
name = "web"
address = "198.18.0.10" # vip
port = 80
protocol = "tcp"
[vip.health_check]
kind = "http"
path = "/healthz" # path
interval_ms = 1000 # interval
timeout_ms = 500 # timeout
[[vip.backend]]
address = "198.18.1.1" # backend
"#;

/// `CORPUS_BASE` with the line marked `marker` replaced by `line` (keeping the marker).
fn corpus_case(marker: &str, line: &str) -> String {
    let tag = format!("# {marker}");
    let mut found = false;
    let text: String = CORPUS_BASE
        .lines()
        .map(|l| {
            if l.ends_with(&tag) {
                found = true;
                format!("{line} {tag}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(found, "no line marked {tag}");
    text
}

/// Every value `check` and reload once accepted although the agent cannot use it (issue 12,
/// item 8), with the key and the reason it is refused at: (marker, line, key, reason).
#[rustfmt::skip]
const UNUSABLE: &[(&str, &str, &str, &str)] = &[
    // Interface names (IFNAMSIZ, and they name pin files).
    ("iface", r#"interface = "a-sixteen-byte-nm""#, "agent.interface", "interface names are at most 15"),
    ("iface", r#"interface = "../../etc""#, "agent.interface", "is not an interface name"),
    ("iface", r#"interface = "..""#, "agent.interface", "is not an interface name"),
    ("iface", r#"interface = "eth 0""#, "agent.interface", "whitespace"),
    ("iface", r#"interface = "eth0:1""#, "agent.interface", "':'"),
    // Health-check request targets.
    ("path", r#"path = "/health check""#, "vip[0].health_check.path", "whitespace or a control character"),
    ("path", r#"path = "/h\r\nHost: x""#, "vip[0].health_check.path", "whitespace or a control character"),
    ("path", r#"path = "/h\u0000""#, "vip[0].health_check.path", "control character"),
    ("path", r#"path = "healthz""#, "vip[0].health_check.path", "must start with '/'"),
    ("path", r#"path = "/h\u00e9""#, "vip[0].health_check.path", "non-ASCII"),
    ("path", r#"path = "/h#frag""#, "vip[0].health_check.path", "fragment"),
    // Intervals and timeouts.
    ("interval", "interval_ms = 9223372036854775807", "vip[0].health_check.interval_ms", "between 10 and 3600000 (1 hour), got 9223372036854775807"),
    ("interval", "interval_ms = 3600001", "vip[0].health_check.interval_ms", "between 10 and 3600000"),
    ("interval", "interval_ms = 9", "vip[0].health_check.interval_ms", "between 10 and 3600000"),
    ("timeout", "timeout_ms = 9223372036854775807", "vip[0].health_check.timeout_ms", "must not exceed interval_ms (1000)"),
    ("timeout", "timeout_ms = 0", "vip[0].health_check.timeout_ms", "at least 1"),
    // VIPs: unicast only.
    ("vip", r#"address = "0.0.0.0""#, "vip[0].address", "the unspecified address"),
    ("vip", r#"address = "255.255.255.255""#, "vip[0].address", "the broadcast address"),
    ("vip", r#"address = "224.0.0.1""#, "vip[0].address", "a multicast address"),
    ("vip", r#"address = "127.0.0.1""#, "vip[0].address", "a loopback address"),
    ("vip", r#"address = "::""#, "vip[0].address", "the unspecified address"),
    ("vip", r#"address = "ff02::1""#, "vip[0].address", "a multicast address"),
    ("vip", r#"address = "::1""#, "vip[0].address", "a loopback address"),
    ("vip", r#"address = "::ffff:127.0.0.1""#, "vip[0].address", "a loopback address"),
    // Backends: another unicast host.
    ("backend", r#"address = "127.0.0.1""#, "vip[0].backend[0].address", "a loopback address"),
    ("backend", r#"address = "0.0.0.0""#, "vip[0].backend[0].address", "the unspecified address"),
    ("backend", r#"address = "198.18.0.10""#, "vip[0].backend[0].address", "is a VIP address"),
    ("backend", r#"address = "224.0.0.5""#, "vip[0].backend[0].address", "a multicast address"),
    ("backend", r#"address = "255.255.255.255""#, "vip[0].backend[0].address", "the broadcast address"),
    ("backend", r#"address = "::""#, "vip[0].backend[0].address", "the unspecified address"),
    ("backend", r#"address = "ff05::2""#, "vip[0].backend[0].address", "a multicast address"),
    ("backend", r#"address = "::1""#, "vip[0].backend[0].address", "a loopback address"),
    // Encapsulation sources.
    ("src4", r#"encap_source_v4 = "0.0.0.0""#, "agent.encap_source_v4", "the unspecified address"),
    ("src4", r#"encap_source_v4 = "224.0.0.1""#, "agent.encap_source_v4", "a multicast address"),
    ("src4", r#"encap_source_v4 = "255.255.255.255""#, "agent.encap_source_v4", "the broadcast address"),
    ("src4", r#"encap_source_v4 = "127.0.0.1""#, "agent.encap_source_v4", "a loopback address"),
    ("src6", r#"encap_source_v6 = "::""#, "agent.encap_source_v6", "the unspecified address"),
    ("src6", r#"encap_source_v6 = "ff02::1""#, "agent.encap_source_v6", "a multicast address"),
    ("src6", r#"encap_source_v6 = "::1""#, "agent.encap_source_v6", "a loopback address"),
    // Table sizes the maps cannot hold.
    ("table", "table_size = 4294967291", "agent.table_size", "must be at most 1000003, got 4294967291"),
    ("table", "table_size = 1000033", "agent.table_size", "must be at most 1000003"),
    ("maxv", "max_vips = 1024", "agent.max_vips", "max_vips x 2 x table_size (1024 x 2 x 65537) must be at most 134217728"),
];

#[test]
fn every_unusable_value_is_rejected_with_key_line_and_reason() {
    parse(CORPUS_BASE, "lb.toml").expect("the corpus base is valid");
    for (marker, replacement, key, reason) in UNUSABLE {
        let text = corpus_case(marker, replacement);
        assert_rejected(&text, key, line(&text, &format!("# {marker}")), reason);
    }
}

/// The edges of the same rules are accepted.
#[test]
fn the_bounds_themselves_are_accepted() {
    for (marker, replacement) in [
        ("iface", r#"interface = "fifteen-bytes-0""#),
        ("iface", r#"interface = "bond0.100""#),
        ("path", r#"path = "/a%20b?x=1&y=/z""#),
        ("interval", "interval_ms = 3600000"),
        ("interval", "interval_ms = 500"),
        ("table", "table_size = 1000003"),
        ("maxv", "max_vips = 1023"),
        ("vip", r#"address = "2001:db8::10""#),
        ("backend", r#"address = "198.18.0.11""#),
    ] {
        let text = corpus_case(marker, replacement);
        if let Err(e) = parse(&text, "lb.toml") {
            panic!("{replacement} rejected: {e:#}");
        }
    }
}

// ---- a weight typed at run time (`lb-agent backend weight`, the control API) ------------------

#[test]
fn runtime_weight_accepts_the_files_range() {
    use crate::config::{parse_weight, Weight, WEIGHT_RANGE};
    for (text, weight) in [("1", 1), ("3", 3), ("10000", 10_000), ("007", 7)] {
        assert_eq!(parse_weight(text).map(|w| w.get()), Ok(weight), "{text}");
        assert!(WEIGHT_RANGE.contains(&weight));
    }
    assert_eq!(Weight::new(10_000).map(Weight::get), Ok(10_000));
    assert!(Weight::new(0).unwrap_err().contains("drain it"));
    assert!(Weight::new(10_001).is_err());
}

#[test]
fn runtime_weight_rejects_what_the_file_rejects_and_text() {
    use crate::config::parse_weight;
    for (text, expected) in [
        (
            "0",
            "must be between 1 and 10000, got 0 (to stop new flows to a backend, drain it",
        ),
        ("10001", "must be between 1 and 10000, got 10001"),
        ("-3", "must be between 1 and 10000, got -3"),
        ("-0", "must be between 1 and 10000, got -0"),
        (
            "99999999999999999999",
            "must be between 1 and 10000, got 99999999999999999999",
        ),
        (
            "abc",
            r#"must be a whole number between 1 and 10000, got "abc""#,
        ),
        (
            "2.5",
            r#"must be a whole number between 1 and 10000, got "2.5""#,
        ),
        ("", r#"must be a whole number between 1 and 10000, got """#),
        (
            "-",
            r#"must be a whole number between 1 and 10000, got "-""#,
        ),
        ("+5", r#"got "+5""#),
        (" 5", r#"got " 5""#),
        ("5 ", r#"got "5 ""#),
        ("1e3", r#"got "1e3""#),
        ("0x10", r#"got "0x10""#),
    ] {
        match parse_weight(text) {
            Ok(w) => panic!("{text:?} accepted as {w}"),
            Err(e) => assert!(e.contains(expected), "{text:?}: {e}"),
        }
    }
}
