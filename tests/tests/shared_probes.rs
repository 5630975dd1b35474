//! One health probe per (backend, check definition), shared by the VIPs that use it: eight
//! VIPs on one IPv4 address and eight on one IPv6 address (ports 81..=88), all over the same two
//! backends with the same HTTP check on port 8080 through the tunnel. That is four probes (two
//! VIP addresses x two backends), not 32: the backends' own request counts show it, and
//! `/status` lists the probes with the VIPs each serves.

use anyhow::{ensure, Context, Result};
use lb_agent::admin::{BackendHealth, StatusReport};
use lb_tests::{
    agentproc::{self, Agent},
    netns::NsRuntime,
    topo::{backend_v4, Topology, VIP_V4, VIP_V6},
};
use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

const BACKENDS: usize = 2;
const VIPS_PER_ADDRESS: u16 = 8;
const CHECK_PORT: u16 = 8080;

fn config(topo: &Topology) -> String {
    let mut text = agentproc::agent_section(topo, 0, 32);
    for (family, addr) in [("a", IpAddr::from(VIP_V4)), ("b", IpAddr::from(VIP_V6))] {
        for i in 0..VIPS_PER_ADDRESS {
            text.push_str(&format!(
                "\n[[vip]]\nname = \"{family}{i}\"\naddress = \"{addr}\"\nport = {}\n\
                 protocol = \"tcp\"\n[vip.health_check]\nkind = \"http\"\nport = {CHECK_PORT}\n\
                 path = \"/healthz\"\nexpect_status = \"200-299\"\nexpect_body = \"ok\"\n\
                 interval_ms = 100\ntimeout_ms = 100\nrise = 1\nfall = 3\n",
                81 + i
            ));
            for b in 0..BACKENDS {
                text.push_str(&format!(
                    "[[vip.backend]]\naddress = \"{}\"\n",
                    backend_v4(b)
                ));
            }
        }
    }
    text
}

/// An HTTP server on [::]:8080 (IPv4 too) in a backend's namespace that counts the requests it
/// answers, counting each before its answer (so a probe reported done was counted).
fn counting_server(rt: &NsRuntime) -> Result<Arc<AtomicU64>> {
    let count = Arc::new(AtomicU64::new(0));
    let listener = rt
        .run(TcpListener::bind(("::", CHECK_PORT)))?
        .context("bind the check port")?;
    let counter = count.clone();
    rt.rt_handle().spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 8192 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(count)
}

/// Checks of backend `b` as `/status` reports them, summed over its probes (each probe's
/// count taken from one of the VIPs it serves): (passed, passed + failed).
fn checks_of(s: &StatusReport, b: usize) -> Result<(u64, u64)> {
    let addr = IpAddr::from(backend_v4(b));
    let (mut ok, mut total) = (0, 0);
    for p in s.probes.iter().filter(|p| p.backend == addr) {
        let vip = p.vips.first().context("a probe serving no VIP")?;
        let v = s
            .vips
            .iter()
            .find(|v| &v.name == vip)
            .context("VIP missing")?;
        let be = v
            .backends
            .iter()
            .find(|x| x.address == addr)
            .context("backend missing")?;
        ensure!(
            be.probe == Some(p.id),
            "{vip}: probe {:?} != {}",
            be.probe,
            p.id
        );
        ok += be.checks_ok;
        total += be.checks_ok + be.checks_failed;
    }
    Ok((ok, total))
}

#[test]
fn vips_over_one_pool_share_one_probe_per_backend_and_vip_address() -> Result<()> {
    let topo = Topology::build("sp", BACKENDS)?;
    let runtimes: Vec<NsRuntime> = topo
        .backends
        .iter()
        .map(|ns| NsRuntime::new(ns))
        .collect::<Result<_>>()?;
    let counts: Vec<Arc<AtomicU64>> = runtimes
        .iter()
        .map(counting_server)
        .collect::<Result<_>>()?;
    let dir = std::env::temp_dir().join(&topo.prefix);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("lb.toml");
    std::fs::write(&path, config(&topo))?;
    let agent = Agent::start(&topo, &path)?;

    // /status: four probes, each serving the eight VIPs of its address, through the tunnel.
    let s = agent.status()?;
    eprintln!(
        "GET /status, probes[0] and vips[0].backends[0]:\n{}\n{}",
        serde_json::to_string_pretty(&s.probes[0])?,
        serde_json::to_string_pretty(&s.vips[0].backends[0])?
    );
    ensure!(s.probes.len() == 2 * BACKENDS, "{:#?}", s.probes);
    for p in &s.probes {
        let family = if p.target.ip() == IpAddr::from(VIP_V4) {
            "a"
        } else {
            "b"
        };
        let want: Vec<String> = (0..VIPS_PER_ADDRESS)
            .map(|i| format!("{family}{i}"))
            .collect();
        ensure!(p.vips == want && p.vip_count == want.len(), "{p:?}");
        ensure!(p.target.port() == CHECK_PORT, "{p:?}");
        ensure!(p.via == lb_agent::config::CheckVia::Tunnel, "{p:?}");
        ensure!(
            p.target == SocketAddr::new(p.target.ip(), CHECK_PORT)
                && (p.target.ip() == IpAddr::from(VIP_V4) || p.target.ip() == IpAddr::from(VIP_V6)),
            "a tunnel probe goes to the VIP: {p:?}"
        );
    }
    for v in &s.vips {
        for b in &v.backends {
            ensure!(
                b.probe_vips == VIPS_PER_ADDRESS as usize,
                "{}: {b:?}",
                v.name
            );
        }
    }

    // Wait for a few rounds of checks, every backend up in every VIP.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = agent.status()?;
        let settled = (0..BACKENDS).all(|b| checks_of(&s, b).is_ok_and(|(ok, _)| ok >= 10 * 2))
            && s.vips
                .iter()
                .all(|v| v.backends.iter().all(|b| b.health == BackendHealth::Up));
        if settled {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "checks did not settle:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // What each backend answered lies between the passed checks reported before the count and
    // all checks reported after it (plus one in flight per probe): the probes are shared. Unshared, the count would be
    // eight times the reported checks. `/status` is refreshed every 250 ms at the latest: the
    // second reading waits a second so that it holds every check counted before it.
    for (b, count) in counts.iter().enumerate() {
        let (before, _) = checks_of(&agent.status()?, b)?;
        let answered = count.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(1));
        let (_, after) = checks_of(&agent.status()?, b)?;
        eprintln!("backend{b}: {answered} requests answered, {before}..{after} checks reported");
        ensure!(
            before <= answered && answered <= after + 2,
            "backend{b}: {answered} requests, {before}..{after} checks reported"
        );
    }
    Ok(())
}
