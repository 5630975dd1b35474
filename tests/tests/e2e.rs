//! End to end: real TCP, UDP and HTTP from a client namespace through a router to the balancer
//! (XDP), encapsulated to backend namespaces that decapsulate and answer the client directly.
//! Each scenario builds its own topology and asserts on counts. They run one at a time: two
//! cores are shared by the kernel paths, the servers and the agent.

use anyhow::{ensure, Result};
use lb_tests::{
    client::{http_burst, udp_query},
    netns::sh,
    scenario::{backend_name, Options, Scenario},
};
use std::sync::Mutex;

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
    numbers.get(1).copied().ok_or_else(|| anyhow::anyhow!("no RX packets in {out}"))
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
    ensure!(tally.errors.is_empty(), "errors: {:?}", &tally.errors[..tally.errors.len().min(5)]);
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
    let vip = |s: &lb_agent::admin::StatusReport| s.vips.iter().find(|v| v.name == "web").map_or(0, |v| v.packets);
    let client_packets = vip(&after) - vip(&before);
    let received = rx_after - rx_before;
    ensure!(client_packets >= 4 * 3000, "VIP counted {client_packets} packets");
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
    ensure!(tally.by_backend.len() == 3, "IPv6 reaches every backend: {tally:?}");
    let udp = sc.udp();
    let answers = sc.client.run(async move {
        let mut names = std::collections::BTreeMap::new();
        for port in 0..150u16 {
            let name = udp_query(udp, 20000 + port).await?;
            *names.entry(name).or_insert(0u32) += 1;
        }
        anyhow::Ok(names)
    })??;
    ensure!(answers.len() == 3 && answers.values().sum::<u32>() == 150, "{answers:?}");
    Ok(())
}
