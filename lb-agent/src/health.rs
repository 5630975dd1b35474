//! Backend health checks: one tokio task per (VIP, backend) probes the backend (TCP connect or
//! HTTP/1.1 GET), applies rise/fall hysteresis and reports every result to the controller over
//! an mpsc channel. The controller owns the decision of what to program into the data plane;
//! this module only observes. [`slow_start_weight`] is the ramp the controller applies to a
//! backend that has just come up.
//!
//! Timing: a checker's first probe fires after a uniformly random delay in `0..interval`, and
//! every later probe `interval ± 10%` after the previous one finished, so thousands of checkers
//! started together spread out instead of probing in lock-step.
//!
//! Every probe's start is compared with its schedule (the instant its sleep was due to end);
//! the difference, [`schedule_lag`], shows whether checks fall behind (an overloaded runtime
//! wakes timers late).

mod socket;

pub use socket::{probe_route, Route, Tunnel};

use crate::config::CheckKind;
use http_body_util::Empty;
use hyper::{
    header::{CONNECTION, HOST},
    Method, Request, Uri,
};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;
use std::{
    error::Error as StdError,
    net::{IpAddr, SocketAddr},
    sync::OnceLock,
    time::{Duration, Instant},
};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// What to check and how often (resolved from the VIP's `[vip.health_check]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    pub kind: CheckKind,
    /// Address probed: the check port on the backend's IP (`Route::Direct`) or on the VIP
    /// (`Route::Tunnel`).
    pub target: SocketAddr,
    pub route: Route,
    /// HTTP only: the request path (`/` when empty).
    pub path: String,
    /// HTTP only: the status that counts as healthy.
    pub expect_status: u16,
    pub interval: Duration,
    /// Bounds connect + request + response headers.
    pub timeout: Duration,
    /// Consecutive successes that bring a down backend up (0 is treated as 1).
    pub rise: u32,
    /// Consecutive failures that take an up backend down (0 is treated as 1).
    pub fall: u32,
}

/// A backend's health as seen by its checker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Up,
    Down,
}

/// One finished check, sent to the controller.
#[derive(Clone, Debug)]
pub struct CheckReport {
    pub vip: String,
    pub backend: IpAddr,
    pub ok: bool,
    /// Time the check took (until success, failure or timeout).
    pub latency: Duration,
    /// e.g. `"HTTP 200"`, `"connected"`, `"HTTP 503"`, `"connect: Connection refused"`,
    /// `"timeout after 500 ms"`.
    pub detail: String,
    /// `Some` when this result flipped the state.
    pub transition: Option<Health>,
    pub finished_at: Instant,
}

/// rise/fall hysteresis: up after `rise` consecutive successes, down after `fall` consecutive
/// failures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hysteresis {
    rise: u32,
    fall: u32,
    state: Health,
    /// Current streak of consecutive successes (0 after a failure).
    successes: u32,
    /// Current streak of consecutive failures (0 after a success).
    failures: u32,
}

impl Hysteresis {
    /// `rise` and `fall` of 0 are treated as 1 (a single result flips the state).
    pub fn new(rise: u32, fall: u32, initial: Health) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            state: initial,
            successes: 0,
            failures: 0,
        }
    }

    /// Records one result; returns the new state when it changed.
    pub fn record(&mut self, ok: bool) -> Option<Health> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.state == Health::Down && self.successes >= self.rise {
                self.state = Health::Up;
                return Some(Health::Up);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.state == Health::Up && self.failures >= self.fall {
                self.state = Health::Down;
                return Some(Health::Down);
            }
        }
        None
    }

    pub fn state(&self) -> Health {
        self.state
    }
}

/// Runs one check (TCP connect, or HTTP/1.1 GET `path` with a `Host` header, expecting
/// `expect_status`), bounded by `spec.timeout`. `Ok(latency)` or `Err(detail)`.
///
/// `CheckKind::None` checks nothing and succeeds at once.
pub async fn check_once(spec: &CheckSpec) -> Result<Duration, String> {
    let start = Instant::now();
    let result = match spec.kind {
        CheckKind::None => return Ok(Duration::ZERO),
        CheckKind::Tcp => tokio::time::timeout(spec.timeout, tcp_check(spec)).await,
        CheckKind::Http => tokio::time::timeout(spec.timeout, http_check(spec)).await,
    };
    match result {
        Ok(Ok(())) => Ok(start.elapsed()),
        Ok(Err(detail)) => Err(detail),
        Err(_elapsed) => Err(format!("timeout after {} ms", spec.timeout.as_millis())),
    }
}

async fn tcp_check(spec: &CheckSpec) -> Result<(), String> {
    let stream = socket::connect(spec.target, &spec.route).await?;
    // Close with a reset, as HAProxy's checks do: a FIN would leave a TIME_WAIT socket on this
    // host for every probe (600,000 at 10,000 checks a second), and cost a teardown exchange.
    // (A failure here only loses that saving.)
    let _ = stream.set_zero_linger();
    Ok(())
}

/// Aborts the spawned hyper connection task when the check ends, whichever way (including the
/// timeout dropping the check future), so no task or socket outlives the check.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn http_check(spec: &CheckSpec) -> Result<(), String> {
    let path = if spec.path.is_empty() {
        "/"
    } else {
        spec.path.as_str()
    };
    let uri: Uri = path
        .parse()
        .map_err(|e| format!("invalid path {path:?}: {e}"))?;
    let request = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header(HOST, spec.target.to_string())
        .header(CONNECTION, "close")
        .body(Empty::<&'static [u8]>::new())
        .map_err(|e| format!("request: {}", error_chain(&e)))?;

    let stream = socket::connect(spec.target, &spec.route).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {}", error_chain(&e)))?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %error_chain(&e), "health-check connection ended with an error");
        }
    }));

    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {}", error_chain(&e)))?;
    // Only the status matters; the body is dropped unread and the connection closed.
    let status = response.status().as_u16();
    if status == spec.expect_status {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// `"Connection refused"` rather than `"Connection refused (os error 111)"`.
fn io_detail(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// An error and its sources, `": "`-separated (hyper's own message is often only the outer
/// layer, e.g. "connection error" with the io error as its source).
fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = match s.downcast_ref::<std::io::Error>() {
            Some(io) => io_detail(io),
            None => s.to_string(),
        };
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// One task per backend: check, sleep `interval ± 10%` (uniformly random), report every result
/// over `reports`. The first check starts after a random delay in `0..interval` so that
/// thousands of checkers do not fire together. Stops when `cancel` fires or the receiver is
/// gone (a failed send ends the task; it never holds the sender for a dead controller).
///
/// `CheckKind::None`: never checks and reports nothing (the backend counts as up); the task
/// ends at once.
pub fn spawn_checker(
    vip: String,
    backend: IpAddr,
    spec: CheckSpec,
    initial: Health,
    reports: mpsc::Sender<CheckReport>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    // No span per checker: at 10,000 checkers their registry entries cost megabytes; the
    // events carry the VIP and backend themselves.
    tokio::spawn(run_checker(vip, backend, spec, initial, reports, cancel))
}

async fn run_checker(
    vip: String,
    backend: IpAddr,
    spec: CheckSpec,
    initial: Health,
    reports: mpsc::Sender<CheckReport>,
    cancel: CancellationToken,
) {
    if spec.kind == CheckKind::None {
        debug!(%vip, %backend, "no health check configured; backend counts as up");
        return;
    }
    let mut hysteresis = Hysteresis::new(spec.rise, spec.fall, initial);
    debug!(%vip, %backend, kind = ?spec.kind, target = %spec.target, ?initial, "health checker started");

    let lag = schedule_lag();
    let mut due = Instant::now() + first_delay(spec.interval);
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = reports.closed() => break,
            _ = tokio::time::sleep_until(due.into()) => {}
        }

        let start = Instant::now();
        lag.observe(start.saturating_duration_since(due).as_secs_f64());
        let result = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            // Boxed: the probe's state (~700 bytes) exists only while it runs, not in each of
            // thousands of sleeping checkers.
            r = Box::pin(check_once(&spec)) => r,
        };
        let finished_at = Instant::now();
        let (ok, latency, detail) = match result {
            Ok(latency) => (true, latency, success_detail(&spec)),
            Err(detail) => (false, finished_at.duration_since(start), detail),
        };
        let transition = hysteresis.record(ok);
        match transition {
            Some(Health::Up) => info!(%vip, %backend, reason = %detail, "backend up"),
            Some(Health::Down) => info!(%vip, %backend, reason = %detail, "backend down"),
            None => debug!(
                %vip,
                %backend,
                ok,
                latency_us = latency.as_micros() as u64,
                %detail,
                "check done"
            ),
        }

        let report = CheckReport {
            vip: vip.clone(),
            backend,
            ok,
            latency,
            detail,
            transition,
            finished_at,
        };
        let sent = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            // Boxed too: of the awaits, this one's state is the largest.
            r = Box::pin(reports.send(report)) => r,
        };
        if sent.is_err() {
            debug!(%vip, %backend, "report receiver gone");
            break;
        }
        due = Instant::now() + jittered_interval(spec.interval);
    }
    debug!(%vip, %backend, "health checker stopped");
}

/// Upper bounds (seconds) of the lag buckets: tokio's timer wheel has 1 ms resolution, so a
/// healthy agent lands in the first two; the rest tell how far behind an overloaded one is.
const LAG_BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// How late each probe started relative to its schedule, over every checker of the process
/// (exposed as `lb_health_check_schedule_lag_seconds`).
pub fn schedule_lag() -> Histogram {
    static LAG: OnceLock<Histogram> = OnceLock::new();
    // Clones share the counts.
    LAG.get_or_init(|| Histogram::new(LAG_BUCKETS)).clone()
}

fn success_detail(spec: &CheckSpec) -> String {
    match spec.kind {
        CheckKind::Http => format!("HTTP {}", spec.expect_status),
        CheckKind::Tcp => "connected".to_owned(),
        CheckKind::None => "not checked".to_owned(),
    }
}

/// Never less than this between two checks, so a zero interval cannot spin.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Uniform in `0..interval`.
fn first_delay(interval: Duration) -> Duration {
    Duration::from_nanos(fastrand::u64(0..nanos(interval).max(1)))
}

/// Uniform in `interval ± 10%`, at least [`MIN_INTERVAL`].
fn jittered_interval(interval: Duration) -> Duration {
    let base = nanos(interval);
    let spread = base / 10;
    let low = base - spread;
    let high = base.saturating_add(spread);
    Duration::from_nanos(fastrand::u64(low..=high)).max(MIN_INTERVAL)
}

/// Slow start: the weight a backend that came up `elapsed` ago gets, ramping linearly from
/// `max(1, full / 10)` to `full` over `window`; `full` once `elapsed >= window` or `window` is
/// zero; 0 when `full` is 0.
pub fn slow_start_weight(full: u32, elapsed: Duration, window: Duration) -> u32 {
    if full == 0 {
        return 0;
    }
    if window.is_zero() || elapsed >= window {
        return full;
    }
    let start = (full / 10).max(1);
    let span = u128::from(full - start);
    let ramp = span * elapsed.as_nanos() / window.as_nanos();
    // elapsed < window, so ramp < span and the sum stays below `full`.
    start
        .saturating_add(u32::try_from(ramp).unwrap_or(u32::MAX))
        .min(full)
}

#[cfg(test)]
mod tests;
