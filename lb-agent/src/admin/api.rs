//! What the controller, the admin server and the CLI exchange: requests, the status report
//! (the `/status` JSON) and the `stats --json` view of it.

use super::reply::Reply;
use crate::config::{AdminState, AllDown, HashMode, Protocol, Weight};
use crate::health::Health;
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, fmt, net::IpAddr, time::Duration};

/// How long a handler waits for the controller, and the CLI for the agent.
pub(super) const TIMEOUT: Duration = Duration::from_secs(5);
/// Content type of [`render_metrics`](super::render_metrics)' output (prometheus-client writes OpenMetrics text).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A request from the admin endpoint to the controller. Its reply must be claimed
/// ([`Reply::claim`]) before the request is acted on: the endpoint may have given up on it.
#[derive(Debug)]
pub enum AdminRequest {
    /// Change a backend's admin state; `Err` (unknown VIP or backend) is shown to the operator
    /// as is, with 404.
    SetBackendState {
        vip: String,
        backend: IpAddr,
        state: AdminState,
        reply: Reply<Result<(), String>>,
    },
    /// Set a backend's weight until the next reload (`Weight` is within the file's range);
    /// `Ok` is the confirmation for the operator, `Err` (unknown VIP or backend) is shown as
    /// is, with 404.
    SetBackendWeight {
        vip: String,
        backend: IpAddr,
        weight: Weight,
        reply: Reply<Result<String, String>>,
    },
    /// Re-read the configuration file: `Ok` is a summary of what changed, `Err` why nothing did.
    /// The file is read and parsed off the controller's task (`Controller::start_reload`).
    Reload(Reply<Result<String, String>>),
    /// BGP maintenance mode on (drain, then withdraw) or off: `Ok` says what happens next,
    /// `Err` why it cannot (no `[bgp]` section).
    SetMaintenance {
        on: bool,
        reply: Reply<Result<String, String>>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub interface: String,
    pub xdp_mode: String,
    pub table_size: u32,
    pub uptime_secs: u64,
    pub config_path: String,
    pub vips: Vec<VipStatus>,
    /// data-path counters by name (e.g. "forwarded", "drop_malformed", "conn_hit"), summed over
    /// CPUs
    pub counters: BTreeMap<String, u64>,
    /// BGP announcements through BIRD; absent without a `[bgp]` section
    #[serde(default)]
    pub bgp: Option<crate::bgp::BgpStatus>,
    /// the last sweep of the connection table; absent before the first
    #[serde(default)]
    pub conn_sweep: Option<ConnSweepStatus>,
    /// digest of the flow hash key (`agent.flow_hash_key_file`), equal on balancers with the
    /// same key; "none" without one. Never the key itself.
    #[serde(default)]
    pub flow_hash_key_digest: String,
    /// the agent process: version, start, capacity, last reload
    #[serde(default)]
    pub agent: AgentInfo,
    /// the running health probes, one per (backend, check definition), by id
    #[serde(default)]
    pub probes: Vec<ProbeStatus>,
}

/// One health probe and the VIPs its results apply to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeStatus {
    pub id: u64,
    pub backend: IpAddr,
    /// where the probe connects: the VIP (`via` tunnel) or the backend (`via` direct)
    pub target: std::net::SocketAddr,
    pub via: crate::config::CheckVia,
    pub kind: crate::config::CheckKind,
    pub vip_count: usize,
    /// names of the VIPs served, sorted
    pub vips: Vec<String>,
}

/// What an operator alerts on about the agent itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub version: String,
    /// Unix time the agent started, in seconds
    pub started_at_unix: f64,
    /// configured connection-table entries, all CPUs together (each CPU's LRU lists hold
    /// about an equal share)
    pub conn_table_capacity: u32,
    /// the last reload (SIGHUP or `POST /reload`); absent before the first
    pub last_reload: Option<ReloadStatus>,
}

/// The outcome of a reload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReloadStatus {
    pub applied: bool,
    /// Unix time it finished, in seconds
    pub at_unix: f64,
    /// the summary of what it changed, or why it was rejected
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnSweepStatus {
    /// live entries left
    pub live_entries: u64,
    /// idle or stale entries the sweep removed
    pub removed_entries: u64,
    pub took_ms: u64,
    pub secs_ago: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VipStatus {
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub hash: HashMode,
    pub all_down: AllDown,
    /// table publications since start
    pub table_generation: u64,
    /// hex digest of the live table, equal on every balancer with the same backends
    pub table_digest: String,
    /// slots whose flows from before a table change are still looked up in the connection
    /// table (see docs/design.md, "Moved slots")
    #[serde(default)]
    pub moved_slots: u64,
    pub serving: bool,
    pub packets: u64,
    pub bytes: u64,
    pub backends: Vec<BackendStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub address: IpAddr,
    pub id: u32,
    /// the configuration file's weight
    pub weight: u32,
    /// a weight set at run time (`lb-agent backend weight`), in force instead of `weight`
    /// until the next reload; absent (null) without one
    #[serde(default)]
    pub weight_override: Option<u32>,
    /// the weight in the live table: 0 when down, drained or disabled, lower during slow start
    pub effective_weight: u32,
    pub admin_state: AdminState,
    pub health: BackendHealth,
    pub slots: u32,
    pub packets: u64,
    pub bytes: u64,
    pub checks_ok: u64,
    pub checks_failed: u64,
    pub last_check_latency_ms: Option<f64>,
    pub last_change: String,
    /// the health probe this backend takes its health from (see `StatusReport::probes`);
    /// absent when the VIP checks nothing
    #[serde(default)]
    pub probe: Option<u64>,
    /// how many VIPs that probe serves (its checks are shared by all of them)
    #[serde(default)]
    pub probe_vips: usize,
}

impl BackendStatus {
    /// The full weight the backend should have: its override, else the file's.
    pub fn weight_in_force(&self) -> u32 {
        self.weight_override.unwrap_or(self.weight)
    }
}

/// A backend's health as the operator sees it: the checker's verdict, or `Unchecked` for a
/// VIP without health checks (its backends count as up). Serialized as the lowercase word, as
/// the report always had it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendHealth {
    Up,
    Down,
    Unchecked,
}

impl BackendHealth {
    /// The reported health of a backend whose checker says `health`; `checked` is false when
    /// the VIP has no health check, where backends stay up and are shown as unchecked.
    pub fn of(health: Health, checked: bool) -> Self {
        match (health, checked) {
            (Health::Up, false) => Self::Unchecked,
            (Health::Up, true) => Self::Up,
            (Health::Down, _) => Self::Down,
        }
    }

    /// The word used in JSON, `status` tables and log text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Unchecked => "unchecked",
        }
    }
}

impl fmt::Display for BackendHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `lb-agent stats --json`: traffic counters only, a subset of [`StatusReport`].
///
/// Fields are declared in alphabetical order because the output used to be built with
/// `serde_json::json!`, whose maps sort their keys; scripts may rely on that order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatsReport {
    pub counters: BTreeMap<String, u64>,
    pub vips: Vec<VipStats>,
}

/// One VIP in [`StatsReport`] (fields in alphabetical order, see there).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VipStats {
    pub backends: Vec<BackendStats>,
    pub bytes: u64,
    pub name: String,
    pub packets: u64,
}

/// One backend in [`VipStats`] (fields in alphabetical order, see [`StatsReport`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BackendStats {
    pub address: IpAddr,
    pub bytes: u64,
    pub packets: u64,
}

impl From<&StatusReport> for StatsReport {
    fn from(report: &StatusReport) -> Self {
        Self {
            counters: report.counters.clone(),
            vips: report.vips.iter().map(VipStats::from).collect(),
        }
    }
}

impl From<&VipStatus> for VipStats {
    fn from(vip: &VipStatus) -> Self {
        Self {
            backends: vip
                .backends
                .iter()
                .map(|b| BackendStats {
                    address: b.address,
                    bytes: b.bytes,
                    packets: b.packets,
                })
                .collect(),
            bytes: vip.bytes,
            name: vip.name.clone(),
            packets: vip.packets,
        }
    }
}
