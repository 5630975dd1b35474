use super::*;
use crate::config::{parse, Config, HealthCheckConfig, Protocol, StatusSet};
use proptest::prelude::*;
use std::collections::{BTreeSet, HashSet};

const AGENT: &str = r#"
[agent]
interface = "eth0"
encap_source_v4 = "198.18.0.2"
max_vips = 128
"#;

fn config(vips: &str) -> Config {
    match parse(&format!("{AGENT}{vips}"), "test") {
        Ok(c) => c,
        Err(e) => panic!("test config does not parse: {e:#}"),
    }
}

/// `n` VIPs on ports 80.., each over backends 198.18.1.1..=`backends` with `check`.
fn pool(n: usize, backends: usize, check: &str) -> String {
    let mut out = String::new();
    for i in 0..n {
        out.push_str(&format!(
            "[[vip]]\nname = \"v{i}\"\naddress = \"198.18.0.10\"\nport = {}\nprotocol = \"tcp\"\n\
             [vip.health_check]\n{check}\n",
            80 + i
        ));
        for b in 1..=backends {
            out.push_str(&format!("[[vip.backend]]\naddress = \"198.18.1.{b}\"\n"));
        }
    }
    out
}

fn agent() -> AgentConfig {
    config("").agent
}

fn served(w: &HashMap<ProbeKey, Served>) -> Vec<Vec<String>> {
    let mut v: Vec<Vec<String>> = w
        .values()
        .map(|s| s.iter().map(String::from).collect())
        .collect();
    v.sort();
    v
}

#[test]
fn vips_over_one_pool_with_one_check_share_one_probe_per_backend() {
    let c = config(&pool(100, 3, "port = 8080\nkind = \"http\""));
    let w = wanted(&c.vips, &c.agent);
    assert_eq!(w.len(), 3, "one probe per backend, not 300");
    for (key, vips) in &w {
        assert_eq!(vips.len(), 100, "{key:?}");
        assert_eq!(key.spec.target.port(), 8080);
    }
}

#[test]
fn a_different_check_is_a_different_probe() {
    // Without a check port each VIP probes its own port: no sharing (honestly).
    let c = config(&pool(3, 2, "kind = \"tcp\""));
    assert_eq!(wanted(&c.vips, &c.agent).len(), 6);
    // Same port, different path: two probes per backend.
    let mut text = pool(1, 2, "port = 8080\nkind = \"http\"\npath = \"/a\"");
    text.push_str(
        &pool(1, 2, "port = 8080\nkind = \"http\"\npath = \"/b\"")
            .replace("\"v0\"", "\"w0\"")
            .replace("port = 80\n", "port = 81\n"),
    );
    let w = wanted(&config(&text).vips, &agent());
    assert_eq!(w.len(), 4);
    let mut expected = vec![vec!["v0".to_string()]; 2];
    expected.extend(vec![vec!["w0".to_string()]; 2]);
    assert_eq!(served(&w), expected);
}

#[test]
fn fields_a_kind_does_not_use_do_not_split_probes() {
    // `path` (default "/" or set) means nothing to a TCP check.
    let mut text = pool(1, 1, "port = 9000\nkind = \"tcp\"\npath = \"/x\"");
    text.push_str(
        &pool(1, 1, "port = 9000\nkind = \"tcp\"")
            .replace("\"v0\"", "\"w0\"")
            .replace("port = 80\n", "port = 81\n"),
    );
    let w = wanted(&config(&text).vips, &agent());
    assert_eq!(w.len(), 1);
    assert_eq!(served(&w), vec![vec!["v0".to_string(), "w0".to_string()]]);
}

/// `n` VIPs at 198.18.0.(10+i), all on port 80, over backend 198.18.1.1 with `check`.
fn spread(n: usize, check: &str) -> String {
    (0..n)
        .map(|i| {
            format!(
                "[[vip]]\nname = \"a{i}\"\naddress = \"198.18.0.{}\"\nport = 80\nprotocol = \"tcp\"\n\
                 [vip.health_check]\n{check}\n[[vip.backend]]\naddress = \"198.18.1.1\"\n",
                10 + i
            )
        })
        .collect()
}

#[test]
fn direct_probes_are_shared_across_vip_addresses_tunnel_probes_are_not() {
    // Direct: the probe goes to the backend's address, whatever the VIP's.
    let c = config(&spread(5, "kind = \"tcp\"\nvia = \"direct\""));
    let w = wanted(&c.vips, &c.agent);
    assert_eq!(w.len(), 1);
    let (key, vips) = w.iter().next().unwrap();
    assert_eq!(key.spec.target, "198.18.1.1:80".parse().unwrap());
    assert_eq!(key.spec.route, Route::Direct);
    assert_eq!(vips.len(), 5);
    // Tunnel (the default): each VIP address is a path of its own to check.
    let c = config(&spread(5, "kind = \"tcp\""));
    let w = wanted(&c.vips, &c.agent);
    assert_eq!(w.len(), 5);
    for (key, vips) in &w {
        assert_eq!(vips.len(), 1);
        let vip = c.vips.iter().find(|v| vips.contains(&v.name)).unwrap();
        assert_eq!(key.spec.target, SocketAddr::new(vip.address, 80));
        match &key.spec.route {
            Route::Tunnel(t) => assert_eq!((t.backend_id, t.interface.as_str()), (KEY_ID, "eth0")),
            Route::Direct => panic!("{key:?}"),
        }
    }
}

#[test]
fn a_tunnel_probe_is_marked_with_a_served_vips_backend_id_and_restarts_without_one() {
    let b: IpAddr = "198.18.1.1".parse().unwrap();
    let ids: HashMap<(&str, IpAddr), u32> = [(("v1", b), 7), (("v2", b), 9)].into();
    let id_of = |vip: &str, addr: IpAddr| ids.get(&(vip, addr)).copied();
    let served: Served = ["v1".to_string(), "v2".to_string()].into();
    assert_eq!(mark_id(b, &served, id_of), Some(7));
    assert!(mark_still_valid(7, b, &served, id_of));
    assert!(mark_still_valid(9, b, &served, id_of));
    // v1 left the probe (its backend id freed): 7 may go to another backend.
    let served: Served = ["v2".to_string()].into();
    assert!(!mark_still_valid(7, b, &served, id_of));
    assert_eq!(mark_id(b, &served, id_of), Some(9));
    // No served VIP has the backend.
    let other: IpAddr = "198.18.1.2".parse().unwrap();
    assert_eq!(mark_id(other, &served, id_of), None);

    let c = config(&spread(1, "kind = \"tcp\""));
    let spec = spec_of(&c.vips[0], b, &c.agent).unwrap();
    let spec = Arc::new(spec);
    match &with_mark(&spec, 9).route {
        Route::Tunnel(t) => assert_eq!(t.backend_id, 9),
        Route::Direct => panic!("tunnel expected"),
    }
    let direct = config(&spread(1, "kind = \"tcp\"\nvia = \"direct\""));
    let spec = spec_of(&direct.vips[0], b, &direct.agent).unwrap();
    let spec = Arc::new(spec);
    assert_eq!(with_mark(&spec, 9).route, Route::Direct);
    assert!(
        Arc::ptr_eq(&with_mark(&spec, 9), &spec),
        "a direct spec is shared, not copied"
    );
}

#[test]
fn unchecked_vips_have_no_probe() {
    let c = config(&pool(2, 2, "kind = \"none\""));
    assert!(wanted(&c.vips, &c.agent).is_empty());
}

#[test]
fn reload_keeps_starts_and_stops_by_key() {
    let old = config(&pool(2, 2, "port = 8080\nkind = \"http\""));
    let running: HashMap<ProbeKey, ()> = wanted(&old.vips, &old.agent)
        .into_keys()
        .map(|k| (k, ()))
        .collect();
    // Identical: everything kept, nothing started or stopped.
    let p = plan(&running, wanted(&old.vips, &old.agent));
    assert!(p.is_quiet());
    assert_eq!(p.keep.len(), 2);

    // A third VIP joins the pool: still two probes, now serving three VIPs each.
    let new = config(&pool(3, 2, "port = 8080\nkind = \"http\""));
    let p = plan(&running, wanted(&new.vips, &new.agent));
    assert!(p.is_quiet(), "{p:?}");
    assert!(p.keep.iter().all(|(_, s)| s.len() == 3));

    // The check's interval changes: every probe replaced.
    let new = config(&pool(
        2,
        2,
        "port = 8080\nkind = \"http\"\ninterval_ms = 2000",
    ));
    let p = plan(&running, wanted(&new.vips, &new.agent));
    assert_eq!((p.start.len(), p.stop.len(), p.keep.len()), (2, 2, 0));

    // A backend leaves: its probe stops, the other is kept.
    let new = config(&pool(2, 1, "port = 8080\nkind = \"http\""));
    let p = plan(&running, wanted(&new.vips, &new.agent));
    assert_eq!((p.start.len(), p.stop.len(), p.keep.len()), (0, 1, 1));
    assert_eq!(p.stop[0].backend, "198.18.1.2".parse::<IpAddr>().unwrap());
}

// ---- properties over generated configurations -------------------------------------------------

/// A VIP: backends (indexes into 1..=6) and one of three checks.
fn arb_vips() -> impl Strategy<Value = Vec<(BTreeSet<u8>, u8)>> {
    prop::collection::vec((prop::collection::btree_set(1u8..=6, 0..5), 0u8..4), 0..8)
}

fn build(vips: &[(BTreeSet<u8>, u8)]) -> Vec<VipConfig> {
    vips.iter()
        .enumerate()
        .map(|(i, (backends, check))| {
            let mut hc = HealthCheckConfig::default();
            match check {
                0 => hc.kind = CheckKind::None,
                1 => hc.port = Some(8080),
                2 => {
                    hc.kind = CheckKind::Http;
                    hc.port = Some(8080);
                    hc.expect_status = StatusSet::one(204);
                }
                _ => {} // TCP on the VIP's own port
            }
            let text = format!(
                "name = \"v{i}\"\naddress = \"198.18.0.10\"\nport = {}\nprotocol = \"tcp\"\n",
                80 + (i % 3)
            );
            let mut v: VipConfig = toml::from_str(&text).unwrap();
            v.protocol = Protocol::Tcp;
            v.health_check = hc;
            v.backends = backends
                .iter()
                .map(|b| toml::from_str(&format!("address = \"198.18.1.{b}\"")).unwrap())
                .collect();
            v
        })
        .collect()
}

proptest! {
    /// The probes are exactly the distinct (backend, check) keys; every checked (VIP, backend)
    /// is served by exactly one probe; an identical reload changes nothing.
    #[test]
    fn probes_are_the_distinct_keys_and_serve_each_pair_once(vips in arb_vips()) {
        let vips = build(&vips);
        let w = wanted(&vips, &agent());
        let distinct: HashSet<ProbeKey> = vips
            .iter()
            .flat_map(|v| v.backends.iter().filter_map(|b| {
                spec_of(v, b.address, &agent()).map(|spec| ProbeKey { backend: b.address, spec: Arc::new(spec) })
            }))
            .collect();
        prop_assert_eq!(w.keys().cloned().collect::<HashSet<_>>(), distinct);
        for v in &vips {
            for b in &v.backends {
                let serving = w
                    .iter()
                    .filter(|(k, s)| k.backend == b.address && s.contains(&v.name))
                    .count();
                let expected = usize::from(v.health_check.kind != CheckKind::None);
                prop_assert_eq!(serving, expected, "{} {}", v.name, b.address);
            }
        }
        let pairs: usize = w.values().map(Served::len).sum();
        let checked: usize = vips
            .iter()
            .filter(|v| v.health_check.kind != CheckKind::None)
            .map(|v| v.backends.len())
            .sum();
        prop_assert_eq!(pairs, checked);

        let running: HashMap<ProbeKey, ()> = w.keys().map(|k| (k.clone(), ())).collect();
        let p = plan(&running, wanted(&vips, &agent()));
        prop_assert!(p.is_quiet());
        prop_assert_eq!(p.keep.len(), w.len());
        for (k, s) in &p.keep {
            prop_assert_eq!(Some(s), w.get(k));
        }
    }
}
