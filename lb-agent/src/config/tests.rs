use super::*;
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
};

const EXAMPLE: &str = r#"[agent]
interface = "eth0"
xdp_mode = "native"          # native | skb | auto
pin_path = "/sys/fs/bpf/lb"
admin_listen = "127.0.0.1:9300"
gateway_mac = "auto"
encap_source_v4 = "198.18.0.2"
encap_source_v6 = "2001:db8::2"
table_size = 65537

[[vip]]
name = "web"
address = "198.18.0.10"
port = 80
protocol = "tcp"
hash = "five-tuple"
all_down = "fail-open"

[vip.health_check]
kind = "http"
port = 8080
path = "/healthz"
expect_status = 200
interval_ms = 1000
timeout_ms = 500
rise = 2
fall = 3

[[vip.backend]]
address = "198.18.1.1"
weight = 100
state = "active"
"#;

/// A valid `[agent]` table (3 lines) for IPv4 backends.
pub(super) const HEAD: &str = r#"[agent]
interface = "eth0"
encap_source_v4 = "198.18.0.2"
"#;

/// 1-based line of the only line of `text` containing `marker`.
pub(super) fn line(text: &str, marker: &str) -> usize {
    let hits: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(marker))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(hits.len(), 1, "marker {marker:?} in:\n{text}");
    hits[0]
}

pub(super) fn rejected(text: &str) -> String {
    match parse(text, "lb.toml") {
        Ok(config) => panic!("accepted:\n{text}\n=> {config:?}"),
        Err(err) => format!("{err:#}"),
    }
}

/// `text` is rejected with a message `lb.toml:LINE: PATH: ...` that contains `what`.
pub(super) fn assert_rejected(text: &str, path: &str, line: usize, what: &str) {
    let err = rejected(text);
    let prefix = format!("lb.toml:{line}: {path}: ");
    assert!(
        err.lines()
            .any(|l| l.starts_with(&prefix) && l.contains(what)),
        "expected a line starting with {prefix:?} containing {what:?}, got:\n{err}\nfor:\n{text}"
    );
}

/// A `[[vip]]` table (tcp) without backends.
pub(super) fn vip(name: &str, address: &str, port: u16) -> String {
    format!(
        "\n[[vip]]\nname = \"{name}\"\naddress = \"{address}\"\nport = {port}\nprotocol = \"tcp\"\n"
    )
}

/// One VIP with `check` as its `[vip.health_check]` table.
pub(super) fn with_check(check: &str) -> String {
    format!(
        "{HEAD}{}\n[vip.health_check]\n{check}\n",
        vip("web", "198.18.0.10", 80)
    )
}

// ---- accepted ---------------------------------------------------------------------------------

#[test]
fn checks_go_through_the_tunnel_unless_direct_is_asked_for() {
    let vip = |text: &str| parse(text, "lb.toml").unwrap().vips[0].health_check.via;
    assert_eq!(vip(&with_check("kind = \"tcp\"")), CheckVia::Tunnel);
    assert_eq!(vip(&with_check("via = \"tunnel\"")), CheckVia::Tunnel);
    assert_eq!(vip(&with_check("via = \"direct\"")), CheckVia::Direct);
}

#[test]
fn example_parses_and_defaults_are_filled() {
    let c = parse(EXAMPLE, "lb.toml").unwrap();
    let a = &c.agent;
    assert_eq!(a.interface, "eth0");
    assert_eq!(a.xdp_mode, XdpMode::Native);
    assert_eq!(a.pin_path, PathBuf::from("/sys/fs/bpf/lb"));
    assert_eq!(
        a.admin_listen,
        "127.0.0.1:9300".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(a.gateway_mac, GatewayMac::Auto);
    assert_eq!(a.encap_source_v4, Some(Ipv4Addr::new(198, 18, 0, 2)));
    assert_eq!(a.encap_source_v6, Some("2001:db8::2".parse().unwrap()));
    assert_eq!(a.table_size, 65537);
    // Defaults.
    assert_eq!(a.encap_source_hash_bits, 0);
    assert_eq!(a.max_vips, lb_common::DEFAULT_MAX_VIPS);
    assert_eq!(a.conn_table_size, 1_000_000);
    assert_eq!(a.mtu, 1500);
    assert_eq!(a.outer_ttl, lb_common::DEFAULT_OUTER_TTL);
    assert_eq!(a.new_flows_per_sec, lb_common::DEFAULT_NEW_FLOWS_PER_SEC);
    assert_eq!(a.slow_start_ms, 10_000);
    assert_eq!(a.flow_idle_timeout_ms, 900_000);
    assert_eq!(a.log_level, "info");

    assert_eq!(c.vips.len(), 1);
    let v = &c.vips[0];
    assert_eq!(v.name, "web");
    assert_eq!(v.address, "198.18.0.10".parse::<IpAddr>().unwrap());
    assert_eq!(v.port, 80);
    assert_eq!(v.protocol, Protocol::Tcp);
    assert_eq!(v.hash, HashMode::FiveTuple);
    assert_eq!(v.all_down, AllDown::FailOpen);
    let hc = &v.health_check;
    assert_eq!(hc.kind, CheckKind::Http);
    assert_eq!(hc.port, Some(8080));
    assert_eq!(hc.path, "/healthz");
    assert_eq!(
        (
            hc.expect_status.clone(),
            hc.interval_ms,
            hc.timeout_ms,
            hc.rise,
            hc.fall
        ),
        (crate::config::StatusSet::one(200), 1000, 500, 2, 3)
    );
    assert_eq!(
        v.backends,
        vec![BackendConfig {
            address: "198.18.1.1".parse().unwrap(),
            weight: 100,
            state: AdminState::Active,
        }]
    );
    assert_eq!(v.check_port(), 8080);
    assert!(c.vip("web").is_some());
    assert!(c.vip("nope").is_none());
}

#[test]
fn minimal_config_fills_every_default() {
    let text = format!(
        "{HEAD}\n[[vip]]\nname = \"dns\"\naddress = \"198.18.0.53\"\nport = 53\n\
         protocol = \"udp\"\n[[vip.backend]]\naddress = \"198.18.1.1\"\n"
    );
    let c = parse(&text, "lb.toml").unwrap();
    assert_eq!(c.agent.xdp_mode, XdpMode::Auto);
    assert_eq!(c.agent.pin_path, PathBuf::from("/sys/fs/bpf/lb"));
    assert_eq!(
        c.agent.admin_listen,
        SocketAddr::from(([127, 0, 0, 1], 9300))
    );
    assert_eq!(c.agent.gateway_mac, GatewayMac::Auto);
    assert_eq!(c.agent.encap_source_v6, None);
    assert_eq!(c.agent.table_size, lb_common::DEFAULT_TABLE_SIZE);
    let v = c.vip("dns").unwrap();
    assert_eq!(v.hash, HashMode::FiveTuple);
    assert_eq!(v.all_down, AllDown::FailOpen);
    assert_eq!(v.health_check, HealthCheckConfig::default());
    assert_eq!(v.health_check.kind, CheckKind::Tcp);
    assert_eq!(v.health_check.path, "/");
    assert_eq!(v.check_port(), 53);
    assert_eq!(v.backends[0].weight, 100);
    assert_eq!(v.backends[0].state, AdminState::Active);
    c.validate().unwrap();
}

#[test]
fn agent_only_config_is_valid() {
    let c = parse("[agent]\ninterface = \"eth0\"\n", "lb.toml").unwrap();
    assert!(c.vips.is_empty());
}

#[test]
fn to_toml_reparses_to_an_equal_config() {
    let c = parse(EXAMPLE, "lb.toml").unwrap();
    let out = c.to_toml().unwrap();
    assert_eq!(parse(&out, "resolved").unwrap(), c, "{out}");
    // Defaults are written out.
    assert!(out.contains("conn_table_size = 1000000"), "{out}");

    let text = r#"[agent]
interface = "eth1"
xdp_mode = "skb"
gateway_mac = "02:AB:cd:00:00:01"
encap_source_v6 = "2001:db8::2"
encap_source_hash_bits = 8
log_level = "info,lb_agent=debug"

[[vip]]
name = "v6.dns"
address = "2001:db8::53"
port = 0
protocol = "udp"
hash = "source-ip"
all_down = "drop"
health_check = { kind = "none" }
backend = [
  { address = "2001:db8:1::1", weight = 5, state = "drain" },
  { address = "2001:db8:1::2", state = "disabled" },
]

[[vip]]
name = "v6-web"
address = "2001:db8::80"
port = 443
protocol = "tcp"
"#;
    let c = parse(text, "lb.toml").unwrap();
    assert_eq!(
        c.agent.gateway_mac,
        GatewayMac::Fixed([0x02, 0xab, 0xcd, 0, 0, 1])
    );
    assert_eq!(c.vips[0].check_port(), 0);
    let out = c.to_toml().unwrap();
    assert!(out.contains("gateway_mac = \"02:ab:cd:00:00:01\""), "{out}");
    assert_eq!(parse(&out, "resolved").unwrap(), c, "{out}");
}

#[test]
fn gateway_mac_strings() {
    assert_eq!("auto".parse::<GatewayMac>().unwrap(), GatewayMac::Auto);
    let mac: GatewayMac = "AA:bb:0C:dd:EE:ff".parse().unwrap();
    assert_eq!(mac, GatewayMac::Fixed([0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0xff]));
    assert_eq!(mac.to_string(), "aa:bb:0c:dd:ee:ff");
    for bad in [
        "",
        "aa:bb:cc:dd:ee",
        "aa:bb:cc:dd:ee:ff:00",
        "aa:bb:cc:dd:ee:f",
        "aa:bb:cc:dd:ee:fff",
        "aa-bb-cc-dd-ee-ff",
        "aa:bb:cc:dd:ee:gg",
        "+a:bb:cc:dd:ee:ff",
    ] {
        let err = bad.parse::<GatewayMac>().unwrap_err().to_string();
        assert!(err.contains(&format!("{bad:?}")), "{err}");
    }
}

#[test]
fn load_reads_the_file_and_names_it_in_errors() {
    let dir = std::env::temp_dir().join(format!("lb-agent-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, EXAMPLE).unwrap();
    assert_eq!(load(&good).unwrap(), parse(EXAMPLE, "x").unwrap());

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[agent]\ninterface = \"eth0\"\nmtu = 100\n").unwrap();
    let err = load(&bad).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}:3: agent.mtu: ", bad.display())),
        "{err}"
    );

    let missing = dir.join("missing.toml");
    let err = format!("{:#}", load(&missing).unwrap_err());
    assert!(err.contains(&missing.display().to_string()), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn validate_checks_configs_built_in_code() {
    let mut c = parse(EXAMPLE, "lb.toml").unwrap();
    c.validate().unwrap();
    c.vips[0].backends[0].weight = 0;
    let err = c.validate().unwrap_err().to_string();
    assert!(
        err.starts_with("vip[0].backend[0].weight: must be between 1 and 10000, got 0"),
        "{err}"
    );
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let text = "[agent]\ninterface = \"\"\nouter_ttl = 0\nmtu = 100\n";
    let err = rejected(text);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with("lb.toml:2: agent.interface: "),
        "{err}"
    );
    assert!(
        lines[1].starts_with("lb.toml:3: agent.outer_ttl: "),
        "{err}"
    );
    assert!(lines[2].starts_with("lb.toml:4: agent.mtu: "), "{err}");
}
