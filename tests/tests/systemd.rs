//! systemd notifications (issue 16, item 1) against a real NOTIFY_SOCKET: a Unix datagram socket
//! this test binds and passes to the real agent with WATCHDOG_USEC, as systemd would. READY=1
//! only once every VIP is published and the program attached; RELOADING=1 (with
//! MONOTONIC_USEC) then READY=1 with the outcome in STATUS= and ERRNO= around each reload, the
//! running configuration kept on a rejection; WATCHDOG=1 periodically; STOPPING=1 on SIGTERM.
//!
//! The watchdog is fed from the controller's own event loop (`notify::Watchdog`, a branch of
//! its `select!`), so only a live controller feeds it; nothing in the agent can block that loop
//! any more (files are read off it), so there is no real stall left to provoke here.

use anyhow::{bail, ensure, Context, Result};
use lb_agent::admin::{self, StatusReport};
use lb_tests::{
    agentproc::{Agent, ADMIN},
    netns::block_in,
    scenario::{config_text, Options},
    servers::Backends,
    topo::Topology,
};
use std::{
    net::SocketAddr,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// WATCHDOG_USEC given to the agent: it feeds every second.
const WATCHDOG: Duration = Duration::from_secs(2);
/// Generous bound for anything the agent does on a loaded machine; only failures wait for it.
const PATIENCE: Duration = Duration::from_secs(30);

/// One notification: its `KEY=value` fields.
#[derive(Clone, Debug)]
struct Message(Vec<String>);

impl Message {
    fn has(&self, field: &str) -> bool {
        self.0.iter().any(|f| f == field)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
    }
}

struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(path: PathBuf) -> Result<Self> {
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path)
            .with_context(|| format!("binding the notify socket {}", path.display()))?;
        Ok(Self { sock, path })
    }

    /// The next message, or None when none came within `within`.
    fn next(&self, within: Duration) -> Result<Option<Message>> {
        self.sock.set_read_timeout(Some(within))?;
        let mut buf = vec![0u8; 65536];
        match self.sock.recv(&mut buf) {
            Ok(n) => {
                let text =
                    String::from_utf8(buf[..n].to_vec()).context("notification not UTF-8")?;
                Ok(Some(Message(
                    text.lines()
                        .filter(|l| !l.is_empty())
                        .map(String::from)
                        .collect(),
                )))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e).context("receiving a notification"),
        }
    }

    /// Messages up to and including the first that `want` accepts; the others before it.
    fn until(
        &self,
        what: &str,
        want: impl Fn(&Message) -> bool,
    ) -> Result<(Vec<Message>, Message)> {
        let deadline = Instant::now() + PATIENCE;
        let mut before = Vec::new();
        while Instant::now() < deadline {
            if let Some(m) = self.next(Duration::from_millis(500))? {
                if want(&m) {
                    return Ok((before, m));
                }
                before.push(m);
            }
        }
        bail!("no {what} within {PATIENCE:?}; got {before:?}")
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn status(ns: &str) -> Result<StatusReport> {
    let addr: SocketAddr = ADMIN.parse()?;
    block_in(ns, move || async move { admin::fetch_status(addr).await })
}

/// What only the configuration decides (health checks may republish tables meanwhile): VIPs,
/// their backends and configured weights.
fn shape(s: &StatusReport) -> Vec<String> {
    s.vips
        .iter()
        .map(|v| {
            let b: Vec<String> = v
                .backends
                .iter()
                .map(|b| format!("{} w{} {:?}", b.address, b.weight, b.admin_state))
                .collect();
            format!("{} {}:{} [{}]", v.name, v.address, v.port, b.join(" "))
        })
        .collect()
}

fn ready_and_published(s: &StatusReport) -> bool {
    s.xdp_mode != "detached" && !s.vips.is_empty() && s.vips.iter().all(|v| v.table_generation > 0)
}

/// What the watcher thread saw up to READY=1, and the socket back.
type Seen = (Vec<Message>, Message, StatusReport, NotifySocket);

#[test]
fn systemd_notifications_ready_reload_watchdog_stop() -> Result<()> {
    let topo = Topology::build("sd", 3)?;
    let _servers = Backends::start(&topo.backends)?;
    let dir = std::env::temp_dir().join(&topo.prefix);
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("lb.toml");
    let options = Options::default();
    let good = config_text(&topo, &options, &options.weights);
    std::fs::write(&config, &good)?;
    let notify = NotifySocket::bind(dir.join("notify.sock"))?;

    // READY=1 is the first message, and at that moment the agent already answers /status
    // with every VIP published and the program attached (asked once, no retry).
    let ns = topo.lb.clone();
    let notify_path = notify.path.clone();
    let watcher = std::thread::spawn(move || -> Result<Seen> {
        let (before, ready) = notify.until("READY=1", |m| m.has("READY=1"))?;
        let at_ready = status(&ns).context("/status right after READY=1")?;
        Ok((before, ready, at_ready, notify))
    });
    let mut agent = Agent::start_with(&topo.lb, &config, PATIENCE, |c| {
        c.env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string());
    })?;
    let (before, ready, at_ready, notify) = watcher
        .join()
        .map_err(|_| anyhow::anyhow!("notify watcher panicked"))??;
    ensure!(before.is_empty(), "messages before READY=1: {before:?}");
    ensure!(
        ready_and_published(&at_ready),
        "READY=1 before publishing: {at_ready:?}"
    );
    let status_line = ready.get("STATUS").unwrap_or_default();
    ensure!(status_line.contains("4 VIPs published"), "{ready:?}");

    // The watchdog is fed periodically.
    for i in 0..3 {
        notify.until(&format!("WATCHDOG=1 #{i}"), |m| m.has("WATCHDOG=1"))?;
    }

    reloads(&agent, &notify, &topo, &config, &good)?;
    agent.stop()?;
    notify.until("STOPPING=1", |m| m.has("STOPPING=1"))?;
    Ok(())
}

/// A rejected reload: RELOADING=1 with MONOTONIC_USEC, then READY=1 with the error and ERRNO=22,
/// the running configuration kept; then an accepted one.
fn reloads(
    agent: &Agent,
    notify: &NotifySocket,
    topo: &Topology,
    config: &Path,
    good: &str,
) -> Result<()> {
    let options = Options::default();
    let kept = shape(&agent.status()?);
    std::fs::write(config, format!("{good}\nbogus_key = 1\n"))?;
    agent.hup()?;
    let (_, reloading) = notify.until("RELOADING=1", |m| m.has("RELOADING=1"))?;
    let usec: u64 = reloading
        .get("MONOTONIC_USEC")
        .context("RELOADING=1 without MONOTONIC_USEC")?
        .parse()?;
    ensure!(usec > 0, "{reloading:?}");
    let (_, rejected) = notify.until("READY=1 after the bad reload", |m| m.has("READY=1"))?;
    ensure!(rejected.get("ERRNO") == Some("22"), "{rejected:?}");
    let why = rejected.get("STATUS").unwrap_or_default();
    ensure!(
        why.starts_with("reload rejected, running configuration kept:")
            && why.contains("bogus_key"),
        "{rejected:?}"
    );
    ensure!(
        shape(&agent.status()?) == kept,
        "a rejected reload changed the agent"
    );

    // An accepted reload (backend 2 removed) reports its summary and clears ERRNO.
    let fewer = config_text(topo, &options, &[100, 100, 0]);
    std::fs::write(config, &fewer)?;
    agent.hup()?;
    notify.until("RELOADING=1", |m| m.has("RELOADING=1"))?;
    let (_, done) = notify.until("READY=1 after the good reload", |m| m.has("READY=1"))?;
    ensure!(done.get("ERRNO") == Some("0"), "{done:?}");
    ensure!(
        done.get("STATUS")
            .unwrap_or_default()
            .starts_with("configuration reloaded: updated VIP"),
        "{done:?}"
    );
    ensure!(
        agent.status()?.vips.iter().all(|v| v.backends.len() == 2),
        "reload not applied"
    );

    Ok(())
}
