//! What taking the client's path costs, and what probe sharing saves: the scale configuration
//! (100 VIPs × 100 backends, TCP checks every second) checked `via = "direct"` and
//! `via = "tunnel"`, with 100 backends of its own per VIP and with one pool of 100 that every
//! VIP shares, in alternate rounds: probes per second and the agent's CPU side by side, with
//! the backend side's decapsulation counter as proof of the path each mode took.
//!
//! Two namespaces: the agent's (cv0, 198.18.0.2) and the backends' (cv1, 198.18.0.3, whose MAC
//! is the agent's gateway MAC). On the backends' side every backend address and every VIP is
//! local (AnyIP) with one listener, and `xdp_decap` answers for all 10,000 backend addresses.

use super::{
    backend_addr, cpu_seconds, deep_accept_queues, parse_lag, remove_pins, scale_config,
    CheckListener, Shape, BACKENDS_PER_VIP, CHECK_INTERVAL_MS, VIPS, WARM_UP,
};
use anyhow::{ensure, Context, Result};
use lb_agent::{
    admin::BackendHealth,
    dataplane::{Decap, DECAP_PROGRAM},
};
use lb_common::DecapStat;
use lb_tests::{
    agentproc::Agent,
    benchkit::median,
    netns::{run_in, sh},
};
use std::{
    fmt::Write as _,
    net::IpAddr,
    time::{Duration, Instant},
};

/// Rounds per case, alternating, so a slow spell of the machine hits every case alike.
const ROUNDS: usize = 2;
/// Path, backends, and the probes sharing should leave: one per backend address direct; through
/// the tunnel one per (VIP address, backend), the pool's VIPs being on 10 addresses.
const CASES: [(&str, Shape, u32); 4] = [
    ("direct", Shape::Distinct, VIPS * BACKENDS_PER_VIP),
    ("tunnel", Shape::Distinct, VIPS * BACKENDS_PER_VIP),
    ("direct", Shape::Pool, BACKENDS_PER_VIP),
    ("tunnel", Shape::Pool, VIPS / 10 * BACKENDS_PER_VIP),
];
const WINDOW: Duration = Duration::from_secs(10);
const GATEWAY_MAC: &str = "02:00:00:00:00:01";
/// More than the 10,000 backend addresses.
const DECAP_LOCALS: u32 = 16_384;

/// The agent's namespace and the backends'; removed on drop, with the agent's pins.
struct Pair {
    agent: String,
    backends: String,
}

impl Pair {
    fn create() -> Result<Self> {
        // "lbe<pid>" names are what the harness removes when their process is gone.
        let pid = std::process::id();
        let pair = Self {
            agent: format!("lbe{pid}cka"),
            backends: format!("lbe{pid}ckb"),
        };
        for ns in [&pair.agent, &pair.backends] {
            sh(None, &format!("ip netns add {ns}"))?;
        }
        sh(
            None,
            &format!(
                "ip link add cv0 netns {} type veth peer name cv1 netns {}",
                pair.agent, pair.backends
            ),
        )?;
        let (a, b) = (Some(pair.agent.as_str()), Some(pair.backends.as_str()));
        sh(b, &format!("ip link set cv1 address {GATEWAY_MAC}"))?;
        for (ns, dev, addr) in [(a, "cv0", "198.18.0.2/24"), (b, "cv1", "198.18.0.3/24")] {
            sh(ns, "ip link set lo up")?;
            sh(ns, &format!("ip addr add {addr} dev {dev}"))?;
            // Partial checksums do not survive XDP on veth (tests/src/topo.rs).
            sh(ns, &format!("ethtool -K {dev} tx off"))?;
            sh(ns, &format!("ip link set {dev} up"))?;
        }
        sh(a, "ip route add default via 198.18.0.3")?;
        sh(b, "ip route add local 198.18.128.0/18 dev lo")?;
        sh(b, "ip route add local 198.18.10.0/24 dev lo")?;
        deep_accept_queues(b)?;
        Ok(pair)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.agent, &self.backends] {
            let _ = sh(None, &format!("ip netns delete {ns}"));
        }
        remove_pins(&self.agent);
    }
}

/// One round's figures.
struct Round {
    cpu: f64,
    checks_per_s: f64,
    decapsulated_per_s: f64,
}

pub(crate) fn checks(out: &mut String) -> Result<()> {
    let total = VIPS * BACKENDS_PER_VIP;
    eprintln!("checks: {VIPS} VIPs x {BACKENDS_PER_VIP} backends, direct and through the tunnel");
    let pair = Pair::create()?;
    let addrs: Vec<IpAddr> = (0..VIPS)
        .flat_map(|i| (0..BACKENDS_PER_VIP).map(move |j| IpAddr::V4(backend_addr(i, j))))
        .collect();
    let decap = run_in(&pair.backends, move || {
        let mut decap = Decap::with_capacity(DECAP_LOCALS)?;
        for a in addrs {
            decap.add_local(a)?;
        }
        decap
            .program(DECAP_PROGRAM)?
            .attach("cv1", aya::programs::XdpMode::Driver)
            .context("attaching xdp_decap to cv1")?;
        Ok(decap)
    })?;
    let listener = CheckListener::start(&pair.backends)?;
    let dir = std::env::temp_dir().join(&pair.agent);
    std::fs::create_dir_all(&dir)?;
    let result = (|| -> Result<Vec<Vec<Round>>> {
        let mut rounds: Vec<Vec<Round>> = CASES.iter().map(|_| Vec::new()).collect();
        for _ in 0..ROUNDS {
            for (c, (via, shape, probes)) in CASES.iter().enumerate() {
                let config = dir.join(format!("lb-{c}.toml"));
                // scale_config's gateway MAC is cv1's.
                std::fs::write(&config, scale_config(&pair.agent, via, *shape))?;
                rounds[c].push(round(&pair, &config, via, &decap, total, *probes)?);
            }
        }
        Ok(rounds)
    })();
    drop(listener);
    let _ = std::fs::remove_dir_all(&dir);
    let rounds = result?;

    writeln!(
        out,
        "\n### Checks through the tunnel, direct ones, and shared probes\n"
    )?;
    writeln!(
        out,
        "The scale configuration ({VIPS} VIPs, {total} (VIP, backend) pairs, TCP checks every \
         {CHECK_INTERVAL_MS} ms) with the backends in a namespace of their own behind a veth, \
         `xdp_decap` answering for every backend address and the VIPs local there: each VIP \
         with {BACKENDS_PER_VIP} backends of its own, or one pool of {BACKENDS_PER_VIP} shared \
         by every VIP (the VIPs on 10 addresses × 10 ports). {ROUNDS} rounds per case, \
         alternating; each starts a release agent, waits {:.0} s, then takes the agent's CPU \
         (user + system: a probe's encapsulation by `tc_probe_encap` runs in the sending \
         context) and its probes over {:.0} s. Without sharing every case would run {total} \
         probes a second. Decapsulated/s is the backend side's counter: the proof of the path \
         taken.\n",
        WARM_UP.as_secs_f64(),
        WINDOW.as_secs_f64()
    )?;
    writeln!(
        out,
        "| backends | via | probes/s (expected) | agent CPU, median (rounds) | decapsulated packets/s |"
    )?;
    writeln!(out, "|---|---|---:|---:|---:|")?;
    for ((via, shape, probes), r) in CASES.iter().zip(&rounds) {
        let cpus: Vec<String> = r.iter().map(|x| format!("{:.1}", x.cpu * 100.0)).collect();
        writeln!(
            out,
            "| {} | `{via}` | {:.0} ({probes}) | {:.1} % ({} %) | {:.0} |",
            match shape {
                Shape::Distinct => "100 per VIP",
                Shape::Pool => "one pool",
            },
            median(r.iter().map(|x| x.checks_per_s).collect()),
            median(r.iter().map(|x| x.cpu * 100.0).collect()),
            cpus.join(", "),
            median(r.iter().map(|x| x.decapsulated_per_s).collect()),
        )?;
    }
    Ok(())
}

/// Checks ok and failed so far over every (VIP, backend) row of `/status`; fails unless there
/// are `total` rows, all up.
fn tally(agent: &Agent, total: u32) -> Result<(u64, u64)> {
    let status = agent.status()?;
    let backends: Vec<_> = status.vips.iter().flat_map(|v| &v.backends).collect();
    ensure!(
        backends.len() == total as usize,
        "status lists {} backends",
        backends.len()
    );
    let down = backends
        .iter()
        .filter(|b| b.health != BackendHealth::Up)
        .count();
    ensure!(
        down == 0,
        "{down} backends not up: the checks are not healthy"
    );
    Ok((
        backends.iter().map(|b| b.checks_ok).sum(),
        backends.iter().map(|b| b.checks_failed).sum(),
    ))
}

/// Start an agent on `config`, warm up, and take its CPU, probe rate and the backend side's
/// decapsulation rate over `WINDOW`; fails unless every backend is up with next to no failed
/// checks, the packets took the path `via` names, and the probes are as many as `probes`.
fn round(
    pair: &Pair,
    config: &std::path::Path,
    via: &str,
    decap: &Decap,
    total: u32,
    probes: u32,
) -> Result<Round> {
    eprintln!("checks: via = {via}, {probes} probes");
    let agent = Agent::start_in(&pair.agent, config, Duration::from_secs(300))?;
    let pid = agent.pid().context("agent not running")?;
    std::thread::sleep(WARM_UP);
    let lag0 = parse_lag(&agent.metrics()?)?;
    let (ok0, failed0) = tally(&agent, total)?;
    let decap0 = decap.stat(DecapStat::Decapsulated)?;
    let cpu0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    std::thread::sleep(WINDOW);
    let cpu1 = cpu_seconds(pid)?;
    let decap1 = decap.stat(DecapStat::Decapsulated)?;
    let window = t0.elapsed().as_secs_f64();
    let lag1 = parse_lag(&agent.metrics()?)?;
    let (ok1, failed1) = tally(&agent, total)?;
    // Over the window, not since start: 10,000 first probes at once are not the steady state.
    let (ok, failed) = (ok1 - ok0, failed1 - failed0);
    ensure!(
        failed * 1000 <= ok,
        "via = {via}: {failed} checks failed ({ok} ok) in the window: the measurement is not \
         of healthy checks"
    );
    let checks_per_s = (lag1.count - lag0.count) as f64 / window;
    // Within 15 %: a probe's interval jitters by ± 10 %, and a busy machine delays some.
    let nominal = probes as f64 * 1e3 / CHECK_INTERVAL_MS as f64;
    ensure!(
        (checks_per_s - nominal).abs() <= nominal * 0.15,
        "via = {via}: {checks_per_s:.0} probes/s, expected {nominal:.0}: probe sharing is not \
         what the configuration asks for"
    );
    let decapsulated_per_s = (decap1 - decap0) as f64 / window;
    // A tunnel check is a connection (SYN, ACK, FIN at least) sent encapsulated; a direct one
    // is never encapsulated.
    if via == "tunnel" {
        ensure!(
            decapsulated_per_s >= 2.0 * checks_per_s,
            "via = tunnel: {decapsulated_per_s:.0} decapsulated packets/s for {checks_per_s:.0} \
             checks/s: the checks did not go through the tunnel"
        );
    } else {
        ensure!(
            decap1 == decap0,
            "via = direct: {} packets decapsulated",
            decap1 - decap0
        );
    }
    Ok(Round {
        cpu: (cpu1 - cpu0) / window,
        checks_per_s,
        decapsulated_per_s,
    })
}
