//! What the controller shows of itself. After each change it shares a snapshot of its state
//! (a `watch` channel); status and metrics readers combine the latest snapshot with counters
//! they read themselves, so a scrape never waits on the controller and never delays a
//! failover. Check counters alone are shared at most every `SHARE_EVERY`.

use super::{sweep::SweepSummary, BackendRt, Controller, Setup, VipRt};
use crate::{
    admin::{
        AgentInfo, BackendHealth, BackendStatus, BackendTraffic, ConnSweepStatus, ProbeStatus,
        ReloadStatus, Reports, Scrape, StatusReport, VipStatus,
    },
    bgp::BgpStatus,
    config::CheckKind,
    dataplane::Counters,
};
use lb_common::TrafficCounters;
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use tokio::sync::watch;

/// Longest the snapshot lags behind check counters (state changes are shared at once).
const SHARE_EVERY: Duration = Duration::from_millis(250);

/// The controller's state as of `at`, without data-path counters.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub interface: String,
    pub xdp_mode: String,
    pub table_size: u32,
    pub config_path: String,
    /// `hashkey::digest` of the flow hash key.
    pub flow_hash_key_digest: String,
    pub started: Instant,
    /// Each VIP's id and status (zero packets and bytes); shared between snapshots until it
    /// changes.
    pub vips: BTreeMap<String, (u32, Arc<VipStatus>)>,
    pub bgp: Option<BgpStatus>,
    pub sweep: Option<(SweepSummary, Instant)>,
    pub agent: AgentInfo,
    /// The health probes; shared between snapshots until they change.
    pub probes: Arc<Vec<ProbeStatus>>,
    pub at: Instant,
}

/// The read side: the latest snapshot and the counters. Cheap to clone, usable on any thread.
#[derive(Clone)]
pub struct StatusSource {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    counters: Arc<Counters>,
}

impl StatusSource {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Traffic of VIPs and backends by id, whole arrays up to the highest id in use (a few
    /// hundred entries per syscall).
    fn traffic(&self, snap: &Snapshot) -> (Vec<TrafficCounters>, Vec<TrafficCounters>) {
        let ids = snap.vips.values();
        let vip_ids = ids.clone().map(|(id, _)| id + 1).max().unwrap_or(0);
        let backend_ids = ids
            .flat_map(|(_, v)| v.backends.iter().map(|b| b.id + 1))
            .max()
            .unwrap_or(0);
        let c = &self.counters;
        (
            c.vips(vip_ids).unwrap_or_default(),
            c.backends(backend_ids).unwrap_or_default(),
        )
    }

    /// xdp_lb's counters, then tc_probe_encap's (named apart: `probe_*`).
    fn datapath_counters(&self) -> BTreeMap<String, u64> {
        let c = &self.counters;
        let mut counters: BTreeMap<String, u64> = c
            .stats()
            .map(|all| {
                all.into_iter()
                    .map(|(s, v)| (s.name().to_string(), v))
                    .collect()
            })
            .unwrap_or_default();
        if let Ok(probe) = c.probe_stats() {
            counters.extend(probe.into_iter().map(|(s, v)| (s.name().to_string(), v)));
        }
        counters
    }
}

fn traffic_of(all: &[TrafficCounters], id: u32) -> TrafficCounters {
    all.get(id as usize).copied().unwrap_or_default()
}

impl Reports for StatusSource {
    /// The full report: the latest snapshot with counters read now.
    fn report(&self) -> StatusReport {
        let snap = self.snapshot();
        let (vip_traffic, backend_traffic) = self.traffic(&snap);
        let vips = snap
            .vips
            .values()
            .map(|(id, v)| {
                let mut v = VipStatus::clone(v);
                let t = traffic_of(&vip_traffic, *id);
                (v.packets, v.bytes) = (t.packets, t.bytes);
                for b in &mut v.backends {
                    let t = traffic_of(&backend_traffic, b.id);
                    (b.packets, b.bytes) = (t.packets, t.bytes);
                }
                v
            })
            .collect();
        StatusReport {
            interface: snap.interface.clone(),
            xdp_mode: snap.xdp_mode.clone(),
            table_size: snap.table_size,
            uptime_secs: snap.started.elapsed().as_secs(),
            config_path: snap.config_path.clone(),
            flow_hash_key_digest: snap.flow_hash_key_digest.clone(),
            vips,
            counters: self.datapath_counters(),
            bgp: snap.bgp.clone(),
            agent: snap.agent.clone(),
            probes: snap.probes.to_vec(),
            conn_sweep: snap.sweep.map(|(s, at)| ConnSweepStatus {
                live_entries: s.live,
                removed_entries: s.removed,
                took_ms: s.took.as_millis() as u64,
                secs_ago: at.elapsed().as_secs(),
            }),
        }
    }

    /// The snapshot's VIP statuses as shared (no copy), traffic beside them.
    fn scrape(&self) -> Scrape {
        let snap = self.snapshot();
        let (vip_traffic, backend_traffic) = self.traffic(&snap);
        let vips = snap
            .vips
            .values()
            .map(|(id, v)| (v.clone(), traffic_of(&vip_traffic, *id)))
            .collect();
        Scrape {
            vips,
            backend_traffic: BackendTraffic::ById(backend_traffic),
            counters: self.datapath_counters(),
            uptime_secs: snap.started.elapsed().as_secs(),
            conn_live_entries: snap.sweep.map(|(s, _)| s.live),
            agent: snap.agent.clone(),
            bgp: snap.bgp.clone(),
        }
    }
}

/// The controller's side: what changed since the last snapshot.
pub(super) struct Shared {
    tx: watch::Sender<Arc<Snapshot>>,
    counters: Arc<Counters>,
    vips: BTreeMap<String, (u32, Arc<VipStatus>)>,
    /// VIPs whose status changed since the last snapshot.
    dirty: BTreeSet<String>,
    /// A change readers must see at once (health, admin state, table, reload).
    urgent: bool,
    agent: AgentInfo,
    probes: Arc<Vec<ProbeStatus>>,
}

impl Shared {
    pub(super) fn new(
        setup: &Setup,
        (table_size, conn_table_capacity): (u32, u32),
        counters: Arc<Counters>,
    ) -> Self {
        let now = Instant::now();
        let agent = AgentInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at_unix: unix_now(),
            conn_table_capacity,
            last_reload: None,
        };
        let (tx, _) = watch::channel(Arc::new(Snapshot {
            interface: setup.interface.clone(),
            xdp_mode: "detached".to_string(),
            table_size,
            config_path: setup.config_path.display().to_string(),
            flow_hash_key_digest: crate::hashkey::digest(&setup.flow_hash_key),
            started: now,
            vips: BTreeMap::new(),
            bgp: None,
            sweep: None,
            agent: agent.clone(),
            probes: Arc::default(),
            at: now,
        }));
        Self {
            tx,
            counters,
            vips: BTreeMap::new(),
            dirty: BTreeSet::new(),
            urgent: true,
            agent,
            probes: Arc::default(),
        }
    }

    /// The probes (or the VIPs they serve) changed.
    pub(super) fn set_probes(&mut self, probes: Vec<ProbeStatus>) {
        if *self.probes != probes {
            self.probes = Arc::new(probes);
            self.urgent = true;
        }
    }

    /// A reload finished: applied with its summary, or rejected with its reason.
    pub(super) fn reloaded(&mut self, result: &Result<String, String>) {
        let (applied, message) = match result {
            Ok(summary) => (true, summary.clone()),
            Err(why) => (false, why.clone()),
        };
        self.agent.last_reload = Some(ReloadStatus {
            applied,
            at_unix: unix_now(),
            message,
        });
        self.urgent = true;
    }

    /// Check counters of the VIP changed.
    pub(super) fn touch(&mut self, vip: &str) {
        if !self.dirty.contains(vip) {
            self.dirty.insert(vip.to_string());
        }
    }

    /// The VIP's state changed.
    pub(super) fn changed(&mut self, vip: &str) {
        self.touch(vip);
        self.urgent = true;
    }

    pub(super) fn removed(&mut self, vip: &str) {
        self.vips.remove(vip);
        self.dirty.remove(vip);
        self.urgent = true;
    }

    pub(super) fn sweep_changed(&mut self) {
        self.urgent = true;
    }
}

impl Controller {
    /// Share a snapshot if readers must see a change now, or the last one is older than
    /// `SHARE_EVERY` (check counters, BGP sessions). Called after every event.
    pub fn share(&mut self) {
        if self.shared.urgent || self.shared.tx.borrow().at.elapsed() >= SHARE_EVERY {
            self.share_now();
        }
    }

    pub(super) fn share_now(&mut self) {
        let dirty = std::mem::take(&mut self.shared.dirty);
        for name in dirty {
            if let Some(v) = self.vips.get(&name) {
                let status = vip_status(v, |id| self.probe_vips(id));
                self.shared.vips.insert(name, (v.id, Arc::new(status)));
            }
        }
        self.shared.urgent = false;
        let before = self.shared.tx.borrow().clone();
        let snapshot = Snapshot {
            xdp_mode: self.xdp.to_string(),
            vips: self.shared.vips.clone(),
            bgp: self.bgp.as_ref().map(|s| s.status()),
            sweep: self.sweep_summary.zip(self.last_sweep),
            agent: self.shared.agent.clone(),
            probes: self.shared.probes.clone(),
            at: Instant::now(),
            ..Snapshot::clone(&before)
        };
        self.shared.tx.send_replace(Arc::new(snapshot));
    }

    /// Readers of the snapshots this controller shares.
    pub fn status_source(&self) -> StatusSource {
        StatusSource {
            snapshot: self.shared.tx.subscribe(),
            counters: self.shared.counters.clone(),
        }
    }

    /// A report of the current state (shares a snapshot first): for tests and tools that own
    /// the controller.
    pub fn status(&mut self) -> StatusReport {
        self.share_now();
        self.status_source().report()
    }
}

/// `probe_vips`: how many VIPs a probe serves.
fn vip_status(v: &VipRt, probe_vips: impl Fn(u64) -> usize) -> VipStatus {
    let checked = v.cfg.health_check.kind != CheckKind::None;
    VipStatus {
        name: v.cfg.name.clone(),
        address: v.cfg.address,
        port: v.cfg.port,
        protocol: v.cfg.protocol,
        hash: v.cfg.hash,
        all_down: v.cfg.all_down,
        table_generation: v.table_generation,
        table_digest: v.digest.clone(),
        moved_slots: v.moved_since.len() as u64,
        serving: v.serving,
        packets: 0,
        bytes: 0,
        backends: v
            .backends
            .values()
            .map(|b| backend_status(v, b, checked, &probe_vips))
            .collect(),
    }
}

fn backend_status(
    v: &VipRt,
    b: &BackendRt,
    checked: bool,
    probe_vips: &impl Fn(u64) -> usize,
) -> BackendStatus {
    BackendStatus {
        address: b.cfg.address,
        id: b.id,
        weight: b.cfg.weight,
        weight_override: b.weight_override,
        effective_weight: v
            .published
            .iter()
            .find(|(id, _)| *id == b.id)
            .map_or(0, |(_, w)| *w),
        admin_state: b.admin,
        health: BackendHealth::of(b.health, checked),
        slots: v.slots.get(&b.id).copied().unwrap_or(0),
        packets: 0,
        bytes: 0,
        checks_ok: b.checks_ok,
        checks_failed: b.checks_failed,
        last_check_latency_ms: b.last_latency.map(|d| d.as_secs_f64() * 1000.0),
        last_change: b.last_change.clone(),
        probe: b.probe,
        probe_vips: b.probe.map_or(0, probe_vips),
    }
}

/// Seconds since the Unix epoch (0 for a clock before it).
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
