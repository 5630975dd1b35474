//! `cargo xtask demo`: the whole system on one machine, in network namespaces.
//!
//! Builds a client, a router, the balancer and three backends, runs the agent, drives HTTP
//! traffic and shows the live split per backend; stops a backend's server and shows the moment
//! the agent takes it out (with the measured time), then revives it and shows the slow-start
//! ramp. Everything is removed at the end unless `--keep`.

use anyhow::{Context, Result};
use lb_agent::admin::BackendHealth;
use lb_tests::{
    client::{http_burst, Tally},
    scenario::{backend_name, Options, Scenario},
};
use std::time::{Duration, Instant};

fn bar(n: u64, total: u64) -> String {
    let width = (n * 40).checked_div(total).unwrap_or(0) as usize;
    format!("{:<40}", "#".repeat(width))
}

fn show(label: &str, tally: &Tally) {
    let total = tally.total();
    print!("{label:<28}");
    for i in 0..3 {
        let n = tally.by_backend.get(&backend_name(i)).copied().unwrap_or(0);
        print!(" {}:{n:>4}", backend_name(i));
    }
    println!("  errors: {}", tally.errors.len());
    for i in 0..3 {
        let n = tally.by_backend.get(&backend_name(i)).copied().unwrap_or(0);
        println!(
            "    {} |{}| {:>5.1}%",
            backend_name(i),
            bar(n, total),
            n as f64 * 100.0 / total.max(1) as f64
        );
    }
}

fn round(sc: &Scenario, label: &str) -> Result<Tally> {
    let tally = sc.client.run(http_burst(sc.web(), 300, 8))?;
    show(label, &tally);
    Ok(tally)
}

fn main() -> Result<()> {
    let keep = std::env::args().any(|a| a == "--keep");
    println!(
        "== building the topology: client -> router -> balancer (XDP) -> 3 backends (XDP decap)"
    );
    let options = Options {
        slow_start_ms: 4000,
        ..Options::default()
    };
    let mut sc = Scenario::start("demo", options.clone()).context("setting up (run as root)")?;
    let status = sc.agent.status()?;
    println!(
        "   agent up on {} ({} XDP), VIP web = {} -> backends {}",
        status.interface,
        status.xdp_mode,
        sc.web(),
        (0..3)
            .map(|i| lb_tests::topo::backend_v4(i).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "\n== traffic: 300 HTTP connections per round, replies go straight from the backends (DSR)"
    );
    for r in 1..=3 {
        round(&sc, &format!("round {r}"))?;
    }

    println!(
        "\n== stopping backend1's server (health check: HTTP every {} ms, down after {} failures)",
        options.interval_ms, options.fall
    );
    let stopped = Instant::now();
    sc.stop_server(1);
    let detected = loop {
        if sc.health("web", 1)? == Some(BackendHealth::Down) {
            break stopped.elapsed();
        }
        if stopped.elapsed() > Duration::from_secs(10) {
            anyhow::bail!("backend1 never marked down:\n{}", sc.agent.log_text());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let published: Vec<String> = sc
        .agent
        .log_text()
        .lines()
        .filter_map(|l| l.split("failover_us=").nth(1))
        .filter_map(|r| r.split_whitespace().next().map(String::from))
        .collect();
    println!(
        "   backend1 marked down {:.0} ms after its server stopped; table published {} µs after the deciding check",
        detected.as_secs_f64() * 1000.0,
        published.first().map(String::as_str).unwrap_or("?")
    );
    round(&sc, "after failover")?;

    println!(
        "\n== reviving backend1 (up after {} passing checks, then slow start over {} ms)",
        options.rise, options.slow_start_ms
    );
    sc.start_server(1)?;
    let revived = Instant::now();
    while sc.health("web", 1)? != Some(BackendHealth::Up)
        && revived.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "   backend1 up again after {:.0} ms",
        revived.elapsed().as_secs_f64() * 1000.0
    );
    for _ in 0..4 {
        let s = sc.agent.status()?;
        let b1 = s
            .vips
            .iter()
            .find(|v| v.name == "web")
            .and_then(|v| v.backends.get(1))
            .cloned();
        let weight = b1
            .map(|b| {
                format!(
                    "weight {:>3}/{} ({} slots)",
                    b.effective_weight, b.weight, b.slots
                )
            })
            .unwrap_or_default();
        round(&sc, &format!("ramp: {weight}"))?;
        std::thread::sleep(Duration::from_millis(1000));
    }
    let stats = sc.agent.status()?;
    println!("\n== data-path counters");
    for (k, v) in stats.counters.iter().filter(|(_, v)| **v > 0) {
        println!("   {k:<24} {v}");
    }
    if keep {
        println!(
            "\n== --keep: the topology stays up. Explore with:\n   nsenter --net=/run/netns/{} {} status\n   nsenter --net=/run/netns/{} curl http://{}/\nPress Ctrl-C to end; the next demo or test run removes what is left (prefix {}).",
            sc.topo.lb,
            lb_tests::agentproc::agent_binary()?.display(),
            sc.topo.client,
            sc.web(),
            sc.topo.prefix,
        );
        // Leave the namespaces, the servers' threads and the agent running.
        std::mem::forget(sc);
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    println!("\n== cleaning up");
    Ok(())
}
