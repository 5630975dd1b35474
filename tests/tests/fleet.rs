//! Scale-out: balancers behind a router that spreads flows over them with ECMP, VIPs announced
//! by each agent through its BIRD. Every balancer computes the same Maglev table, so a flow
//! reaches the same backend through any of them, and losing one resets no connection.
//! The scenarios run one at a time (two shared cores) and print their convergence times.

use anyhow::{ensure, Context, Result};
use lb_agent::{admin::BackendHealth, bgp::maintenance::Phase};
use lb_tests::{
    client::{http_burst, LongLived},
    fleet::{Fleet, FleetBgp, HOLD_TIME_S},
    scenario::{backend_name, Options},
    servers::{HTTP_PORT, LONG_PORT},
    topo::{backend_v4, VIP_UDP, VIP_V4, VIP_V6},
};
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

const WEB: SocketAddr = SocketAddr::new(IpAddr::V4(VIP_V4), HTTP_PORT);
const WEB6: SocketAddr = SocketAddr::new(IpAddr::V6(VIP_V6), HTTP_PORT);
const LONG: SocketAddr = SocketAddr::new(IpAddr::V4(VIP_V4), LONG_PORT);

/// Packets each of `members` forwarded (its data path's own counter).
fn forwarded(f: &Fleet, members: &[usize]) -> Result<Vec<u64>> {
    let statuses = f.statuses(members)?;
    Ok(statuses
        .iter()
        .map(|s| s.counters.get("forwarded").copied().unwrap_or(0))
        .collect())
}

/// Packets of VIP `vip` each of `members` forwarded.
fn vip_packets(f: &Fleet, members: &[usize], vip: &str) -> Result<Vec<u64>> {
    let statuses = f.statuses(members)?;
    Ok(statuses
        .iter()
        .map(|s| {
            s.vips
                .iter()
                .find(|v| v.name == vip)
                .map_or(0, |v| v.packets)
        })
        .collect())
}

/// VIP name -> table digest, per balancer of `members`.
fn digests(f: &Fleet, members: &[usize]) -> Result<Vec<BTreeMap<String, String>>> {
    let statuses = f.statuses(members)?;
    Ok(statuses
        .into_iter()
        .map(|s| {
            s.vips
                .into_iter()
                .map(|v| (v.name, v.table_digest))
                .collect()
        })
        .collect())
}

fn all_ok(f: &Fleet, addr: SocketAddr, count: usize) -> Result<()> {
    let tally = f.client.run(http_burst(addr, count, 16))?;
    ensure!(
        tally.errors.is_empty() && tally.total() == count as u64,
        "{addr}: {tally:?}"
    );
    Ok(())
}

/// Closes the long-lived connections: none was reset or stalled, and each ended on the backend
/// it started on ("connection i moved from a to b" would also be among the failures).
fn closed_where_they_started(
    f: &Fleet,
    long: LongLived,
    first_backends: &[Option<String>],
) -> Result<()> {
    let names = long.backend_names();
    let failures = f.client.run(long.close())?;
    ensure!(failures.is_empty(), "resets or stalls: {failures:?}");
    ensure!(
        names.iter().zip(first_backends).all(|(a, b)| a == b),
        "a connection changed backend"
    );
    Ok(())
}

/// Wait until the long-lived connections made `more` exchanges beyond what they had.
fn exchanges_grow(long: &LongLived, more: u64, limit: Duration) -> Result<()> {
    let start_count = long.exchanges.load(std::sync::atomic::Ordering::Relaxed);
    let deadline = Instant::now() + limit;
    while long.exchanges.load(std::sync::atomic::Ordering::Relaxed) < start_count + more {
        ensure!(
            Instant::now() < deadline,
            "long-lived connections stalled: {:?}",
            long.failures()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn three_balancers_share_flows_and_losing_one_resets_nothing() -> Result<()> {
    let _serial = serial();
    let mut f = Fleet::start("fa", 3, Options::default())?;

    // Every balancer computed the same tables.
    let d = digests(&f, &[0, 1, 2])?;
    ensure!(d[0] == d[1] && d[1] == d[2], "table digests differ: {d:?}");

    // Every balancer carries traffic: ECMP spreads the connections by their 5-tuple.
    let before = forwarded(&f, &[0, 1, 2])?;
    all_ok(&f, WEB, 600)?;
    all_ok(&f, WEB6, 150)?;
    let after = forwarded(&f, &[0, 1, 2])?;
    let carried: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    eprintln!("packets forwarded per balancer for 750 connections: {carried:?}");
    ensure!(
        carried.iter().all(|&n| n > 0),
        "a balancer carried nothing: {carried:?}"
    );

    // Long-lived connections across the fleet; exchanges may wait out TCP's backoff while a
    // balancer is lost, so a stall only counts after 20 s.
    let long = f.client.run(LongLived::open_with_stall(
        LONG,
        60,
        Duration::from_millis(200),
        Duration::from_secs(20),
    ))??;
    exchanges_grow(&long, 120, Duration::from_secs(10))?;
    let first_backends = long.backend_names();
    // Each balancer carries some of them (so the losses below move real connections).
    let a = vip_packets(&f, &[0, 1, 2], "long")?;
    exchanges_grow(&long, 120, Duration::from_secs(10))?;
    let b = vip_packets(&f, &[0, 1, 2], "long")?;
    let long_carried: Vec<u64> = b.iter().zip(&a).map(|(b, a)| b - a).collect();
    eprintln!("long-lived packets per balancer: {long_carried:?}");
    ensure!(
        long_carried.iter().all(|&n| n > 0),
        "a balancer carries no long-lived connection: {long_carried:?}"
    );
    long.take_longest();

    // (3) A balancer dies: agent and BIRD killed. Its BGP session closes, the router withdraws
    // its path, ECMP moves its flows to the survivors, which pick the same backends.
    let before = forwarded(&f, &[0, 1, 2])?;
    let t = Instant::now();
    f.kill_member(2)?;
    let withdrawn = f.wait_for_nexthops(VIP_V4.into(), 2, Duration::from_secs(10))?;
    eprintln!("balancer killed: path withdrawn after {withdrawn:?}");
    exchanges_grow(&long, 300, Duration::from_secs(20))?;
    eprintln!(
        "balancer killed: longest exchange of a long-lived connection {:?} ({:?} observed)",
        long.take_longest(),
        t.elapsed()
    );
    ensure!(
        long.failures().is_empty(),
        "after the loss: {:?}",
        long.failures()
    );
    all_ok(&f, WEB, 300)?;
    let survivors = forwarded(&f, &[0, 1])?;
    ensure!(
        survivors.iter().zip(&before).all(|(a, b)| a > b),
        "survivors did not take over: {before:?} -> {survivors:?}"
    );

    // (4) It returns: announced once its tables are published; flows spread again, and those
    // that move to it find the same backend through its table.
    let t = Instant::now();
    f.start_member(2)?;
    let back = f.wait_for_nexthops(VIP_V4.into(), 3, Duration::from_secs(20))?;
    eprintln!(
        "balancer restarted: path back {back:?} after the agent was ready ({:?} in all)",
        t.elapsed()
    );
    let d = digests(&f, &[0, 1, 2])?;
    ensure!(d[0] == d[2], "the returned balancer's tables differ: {d:?}");
    let before = forwarded(&f, &[0, 1, 2])?;
    exchanges_grow(&long, 300, Duration::from_secs(20))?;
    eprintln!(
        "balancer returned: longest exchange of a long-lived connection {:?}",
        long.take_longest()
    );
    all_ok(&f, WEB, 300)?;
    let after = forwarded(&f, &[0, 1, 2])?;
    ensure!(
        after[2] > before[2],
        "the returned balancer carries nothing"
    );
    ensure!(
        long.failures().is_empty(),
        "after the return: {:?}",
        long.failures()
    );

    // A balancer that goes silent (its link cut, nothing sent): the router notices when the
    // hold timer expires; in the meantime its flows' packets are lost and TCP retransmits.
    let t = Instant::now();
    f.cut_link(1, true)?;
    let expired = f.wait_for_nexthops(VIP_V4.into(), 2, Duration::from_secs(HOLD_TIME_S + 10))?;
    eprintln!("balancer cut off: path withdrawn after {expired:?} (hold time {HOLD_TIME_S} s)");
    exchanges_grow(&long, 300, Duration::from_secs(30))?;
    eprintln!(
        "balancer cut off: longest exchange of a long-lived connection {:?} ({:?} observed)",
        long.take_longest(),
        t.elapsed()
    );
    all_ok(&f, WEB, 300)?;
    f.cut_link(1, false)?;
    let back = f.wait_for_nexthops(VIP_V4.into(), 3, Duration::from_secs(30))?;
    eprintln!("link restored: path back after {back:?}");
    exchanges_grow(&long, 300, Duration::from_secs(20))?;

    closed_where_they_started(&f, long, &first_backends)?;
    Ok(())
}

#[test]
fn backend_loss_converges_on_every_balancer_and_unservable_vips_are_withdrawn() -> Result<()> {
    let _serial = serial();
    let options = Options {
        all_down: "drop",
        ..Options::default()
    };
    let mut f = Fleet::start("fb", 2, options)?;

    // The doctor sees what the agent needs from BIRD, live.
    let doctor = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", f.members[0].ns))
        .arg("--")
        .arg(lb_tests::agentproc::agent_binary()?)
        .args(["doctor", "--config"])
        .arg(&f.members[0].config)
        .output()?;
    let report = String::from_utf8_lossy(&doctor.stdout);
    for line in [
        "OK   tun:",
        "OK   BIRD: answers on",
        "OK   BIRD include:",
        "OK   BGP session to 198.18.0.1: established",
    ] {
        ensure!(report.contains(line), "doctor lacks {line:?}:\n{report}");
    }

    // Announcements carry the configured community; a reload changes it in place.
    let communities = |f: &Fleet| -> Result<String> {
        f.router_bird
            .birdc(&["show", "route", "all", "for", "198.18.10.1"])
    };
    let routes = communities(&f)?;
    ensure!(routes.contains("(65010,100)"), "no community:\n{routes}");
    let text = std::fs::read_to_string(&f.members[0].config)?;
    std::fs::write(
        &f.members[0].config,
        text.replace("\"65010:100\"", "\"65010:100\", \"65010:7:9\""),
    )?;
    let summary = f.agent(0)?.post("/reload")?;
    ensure!(summary.contains("reloaded"), "{summary}");
    let t = Instant::now();
    while !communities(&f)?.contains("(65010, 7, 9)") {
        ensure!(
            t.elapsed() < Duration::from_secs(10),
            "the reloaded large community never reached the router:\n{}",
            communities(&f)?
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let initial = digests(&f, &[0, 1])?;
    ensure!(initial[0] == initial[1], "digests differ: {initial:?}");

    // (5) A backend fails: each agent finds out by itself and both publish the same table.
    f.servers.stop(1);
    let t = Instant::now();
    let converged = loop {
        let d = digests(&f, &[0, 1])?;
        if d[0] == d[1] && d[0]["web"] != initial[0]["web"] {
            break t.elapsed();
        }
        ensure!(
            t.elapsed() < Duration::from_secs(15),
            "no convergence: {d:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    eprintln!("backend stopped: both balancers' tables equal without it after {converged:?}");
    for i in 0..2 {
        let status = f.agent(i)?.status()?;
        let web = status
            .vips
            .iter()
            .find(|v| v.name == "web")
            .context("web")?;
        let dead = backend_v4(1);
        ensure!(
            web.backends.iter().any(|b| b.address == IpAddr::V4(dead)
                && b.health == BackendHealth::Down
                && b.slots == 0),
            "balancer {i} still uses {dead}"
        );
    }
    let tally = f.client.run(http_burst(WEB, 200, 16))?;
    ensure!(tally.errors.is_empty(), "{tally:?}");
    ensure!(
        !tally.by_backend.contains_key(&backend_name(1)),
        "the dead backend answered: {tally:?}"
    );

    // No backend left and all_down = "drop": nothing can serve, so nothing is announced.
    let t = Instant::now();
    f.servers.stop(0);
    f.servers.stop(2);
    let gone = f.wait_for_nexthops(VIP_V4.into(), 0, Duration::from_secs(15))?;
    f.wait_for_nexthops(VIP_UDP.into(), 0, Duration::from_secs(5))?;
    eprintln!("every backend down: VIPs withdrawn by both balancers after {gone:?}");
    for i in 0..3 {
        f.servers.start_again(i)?;
    }
    let back = f.wait_for_nexthops(VIP_V4.into(), 2, Duration::from_secs(15))?;
    eprintln!(
        "backends back: VIPs announced again after {back:?} ({:?} since the withdrawal began)",
        t.elapsed()
    );
    all_ok(&f, WEB, 200)?;

    // A graceful stop withdraws before the agent exits, while BIRD keeps running.
    let t = Instant::now();
    if let Some(agent) = f.members[0].agent.as_mut() {
        agent.stop()?;
    }
    let withdrawn = f.wait_for_nexthops(VIP_V4.into(), 1, Duration::from_secs(5))?;
    eprintln!(
        "agent stopped (SIGTERM): path withdrawn after {withdrawn:?} ({:?} incl. exit)",
        t.elapsed()
    );
    let log = f.members[0]
        .agent
        .as_ref()
        .map(|a| a.log_text())
        .unwrap_or_default();
    ensure!(
        log.contains("BGP announcements withdrawn"),
        "no withdrawal in the agent's log:\n{log}"
    );
    all_ok(&f, WEB, 200)?;
    Ok(())
}

/// Wait (at most `limit`) until `ok` holds for balancer `i`'s status; how long it took.
fn wait_status(
    f: &Fleet,
    i: usize,
    limit: Duration,
    what: &str,
    ok: impl Fn(&lb_agent::admin::StatusReport) -> bool,
) -> Result<Duration> {
    let t = Instant::now();
    loop {
        let s = f.agent(i)?.status()?;
        if ok(&s) {
            return Ok(t.elapsed());
        }
        ensure!(
            t.elapsed() < limit,
            "balancer {i}: {what} not seen after {limit:?}: {:?}",
            s.bgp
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn phase(s: &lb_agent::admin::StatusReport) -> Option<Phase> {
    s.bgp.as_ref().map(|b| b.maintenance.phase)
}

/// The drain of the maintenance test: long enough to look at the draining phase at leisure.
const DRAIN_MS: u64 = 6000;

#[test]
fn maintenance_drains_a_balancer_without_resetting_connections() -> Result<()> {
    let _serial = serial();
    let bgp = FleetBgp {
        extra_keys: format!("maintenance_drain_ms = {DRAIN_MS}"),
        ..FleetBgp::default()
    };
    let f = Fleet::start_with("fm", 3, Options::default(), &bgp)?;
    let long = f.client.run(LongLived::open_with_stall(
        LONG,
        60,
        Duration::from_millis(200),
        Duration::from_secs(20),
    ))??;
    exchanges_grow(&long, 120, Duration::from_secs(10))?;
    let first_backends = long.backend_names();
    let a = vip_packets(&f, &[0, 1, 2], "long")?;
    exchanges_grow(&long, 120, Duration::from_secs(10))?;
    let b = vip_packets(&f, &[0, 1, 2], "long")?;
    ensure!(
        b[2] > a[2],
        "balancer 2 carries no long-lived connection before its maintenance: {a:?} -> {b:?}"
    );
    long.take_longest();

    // On: still announced, with 65535:0; the router gives it local preference 0, so it leaves
    // the multipath route at once and its flows move to the others.
    let t = Instant::now();
    let answer = f.cli(2, &["maintenance", "on"])?;
    ensure!(answer.contains("65535:0"), "{answer}");
    let left = f.wait_for_nexthops(VIP_V4.into(), 2, Duration::from_secs(10))?;
    eprintln!("maintenance on: out of the router's multipath route after {left:?}");
    let routes = f
        .router_bird
        .birdc(&["show", "route", "all", "for", "198.18.10.1"])?;
    let draining = f.agent(2)?.status()?;
    ensure!(
        phase(&draining) == Some(Phase::Draining),
        "the drain ended before the router was looked at (the bound is {DRAIN_MS} ms): {:?}",
        draining.bgp
    );
    ensure!(
        routes.contains("(65535,0)") && routes.contains("BGP.local_pref: 0"),
        "the router has no graceful-shutdown route with local preference 0:\n{routes}"
    );
    eprintln!("router, while balancer 2 drains:\n{routes}");
    let text = f.cli(2, &["status"])?;
    ensure!(text.contains("maintenance: draining"), "{text}");
    eprintln!(
        "status while draining:\n{}",
        text.lines().take(4).collect::<Vec<_>>().join("\n")
    );

    // Then withdrawn after the drain.
    let withdrawn = wait_status(
        &f,
        2,
        Duration::from_millis(DRAIN_MS) + Duration::from_secs(20),
        "withdrawal",
        |s| {
            phase(s) == Some(Phase::Withdrawn)
                && s.bgp.as_ref().is_some_and(|b| b.announced.is_empty())
        },
    )?;
    eprintln!(
        "maintenance on: withdrawn {:?} after `on` (drain {DRAIN_MS} ms)",
        t.elapsed()
    );
    let _ = withdrawn;
    f.wait_for_nexthops(VIP_V6.into(), 2, Duration::from_secs(10))?;
    let metrics = f.agent(2)?.metrics()?;
    ensure!(
        metrics
            .lines()
            .any(|l| l == r#"lb_maintenance{phase="withdrawn"} 1"#),
        "{metrics}"
    );

    // No new connection reaches it: its data path forwards nothing more while the others serve.
    let before = forwarded(&f, &[0, 1, 2])?;
    all_ok(&f, WEB, 300)?;
    all_ok(&f, WEB6, 100)?;
    exchanges_grow(&long, 300, Duration::from_secs(20))?;
    let after = forwarded(&f, &[0, 1, 2])?;
    eprintln!("after the withdrawal: forwarded {before:?} -> {after:?}");
    ensure!(
        after[2] == before[2],
        "balancer 2 still forwards: {before:?} -> {after:?}"
    );
    ensure!(
        after[0] > before[0] && after[1] > before[1],
        "{before:?} -> {after:?}"
    );
    eprintln!(
        "maintenance: longest exchange of a long-lived connection {:?}",
        long.take_longest()
    );
    ensure!(
        long.failures().is_empty(),
        "during maintenance: {:?}",
        long.failures()
    );

    // Off: announced normally, new flows reach it again.
    let answer = f.cli(2, &["maintenance", "off"])?;
    ensure!(answer.contains("announcing normally"), "{answer}");
    let back = f.wait_for_nexthops(VIP_V4.into(), 3, Duration::from_secs(20))?;
    eprintln!("maintenance off: back in the multipath route after {back:?}");
    let before = forwarded(&f, &[0, 1, 2])?;
    all_ok(&f, WEB, 300)?;
    let after = forwarded(&f, &[0, 1, 2])?;
    ensure!(
        after[2] > before[2],
        "balancer 2 carries nothing after `off`"
    );
    exchanges_grow(&long, 300, Duration::from_secs(20))?;

    let log = f.agent(2)?.log_text();
    for line in log.lines().filter(|l| l.contains("maintenance")) {
        eprintln!("balancer 2 log: {line}");
    }
    closed_where_they_started(&f, long, &first_backends)?;
    Ok(())
}

#[test]
fn bfd_withdraws_a_silent_balancer_long_before_the_hold_timer() -> Result<()> {
    let _serial = serial();
    // A hold time far above BFD's 300 ms, so a fast withdrawal can only be BFD's.
    let hold = 9;
    let bgp = FleetBgp {
        hold_time_s: hold,
        bfd: true,
        ..FleetBgp::default()
    };
    let f = Fleet::start_with("fd", 2, Options::default(), &bgp)?;
    let t = Instant::now();
    loop {
        let sessions = f.router_bird.birdc(&["show", "bfd", "sessions"])?;
        if sessions.matches(" Up ").count() == 2 {
            eprintln!("router's BFD sessions:\n{sessions}");
            break;
        }
        ensure!(
            t.elapsed() < Duration::from_secs(20),
            "BFD sessions not up:\n{sessions}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    all_ok(&f, WEB, 200)?;

    let mut figures = Vec::new();
    for round in 0..3 {
        let t = Instant::now();
        f.cut_link(1, true)?;
        let gone = f.wait_for_nexthops(VIP_V4.into(), 1, Duration::from_secs(hold + 10))?;
        let why = f.router_bird.birdc(&["show", "protocols", "all", "lb1"])?;
        f.cut_link(1, false)?;
        eprintln!("round {round}: silent balancer's path withdrawn after {gone:?}");
        figures.push(gone);
        ensure!(
            why.contains("BFD session down"),
            "the session did not end by BFD:\n{why}"
        );
        // Generous (BFD needs 300 ms) and still a third of the hold time: only BFD is this fast.
        ensure!(
            gone < Duration::from_secs(hold / 3),
            "withdrawn after {gone:?}, hold time {hold} s"
        );
        all_ok(&f, WEB, 100)?;
        let back = f.wait_for_nexthops(VIP_V4.into(), 2, Duration::from_secs(60))?;
        eprintln!(
            "round {round}: link restored, path back after {back:?} ({:?} in all)",
            t.elapsed()
        );
    }
    eprintln!("BFD withdrawal times: {figures:?} (hold time {hold} s)");
    all_ok(&f, WEB, 200)?;
    Ok(())
}
