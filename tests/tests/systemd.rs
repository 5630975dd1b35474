//! systemd notifications (issue 16, item 1) against a real NOTIFY_SOCKET: a Unix datagram socket
//! this test binds and passes to the real agent with WATCHDOG_USEC, as systemd would. READY=1
//! only once every VIP is published and the program attached; RELOADING=1 (with
//! MONOTONIC_USEC) then READY=1 with the outcome in STATUS= and ERRNO= around each reload, the
//! running configuration kept on a rejection; WATCHDOG=1 periodically, and none while the
//! controller is stuck; STOPPING=1 on SIGTERM.
//!
//! The stall is real, and one systemd sees in production: the agent logs to stderr (the
//! journal's stream), and when nobody reads it any more (journald stuck) a controller that logs
//! blocks in `write`. The test gives the agent a pipe for stderr, fills it and stops reading:
//! the next reload's log line blocks the controller, and the feeding stops until the pipe is
//! read again.

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
    fs::File,
    io::{Read, Write},
    net::SocketAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::Stdio,
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

    /// Every message that arrives during `span` (waits all of it).
    fn during(&self, span: Duration) -> Result<Vec<Message>> {
        let end = Instant::now() + span;
        let mut got = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if let Some(m) = self.next(left.max(Duration::from_millis(1)))? {
                got.push(m);
            }
        }
        Ok(got)
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
fn systemd_notifications_ready_reload_watchdog_stall_stop() -> Result<()> {
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
    let log = LogPipe::new()?;
    let (stdout, stderr) = (log.writer()?, log.writer()?);
    let mut agent = Agent::start_with(&topo.lb, &config, PATIENCE, |c| {
        c.env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
            .stdout(stdout)
            .stderr(stderr);
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
    let drained = stall(&agent, &notify, log)?;
    agent.stop()?;
    notify.until("STOPPING=1", |m| m.has("STOPPING=1"))?;
    let log = drained
        .join()
        .map_err(|_| anyhow::anyhow!("log reader panicked"))?;
    ensure!(log.contains("configuration reloaded"), "{log}");
    Ok(())
}

/// The agent's stdout and stderr: a pipe of 1 MiB this test reads, or stops reading.
struct LogPipe {
    read: File,
    write: OwnedFd,
}

const LOG_PIPE_BYTES: usize = 1 << 20;

impl LogPipe {
    fn new() -> Result<Self> {
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            bail!("pipe2: {}", std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ on a pipe we own.
        let size = unsafe {
            libc::fcntl(
                write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                LOG_PIPE_BYTES as libc::c_int,
            )
        };
        ensure!(
            size as usize == LOG_PIPE_BYTES,
            "F_SETPIPE_SZ: {}",
            std::io::Error::last_os_error()
        );
        Ok(Self {
            read: File::from(read),
            write,
        })
    }

    fn writer(&self) -> Result<Stdio> {
        Ok(Stdio::from(self.write.try_clone()?))
    }

    /// Bytes waiting in the pipe.
    fn waiting(&self) -> Result<usize> {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        if unsafe { libc::ioctl(self.read.as_raw_fd(), libc::FIONREAD, &mut n) } != 0 {
            bail!("FIONREAD: {}", std::io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// The controller stuck writing a log line to a full pipe: no WATCHDOG=1 for two feed
/// intervals; the pipe read again, the reload completes and the feeding resumes. Returns the
/// thread that reads the pipe to its end (the log).
fn stall(
    agent: &Agent,
    notify: &NotifySocket,
    log: LogPipe,
) -> Result<std::thread::JoinHandle<String>> {
    // Fill the pipe with a writer of our own (blocking, as the agent's writes are); it stays
    // blocked until the pipe is read.
    let mut filler = File::from(log.write.try_clone()?);
    // Twice the pipe's size: it blocks once the pipe is full (partly filled pages of the
    // agent's lines make "full" a little less than the size).
    let fill = std::thread::spawn(move || filler.write_all(&vec![b'\n'; 2 * LOG_PIPE_BYTES]));
    let deadline = Instant::now() + PATIENCE;
    let mut last = 0;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = log.waiting()?;
        if now == last && now > LOG_PIPE_BYTES / 2 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the log pipe never filled ({now} bytes)"
        );
        last = now;
    }
    notify.until("a WATCHDOG=1 before the stall", |m| m.has("WATCHDOG=1"))?;
    // A reload logs its outcome: the controller blocks in that write.
    agent.hup()?;
    let stuck = notify.during(WATCHDOG * 2)?;
    ensure!(
        !stuck
            .iter()
            .any(|m| m.has("WATCHDOG=1") || m.has("READY=1")),
        "fed or answered while its log could not be written: {stuck:?}"
    );
    let LogPipe { mut read, write } = log;
    drop(write);
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = read.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    let _ = fill.join();
    let (_, done) = notify.until("READY=1 after the stall", |m| m.has("READY=1"))?;
    ensure!(done.get("ERRNO") == Some("0"), "{done:?}");
    notify.until("WATCHDOG=1 after the stall", |m| m.has("WATCHDOG=1"))?;
    Ok(reader)
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
