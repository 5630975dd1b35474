//! End to end: real TCP, UDP and HTTP from a client namespace through a router to the balancer
//! (XDP), encapsulated to backend namespaces that decapsulate and answer the client directly.
//! Each scenario builds its own topology and asserts on counts. They run one at a time: two
//! cores are shared by the kernel paths, the servers and the agent.

use anyhow::{ensure, Context as _, Result};
use lb_agent::admin::BackendHealth;
use lb_tests::{
    client::{http_burst, udp_query},
    netns::sh,
    scenario::{backend_name, Options, Scenario},
};
use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn rx_packets(ns: &str, dev: &str) -> Result<u64> {
    let out = sh(Some(ns), &format!("ip -s -o link show {dev}"))?;
    // "... RX: bytes packets errors ... \    123 45 0 ..." : packets follow the byte count.
    let fields: Vec<&str> = out.split_whitespace().collect();
    let rx = fields
        .iter()
        .position(|f| *f == "RX:")
        .ok_or_else(|| anyhow::anyhow!("no RX stats in {out}"))?;
    // Skip the header words up to the first number after "RX:".
    let numbers: Vec<u64> = fields[rx..].iter().filter_map(|f| f.parse().ok()).collect();
    numbers
        .get(1)
        .copied()
        .ok_or_else(|| anyhow::anyhow!("no RX packets in {out}"))
}

#[test]
fn distribution_follows_weights_and_replies_bypass_the_balancer() -> Result<()> {
    let _serial = serial();
    let options = Options {
        weights: vec![100, 200, 100],
        ..Options::default()
    };
    let sc = Scenario::start("d", options)?;
    let web = sc.web();
    let before = sc.agent.status()?;
    let rx_before = rx_packets(&sc.topo.lb, "l0")?;
    let tally = sc.client.run(http_burst(web, 3000, 16))?;
    let rx_after = rx_packets(&sc.topo.lb, "l0")?;
    let after = sc.agent.status()?;
    ensure!(
        tally.errors.is_empty(),
        "errors: {:?}",
        &tally.errors[..tally.errors.len().min(5)]
    );
    ensure!(tally.total() == 3000, "{tally:?}");
    for (i, share) in [(0, 0.25), (1, 0.5), (2, 0.25)] {
        let got = tally.by_backend.get(&backend_name(i)).copied().unwrap_or(0) as f64 / 3000.0;
        ensure!(
            (got - share).abs() <= share * 0.15,
            "backend{i}: {got:.3} of the connections, weighted share {share}: {tally:?}"
        );
    }
    // DSR: the balancer sees the client's packets only. Each connection is at least 4 client
    // packets and 4 reply packets; the LB's interface received about the former.
    let vip = |s: &lb_agent::admin::StatusReport| {
        s.vips
            .iter()
            .find(|v| v.name == "web")
            .map_or(0, |v| v.packets)
    };
    let client_packets = vip(&after) - vip(&before);
    let received = rx_after - rx_before;
    ensure!(
        client_packets >= 4 * 3000,
        "VIP counted {client_packets} packets"
    );
    ensure!(
        received < client_packets + client_packets / 4,
        "the balancer received {received} packets for {client_packets} client packets: replies went through it"
    );
    Ok(())
}

#[test]
fn ipv6_and_udp_vips_end_to_end() -> Result<()> {
    let _serial = serial();
    let sc = Scenario::start("v", Options::default())?;
    let tally = sc.client.run(http_burst(sc.web6(), 300, 8))?;
    ensure!(tally.errors.is_empty() && tally.total() == 300, "{tally:?}");
    ensure!(
        tally.by_backend.len() == 3,
        "IPv6 reaches every backend: {tally:?}"
    );
    let udp = sc.udp();
    let answers = sc.client.run(async move {
        let mut names = std::collections::BTreeMap::new();
        for port in 0..150u16 {
            let name = udp_query(udp, 20000 + port).await?;
            *names.entry(name).or_insert(0u32) += 1;
        }
        anyhow::Ok(names)
    })??;
    ensure!(
        answers.len() == 3 && answers.values().sum::<u32>() == 150,
        "{answers:?}"
    );
    Ok(())
}

/// Poll until backend `i` of `vip` reports `health`; the time it took.
/// fall x interval + 1 s, the issue's bound for noticing a dead backend.
fn detection_bound(o: &Options) -> Duration {
    Duration::from_millis(o.fall as u64 * o.interval_ms + 1000)
}

#[test]
fn failover_refused_and_blackholed_backends() -> Result<()> {
    let _serial = serial();
    let options = Options::default();
    let mut sc = Scenario::start("f", options.clone())?;
    let web = sc.web();
    // Steady traffic while backend1's server stops.
    let traffic_start = Instant::now();
    let traffic = sc.client.rt_handle().spawn(lb_tests::client::http_paced(
        web,
        Duration::from_secs(4),
        Duration::from_millis(10),
    ));
    std::thread::sleep(Duration::from_millis(800));
    let stopped_at = Instant::now();
    sc.stop_server(1);
    let refused = sc.wait_health("web", 1, BackendHealth::Down, detection_bound(&options))?;
    // Requests that started after the table was published (plus time for in-flight ones).
    let settled = stopped_at + refused + Duration::from_millis(200);
    let results = sc.client.run(traffic)??;
    let mut late_errors = Vec::new();
    let mut late_backend1 = 0;
    for (at, r) in &results {
        if traffic_start + *at <= settled {
            continue;
        }
        match r {
            Ok(name) if name == &backend_name(1) => late_backend1 += 1,
            Ok(_) => {}
            Err(e) => late_errors.push(format!("{e:#}")),
        }
    }
    ensure!(
        late_errors.is_empty(),
        "errors after failover: {late_errors:?}"
    );
    ensure!(
        late_backend1 == 0,
        "{late_backend1} requests reached the stopped backend after failover"
    );
    ensure!(
        results.iter().filter(|(_, r)| r.is_ok()).count() > 100,
        "too little traffic"
    );

    // A blackholed backend (packets silently dropped) is found by check timeouts.
    sc.topo.blackhole(2, true)?;
    let blackholed = sc.wait_health(
        "web",
        2,
        BackendHealth::Down,
        detection_bound(&options) + Duration::from_millis(options.timeout_ms),
    )?;
    let tally = sc.client.run(http_burst(web, 200, 8))?;
    ensure!(tally.errors.is_empty(), "{:?}", tally.errors);
    ensure!(
        tally.by_backend.keys().all(|b| b == &backend_name(0)),
        "{tally:?}"
    );
    let failovers = sc.agent.logged_failovers();
    println!(
        "failover: refused backend marked down after {refused:?}, blackholed after {blackholed:?}; \
         decision to published table: {failovers:?} µs"
    );
    ensure!(!failovers.is_empty(), "the agent logs its failover times");
    Ok(())
}

#[test]
fn recovery_rises_after_rise_checks_and_ramps_up_slowly() -> Result<()> {
    let _serial = serial();
    let options = Options {
        slow_start_ms: 3000,
        ..Options::default()
    };
    let mut sc = Scenario::start("r", options.clone())?;
    sc.stop_server(0);
    sc.wait_health("web", 0, BackendHealth::Down, detection_bound(&options))?;
    sc.start_server(0)?;
    let rose = sc.wait_health(
        "web",
        0,
        BackendHealth::Up,
        Duration::from_millis(options.rise as u64 * options.interval_ms + 1000),
    )?;
    let weight = |sc: &Scenario| -> Result<(u32, u32)> {
        let s = sc.agent.status()?;
        let b = s
            .vips
            .iter()
            .find(|v| v.name == "web")
            .and_then(|v| v.backends.first())
            .cloned();
        let b = b.ok_or_else(|| anyhow::anyhow!("no backend"))?;
        Ok((b.effective_weight, b.slots))
    };
    let (w_early, slots_early) = weight(&sc)?;
    let web = sc.web();
    let early = sc.client.run(http_burst(web, 600, 8))?;
    // Full weight comes with the first controller tick (every 500 ms) after the window ends,
    // so a fixed sleep just past the window races that tick: poll, with a bound.
    let full_by = Instant::now() + Duration::from_millis(options.slow_start_ms + 2000);
    let (w_late, slots_late) = loop {
        let (w, slots) = weight(&sc)?;
        if w == 100 || Instant::now() >= full_by {
            break (w, slots);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let late = sc.client.run(http_burst(web, 600, 8))?;
    let share =
        |t: &lb_tests::client::Tally| t.by_backend.get(&backend_name(0)).copied().unwrap_or(0);
    println!(
        "recovery: up after {rose:?}; weight {w_early} ({slots_early} slots, {} of 600) -> {w_late} ({slots_late} slots, {} of 600)",
        share(&early),
        share(&late)
    );
    ensure!(
        w_early < 100 && slots_early < slots_late,
        "ramp: {w_early}/{slots_early} -> {w_late}/{slots_late}"
    );
    ensure!(w_late == 100, "full weight after the window");
    ensure!(
        share(&early) < share(&late),
        "share grows: {early:?} -> {late:?}"
    );
    ensure!(early.errors.is_empty() && late.errors.is_empty());
    Ok(())
}

#[test]
fn long_lived_connections_survive_removal_addition_and_reload() -> Result<()> {
    let _serial = serial();
    let options = Options {
        backends: 4,
        weights: vec![100, 100, 100, 0],
        ..Options::default()
    };
    let sc = Scenario::start("p", options)?;
    let long = sc.long();
    let conns = sc.client.run(lb_tests::client::LongLived::open(
        long,
        30,
        Duration::from_millis(50),
    ))??;
    std::thread::sleep(Duration::from_millis(500));
    let names = conns.backend_names();
    let on_removed: usize = names
        .iter()
        .filter(|n| n.as_deref() == Some("backend0"))
        .count();
    ensure!(names.iter().all(|n| n.is_some()), "{names:?}");
    // Remove backend0, then add backend3, then reload an unchanged file.
    for weights in [
        vec![0, 100, 100, 0],
        vec![0, 100, 100, 100],
        vec![0, 100, 100, 100],
    ] {
        sc.write_config(&weights)?;
        sc.agent.post("/reload")?;
        std::thread::sleep(Duration::from_millis(700));
    }
    let exchanges = conns.exchanges.load(std::sync::atomic::Ordering::Relaxed);
    let failures = sc.client.run(conns.close())?;
    // Only connections that were on the removed backend may have failed.
    let others: Vec<&String> = failures
        .iter()
        .filter(|f| {
            let idx: usize = f
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.trim_end_matches(':').parse().ok())
                .unwrap_or(usize::MAX);
            names.get(idx).and_then(|n| n.as_deref()) != Some("backend0")
        })
        .collect();
    println!("persistence: {} connections, {on_removed} on the removed backend, {exchanges} exchanges, failures {failures:?}", names.len());
    ensure!(
        others.is_empty(),
        "connections on healthy backends failed: {others:?}"
    );
    Ok(())
}

#[test]
fn drained_backend_keeps_connections_and_gets_no_new_ones() -> Result<()> {
    let _serial = serial();
    let sc = Scenario::start("n", Options::default())?;
    let long = sc.long();
    let conns = sc.client.run(lb_tests::client::LongLived::open(
        long,
        24,
        Duration::from_millis(50),
    ))??;
    std::thread::sleep(Duration::from_millis(400));
    let names = conns.backend_names();
    let drained = names
        .iter()
        .filter(|n| n.as_deref() == Some("backend1"))
        .count();
    ensure!(drained > 0, "some connection is on backend1: {names:?}");
    sc.agent.post(&format!(
        "/vips/long/backends/{}/drain",
        lb_tests::topo::backend_v4(1)
    ))?;
    let fresh = sc.client.run(lb_tests::client::LongLived::open(
        long,
        60,
        Duration::from_millis(50),
    ))??;
    std::thread::sleep(Duration::from_millis(1000));
    let fresh_names = fresh.backend_names();
    let fresh_failures = sc.client.run(fresh.close())?;
    let failures = sc.client.run(conns.close())?;
    ensure!(
        failures.is_empty(),
        "existing connections failed: {failures:?}"
    );
    ensure!(fresh_failures.is_empty(), "{fresh_failures:?}");
    ensure!(
        fresh_names.iter().all(|n| n.as_deref() != Some("backend1")),
        "a new connection reached the drained backend: {fresh_names:?}"
    );
    println!("drain: {drained} connections kept on the drained backend, 60 new ones elsewhere");
    Ok(())
}

/// 300 connections opened after a drain (their SYNs made entries in the moved slots), then
/// 20,000 spoofed ACKs of no connection into the same VIP, against a table of 1,024 entries
/// (at most 512 per receive CPU): the flood must evict none of the connections' entries, or
/// their next segments go to the drained backend, which resets them.
#[test]
fn spoofed_ack_flood_after_a_drain_resets_no_connection() -> Result<()> {
    let _serial = serial();
    let options = Options {
        conn_table_size: 1024,
        ..Options::default()
    };
    let sc = Scenario::start("s", options)?;
    sc.agent.post(&format!(
        "/vips/long/backends/{}/drain",
        lb_tests::topo::backend_v4(1)
    ))?;
    let long = sc.long();
    let conns = sc.client.run(lb_tests::client::LongLived::open(
        long,
        300,
        Duration::from_millis(200),
    ))??;
    std::thread::sleep(Duration::from_millis(500));
    let before = sc.agent.status()?.counters;
    let mac = lb_mac(&sc)?;
    let port = lb_tests::servers::LONG_PORT;
    let spoofed = |i: u32| {
        let src = std::net::Ipv4Addr::new(198, 18, 200, (i % 250) as u8 + 1);
        let sport = 1024 + (i / 250 * 257 + i % 250) as u16;
        let mut f = lb_tests::frames::tcp4(
            src,
            sport,
            lb_tests::topo::VIP_V4,
            port,
            lb_tests::frames::Tcp::Ack,
            &[],
        );
        f[..6].copy_from_slice(&mac);
        f
    };
    // In batches of fresh 5-tuples until 20,000 went out: a full veth queue refuses a send.
    // Bounded: at most 100 batches.
    let (mut sent, mut next) = (0, 0u32);
    for _ in 0..100 {
        if sent >= 20_000 {
            break;
        }
        let n = (20_000 - sent).min(500) as u32;
        let batch: Vec<Vec<u8>> = (next..next + n).map(spoofed).collect();
        next += n;
        sent += lb_tests::inject::inject(&sc.topo.router, &lb_tests::topo::router_link(0), batch)?;
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let after = sc.agent.status()?.counters;
    let names = conns.backend_names();
    let failures = sc.client.run(conns.close())?;
    let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    println!(
        "spoofed ACKs: sent {sent}, conn_miss_non_syn +{}, moved_to_previous +{}, conn_hit +{};          {} of 300 connections failed",
        delta("conn_miss_non_syn"),
        delta("moved_to_previous"),
        delta("conn_hit"),
        failures.len()
    );
    ensure!(sent == 20_000, "sent {sent}");
    ensure!(
        delta("conn_miss_non_syn") > 1000,
        "the flood did not reach the moved slots"
    );
    ensure!(
        names.iter().all(|n| n.as_deref() != Some("backend1")),
        "a connection opened after the drain reached the drained backend: {names:?}"
    );
    ensure!(
        failures.is_empty(),
        "{} of 300 connections failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    Ok(())
}

/// The balancer interface's MAC, as the router sends to it.
fn lb_mac(sc: &Scenario) -> Result<[u8; 6]> {
    let line = sh(Some(&sc.topo.lb), "ip -o link show l0")?;
    let text = line
        .split("link/ether ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("");
    let mac: Vec<u8> = text
        .split(':')
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect();
    mac.try_into()
        .map_err(|_| anyhow::anyhow!("LB MAC from {line}"))
}

#[test]
fn agent_crash_keeps_forwarding_and_the_restart_adopts_state() -> Result<()> {
    let _serial = serial();
    let mut sc = Scenario::start("k", Options::default())?;
    let long = sc.long();
    let conns = sc.client.run(lb_tests::client::LongLived::open(
        long,
        20,
        Duration::from_millis(50),
    ))??;
    std::thread::sleep(Duration::from_millis(300));
    sc.agent.kill9()?;
    // No agent at all: the pinned program keeps forwarding new and old connections.
    let during = sc.client.run(http_burst(sc.web(), 300, 8))?;
    ensure!(
        during.errors.is_empty() && during.total() == 300,
        "{during:?}"
    );
    let config = sc.config_path.clone();
    sc.agent = lb_tests::agentproc::Agent::start(&sc.topo, &config)?;
    ensure!(
        sc.agent.log_text().contains("adopted"),
        "restart adopts the pinned state:\n{}",
        sc.agent.log_text()
    );
    std::thread::sleep(Duration::from_millis(500));
    let after = sc.client.run(http_burst(sc.web(), 300, 8))?;
    let failures = sc.client.run(conns.close())?;
    ensure!(
        failures.is_empty(),
        "established connections broke: {failures:?}"
    );
    ensure!(
        after.errors.is_empty() && after.by_backend.len() == 3,
        "{after:?}"
    );
    Ok(())
}

#[test]
fn bad_config_and_malformed_flood_leave_the_balancer_working() -> Result<()> {
    let _serial = serial();
    let sc = Scenario::start("m", Options::default())?;
    let before = sc.agent.status()?;
    // An invalid file: rejected with a clear error, the running configuration stays.
    let good = std::fs::read_to_string(&sc.config_path)?;
    std::fs::write(
        &sc.config_path,
        good.replace("table_size", "table_sise")
            .replace("max_vips = 8", "max_vips = \"eight\""),
    )?;
    let err = sc
        .agent
        .post("/reload")
        .expect_err("invalid config must be rejected");
    ensure!(format!("{err:#}").contains("max_vips"), "{err:#}");
    sc.agent.hup()?;
    std::thread::sleep(Duration::from_millis(300));
    ensure!(
        sc.agent.log_text().contains("reload rejected"),
        "{}",
        sc.agent.log_text()
    );
    std::fs::write(&sc.config_path, &good)?;
    ensure!(sc.agent.status()?.vips.len() == before.vips.len());
    // A bounded flood of broken frames at the balancer's interface, with legitimate traffic.
    let frames = lb_tests::inject::malformed_frames(
        lb_mac(&sc)?,
        lb_tests::topo::VIP_V4.octets(),
        20_000,
        7,
    );
    let verdicts = |s: &lb_agent::admin::StatusReport| -> u64 {
        s.counters
            .iter()
            .filter(|(k, _)| {
                k.starts_with("pass_")
                    || k.starts_with("drop_")
                    || *k == "forwarded"
                    || *k == "icmp_too_big_sent"
            })
            .map(|(_, v)| *v)
            .sum()
    };
    let counted_before = verdicts(&sc.agent.status()?);
    let web = sc.web();
    let legit = sc.client.rt_handle().spawn(http_burst(web, 500, 4));
    // In batches, so the veth's queue never overflows (a full queue refuses the send).
    let mut sent = 0;
    for batch in frames.chunks(500) {
        sent += lb_tests::inject::inject(
            &sc.topo.router,
            &lb_tests::topo::router_link(0),
            batch.to_vec(),
        )?;
        std::thread::sleep(Duration::from_millis(10));
    }
    let legit = sc.client.run(legit)??;
    std::thread::sleep(Duration::from_millis(300));
    let after = sc.agent.status()?;
    ensure!(sent == 20_000, "sent {sent}");
    ensure!(
        legit.errors.is_empty() && legit.total() == 500,
        "legitimate traffic hurt: {legit:?}"
    );
    let counted = verdicts(&after) - counted_before;
    ensure!(
        counted >= sent as u64,
        "counters account for {counted} of {sent} frames"
    );
    for reason in [
        "drop_malformed",
        "drop_fragment",
        "drop_ipv4_options",
        "pass_malformed",
    ] {
        ensure!(
            after.counters[reason] > 0,
            "{reason} = 0: {:?}",
            after.counters
        );
    }
    Ok(())
}

#[test]
fn all_backends_down_follows_the_policy_and_recovers() -> Result<()> {
    let _serial = serial();
    for policy in ["drop", "fail-open"] {
        let options = Options {
            all_down: policy,
            ..Options::default()
        };
        let mut sc = Scenario::start(if policy == "drop" { "ad" } else { "ao" }, options.clone())?;
        for i in 0..3 {
            sc.stop_server(i);
        }
        for i in 0..3 {
            sc.wait_health("web", i, BackendHealth::Down, detection_bound(&options))?;
        }
        let before = sc.agent.status()?;
        let down = sc.client.run(http_burst(sc.web(), 20, 4))?;
        let after = sc.agent.status()?;
        ensure!(down.total() == 0, "{policy}: nothing answers: {down:?}");
        let delta = |k: &str| after.counters[k] - before.counters[k];
        let web = after
            .vips
            .iter()
            .find(|v| v.name == "web")
            .ok_or_else(|| anyhow::anyhow!("web"))?;
        if policy == "drop" {
            ensure!(
                delta("drop_no_backend") > 0 && !web.serving,
                "drop: {:?}",
                after.counters
            );
        } else {
            // Fail-open keeps forwarding to every backend (which refuse: their servers stopped).
            ensure!(
                delta("forwarded") > 0 && web.serving,
                "fail-open: {:?}",
                after.counters
            );
        }
        sc.start_server(2)?;
        sc.wait_health("web", 2, BackendHealth::Up, Duration::from_secs(3))?;
        let back = sc.client.run(http_burst(sc.web(), 100, 4))?;
        ensure!(
            back.errors.is_empty() && back.by_backend.keys().all(|b| b == &backend_name(2)),
            "{policy}: {back:?}"
        );
    }
    Ok(())
}

#[test]
fn flapping_backend_causes_no_table_churn() -> Result<()> {
    let _serial = serial();
    let sc = Scenario::start("l", Options::default())?;
    let generation = |sc: &Scenario| -> Result<u64> {
        Ok(sc
            .agent
            .status()?
            .vips
            .iter()
            .find(|v| v.name == "web")
            .map_or(0, |v| v.table_generation))
    };
    let before = generation(&sc)?;
    if let Some(s) = sc.servers.get(1) {
        s.set_flapping(true);
    }
    // 4 s at a 200 ms interval: ~20 alternating results, never rise=2 or fall=3 in a row.
    std::thread::sleep(Duration::from_secs(4));
    let after = generation(&sc)?;
    let status = sc.agent.status()?;
    let b1 = status
        .vips
        .iter()
        .find(|v| v.name == "web")
        .and_then(|v| v.backends.get(1))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("b1"))?;
    ensure!(
        b1.checks_failed >= 5 && b1.checks_ok >= 5,
        "flapping checks: {b1:?}"
    );
    ensure!(
        after == before,
        "table republished {} times while flapping",
        after - before
    );
    ensure!(b1.health == BackendHealth::Up);
    Ok(())
}

/// `lb-agent top --once --json` against the running agent while clients send traffic: the VIP
/// and its backends show packet rates, health and weights; the text screen fits 80 columns.
#[test]
fn top_shows_live_rates() -> Result<()> {
    let _serial = serial();
    let sc = Scenario::start("t", Options::default())?;
    let traffic = sc.client.rt_handle().spawn(lb_tests::client::http_paced(
        sc.web(),
        Duration::from_secs(4),
        Duration::from_millis(5),
    ));
    let top = |args: &[&str]| -> Result<std::process::Output> {
        Ok(
            lb_tests::netns::command(&sc.topo.lb, lb_tests::agentproc::agent_binary()?)
                .args(["top", "--once", "--interval-ms", "1000", "--admin"])
                .arg(lb_tests::agentproc::ADMIN)
                .args(args)
                .output()?,
        )
    };
    let json = top(&["--json"])?;
    let text = top(&[])?;
    let sent = sc.client.rt_handle().block_on(traffic)?;
    ensure!(json.status.success(), "top --json: {json:?}");
    let view: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    let web = view["vips"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "web"))
        .ok_or_else(|| anyhow::anyhow!("no web VIP in {view}"))?;
    ensure!(
        web["packets_per_sec"].as_f64().unwrap_or(0.0) > 0.0,
        "no rate while {} requests ran: {web}",
        sent.len()
    );
    let backends = web["backends"].as_array().cloned().unwrap_or_default();
    ensure!(backends.len() == 3, "{web}");
    for b in &backends {
        ensure!(b["health"] == "up" && b["admin_state"] == "active", "{b}");
        ensure!(b["effective_weight"] == b["weight"], "{b}");
    }
    ensure!(text.status.success(), "top: {text:?}");
    let screen = String::from_utf8(text.stdout)?;
    eprintln!("{screen}");
    ensure!(
        screen.contains("web 198.18.") && screen.contains("serving"),
        "{screen}"
    );
    ensure!(
        screen.lines().all(|l| l.chars().count() <= 80) && !screen.contains('\x1b'),
        "not a plain 80-column frame: {screen:?}"
    );
    Ok(())
}

/// The router's MAC changes under traffic (a replaced router; it announces itself with a
/// gratuitous ARP / unsolicited NA as VRRP does): the agent follows the neighbour change and
/// forwarding resumes without a restart, with a log line saying from what to what.
#[test]
fn gateway_mac_change_is_followed_without_a_restart() -> Result<()> {
    let _serial = serial();
    let sc = Scenario::start("g", Options::default())?;
    let (rt, link) = (&sc.topo.router, lb_tests::topo::router_link(0));
    let before = sc.client.run(http_burst(sc.web(), 20, 4))?;
    ensure!(
        before.errors.is_empty() && before.total() == 20,
        "{before:?}"
    );
    sh(
        Some(rt),
        &format!("sysctl -qw net.ipv4.conf.{link}.arp_notify=1"),
    )?;
    sh(
        Some(rt),
        &format!("sysctl -qw net.ipv6.conf.{link}.ndisc_notify=1"),
    )?;
    const NEW_MAC: &str = "02:00:5e:00:01:fe";
    let web = sc.web();
    let set_mac = format!("ip link set dev {link} address {NEW_MAC}");
    let router = rt.clone();
    // On the client namespace's workers: block_on would run the requests on this thread,
    // which is in the host's namespace.
    let resumed = sc.client.run(async move {
        let changed = Instant::now();
        sh(Some(&router), &set_mac)?;
        // One short-lived request every 20 ms (at most 500): the first answer after the
        // change is when forwarding resumed.
        for _ in 0..500 {
            let attempt =
                tokio::time::timeout(Duration::from_millis(300), lb_tests::client::http_get(web));
            if let Ok(Ok(_)) = attempt.await {
                return Ok(changed.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::bail!("no answer through the new router MAC")
    })?;
    let resumed = resumed.map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\ncounters: {:?}\nbalancer's neighbours: {:?}\nagent log:\n{}",
            sc.agent.status().map(|s| s.counters),
            sh(Some(&sc.topo.lb), "ip neigh"),
            sc.agent.log_text(),
        )
    })?;
    let after = sc.client.run(http_burst(sc.web(), 50, 4))?;
    ensure!(after.errors.is_empty() && after.total() == 50, "{after:?}");
    let log = sc.agent.log_text();
    ensure!(
        log.lines()
            .any(|l| l.contains("gateway MAC changed") && l.contains(&format!("to={NEW_MAC}"))),
        "no log line for the change:\n{log}"
    );
    eprintln!("forwarding resumed {resumed:?} after the router's MAC changed");
    // The issue's figure is 1 s; bounded generously so a loaded machine cannot fail it, the
    // measured value is printed above.
    ensure!(
        resumed < Duration::from_secs(5),
        "resumed after {resumed:?}"
    );
    Ok(())
}

/// `lb-agent` run in the balancer's namespace: exit code, stdout, stderr.
fn lb_cli(sc: &Scenario, args: &[&str]) -> Result<(Option<i32>, String, String)> {
    let out = lb_tests::netns::command(&sc.topo.lb, lb_tests::agentproc::agent_binary()?)
        .args(args)
        .output()?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Fractions of `tally`'s answers per backend, in backend order.
fn shares(tally: &lb_tests::client::Tally, backends: usize) -> Vec<f64> {
    let total = tally.total().max(1) as f64;
    (0..backends)
        .map(|i| tally.by_backend.get(&backend_name(i)).copied().unwrap_or(0) as f64 / total)
        .collect()
}

/// `lb-agent backend weight` through the real CLI and control socket: new connections follow
/// the new weight, established ones keep their backend, status and metrics show the override,
/// the agent refuses bad requests without changing anything, and a reload of the unchanged file
/// brings the file's weight back and says so. Shares are checked with a wide margin (25%).
#[test]
fn runtime_weight_shifts_new_connections_and_a_reload_clears_it() -> Result<()> {
    let _serial = serial();
    let sc = Scenario::start("w", Options::default())?;
    let b0 = lb_tests::topo::backend_v4(0).to_string();
    let socket = sc.agent.control.display().to_string();
    let conns = sc.client.run(lb_tests::client::LongLived::open(
        sc.long(),
        24,
        Duration::from_millis(50),
    ))??;
    std::thread::sleep(Duration::from_millis(400));
    for vip in ["web", "long"] {
        let (code, out, err) = lb_cli(
            &sc,
            &["backend", "weight", vip, &b0, "300", "--socket", &socket],
        )?;
        println!("$ lb-agent backend weight {vip} {b0} 300\n{out}");
        ensure!(code == Some(0), "exit {code:?}: {err}");
        ensure!(
            out.contains("weight 300 (override, config 100) until the next reload"),
            "{out}"
        );
    }
    // Refused by the agent (exit 1) or by the CLI (exit 2): nothing changes.
    let generation = |sc: &Scenario| -> Result<u64> {
        let s = sc.agent.status()?;
        Ok(s.vips.iter().map(|v| v.table_generation).sum())
    };
    let before_refusals = generation(&sc)?;
    for (args, code, needle) in [
        (
            ["web", "198.18.9.9", "5"],
            1,
            "VIP web has no backend 198.18.9.9",
        ),
        (["nope", b0.as_str(), "5"], 1, "no VIP named nope"),
        (
            ["web", b0.as_str(), "0"],
            2,
            "must be between 1 and 10000, got 0",
        ),
        (["web", b0.as_str(), "-1"], 2, "got -1"),
    ] {
        let mut argv = vec!["backend", "weight"];
        argv.extend(args);
        argv.extend(["--socket", socket.as_str()]);
        let (got, _, err) = lb_cli(&sc, &argv)?;
        println!("$ lb-agent {}\n{err}", argv.join(" "));
        ensure!(
            got == Some(code) && err.contains(needle),
            "{argv:?}: exit {got:?}: {err}"
        );
    }
    ensure!(
        generation(&sc)? == before_refusals,
        "a refusal changed a table"
    );
    let status = sc.agent.status()?;
    let web = status
        .vips
        .iter()
        .find(|v| v.name == "web")
        .context("web")?;
    let first = &web.backends[0];
    ensure!(
        (first.weight, first.weight_override, first.effective_weight) == (100, Some(300), 300),
        "{first:?}"
    );
    ensure!((37_000..41_500).contains(&first.slots), "{first:?}");
    let (_, text, _) = lb_cli(&sc, &["status", "--admin", lb_tests::agentproc::ADMIN])?;
    println!("$ lb-agent status\n{text}");
    ensure!(text.contains("300*/300"), "{text}");
    ensure!(
        text.contains(&format!(
            "* {b0}: weight 300 (override, config 100) until the next reload"
        )),
        "{text}"
    );
    let metrics = sc.agent.metrics()?;
    ensure!(
        metrics.contains(&format!(
            "lb_backend_weight_override{{vip=\"web\",backend=\"{b0}\"}} 300"
        )),
        "no override series"
    );
    let tally = sc.client.run(http_burst(sc.web(), 1500, 8))?;
    ensure!(
        tally.errors.is_empty(),
        "{:?}",
        &tally.errors[..tally.errors.len().min(5)]
    );
    let weighted = shares(&tally, 3);
    println!("weight 300/100/100: shares {weighted:.3?}");
    for (got, want) in weighted.iter().zip([0.6, 0.2, 0.2]) {
        ensure!(
            (got - want).abs() <= want * 0.25,
            "{weighted:?}, want 0.6/0.2/0.2"
        );
    }
    // The unchanged file, reloaded: every override goes, and the answer lists them.
    let (code, out, err) = lb_cli(&sc, &["reload", "--socket", &socket])?;
    println!("$ lb-agent reload\n{out}");
    ensure!(code == Some(0), "exit {code:?}: {err}");
    for vip in ["web", "long"] {
        ensure!(out.contains(&format!("{vip} {b0} 300 -> 100")), "{out}");
    }
    ensure!(
        out.contains("no change in the file; weight overrides cleared"),
        "{out}"
    );
    let status = sc.agent.status()?;
    let web = status
        .vips
        .iter()
        .find(|v| v.name == "web")
        .context("web")?;
    let first = &web.backends[0];
    ensure!(
        (first.weight_override, first.effective_weight) == (None, 100),
        "{first:?}"
    );
    ensure!((20_500..23_000).contains(&first.slots), "{first:?}");
    ensure!(!sc.agent.metrics()?.contains("lb_backend_weight_override{"));
    let tally = sc.client.run(http_burst(sc.web(), 1500, 8))?;
    ensure!(
        tally.errors.is_empty(),
        "{:?}",
        &tally.errors[..tally.errors.len().min(5)]
    );
    let equal = shares(&tally, 3);
    println!("weights back to 100/100/100: shares {equal:.3?}");
    for got in &equal {
        ensure!((got - 1.0 / 3.0).abs() <= 0.25 / 3.0, "{equal:?}");
    }
    // What the agent logged, with each request's peer (for docs/operations.md).
    let log = sc.agent.log_text();
    for line in log.lines().filter(|l| l.contains("weight")) {
        println!("{line}");
    }
    // Both table changes left the established connections where they were.
    let failures = sc.client.run(conns.close())?;
    ensure!(
        failures.is_empty(),
        "established connections failed: {failures:?}"
    );
    Ok(())
}
