//! `cargo xtask bench proxy`: HTTP through our balancer, through HAProxy, and straight to the
//! backends, with the same backends and the same `wrk` load, in interleaved rounds.
//!
//! One topology (client → router → balancer → 3 backends with real HTTP servers, the release
//! agent running) serves every case:
//! - direct: wrk's threads each talk to one backend's own address (round robin over them);
//! - balancer: wrk talks to the VIP; the XDP program encapsulates to a backend, replies go
//!   straight back (DSR);
//! - HAProxy: `mode tcp`, round robin over the backends' addresses, listening on the balancer
//!   namespace's own address (so its packets also pass through `xdp_lb` as non-VIP traffic);
//! - routed (a control, not a contender): like direct, but to addresses the router sends through
//!   the balancer's namespace, which forwards them back with plain kernel routing. The same hops
//!   as the balancer's path with no balancer program in them, so a latency difference between
//!   this and direct belongs to the topology (veth hops on a shared machine), not to us;
//! - uneven (another control): direct, but two of wrk's three threads on backend 0 and one on
//!   backend 1 — the split a hash most often gives three connections — to tell what an uneven
//!   split alone does to the tail.
//!
//! CPU per request: ours is the XDP program's run time (kernel BPF statistics) plus the agent's
//! CPU time; HAProxy's is its process CPU time; direct has no balancer. The run fails when wrk
//! sees errors or when the VIP's counters show traffic took the wrong path.

use anyhow::{bail, ensure, Context, Result};
use lb_agent::dataplane::link_pin;
use lb_tests::{
    benchkit::{median, ms},
    cpu::{process_cpu, MachineCpu},
    haproxy::HaProxy,
    netns::sh,
    progstats::{ProgSample, ProgStats},
    scenario::{config_text, Options, Scenario},
    servers::HTTP_PORT,
    topo::{backend_v4, router_link, router_v4, Topology, LB_IFACE, LB_V4, VIP_V4},
    wrk::{self, Load, WrkResult},
};
use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

const ROUNDS: usize = 5;
const SECONDS: u64 = 10;
/// Saturating: as many requests as the machine serves (throughput, CPU per request). Light:
/// one connection per wrk thread pausing 1 ms between requests, the machine mostly idle (the
/// latency of the path itself rather than of the queue for a CPU).
const LOADS: [(&str, Load); 2] = [
    (
        "saturating",
        Load {
            threads: 3,
            connections: 30,
            duration: Duration::from_secs(SECONDS),
            delay_ms: 0,
        },
    ),
    (
        "light",
        Load {
            threads: 3,
            connections: 3,
            duration: Duration::from_secs(SECONDS),
            delay_ms: 1,
        },
    ),
];
const WARMUP: Load = Load {
    duration: Duration::from_secs(2),
    ..LOADS[0].1
};
const BACKENDS: usize = 3;
/// HAProxy's listen ports on the balancer namespace's address, per thread count.
const HAPROXY_PORTS: [(u32, u16); 2] = [(1, 8001), (2, 8002)];
const CPU_TARGET: f64 = 10.0;
const P99_TARGET: f64 = 1.10;

#[derive(Clone, Copy, PartialEq)]
enum Via {
    Direct,
    /// Direct, but routed through the balancer's namespace by the kernel (the control).
    Routed,
    /// Direct, with two thirds of the connections on one backend (the control for hashing).
    Uneven,
    Balancer,
    HaProxy(usize),
}

/// The scenario's agent serves four VIPs; for the comparison it keeps only `web`, so it runs
/// the same health checks as HAProxy: three backends, HTTP, once a second.
fn only_web(sc: &Scenario) -> Result<()> {
    let full = config_text(&sc.topo, &sc.options, &sc.options.weights);
    let mut blocks = full.split("\n[[vip]]\n");
    let mut text = blocks.next().context("empty configuration")?.to_string();
    for block in blocks.filter(|b| b.starts_with("name = \"web\"\n")) {
        text.push_str("\n[[vip]]\n");
        text.push_str(block);
    }
    std::fs::write(&sc.config_path, text).context("writing the configuration")?;
    sc.agent.hup()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = sc.agent.status()?;
        if status.vips.len() == 1 && status.vips[0].name == "web" && status.vips[0].serving {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the agent did not reload to the web VIP alone:\n{}",
                sc.agent.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Backend i's extra address on lo, reached through the balancer's namespace.
fn routed_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 11, i as u8 + 1)
}
const ROUTED_NET: &str = "198.18.11.0/24";

/// Router → balancer namespace → router → backend for `ROUTED_NET`, by plain kernel routing.
fn route_through_balancer(topo: &Topology) -> Result<Vec<SocketAddr>> {
    let (rt, lb) = (topo.router.as_str(), topo.lb.as_str());
    sh(Some(lb), "sysctl -qw net.ipv4.ip_forward=1")?;
    // One-armed, like XDP_TX: it forwards out of the interface it received on; no redirects.
    for conf in ["all", LB_IFACE] {
        sh(
            Some(lb),
            &format!("sysctl -qw net.ipv4.conf.{conf}.send_redirects=0"),
        )?;
    }
    sh(
        Some(lb),
        &format!("ip route add {ROUTED_NET} via {}", router_v4(0)),
    )?;
    sh(Some(rt), &format!("ip route add {ROUTED_NET} via {LB_V4}"))?;
    // Coming back from the balancer, the router sends them on to the backends.
    sh(
        Some(rt),
        &format!(
            "ip rule add iif {} to {ROUTED_NET} lookup 100",
            router_link(0)
        ),
    )?;
    let mut targets = Vec::new();
    for (i, ns) in topo.backends.iter().enumerate() {
        let addr = routed_addr(i);
        sh(Some(ns), &format!("ip addr add {addr}/32 dev lo"))?;
        sh(
            Some(rt),
            &format!("ip route add {addr}/32 via {} table 100", backend_v4(i)),
        )?;
        targets.push((addr, HTTP_PORT).into());
    }
    Ok(targets)
}

struct Case {
    name: String,
    via: Via,
    url: String,
    /// wrk threads go to these, round robin (empty: the URL's address).
    targets: Vec<SocketAddr>,
}

#[derive(Clone, Copy, Default)]
struct Sample {
    wrk: WrkResult,
    xdp: ProgSample,
    /// The balancer's CPU time: agent (ours), HAProxy process, or nothing (direct).
    proxy_cpu: Duration,
    machine: MachineCpu,
    /// Ours: the busiest backend's share of the VIP's packets.
    top_share: f64,
}

impl Sample {
    fn requests(&self) -> f64 {
        self.wrk.requests.max(1) as f64
    }

    /// CPU time the balancer spent per request, µs: ours counts the XDP program too.
    fn cpu_us(&self, via: Via) -> f64 {
        let xdp = if via == Via::Balancer {
            self.xdp.run_time
        } else {
            Duration::ZERO
        };
        (xdp + self.proxy_cpu).as_secs_f64() * 1e6 / self.requests()
    }
}

struct Bench {
    sc: Scenario,
    prog: ProgStats,
    agent_pid: u32,
    proxies: Vec<HaProxy>,
}

fn main() -> Result<()> {
    // Health checks once a second, as an operator would run them (and as HAProxy's below).
    let options = Options {
        interval_ms: 1000,
        timeout_ms: 500,
        ..Options::default()
    };
    let sc = Scenario::start("px", options).context("setting up (run as root)")?;
    only_web(&sc)?;
    let dir = std::env::temp_dir().join(&sc.topo.prefix);
    let prog = ProgStats::for_pinned_link(&link_pin(&sc.topo.pin_dir(), LB_IFACE))?;
    let agent_pid = sc
        .agent
        .child
        .as_ref()
        .map(|c| c.id())
        .context("agent not running")?;
    let servers: Vec<SocketAddr> = (0..BACKENDS)
        .map(|i| (backend_v4(i), HTTP_PORT).into())
        .collect();
    let mut cases = vec![
        Case {
            name: "direct to the backends (baseline)".into(),
            via: Via::Direct,
            url: format!("http://{}/", servers[0]),
            targets: servers.clone(),
        },
        Case {
            name: "routed through the balancer's namespace (control)".into(),
            via: Via::Routed,
            url: format!("http://{}:{HTTP_PORT}/", routed_addr(0)),
            targets: route_through_balancer(&sc.topo)?,
        },
        Case {
            name: "direct, 2 of 3 wrk threads on one backend (control)".into(),
            via: Via::Uneven,
            url: format!("http://{}/", servers[0]),
            targets: vec![servers[0], servers[0], servers[1]],
        },
        Case {
            name: "our balancer (XDP, DSR)".into(),
            via: Via::Balancer,
            url: format!("http://{VIP_V4}:{HTTP_PORT}/"),
            targets: Vec::new(),
        },
    ];
    let mut proxies = Vec::new();
    for (threads, port) in HAPROXY_PORTS {
        let listen: SocketAddr = (LB_V4, port).into();
        let name = format!("haproxy-{threads}t");
        proxies.push(HaProxy::start(
            &sc.topo.lb,
            &dir,
            &name,
            listen,
            &servers,
            threads,
            "/healthz?vip=haproxy",
        )?);
        cases.push(Case {
            name: format!(
                "HAProxy {} (TCP mode, nbthread {threads})",
                haproxy_version()
            ),
            via: Via::HaProxy(proxies.len() - 1),
            url: format!("http://{listen}/"),
            targets: Vec::new(),
        });
    }
    let bench = Bench {
        sc,
        prog,
        agent_pid,
        proxies,
    };

    for case in &cases {
        eprintln!("warm-up: {}", case.name);
        bench.measure(case, &dir, WARMUP)?;
    }
    // Rounds interleave the cases (rotating who goes first), so a slow spell of this shared
    // machine hits them alike; each ratio is taken within its round.
    let mut samples = vec![vec![Vec::with_capacity(ROUNDS); cases.len()]; LOADS.len()];
    for round in 0..ROUNDS {
        for (l, (label, load)) in LOADS.iter().enumerate() {
            for k in 0..cases.len() {
                let i = (k + round) % cases.len();
                eprintln!("round {}/{ROUNDS}, {label}: {}", round + 1, cases[i].name);
                let s = bench.measure(&cases[i], &dir, *load)?;
                eprintln!(
                    "  {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, cpu {:.2} µs/req",
                    s.wrk.rps(),
                    ms(s.wrk.p50),
                    ms(s.wrk.p99),
                    s.cpu_us(cases[i].via)
                );
                samples[l][i].push(s);
            }
        }
    }
    println!(
        "HTTP/1.1 keep-alive (`GET /`, answered with the backend's name), {ROUNDS} rounds; in each \
         round every load runs every path in turn. Figures are medians over the rounds; ratios \
         are taken within each round, then the median.\n"
    );
    let mut targets = Vec::new();
    for ((label, load), samples) in LOADS.iter().zip(&samples) {
        targets.extend(report(label, *load, &cases, samples));
    }
    println!("| target | load | measured (median of per-round ratios) | met |");
    println!("|---|---|---:|---|");
    for line in targets {
        println!("{line}");
    }
    Ok(())
}

fn haproxy_version() -> String {
    std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.split_whitespace().nth(2).map(|v| {
                // "2.6.12-1+deb12u4": the upstream version.
                v.split('-').next().unwrap_or(v).to_string()
            })
        })
        .unwrap_or_default()
}

impl Bench {
    fn proxy_cpu(&self, via: Via) -> Result<Duration> {
        match via {
            // Kernel forwarding in softirq: no process to charge.
            Via::Direct | Via::Routed | Via::Uneven => Ok(Duration::ZERO),
            Via::Balancer => process_cpu(self.agent_pid),
            Via::HaProxy(i) => process_cpu(self.proxies[i].pid()?),
        }
    }

    /// Packets the VIP forwarded: in all, and per backend.
    fn vip_packets(&self) -> Result<(u64, Vec<u64>)> {
        let status = self.sc.agent.status()?;
        let vip = status
            .vips
            .iter()
            .find(|v| v.name == "web")
            .context("VIP web missing from the agent's status")?;
        Ok((
            vip.packets,
            vip.backends.iter().map(|b| b.packets).collect(),
        ))
    }

    fn measure(&self, case: &Case, dir: &Path, load: Load) -> Result<Sample> {
        let vip_before = self.vip_packets()?;
        let machine = MachineCpu::sample()?;
        let xdp = self.prog.sample()?;
        let cpu = self.proxy_cpu(case.via)?;
        let result = wrk::run(&self.sc.topo.client, dir, &case.url, &case.targets, load)?;
        let mut sample = Sample {
            wrk: result,
            xdp: self.prog.sample()?.since(&xdp),
            proxy_cpu: self.proxy_cpu(case.via)?.saturating_sub(cpu),
            machine: MachineCpu::sample()?.since(&machine),
            top_share: 0.0,
        };
        let vip_after = self.vip_packets()?;
        let vip = vip_after.0 - vip_before.0;
        if case.via == Via::Balancer {
            // Maglev hashes the connections (the other cases spread them evenly): a backend
            // with more of them queues their requests behind each other.
            let split: Vec<u64> = vip_after
                .1
                .iter()
                .zip(&vip_before.1)
                .map(|(a, b)| a - b)
                .collect();
            eprintln!("  packets per backend: {split:?}");
            sample.top_share = split.iter().copied().max().unwrap_or(0) as f64 / vip.max(1) as f64;
        }
        ensure!(
            result.requests > 0 && result.errors == 0,
            "{}: {} requests, {} errors",
            case.name,
            result.requests,
            result.errors
        );
        // Every request of the balancer case crosses the VIP; nothing else may.
        if case.via == Via::Balancer {
            ensure!(
                vip >= result.requests,
                "{}: the VIP counted {vip} packets for {} requests",
                case.name,
                result.requests
            );
        } else {
            ensure!(
                vip == 0,
                "{}: {vip} packets went through the VIP",
                case.name
            );
        }
        if case.via == Via::Routed {
            ensure!(
                sample.xdp.run_count >= result.requests,
                "{}: {} packets crossed the balancer's interface for {} requests",
                case.name,
                sample.xdp.run_count,
                result.requests
            );
        }
        Ok(sample)
    }
}

/// Prints one load's tables; returns its rows of the targets table.
fn report(label: &str, load: Load, cases: &[Case], samples: &[Vec<Sample>]) -> Vec<String> {
    let direct = cases.iter().position(|c| c.via == Via::Direct).unwrap_or(0);
    let ours = cases
        .iter()
        .position(|c| c.via == Via::Balancer)
        .unwrap_or(0);
    let per_round = |i: usize, f: &dyn Fn(&Sample, &Sample, &Sample) -> f64| -> f64 {
        median(
            (0..ROUNDS)
                .map(|r| f(&samples[i][r], &samples[direct][r], &samples[ours][r]))
                .collect(),
        )
    };
    let delay = if load.delay_ms > 0 {
        format!(
            ", a Lua `delay()` of {} ms before each request",
            load.delay_ms
        )
    } else {
        String::new()
    };
    println!(
        "**{label} load** (`wrk -t{} -c{} -d{}s`{delay}):\n",
        load.threads,
        load.connections,
        load.duration.as_secs()
    );
    println!("| path | req/s | vs direct | p50 ms | p99 ms | p99 vs direct | balancer CPU µs/req | CPU ms per 100k req | machine busy (all sessions) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, case) in cases.iter().enumerate() {
        let via = case.via;
        let rps = per_round(i, &|s, _, _| s.wrk.rps());
        let rps_ratio = per_round(i, &|s, d, _| s.wrk.rps() / d.wrk.rps());
        let p50 = per_round(i, &|s, _, _| ms(s.wrk.p50));
        let p99 = per_round(i, &|s, _, _| ms(s.wrk.p99));
        let p99_ratio = per_round(i, &|s, d, _| ms(s.wrk.p99) / ms(d.wrk.p99));
        let cpu = per_round(i, &|s, _, _| s.cpu_us(via));
        let busy = per_round(i, &|s, _, _| s.machine.busy_share() * 100.0);
        let (cpu_cell, per_100k) = match via {
            Via::Direct => ("0 (none)".to_string(), "0".to_string()),
            Via::Routed | Via::Uneven => ("-".to_string(), "-".to_string()),
            _ => (format!("{cpu:.2}"), format!("{:.0}", cpu * 100.0)),
        };
        println!(
            "| {} | {rps:.0} | {rps_ratio:.2}x | {p50:.2} | {p99:.2} | {p99_ratio:.2}x | {cpu_cell} | {per_100k} | {busy:.0}% |",
            case.name
        );
    }

    // Where our figure comes from, and what the XDP program also cost HAProxy's traffic.
    println!();
    println!("| path | XDP runs per request | XDP ns per run | XDP µs/req | process CPU µs/req | process CPU ms per s |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (i, case) in cases.iter().enumerate() {
        if matches!(case.via, Via::Direct | Via::Routed | Via::Uneven) {
            continue;
        }
        let runs = per_round(i, &|s, _, _| s.xdp.run_count as f64 / s.requests());
        let ns = per_round(i, &|s, _, _| {
            s.xdp.run_time.as_nanos() as f64 / s.xdp.run_count.max(1) as f64
        });
        let xdp_us = per_round(i, &|s, _, _| {
            s.xdp.run_time.as_secs_f64() * 1e6 / s.requests()
        });
        let process = per_round(i, &|s, _, _| s.proxy_cpu.as_secs_f64() * 1e6 / s.requests());
        let per_second = per_round(i, &|s, _, _| {
            ms(s.proxy_cpu) / s.wrk.duration.as_secs_f64().max(1e-9)
        });
        println!(
            "| {} | {runs:.2} | {ns:.0} | {xdp_us:.3} | {process:.2} | {per_second:.1} |",
            case.name
        );
    }
    // Per round, so a tail can be matched with how unevenly the connections were hashed.
    let rounds: Vec<String> = (0..ROUNDS)
        .map(|r| {
            let (s, d) = (&samples[ours][r], &samples[direct][r]);
            format!(
                "{:.2}x ({:.0}%)",
                ms(s.wrk.p99) / ms(d.wrk.p99),
                s.top_share * 100.0
            )
        })
        .collect();
    println!(
        "\nOur p99 / direct's, per round (in brackets the busiest backend's share of the VIP's \
         packets; even is {:.0}%, and the other paths spread the connections evenly): {}.",
        100.0 / BACKENDS as f64,
        rounds.join(", ")
    );

    println!();

    let mut targets = Vec::new();
    let p99_ratio = per_round(ours, &|s, d, _| ms(s.wrk.p99) / ms(d.wrk.p99));
    targets.push(format!(
        "| our p99 within {:.0}% of direct | {label} | {p99_ratio:.2}x | {} |",
        (P99_TARGET - 1.0) * 100.0,
        yes(p99_ratio <= P99_TARGET)
    ));
    for (control, what) in [
        (Via::Routed, "the same hops without a balancer"),
        (Via::Uneven, "direct split 2-1-0"),
    ] {
        let Some(c) = cases.iter().position(|c| c.via == control) else {
            continue;
        };
        let ours_to_control = median(
            (0..ROUNDS)
                .map(|r| ms(samples[ours][r].wrk.p99) / ms(samples[c][r].wrk.p99))
                .collect(),
        );
        let control_to_direct = per_round(c, &|s, d, _| ms(s.wrk.p99) / ms(d.wrk.p99));
        targets.push(format!(
            "| (context) our p99 / {what}'s; {what}'s / direct's | {label} | {ours_to_control:.2}x; {control_to_direct:.2}x | - |"
        ));
    }
    for (i, case) in cases.iter().enumerate() {
        if let Via::HaProxy(_) = case.via {
            let ratio = per_round(i, &|s, _, o| s.cpu_us(case.via) / o.cpu_us(Via::Balancer));
            targets.push(format!(
                "| CPU per request ≥ {CPU_TARGET:.0}x below {} | {label} | {ratio:.1}x | {} |",
                case.name,
                yes(ratio >= CPU_TARGET)
            ));
        }
    }
    targets
}

fn yes(met: bool) -> &'static str {
    if met {
        "yes"
    } else {
        "**no**"
    }
}
