//! The checker task: schedules probes, applies the hysteresis, reports every result.

use super::{CheckReport, CheckSpec, Health, Hysteresis, ProbeId, Prober};
use crate::config::CheckKind;
use prometheus_client::metrics::histogram::Histogram;
use std::{
    net::IpAddr,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{debug, info};

/// One task per probe (a backend and a check definition, whichever VIPs share it): check,
/// sleep `interval ± 10%` (uniformly random), report every result over `reports`. The first
/// check starts after a random delay in `0..interval` so that thousands of checkers do not fire
/// together. Stops when its handle is aborted or the receiver is gone (a failed send ends the
/// task; it never holds the sender for a dead controller). Stopped by abort rather than a
/// cancellation token: a token costs each of 10,000 checkers ~110 bytes of heap and a waiter
/// in its future.
///
/// `CheckKind::None`: never checks and reports nothing (the backend counts as up); the task
/// ends at once.
pub fn spawn_checker(
    probe: ProbeId,
    backend: IpAddr,
    spec: impl Into<Arc<CheckSpec>>,
    initial: Health,
    reports: mpsc::Sender<CheckReport>,
) -> JoinHandle<()> {
    // No span per checker: at 10,000 checkers their registry entries cost megabytes; the
    // events carry the probe and backend themselves.
    tokio::spawn(run_checker(probe, backend, spec.into(), initial, reports))
}

async fn run_checker(
    probe: ProbeId,
    backend: IpAddr,
    spec: Arc<CheckSpec>,
    initial: Health,
    reports: mpsc::Sender<CheckReport>,
) {
    let check = spec.check.clone();
    if check.kind == CheckKind::None {
        debug!(probe, %backend, "no health check configured; backend counts as up");
        return;
    }
    let mut hysteresis = Hysteresis::new(check.rise, check.fall, initial);
    // The TLS configuration (CA store, verifier) is built once, not per probe. The spec comes
    // behind a pointer: an async fn keeps its parameters for its whole life, so a spec passed
    // by value would leave a copy in every idle checker beside the prober's.
    let prober = Prober::new(spec);
    debug!(probe, %backend, kind = ?check.kind, target = %prober.spec().target, ?initial, "health checker started");

    let lag = schedule_lag();
    let mut due = Instant::now() + first_delay(check.interval);
    loop {
        tokio::select! {
            biased;
            _ = reports.closed() => break,
            _ = tokio::time::sleep_until(due.into()) => {}
        }
        lag.observe(Instant::now().saturating_duration_since(due).as_secs_f64());
        // Boxed: a round's state (the probe, its result, the send) exists only while it runs,
        // not in each of thousands of sleeping checkers.
        let round = Round {
            probe,
            backend,
            prober: &prober,
            hysteresis: &mut hysteresis,
            reports: &reports,
        };
        if Box::pin(round.run()).await.is_err() {
            debug!(probe, %backend, "report receiver gone");
            break;
        }
        due = Instant::now() + jittered_interval(check.interval);
    }
    debug!(probe, %backend, "health checker stopped");
}

/// One check of a checker, and its report.
struct Round<'a> {
    probe: ProbeId,
    backend: IpAddr,
    prober: &'a Prober,
    hysteresis: &'a mut Hysteresis,
    reports: &'a mpsc::Sender<CheckReport>,
}

impl Round<'_> {
    /// `Err`: the report could not be sent (the receiver is gone).
    async fn run(self) -> Result<(), ()> {
        let (probe, backend) = (self.probe, self.backend);
        let start = Instant::now();
        // Boxed apart: a round waiting to send (the controller behind, the channel full) then
        // holds its report, not the finished probe's state as well (~700 bytes).
        let result = Box::pin(self.prober.check()).await;
        let finished_at = Instant::now();
        let (ok, latency, detail) = match result {
            Ok(passed) => (true, passed.latency, passed.detail),
            Err(detail) => (false, finished_at.duration_since(start), detail),
        };
        let transition = self.hysteresis.record(ok);
        match transition {
            Some(Health::Up) => info!(probe, %backend, reason = %detail, "backend up"),
            Some(Health::Down) => info!(probe, %backend, reason = %detail, "backend down"),
            None => debug!(
                probe,
                %backend,
                ok,
                latency_us = latency.as_micros() as u64,
                %detail,
                "check done"
            ),
        }
        let report = CheckReport {
            probe,
            backend,
            ok,
            latency,
            detail,
            transition,
            finished_at,
        };
        self.reports.send(report).await.map_err(|_| ())
    }
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

/// Never less than this between two checks, so a zero interval cannot spin.
pub(super) const MIN_INTERVAL: Duration = Duration::from_millis(1);

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Uniform in `0..interval`.
pub(super) fn first_delay(interval: Duration) -> Duration {
    Duration::from_nanos(fastrand::u64(0..nanos(interval).max(1)))
}

/// Uniform in `interval ± 10%`, at least [`MIN_INTERVAL`].
pub(super) fn jittered_interval(interval: Duration) -> Duration {
    let base = nanos(interval);
    let spread = base / 10;
    let low = base - spread;
    let high = base.saturating_add(spread);
    Duration::from_nanos(fastrand::u64(low..=high)).max(MIN_INTERVAL)
}

/// The checker's future, unspawned (its size is tested).
#[cfg(test)]
pub(super) fn run_checker_for_size(
    probe: ProbeId,
    backend: IpAddr,
    spec: CheckSpec,
    initial: Health,
    reports: mpsc::Sender<CheckReport>,
) -> impl std::future::Future<Output = ()> {
    let spec = Arc::new(spec);
    run_checker(probe, backend, spec, initial, reports)
}
