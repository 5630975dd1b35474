use super::*;
use crate::{
    admin::{BackendHealth, BackendStatus, VipStatus},
    config::{AdminState, AllDown, HashMode, Protocol},
};
use std::collections::BTreeMap;

fn backend(addr: &str, packets: u64, effective: u32, health: BackendHealth) -> BackendStatus {
    BackendStatus {
        address: addr.parse().unwrap(),
        id: 0,
        weight: 100,
        weight_override: None,
        effective_weight: effective,
        admin_state: AdminState::Active,
        health,
        slots: 10,
        packets,
        bytes: packets * 100,
        checks_ok: 0,
        checks_failed: 0,
        last_check_latency_ms: None,
        last_change: String::new(),
        probe: None,
        probe_vips: 0,
    }
}

fn report(name: &str, packets: u64, drops: u64, backends: Vec<BackendStatus>) -> StatusReport {
    StatusReport {
        interface: "eth0".into(),
        xdp_mode: "native".into(),
        table_size: 65537,
        uptime_secs: 3723,
        config_path: "/etc/lb-agent/lb.toml".into(),
        flow_hash_key_digest: "none".into(),
        vips: vec![VipStatus {
            name: name.into(),
            address: "2001:db8:10::1".parse().unwrap(),
            port: 443,
            protocol: Protocol::Tcp,
            hash: HashMode::FiveTuple,
            all_down: AllDown::FailOpen,
            table_generation: 1,
            table_digest: String::new(),
            moved_slots: 0,
            serving: true,
            packets,
            bytes: packets * 100,
            backends,
        }],
        counters: BTreeMap::from([
            ("drop_no_backend".to_string(), drops),
            ("drop_malformed".to_string(), 7),
            ("forwarded".to_string(), packets),
        ]),
        bgp: None,
        conn_sweep: None,
        agent: Default::default(),
        probes: Vec::new(),
    }
}

#[test]
fn rates_are_per_second_and_survive_a_counter_reset() {
    let before = report(
        "web",
        1000,
        10,
        vec![
            backend("2001:db8:1::1", 500, 100, BackendHealth::Up),
            backend("2001:db8:1::2", 900, 40, BackendHealth::Up),
        ],
    );
    let now = report(
        "web",
        3000,
        30,
        vec![
            backend("2001:db8:1::1", 1500, 100, BackendHealth::Up),
            // Counter went back (maps recreated): no negative rate.
            backend("2001:db8:1::2", 100, 40, BackendHealth::Up),
            // New since the last sample: no rate yet.
            backend("2001:db8:1::3", 999, 0, BackendHealth::Down),
        ],
    );
    let v = view(&before, &now, 2.0);
    let vip = &v.vips[0];
    assert_eq!(vip.packets_per_sec, 1000.0);
    assert_eq!(vip.bytes_per_sec, 100_000.0);
    assert_eq!(vip.endpoint, "[2001:db8:10::1]:443/tcp");
    let rates: Vec<f64> = vip.backends.iter().map(|b| b.packets_per_sec).collect();
    assert_eq!(rates, vec![500.0, 0.0, 0.0]);
    assert_eq!(vip.backends[0].slow_start_percent, None, "at full weight");
    assert_eq!(vip.backends[1].slow_start_percent, Some(40), "ramping");
    assert_eq!(
        vip.backends[2].slow_start_percent, None,
        "down is not ramping"
    );
    assert_eq!(v.drops.len(), 1, "only counters that moved: {:?}", v.drops);
    assert_eq!(
        (v.drops[0].reason.as_str(), v.drops[0].per_sec),
        ("drop_no_backend", 10.0)
    );
}

#[test]
fn screen_fits_80_columns_with_long_names() {
    let mut before = report(
        "a-very-long-vip-name-for-the-public-web-frontend",
        0,
        0,
        vec![],
    );
    let b = backend(
        "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
        0,
        55,
        BackendHealth::Unchecked,
    );
    before.vips[0].backends.push(b.clone());
    let mut now = before.clone();
    now.vips[0].packets = 123_456_789;
    now.vips[0].bytes = 987_654_321_000;
    now.vips[0].backends[0].packets = 5_000_000;
    now.counters.insert("drop_no_backend".into(), 1_000_000);
    let screen = render(&view(&before, &now, 1.0));
    for line in screen.lines() {
        assert!(
            line.chars().count() <= WIDTH,
            "{} columns: {line:?}",
            line.len()
        );
    }
    assert!(screen.contains("unchecked"), "{screen}");
    assert!(screen.contains("55/100 55%"), "{screen}");
    assert!(screen.contains("123.5M"), "{screen}");
    assert!(screen.contains("drops/s: drop_no_backend 1.0M"), "{screen}");
    assert!(
        screen.starts_with("lb-agent top: eth0 (xdp native), every 1.0 s"),
        "{screen}"
    );
    assert!(
        screen.lines().next().unwrap().ends_with("up 1h02m"),
        "{screen}"
    );
}

#[test]
fn human_numbers() {
    assert_eq!(human(0.0), "0");
    assert_eq!(human(12.5), "12.5");
    assert_eq!(human(999.0), "999");
    assert_eq!(human(1234.0), "1.2k");
    assert_eq!(human(5_600_000.0), "5.6M");
    assert_eq!(human(7.2e9), "7.2G");
}

#[test]
fn json_view_has_the_documented_fields() {
    let r = report(
        "web",
        10,
        0,
        vec![backend("198.18.1.1", 5, 100, BackendHealth::Up)],
    );
    let json = serde_json::to_value(view(&r, &r, 1.0)).unwrap();
    let b = &json["vips"][0]["backends"][0];
    assert_eq!(b["address"], "198.18.1.1");
    assert_eq!(b["health"], "up");
    assert_eq!(b["admin_state"], "active");
    assert_eq!(b["packets_per_sec"], 0.0);
    assert_eq!(json["vips"][0]["serving"], true);
    assert_eq!(json["drops"], serde_json::json!([]));
}

/// A backend set to another weight at run time shows that weight, and is not taken for one
/// that ramps (its effective weight is below the file's, not below the override).
#[test]
fn a_weight_override_is_the_weight_shown_and_not_a_ramp() {
    let mut lower = backend("2001:db8:1::1", 0, 10, BackendHealth::Up);
    lower.weight_override = Some(10);
    let mut higher = backend("2001:db8:1::2", 0, 150, BackendHealth::Up);
    higher.weight_override = Some(300);
    let now = report("web", 0, 0, vec![lower, higher]);
    let v = view(&now, &now, 1.0);
    let b = &v.vips[0].backends;
    assert_eq!((b[0].weight, b[0].slow_start_percent), (10, None));
    assert_eq!((b[1].weight, b[1].slow_start_percent), (300, Some(50)));
}
