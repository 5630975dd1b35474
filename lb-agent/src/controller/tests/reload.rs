use super::*;
use crate::config::{parse, Protocol};
use proptest::prelude::*;

const AGENT: &str = r#"
[agent]
interface = "eth0"
gateway_mac = "02:00:00:00:00:fe"
encap_source_v4 = "198.18.0.2"
"#;

fn config(vips: &str) -> Config {
    match parse(&format!("{AGENT}{vips}"), "test") {
        Ok(c) => c,
        Err(e) => panic!("test config does not parse: {e:#}"),
    }
}

const WEB: &str = r#"
[[vip]]
name = "web"
address = "198.18.0.10"
port = 80
protocol = "tcp"
[[vip.backend]]
address = "198.18.1.1"
[[vip.backend]]
address = "198.18.1.2"
"#;

#[test]
fn identical_configuration_changes_nothing() {
    let c = config(WEB);
    let p = plan(&c, &c).unwrap();
    assert!(p.is_empty());
    assert_eq!(p.summary(), "configuration reloaded: no change");
}

#[test]
fn backend_added_removed_and_disabled() {
    let old = config(WEB);
    let new = config(&WEB.replace(
        "[[vip.backend]]\naddress = \"198.18.1.1\"\n",
        "[[vip.backend]]\naddress = \"198.18.1.3\"\n",
    ));
    let new = {
        let mut n = new;
        n.vips[0].backends[1].state = AdminState::Disabled;
        n
    };
    let p = plan(&old, &new).unwrap();
    assert_eq!(p.summary(), "configuration reloaded: updated VIP web");
    let [VipChange::Update(u)] = p.vips.as_slice() else {
        panic!("one update expected: {p:?}");
    };
    assert_eq!(u.removed, vec!["198.18.1.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(u.added.len(), 1);
    assert_eq!(u.added[0].address.to_string(), "198.18.1.3");
    assert_eq!(u.kept.len(), 1);
    assert!(u.kept[0].disables());
    assert!(!u.kept[0].restart_check);
    assert!(!u.flags_changed);
}

#[test]
fn key_change_replaces_and_order_is_removals_first() {
    let old = config(&format!(
        "{WEB}{}",
        WEB.replace("\"web\"", "\"old\"")
            .replace("port = 80", "port = 81")
    ));
    let new = config(&format!(
        "{}{}",
        WEB.replace("port = 80", "port = 8080"),
        WEB.replace("\"web\"", "\"new\"")
            .replace("198.18.0.10", "198.18.0.11")
    ));
    let p = plan(&old, &new).unwrap();
    assert_eq!(
        p.summary(),
        "configuration reloaded: removed VIP old, replaced VIP web, added VIP new"
    );
}

#[test]
fn check_change_restarts_every_checker_and_hash_change_sets_flags() {
    let old = config(WEB);
    let mut new = old.clone();
    new.vips[0].health_check.interval_ms += 1;
    new.vips[0].hash = HashMode::SourceIp;
    let p = plan(&old, &new).unwrap();
    let [VipChange::Update(u)] = p.vips.as_slice() else {
        panic!("one update expected: {p:?}");
    };
    assert!(u.flags_changed);
    assert_eq!(u.kept.len(), 2);
    assert!(u.kept.iter().all(|k| k.restart_check && k.admin.is_none()));
    assert_eq!(vip_flags(&new.vips[0]), VIP_F_HASH_SRC_ONLY);
}

#[test]
fn restart_only_settings_are_refused_with_their_names() {
    let old = config(WEB);
    let mut new = old.clone();
    new.agent.table_size = 251;
    new.agent.interface = "eth1".into();
    let err = plan(&old, &new).unwrap_err().to_string();
    assert_eq!(
        err,
        "agent.interface, agent.table_size changed: restart the agent to apply \
         (the running configuration stays)"
    );
    let mut new = old.clone();
    new.agent.slow_start_ms += 1;
    new.agent.new_flows_per_sec += 1;
    let p = plan(&old, &new).unwrap();
    assert!(p.agent_changed && p.vips.is_empty());
    assert_eq!(
        p.summary(),
        "configuration reloaded: agent.new_flows_per_sec, agent.slow_start_ms"
    );
}

#[test]
fn vip_key_follows_protocol_and_port() {
    let mut v = config(WEB).vips.remove(0);
    let tcp = vip_key(&v);
    v.protocol = Protocol::Udp;
    assert_ne!(vip_key(&v), tcp);
    v.protocol = Protocol::Tcp;
    assert_eq!(vip_key(&v), tcp);
}

fn ip(text: &str) -> IpAddr {
    match text.parse() {
        Ok(ip) => ip,
        Err(e) => panic!("{text}: {e}"),
    }
}

#[test]
fn a_reload_clears_every_weight_override_and_says_which() {
    let old = config(WEB);
    // The file changes nothing for 198.18.1.1 and removes 198.18.1.2.
    let new = config(&WEB.replace("[[vip.backend]]\naddress = \"198.18.1.2\"\n", ""));
    let overrides = [
        ("web".to_string(), ip("198.18.1.1"), 300),
        ("web".to_string(), ip("198.18.1.2"), 5),
        ("gone".to_string(), ip("198.18.1.9"), 7),
    ];
    let cleared = cleared_weights(&overrides, &new);
    assert_eq!(
        cleared.len(),
        3,
        "every override, the unchanged backend's too"
    );
    assert_eq!(cleared[0].now, Some(100));
    assert_eq!(cleared[1].now, None, "backend removed by the reload");
    assert_eq!(cleared[2].now, None, "VIP not in the file");
    let mut p = plan(&old, &new).unwrap();
    p.cleared_weights = cleared;
    assert_eq!(
        p.summary(),
        "configuration reloaded: updated VIP web; weight overrides cleared: web 198.18.1.1 \
         300 -> 100, web 198.18.1.2 5 (backend removed), gone 198.18.1.9 7 (backend removed)"
    );
}

#[test]
fn an_unchanged_file_still_clears_the_overrides() {
    let c = config(WEB);
    let mut p = plan(&c, &c).unwrap();
    assert_eq!(p.summary(), "configuration reloaded: no change");
    p.cleared_weights = cleared_weights(&[("web".to_string(), ip("198.18.1.2"), 1)], &c);
    assert!(!p.is_empty());
    assert_eq!(
        p.summary(),
        "configuration reloaded: no change in the file; weight overrides cleared: web \
         198.18.1.2 1 -> 100"
    );
    assert!(cleared_weights(&[], &c).is_empty());
}

/// A VIP's port and its backends: (last address byte, weight, admin state index).
type VipSpec = (u16, Vec<(u8, u32, u8)>);

/// Random VIPs named v0..vN, each over a few of 16 backend addresses.
fn vips() -> impl Strategy<Value = Vec<VipSpec>> {
    proptest::collection::vec(
        (
            prop_oneof![Just(80u16), Just(443)],
            proptest::collection::vec((0u8..16, 1u32..5, 0u8..3), 1..6),
        ),
        0..5,
    )
}

fn build(spec: &[VipSpec]) -> Config {
    let mut c = config("");
    for (i, (port, backends)) in spec.iter().enumerate() {
        let mut text = format!(
            "[[vip]]\nname = \"v{i}\"\naddress = \"198.18.0.{}\"\nport = {port}\nprotocol = \"tcp\"\n",
            10 + i
        );
        let mut seen = BTreeSet::new();
        for (last, weight, state) in backends {
            if !seen.insert(*last) {
                continue;
            }
            let state = ["active", "drain", "disabled"][*state as usize];
            text.push_str(&format!(
                "[[vip.backend]]\naddress = \"198.18.1.{last}\"\nweight = {weight}\nstate = \"{state}\"\n"
            ));
        }
        c.vips.push(config(&text).vips.remove(0));
    }
    c
}

fn backends(c: &Config, name: &str) -> BTreeMap<IpAddr, BackendConfig> {
    c.vips
        .iter()
        .find(|v| v.name == name)
        .map(|v| v.backends.iter().map(|b| (b.address, b.clone())).collect())
        .unwrap_or_default()
}

proptest! {
    /// Reloading an identical configuration changes nothing.
    #[test]
    fn identical_reload_is_empty(spec in vips()) {
        let c = build(&spec);
        prop_assert!(plan(&c, &c.clone()).unwrap().is_empty());
    }

    /// Applying a plan's backend changes to the old backends gives exactly the new ones, and
    /// only backends that differ (or need a new checker) are touched.
    #[test]
    fn plan_turns_old_into_new(a in vips(), b in vips()) {
        let (old, new) = (build(&a), build(&b));
        let p = plan(&old, &new).unwrap();
        for change in &p.vips {
            let VipChange::Update(u) = change else { continue };
            let mut set = backends(&old, &u.cfg.name);
            for addr in &u.removed {
                prop_assert!(set.remove(addr).is_some());
            }
            for k in &u.kept {
                let was = set.insert(k.cfg.address, k.cfg.clone());
                prop_assert!(was.is_some());
                prop_assert!(was != Some(k.cfg.clone()) || k.restart_check);
            }
            for add in &u.added {
                prop_assert!(set.insert(add.address, add.clone()).is_none());
            }
            prop_assert_eq!(set, backends(&new, &u.cfg.name));
        }
    }
}
