//! Backend health checks: one tokio task per probe (a backend and a check definition, shared
//! by the VIPs using them; see `controller::probes`) checks the backend (TCP connect, TLS
//! handshake, HTTP/1.1 GET, or HTTPS), applies rise/fall hysteresis and reports every result
//! to the controller over an mpsc channel. The controller owns the decision of what to program
//! into the data plane; this module only observes. [`slow_start_weight`] is the ramp the
//! controller applies to a backend that has just come up.
//!
//! `probe` runs one check; `checker` is the task that schedules them, applies the hysteresis
//! and reports.
//!
//! Timing: a checker's first probe fires after a uniformly random delay in `0..interval`, and
//! every later probe `interval ± 10%` after the previous one finished, so thousands of checkers
//! started together spread out instead of probing in lock-step.
//!
//! Every probe's start is compared with its schedule (the instant its sleep was due to end);
//! the difference, [`schedule_lag`], shows whether checks fall behind (an overloaded runtime
//! wakes timers late).

use crate::config::{CaCerts, CheckKind, StatusSet};
use serde::Serialize;
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

mod checker;
mod http;
mod probe;
mod socket;
mod tls;

pub use checker::{schedule_lag, spawn_checker};
pub use http::MAX_BODY;
pub use probe::{check_once, connect, Passed, Prober};
pub use socket::{probe_route, Route, Tunnel};

/// One probe's check: where it connects and how, and the check definition, which every probe
/// of one VIP's `[vip.health_check]` shares (at 10,000 probes a copy each would cost ~2.5 MB).
/// Hashable: equal specs are one probe, whichever VIPs use them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CheckSpec {
    /// Address probed: the check port on the backend's IP (`Route::Direct`) or on the VIP
    /// (`Route::Tunnel`).
    pub target: SocketAddr,
    pub route: Route,
    pub check: Arc<CheckDef>,
}

/// What to check and how often (resolved from the VIP's `[vip.health_check]`), whatever the
/// backend.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CheckDef {
    pub kind: CheckKind,
    /// HTTP only: the request path (`/` when empty).
    pub path: String,
    /// HTTP(S) only: the statuses that count as healthy.
    pub expect_status: StatusSet,
    /// HTTP(S) only: a substring the first [`MAX_BODY`] bytes of the body must hold.
    pub expect_body: Option<String>,
    /// HTTP(S) only: the Host header; `None`: the target address.
    pub host: Option<String>,
    /// TLS and HTTPS: how to make the handshake.
    pub tls: Option<TlsSpec>,
    pub interval: Duration,
    /// Bounds connect + request + response headers.
    pub timeout: Duration,
    /// Consecutive successes that bring a down backend up (0 is treated as 1).
    pub rise: u32,
    /// Consecutive failures that take an up backend down (0 is treated as 1).
    pub fall: u32,
}

/// The TLS handshake of a `tls` or `https` check.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TlsSpec {
    /// Sent as SNI and verified; `None`: no SNI (the backend's address is verified).
    pub server_name: Option<String>,
    /// Check the certificate against `ca`; else accept any (self-signed backends).
    pub verify: bool,
    pub ca: CaCerts,
}

/// Names a running probe in its reports; given by the controller, never reused.
pub type ProbeId = u64;

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
    /// The probe (one per backend and check definition, shared by the VIPs using them).
    pub probe: ProbeId,
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
#[cfg(test)]
mod tests_tls;
