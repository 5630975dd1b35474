//! Health checks that take the client's path (`via = "tunnel"`): four backends broken in ways
//! only the tunnel shows, one each, beside two healthy ones, over IPv4 and IPv6 VIPs (and both
//! mixed families on the healthy ones):
//! (a) the VIP is not on the backend's loopback, (b) its decapsulation is detached, (c) its
//! service listens on the backend's own address only, (d) its nftables accepts the service
//! port only on the backend's own address.
//! Through the tunnel each is marked down and gets no client; `via = "direct"` shows the old
//! blindness (up, and its clients fail). A healthy backend survives 1,000+ tunnel probes at a
//! 20 ms interval without a single down.

use anyhow::{ensure, Context, Result};
use lb_agent::admin::{BackendHealth, StatusReport};
use lb_tests::{
    agentproc::{self, Agent},
    client::{http_burst, Tally},
    netns::{enter, sh, NsRuntime},
    servers::{backend_name, Backends, HTTP_PORT, LONG_PORT},
    topo::{backend_v4, backend_v6, Topology, VIP_V4, VIP_V6},
};
use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_util::sync::CancellationToken;

const HEALTHY: [usize; 2] = [0, 1];
/// The broken backends, in case order (a) to (d).
const CASES: [(usize, &str); 4] = [
    (2, "(a) VIP not on loopback"),
    (3, "(b) decap detached"),
    (4, "(c) service bound to the backend's address"),
    (
        5,
        "(d) nftables accepts the port on the backend's address only",
    ),
];
const INTERVAL_MS: u64 = 100;
const FALL: u64 = 3;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A VIP of `config`: name, address, port, check kind, IPv6 backends, backend indexes.
type VipRow = (
    &'static str,
    IpAddr,
    u16,
    &'static str,
    bool,
    &'static [usize],
);

/// web (IPv4) and web6 (IPv6) over all six backends; mix / mix6: the other family's VIP over
/// the healthy backends (IPv4 in IPv6, IPv6 in IPv4).
fn config(topo: &Topology, via: &str, interval_ms: u64, timeout_ms: u64) -> String {
    let mut text = agentproc::agent_section(topo, 0, 8);
    let vips: [VipRow; 4] = [
        (
            "web",
            VIP_V4.into(),
            HTTP_PORT,
            "http",
            false,
            &[0, 1, 2, 3, 4, 5],
        ),
        (
            "web6",
            VIP_V6.into(),
            HTTP_PORT,
            "http",
            true,
            &[0, 1, 2, 3, 4, 5],
        ),
        ("mix", VIP_V4.into(), LONG_PORT, "tcp", true, &HEALTHY),
        ("mix6", VIP_V6.into(), LONG_PORT, "tcp", false, &HEALTHY),
    ];
    for (name, addr, port, kind, v6_backends, backends) in vips {
        text.push_str(&format!(
            "\n[[vip]]\nname = \"{name}\"\naddress = \"{addr}\"\nport = {port}\nprotocol = \"tcp\"\n\
             [vip.health_check]\nkind = \"{kind}\"\npath = \"/healthz?vip={name}\"\nvia = \"{via}\"\n\
             interval_ms = {interval_ms}\ntimeout_ms = {timeout_ms}\nrise = 2\nfall = {FALL}\n",
        ));
        for i in backends {
            let a: IpAddr = if v6_backends {
                backend_v6(*i).into()
            } else {
                backend_v4(*i).into()
            };
            text.push_str(&format!("[[vip.backend]]\naddress = \"{a}\"\n"));
        }
    }
    text
}

struct Setup {
    client: NsRuntime,
    agent: Agent,
    servers: Backends,
    own_address_server: Option<CancellationToken>,
    topo: Topology,
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(token) = self.own_address_server.take() {
            token.cancel();
        }
    }
}

fn start(tag: &str, via: &str, interval_ms: u64, timeout_ms: u64) -> Result<Setup> {
    let topo = Topology::build(tag, 6)?;
    let servers = Backends::start(&topo.backends)?;
    let dir = std::env::temp_dir().join(&topo.prefix);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("lb.toml");
    std::fs::write(&path, config(&topo, via, interval_ms, timeout_ms))?;
    let agent = Agent::start(&topo, &path)?;
    let client = NsRuntime::new(&topo.client)?;
    Ok(Setup {
        client,
        agent,
        servers,
        own_address_server: None,
        topo,
    })
}

fn backend<'a>(
    s: &'a StatusReport,
    vip: &str,
    i: usize,
) -> Result<&'a lb_agent::admin::BackendStatus> {
    let v = s
        .vips
        .iter()
        .find(|v| v.name == vip)
        .context("VIP missing")?;
    v.backends
        .iter()
        .find(|b| {
            b.address == IpAddr::from(backend_v4(i)) || b.address == IpAddr::from(backend_v6(i))
        })
        .with_context(|| format!("{vip}: backend{i} missing"))
}

fn vips_of(i: usize) -> &'static [&'static str] {
    if HEALTHY.contains(&i) {
        &["web", "web6", "mix", "mix6"]
    } else {
        &["web", "web6"]
    }
}

/// Every backend up after `min_ok` successful probes each (the tunnel works for healthy ones).
fn wait_all_checked(sc: &Setup, min_ok: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = sc.agent.status()?;
        let mut pending = Vec::new();
        for i in 0..6 {
            for vip in vips_of(i) {
                let b = backend(&s, vip, i)?;
                if b.health != BackendHealth::Up || b.checks_ok < min_ok {
                    pending.push(format!(
                        "{vip}/backend{i}: {:?} {} ok, {}",
                        b.health, b.checks_ok, b.last_change
                    ));
                }
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "not all up and checked: {pending:?}\n{}",
            sc.agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// HTTP on port 80 of the backend's own addresses only, answering as the harness's server.
fn serve_on_own_address(ns: &str, i: usize) -> Result<CancellationToken> {
    let token = CancellationToken::new();
    let (ns, stop) = (ns.to_string(), token.clone());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
    std::thread::spawn(move || {
        let failed = ready_tx.clone();
        let run = || -> Result<()> {
            enter(&ns)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let v4 = TcpListener::bind((backend_v4(i), HTTP_PORT)).await?;
                let v6 = TcpListener::bind((backend_v6(i), HTTP_PORT)).await?;
                let _ = ready_tx.send(Ok(()));
                loop {
                    let accepted = tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        a = v4.accept() => a,
                        a = v6.accept() => a,
                    };
                    let Ok((mut s, _)) = accepted else { continue };
                    tokio::spawn(async move {
                        let mut buf = [0u8; 2048];
                        let mut got = Vec::new();
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 8192 {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        let body = backend_name(i);
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = s.write_all(reply.as_bytes()).await;
                    });
                }
            })
        };
        if let Err(e) = run() {
            let _ = failed.send(Err(e));
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("own-address server did not start")??;
    Ok(token)
}

/// Break backend `i` the way its case says.
fn break_backend(sc: &mut Setup, i: usize) -> Result<()> {
    let ns = sc.topo.backends[i].clone();
    match i {
        2 => {
            sh(Some(&ns), &format!("ip addr del {VIP_V4}/32 dev lo"))?;
            sh(Some(&ns), &format!("ip -6 addr del {VIP_V6}/128 dev lo"))?;
        }
        3 => sc.topo.release_decap(i),
        4 => {
            sc.servers.stop(i);
            sc.own_address_server = Some(serve_on_own_address(&ns, i)?);
        }
        5 => {
            let (v4, v6) = (backend_v4(i), backend_v6(i));
            sh(Some(&ns), "nft add table inet lbe_svc")?;
            sh(
                Some(&ns),
                "nft add chain inet lbe_svc input { type filter hook input priority 0 ; policy accept ; }",
            )?;
            sh(
                Some(&ns),
                &format!(
                    "nft add rule inet lbe_svc input tcp dport {HTTP_PORT} ip daddr != {v4} drop"
                ),
            )?;
            sh(
                Some(&ns),
                &format!(
                    "nft add rule inet lbe_svc input tcp dport {HTTP_PORT} ip6 daddr != {v6} drop"
                ),
            )?;
        }
        _ => anyhow::bail!("backend{i} has no case"),
    }
    Ok(())
}

fn counter(s: &StatusReport, name: &str) -> u64 {
    s.counters.get(name).copied().unwrap_or(0)
}

fn burst(sc: &Setup, vip: SocketAddr, count: usize, concurrency: usize) -> Result<Tally> {
    sc.client.run(http_burst(vip, count, concurrency))
}

fn break_all(sc: &mut Setup) -> Result<Vec<Instant>> {
    let mut at = Vec::new();
    for (i, _) in CASES {
        at.push(Instant::now());
        break_backend(sc, i)?;
    }
    Ok(at)
}

fn client_vips() -> [SocketAddr; 2] {
    [(VIP_V4, HTTP_PORT).into(), (VIP_V6, HTTP_PORT).into()]
}

#[test]
fn tunnel_checks_mark_each_broken_backend_down_and_it_gets_no_client() -> Result<()> {
    let _serial = serial();
    let mut sc = start("tt", "tunnel", INTERVAL_MS, 90)?;
    wait_all_checked(&sc, 3)?;
    let broken_at = break_all(&mut sc)?;
    // Generous: fall probes, each at most interval + 10% jitter + timeout, plus slack.
    let bound = Duration::from_millis(FALL * (INTERVAL_MS * 11 / 10 + 90) + 2000);
    let mut down_after = vec![Vec::new(); CASES.len()];
    let mut pending: Vec<(usize, &str)> = (0..CASES.len())
        .flat_map(|c| ["web", "web6"].map(move |v| (c, v)))
        .collect();
    while !pending.is_empty() {
        let s = sc.agent.status()?;
        let mut still = Vec::new();
        for (c, vip) in pending {
            let i = CASES[c].0;
            if backend(&s, vip, i)?.health == BackendHealth::Down {
                down_after[c].push((vip, broken_at[c].elapsed()));
            } else {
                ensure!(
                    broken_at[c].elapsed() < bound,
                    "{} ({vip}/backend{i}) not down after {bound:?}:\n{}",
                    CASES[c].1,
                    sc.agent.log_text()
                );
                still.push((c, vip));
            }
        }
        pending = still;
        std::thread::sleep(Duration::from_millis(10));
    }
    for (c, times) in down_after.iter().enumerate() {
        eprintln!(
            "time to down, {}: {times:?} (fall {FALL} x interval {INTERVAL_MS} ms)",
            CASES[c].1
        );
    }
    let before = sc.agent.status()?;
    for vip in client_vips() {
        let tally = burst(&sc, vip, 300, 16)?;
        ensure!(
            tally.errors.is_empty(),
            "{vip}: {:?}",
            &tally.errors[..tally.errors.len().min(5)]
        );
        ensure!(tally.total() == 300, "{vip}: {tally:?}");
        let healthy: Vec<String> = HEALTHY.iter().map(|i| backend_name(*i)).collect();
        ensure!(
            tally.by_backend.keys().all(|k| healthy.contains(k)),
            "{vip}: a broken backend answered: {tally:?}"
        );
    }
    let after = sc.agent.status()?;
    for (i, case) in CASES {
        for vip in ["web", "web6"] {
            let (b, a) = (backend(&before, vip, i)?, backend(&after, vip, i)?);
            ensure!(
                a.health == BackendHealth::Down,
                "{case}: {vip} came back: {}",
                a.last_change
            );
            ensure!(
                a.packets == b.packets,
                "{case}: {vip} got client packets while down"
            );
        }
    }
    // Both mixed families serve: the healthy backends stay up through IPv4-in-IPv6 and
    // IPv6-in-IPv4 probes.
    for vip in ["mix", "mix6"] {
        for i in HEALTHY {
            let b = backend(&after, vip, i)?;
            ensure!(
                b.health == BackendHealth::Up && b.checks_ok >= 3,
                "{vip}/backend{i}: {b:?}"
            );
        }
    }
    ensure!(
        counter(&after, "probe_encapsulated") > 0,
        "{:?}",
        after.counters
    );
    for never in [
        "probe_drop_unknown_backend",
        "probe_drop_unconfigured",
        "probe_drop_malformed",
        "probe_drop_too_big",
        "probe_encap_failed",
    ] {
        ensure!(counter(&after, never) == 0, "{never}: {:?}", after.counters);
    }
    Ok(())
}

#[test]
fn direct_checks_keep_the_broken_backends_up_and_their_clients_fail() -> Result<()> {
    let _serial = serial();
    let mut sc = start("td", "direct", INTERVAL_MS, 90)?;
    wait_all_checked(&sc, 3)?;
    break_all(&mut sc)?;
    let ok_at_break = sc.agent.status()?;
    // Twice fall probes after the break: still up, every one a success.
    std::thread::sleep(Duration::from_millis(
        2 * FALL * INTERVAL_MS * 11 / 10 + 200,
    ));
    let before = sc.agent.status()?;
    for (i, case) in CASES {
        for vip in ["web", "web6"] {
            let (at, b) = (backend(&ok_at_break, vip, i)?, backend(&before, vip, i)?);
            ensure!(
                b.health == BackendHealth::Up,
                "{case}: {vip} went down with direct checks"
            );
            ensure!(
                b.checks_ok >= at.checks_ok + FALL,
                "{case}: {vip}: {} -> {} ok",
                at.checks_ok,
                b.checks_ok
            );
        }
    }
    for vip in client_vips() {
        let tally = burst(&sc, vip, 60, 30)?;
        ensure!(
            !tally.errors.is_empty(),
            "{vip}: no client failed: {tally:?}"
        );
        ensure!(
            tally.total() + tally.errors.len() as u64 == 60,
            "{vip}: {tally:?}"
        );
        eprintln!(
            "{vip}, direct checks: {} of 60 clients failed",
            tally.errors.len()
        );
    }
    let after = sc.agent.status()?;
    for (i, case) in CASES {
        for vip in ["web", "web6"] {
            let (b, a) = (backend(&before, vip, i)?, backend(&after, vip, i)?);
            ensure!(a.health == BackendHealth::Up, "{case}: {vip} went down");
            ensure!(a.packets > b.packets, "{case}: {vip} got no client packets");
        }
    }
    ensure!(
        counter(&after, "probe_encapsulated") == 0,
        "{:?}",
        after.counters
    );
    Ok(())
}

#[test]
fn a_thousand_tunnel_probes_never_take_a_healthy_backend_down() -> Result<()> {
    let _serial = serial();
    let sc = start("tf", "tunnel", 20, 20)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    let probes = |s: &StatusReport| -> Result<(u64, u64)> {
        let mut ok_failed = (0, 0);
        for i in HEALTHY {
            for vip in vips_of(i) {
                let b = backend(s, vip, i)?;
                ok_failed.0 += b.checks_ok;
                ok_failed.1 += b.checks_failed;
            }
        }
        Ok(ok_failed)
    };
    let (ok, failed) = loop {
        let s = sc.agent.status()?;
        let (ok, failed) = probes(&s)?;
        if ok + failed >= 1000 || Instant::now() > deadline {
            break (ok, failed);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let s = sc.agent.status()?;
    let log = sc.agent.log_text();
    let downs = log.matches("backend down").count();
    eprintln!(
        "{} tunnel probes to healthy backends in {:?}: {ok} ok, {failed} failed, {downs} downs",
        ok + failed,
        started.elapsed()
    );
    ensure!(ok + failed >= 1000, "only {} probes in 60 s", ok + failed);
    ensure!(downs == 0, "a healthy backend went down:\n{log}");
    for i in HEALTHY {
        for vip in vips_of(i) {
            let b = backend(&s, vip, i)?;
            ensure!(
                b.health == BackendHealth::Up,
                "{vip}/backend{i}: {}",
                b.last_change
            );
        }
    }
    ensure!(counter(&s, "probe_encapsulated") >= ok, "{:?}", s.counters);
    Ok(())
}
