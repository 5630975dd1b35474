//! The agent's state and the single task that changes it. Health reports, admin requests,
//! reloads and the slow-start tick arrive as typed messages; every decision ends in
//! `publish`, which recomputes a VIP's Maglev table and flips it into the data plane.

use crate::{
    admin::{AdminRequest, BackendHealth, BackendStatus, StatusReport, VipStatus},
    bgp::Speaker,
    config::{self, AdminState, AgentConfig, AllDown, CheckKind, Config, HashMode, VipConfig},
    dataplane::{Attachment, Balancer, Sweep, Sweeper},
    health::{self, CheckReport, CheckSpec, Health},
    maglev::{build_table, moves, MaglevBackend},
};
use anyhow::{anyhow, bail, Context, Result};
use lb_common::{
    words_addr, Backend, LbConfig, VipKey, VipMeta, IPPROTO_TCP, IPPROTO_UDP, MAX_BACKENDS,
    NO_BACKEND, VIP_F_HASH_SRC_ONLY,
};
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn};

/// One backend of one VIP, as the agent tracks it.
struct BackendRt {
    cfg: config::BackendConfig,
    /// Index into the data plane's BACKENDS array (per VIP and backend).
    id: u32,
    generation: u32,
    /// Operator's wish: the file's `state`, changed at run time by the admin endpoint.
    admin: AdminState,
    health: Health,
    /// When the backend last came up (slow start ramps from here); None: up since start.
    up_since: Option<Instant>,
    checks_ok: u64,
    checks_failed: u64,
    last_latency: Option<Duration>,
    last_change: String,
    checker: Option<CancellationToken>,
}

struct VipRt {
    cfg: VipConfig,
    key: VipKey,
    id: u32,
    backends: BTreeMap<IpAddr, BackendRt>,
    /// (backend id, weight) of the published table; a publish is skipped when unchanged.
    published: Vec<(u32, u32)>,
    slots: HashMap<u32, u32>,
    /// Moved slots of the live table (`maglev::moves`) and when each first moved.
    moved_since: HashMap<u32, Instant>,
    /// The live table is this VIP's (adopted from an earlier agent, or published): its moved
    /// slots carry over into the next publication.
    has_live_table: bool,
    /// The live table serves every active backend because all are down (`fail-open`).
    fail_open_live: bool,
    table_generation: u64,
    digest: String,
    serving: bool,
}

/// Everything the controller needs from `run`.
pub struct Setup {
    pub config: Config,
    pub config_path: PathBuf,
    /// `--iface`, which replaces agent.interface of every (re)loaded file.
    pub interface_override: Option<String>,
    pub interface: String,
    pub gateway_mac: [u8; 6],
}

pub struct Controller {
    dp: Balancer,
    config: Config,
    config_path: PathBuf,
    interface: String,
    interface_override: Option<String>,
    gateway_mac: [u8; 6],
    attachment: Option<Attachment>,
    vips: BTreeMap<String, VipRt>,
    /// Backend generations of free ids, so a reused id never matches an old flow.
    free_generations: HashMap<u32, u32>,
    /// Every backend id below this one is taken: the search for a free id starts here, so an
    /// allocation costs a map read or two instead of a scan from 0 (quadratic at 10,000).
    first_maybe_free: u32,
    reports: mpsc::Sender<CheckReport>,
    started: Instant,
    bgp: Option<Speaker>,
    /// None while a sweep runs.
    sweeper: Option<Sweeper>,
    last_sweep: Option<Instant>,
    sweep_summary: Option<SweepSummary>,
}

/// The connection table as the last sweep found it (status and metrics).
#[derive(Clone, Copy, Debug, Default)]
pub struct SweepSummary {
    pub live: u64,
    pub removed: u64,
    pub took: Duration,
}

/// A sweep of the connection table, to run off the controller's task (`SweepJob::run`).
pub struct SweepJob {
    sweeper: Sweeper,
    idle: Duration,
    started: Instant,
    /// Table generation of each VIP when the sweep began: a VIP republished since is left for
    /// the next sweep, whose view of the entries is newer than that publication.
    generations: HashMap<String, u64>,
}

pub struct SweepDone {
    job: SweepJob,
    result: Result<Sweep>,
}

impl SweepJob {
    pub fn run(mut self) -> SweepDone {
        let result = self.sweeper.sweep(self.idle);
        SweepDone { job: self, result }
    }
}

/// Sweeps run four times per idle timeout, within these bounds.
const SWEEP_EVERY_MIN: Duration = Duration::from_millis(250);
const SWEEP_EVERY_MAX: Duration = Duration::from_secs(30);

/// Least time between slow-start table updates.
pub const TICK: Duration = Duration::from_millis(500);

impl Controller {
    /// Take over the data plane (adopting what an earlier agent left pinned) and program it
    /// from `setup.config`.
    pub fn new(dp: Balancer, setup: Setup, reports: mpsc::Sender<CheckReport>) -> Result<Self> {
        let mut ctl = Self {
            dp,
            config: setup.config.clone(),
            config_path: setup.config_path,
            interface: setup.interface,
            interface_override: setup.interface_override,
            gateway_mac: setup.gateway_mac,
            attachment: None,
            vips: BTreeMap::new(),
            free_generations: HashMap::new(),
            first_maybe_free: 0,
            reports,
            started: Instant::now(),
            bgp: None,
            sweeper: None,
            last_sweep: None,
            sweep_summary: None,
        };
        ctl.sweeper = ctl.dp.take_sweeper();
        ctl.write_lb_config(&setup.config.agent)?;
        let (vip_ids, backend_ids) = ctl.adopt()?;
        for vip in &setup.config.vips {
            ctl.add_vip(vip, &vip_ids, &backend_ids)?;
        }
        // Whatever an earlier agent left that the configuration no longer has.
        let wanted: std::collections::HashSet<VipKey> = ctl.vips.values().map(|v| v.key).collect();
        for (key, meta) in ctl.dp.vips()? {
            if !wanted.contains(&key) {
                info!(
                    vip_id = meta.id,
                    "removing a VIP the configuration no longer has"
                );
                ctl.dp.remove_vip(&key)?;
            }
        }
        let used = ctl.used_backend_ids();
        for (id, backend) in ctl.dp.backends_in_use()? {
            if !used.contains(&id) {
                ctl.free_backend(id, backend.generation)?;
            }
        }
        let names: Vec<String> = ctl.vips.keys().cloned().collect();
        for name in names {
            ctl.publish(&name, None)?;
        }
        Ok(ctl)
    }

    /// Ids an earlier agent used: VIP key -> id, (VIP id, backend address) -> (id, generation).
    #[allow(clippy::type_complexity)]
    fn adopt(&mut self) -> Result<(HashMap<VipKey, u32>, HashMap<(u32, IpAddr), (u32, u32)>)> {
        let mut vip_ids = HashMap::new();
        let mut backend_ids = HashMap::new();
        if !self.dp.adopted() {
            return Ok((vip_ids, backend_ids));
        }
        for (key, meta) in self.dp.vips()? {
            vip_ids.insert(key, meta.id);
        }
        for (id, b) in self.dp.backends_in_use()? {
            if let Some(ip) = words_addr(b.addr, b.family) {
                backend_ids.insert((b.vip_id, ip), (id, b.generation));
            }
        }
        info!(
            vips = vip_ids.len(),
            backends = backend_ids.len(),
            "adopted the pinned data plane: connection table and tables kept"
        );
        Ok((vip_ids, backend_ids))
    }

    fn write_lb_config(&mut self, agent: &AgentConfig) -> Result<()> {
        let bits = agent.encap_source_hash_bits;
        let cfg = LbConfig {
            gateway_mac: self.gateway_mac,
            mtu: agent.mtu,
            encap_src_v4: agent
                .encap_source_v4
                .map_or(0, |a| u32::from_ne_bytes(a.octets())),
            encap_src_v6: agent.encap_source_v6.map_or([0; 4], lb_common::v6_words),
            src_hash_bits_v4: bits,
            src_hash_bits_v6: bits,
            outer_ttl: agent.outer_ttl,
            ready: 1,
            new_flows_per_sec: agent.new_flows_per_sec,
        };
        self.dp.set_config(&cfg)
    }

    fn used_vip_ids(&self) -> BTreeSet<u32> {
        self.vips.values().map(|v| v.id).collect()
    }

    fn used_backend_ids(&self) -> BTreeSet<u32> {
        self.vips
            .values()
            .flat_map(|v| v.backends.values().map(|b| b.id))
            .collect()
    }

    fn add_vip(
        &mut self,
        cfg: &VipConfig,
        vip_ids: &HashMap<VipKey, u32>,
        backend_ids: &HashMap<(u32, IpAddr), (u32, u32)>,
    ) -> Result<()> {
        let key = vip_key(cfg);
        let used = self.used_vip_ids();
        let id = match vip_ids.get(&key) {
            Some(id) if !used.contains(id) => *id,
            _ => (0..self.dp.options().max_vips)
                .find(|i| !used.contains(i) && !vip_ids.values().any(|v| v == i))
                .ok_or_else(|| anyhow!("no free VIP id: raise agent.max_vips"))?,
        };
        let (meta, has_live_table) = match self.dp.vip(&key) {
            // Keep the live table index so an adopted VIP keeps forwarding until republished.
            Ok(old) if old.id == id => (
                VipMeta {
                    flags: vip_flags(cfg),
                    ..old
                },
                true,
            ),
            _ => (
                VipMeta {
                    id,
                    flags: vip_flags(cfg),
                    active_table: 0,
                    _reserved: 0,
                },
                false,
            ),
        };
        self.dp.set_vip(&key, &meta)?;
        let mut vip = VipRt {
            cfg: cfg.clone(),
            key,
            id,
            backends: BTreeMap::new(),
            published: Vec::new(),
            slots: HashMap::new(),
            moved_since: HashMap::new(),
            has_live_table,
            fail_open_live: false,
            table_generation: 0,
            digest: String::new(),
            serving: false,
        };
        for b in &cfg.backends {
            let (bid, generation) = match backend_ids.get(&(id, b.address)) {
                Some(found) => *found,
                None => self.allocate_backend()?,
            };
            self.dp
                .set_backend(bid, &Backend::new(b.address, generation, id))?;
            let rt = self.backend_rt(cfg, b, bid, generation);
            vip.backends.insert(b.address, rt);
        }
        info!(vip = %cfg.name, address = %cfg.address, port = cfg.port, id, "VIP configured");
        self.vips.insert(cfg.name.clone(), vip);
        Ok(())
    }

    fn backend_rt(
        &self,
        vip: &VipConfig,
        b: &config::BackendConfig,
        id: u32,
        generation: u32,
    ) -> BackendRt {
        let checker = self.start_checker(vip, b.address, Health::Up);
        BackendRt {
            cfg: b.clone(),
            id,
            generation,
            admin: b.state,
            // Optimistic start (as keepalived): a dead backend is found after `fall` checks,
            // and a restarted agent does not disturb flows while its checks warm up.
            health: Health::Up,
            up_since: None,
            checks_ok: 0,
            checks_failed: 0,
            last_latency: None,
            last_change: "configured".to_string(),
            checker,
        }
    }

    /// `initial`: the health the checker starts from (a replaced checker keeps the old one, so
    /// a backend that is down must still rise to come back).
    fn start_checker(
        &self,
        vip: &VipConfig,
        backend: IpAddr,
        initial: Health,
    ) -> Option<CancellationToken> {
        let hc = &vip.health_check;
        if hc.kind == CheckKind::None {
            return None;
        }
        let spec = CheckSpec {
            kind: hc.kind,
            target: SocketAddr::new(backend, vip.check_port()),
            path: hc.path.clone(),
            expect_status: hc.expect_status,
            interval: Duration::from_millis(hc.interval_ms),
            timeout: Duration::from_millis(hc.timeout_ms),
            rise: hc.rise,
            fall: hc.fall,
        };
        let token = CancellationToken::new();
        health::spawn_checker(
            vip.name.clone(),
            backend,
            spec,
            initial,
            self.reports.clone(),
            token.clone(),
        );
        Some(token)
    }

    /// A free backend id and the generation its next user must have. The BACKENDS map is the
    /// record of which ids are taken: an id in use holds its backend from allocation on
    /// (adopted ones included), a freed one is free.
    fn allocate_backend(&mut self) -> Result<(u32, u32)> {
        let mut found = None;
        // From the hint up, then (should a caller have dropped an id unwritten) the rest.
        let hint = self.first_maybe_free.min(MAX_BACKENDS);
        for id in (hint..MAX_BACKENDS).chain(0..hint) {
            let entry = self.dp.backend(id)?;
            if entry.is_free() {
                found = Some((id, entry.generation));
                break;
            }
        }
        let (id, old) =
            found.ok_or_else(|| anyhow!("all {MAX_BACKENDS} backend slots are in use"))?;
        // The caller writes the backend into the map at once.
        self.first_maybe_free = id + 1;
        let generation = self
            .free_generations
            .remove(&id)
            .unwrap_or(old)
            .wrapping_add(1);
        Ok((id, generation))
    }

    /// Release a backend id; its flows stop matching at once.
    fn free_backend(&mut self, id: u32, generation: u32) -> Result<()> {
        let next = generation.wrapping_add(1);
        let freed = Backend {
            generation: next,
            ..Backend::default()
        };
        self.dp.set_backend(id, &freed)?;
        self.free_generations.insert(id, next);
        self.first_maybe_free = self.first_maybe_free.min(id);
        Ok(())
    }

    /// Bump a backend's generation: connection-table entries pointing at it are ignored from
    /// their next packet on (a dead or disabled backend).
    fn invalidate_flows(&mut self, vip: &str, addr: IpAddr) -> Result<()> {
        let Some(b) = self
            .vips
            .get_mut(vip)
            .and_then(|v| v.backends.get_mut(&addr))
        else {
            return Ok(());
        };
        b.generation = b.generation.wrapping_add(1);
        let (id, generation) = (b.id, b.generation);
        let vip_id = self.vips.get(vip).map_or(0, |v| v.id);
        self.dp
            .set_backend(id, &Backend::new(addr, generation, vip_id))
    }

    /// Recompute the VIP's table from weights, admin state and health; publish it if it
    /// changed. `decided_at`: when the check result that caused this finished, to log the
    /// failover time.
    fn publish(&mut self, name: &str, decided_at: Option<Instant>) -> Result<()> {
        let window = Duration::from_millis(self.config.agent.slow_start_ms);
        let table_size = self.dp.options().table_size;
        let Some(vip) = self.vips.get_mut(name) else {
            return Ok(());
        };
        let now = Instant::now();
        let mut members: Vec<(u32, u32, IpAddr)> = vip
            .backends
            .values()
            .filter_map(|b| {
                let weight = match (b.admin, b.health) {
                    (AdminState::Active, Health::Up) => match b.up_since {
                        Some(at) => health::slow_start_weight(b.cfg.weight, now - at, window),
                        None => b.cfg.weight,
                    },
                    _ => 0,
                };
                (weight > 0).then_some((b.id, weight, b.cfg.address))
            })
            .collect();
        let serving = !members.is_empty() || vip.cfg.all_down == AllDown::FailOpen;
        let fail_open = members.is_empty() && vip.cfg.all_down == AllDown::FailOpen;
        if fail_open {
            // Every backend is down: a checker outage must not take the service down.
            members = vip
                .backends
                .values()
                .filter(|b| b.admin == AdminState::Active)
                .map(|b| (b.id, b.cfg.weight, b.cfg.address))
                .collect();
        }
        let wanted: Vec<(u32, u32)> = members.iter().map(|m| (m.0, m.1)).collect();
        if wanted == vip.published && vip.table_generation > 0 {
            return Ok(());
        }
        let span = info_span!("publish", vip = %name);
        let _enter = span.enter();
        let table = build_table(
            &members
                .iter()
                .map(|(id, weight, addr)| MaglevBackend {
                    name: addr.to_string(),
                    id: *id,
                    weight: *weight,
                })
                .collect::<Vec<_>>(),
            table_size,
        )?;
        // Established flows stay on a backend that is up, even one drained to weight 0, and on
        // one a fail-open table was serving: when a balancer that saw every backend down (its
        // own outage, most likely) recovers one backend at a time, the slots must remember
        // the full table its flows, and those of its peers, were using.
        let up: std::collections::HashSet<u32> = vip
            .backends
            .values()
            .filter(|b| {
                b.admin != AdminState::Disabled
                    && (b.health == Health::Up
                        || (vip.fail_open_live && b.admin == AdminState::Active))
            })
            .map(|b| b.id)
            .collect();
        let live = if vip.has_live_table {
            Some(self.dp.live_table(&self.dp.vip(&vip.key)?)?)
        } else {
            None
        };
        let slots = moves::next_slots(live.as_deref(), &table, |id| up.contains(&id));
        self.dp.publish_table(&vip.key, &slots)?;
        note_moves(&mut vip.moved_since, &slots, now);
        vip.fail_open_live = fail_open;
        vip.has_live_table = true;
        vip.published = wanted;
        vip.table_generation += 1;
        vip.serving = serving && !members.is_empty();
        vip.slots = HashMap::new();
        for id in &table {
            *vip.slots.entry(*id).or_insert(0) += 1;
        }
        let names: HashMap<u32, IpAddr> = members.iter().map(|m| (m.0, m.2)).collect();
        vip.digest = digest(&table, &names);
        match decided_at {
            Some(at) => info!(
                generation = vip.table_generation,
                backends = members.len(),
                moved_slots = vip.moved_since.len(),
                failover_us = at.elapsed().as_micros() as u64,
                "table published"
            ),
            None => info!(
                generation = vip.table_generation,
                backends = members.len(),
                moved_slots = vip.moved_since.len(),
                "table published"
            ),
        }
        if !vip.serving {
            warn!(
                "no backend can serve (down, drained or disabled): packets to this VIP are dropped"
            );
        }
        Ok(())
    }

    /// A finished health check.
    pub fn on_check(&mut self, report: CheckReport) -> Result<()> {
        let Some(b) = self
            .vips
            .get_mut(&report.vip)
            .and_then(|v| v.backends.get_mut(&report.backend))
        else {
            // A checker of a backend removed by a reload, reporting once more.
            return Ok(());
        };
        if report.ok {
            b.checks_ok += 1;
        } else {
            b.checks_failed += 1;
        }
        b.last_latency = Some(report.latency);
        let Some(transition) = report.transition else {
            return Ok(());
        };
        b.health = transition;
        b.last_change = match transition {
            Health::Up => "up: checks passing".to_string(),
            Health::Down => format!("down: {}", report.detail),
        };
        let slow_start = self.config.agent.slow_start_ms > 0;
        if transition == Health::Up {
            b.up_since = slow_start.then_some(Instant::now());
        }
        info!(
            vip = %report.vip,
            backend = %report.backend,
            state = ?transition,
            reason = %report.detail,
            "backend health changed"
        );
        if transition == Health::Down {
            self.invalidate_flows(&report.vip, report.backend)?;
        }
        self.publish(&report.vip, Some(report.finished_at))
    }

    /// Slow start: republish VIPs whose backends are still ramping up.
    pub fn on_tick(&mut self) -> Result<()> {
        let window = Duration::from_millis(self.config.agent.slow_start_ms);
        // Every VIP with a backend still marked as ramping is republished, including one whose
        // window just ended: that publish gives it full weight, however late the tick came.
        let ramping: Vec<String> = self
            .vips
            .iter()
            .filter(|(_, v)| v.backends.values().any(|b| b.up_since.is_some()))
            .map(|(n, _)| n.clone())
            .collect();
        // Taken before the publishes, which therefore saw at least this much of the window.
        let now = Instant::now();
        for name in ramping {
            self.publish(&name, None)?;
        }
        for v in self.vips.values_mut() {
            for b in v.backends.values_mut() {
                if b.up_since
                    .is_some_and(|at| now.duration_since(at) >= window)
                {
                    b.up_since = None;
                }
            }
        }
        Ok(())
    }

    fn flow_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.config.agent.flow_idle_timeout_ms)
    }

    /// A sweep to run now, if a VIP has moved slots and the last sweep is old enough.
    pub fn sweep_due(&mut self) -> Option<SweepJob> {
        let every = (self.flow_idle_timeout() / 4).clamp(SWEEP_EVERY_MIN, SWEEP_EVERY_MAX);
        if self.vips.values().all(|v| v.moved_since.is_empty())
            || self.last_sweep.is_some_and(|at| at.elapsed() < every)
        {
            return None;
        }
        self.start_sweep()
    }

    fn start_sweep(&mut self) -> Option<SweepJob> {
        let sweeper = self.sweeper.take()?;
        let started = Instant::now();
        self.last_sweep = Some(started);
        Some(SweepJob {
            sweeper,
            idle: self.flow_idle_timeout(),
            started,
            generations: self
                .vips
                .iter()
                .map(|(name, v)| (name.clone(), v.table_generation))
                .collect(),
        })
    }

    /// Apply a finished sweep: moved slots that no live flow needs any more become stable.
    pub fn on_swept(&mut self, done: SweepDone) -> Result<()> {
        let SweepDone { job, result } = done;
        self.sweeper = Some(job.sweeper);
        let sweep = result.context("sweeping the connection table")?;
        self.sweep_summary = Some(SweepSummary {
            live: sweep.live,
            removed: sweep.expired + sweep.stale,
            took: sweep.took,
        });
        // Flows idle since before this are gone; a move older than it holds no silent flow.
        let Some(cutoff) = job.started.checked_sub(job.idle) else {
            return Ok(());
        };
        for (name, generation) in job.generations {
            let Some(vip) = self.vips.get_mut(&name) else {
                continue;
            };
            if vip.table_generation != generation || vip.moved_since.is_empty() {
                continue;
            }
            let live = self.dp.live_table(&self.dp.vip(&vip.key)?)?;
            let settled =
                moves::settled(&live, &vip.moved_since, sweep.claims.get(&vip.id), cutoff);
            if settled.is_empty() {
                continue;
            }
            let span = info_span!("settle", vip = %name);
            let _enter = span.enter();
            self.dp
                .publish_table(&vip.key, &moves::stabilize(&live, &settled))?;
            for slot in &settled {
                vip.moved_since.remove(slot);
            }
            info!(
                settled = settled.len(),
                still_moved = vip.moved_since.len(),
                live_entries = sweep.live,
                "moved slots back to stable"
            );
        }
        Ok(())
    }

    /// Sweep on this thread and apply the result at once.
    pub fn sweep_now(&mut self) -> Result<()> {
        let job = self
            .start_sweep()
            .ok_or_else(|| anyhow!("a sweep is already running"))?;
        self.on_swept(job.run())
    }

    pub fn on_admin(&mut self, request: AdminRequest) {
        match request {
            AdminRequest::Status(reply) => {
                let _ = reply.send(self.status());
            }
            AdminRequest::SetBackendState {
                vip,
                backend,
                state,
                reply,
            } => {
                let result = self.set_admin_state(&vip, backend, state);
                let _ = reply.send(result.map_err(|e| format!("{e:#}")));
            }
            AdminRequest::Reload(reply) => {
                let result = self.reload();
                let _ = reply.send(result.map_err(|e| format!("{e:#}")));
            }
        }
    }

    fn set_admin_state(&mut self, vip: &str, addr: IpAddr, state: AdminState) -> Result<()> {
        let v = self
            .vips
            .get_mut(vip)
            .ok_or_else(|| anyhow!("no VIP named {vip}"))?;
        let b = v
            .backends
            .get_mut(&addr)
            .ok_or_else(|| anyhow!("VIP {vip} has no backend {addr}"))?;
        if b.admin == state {
            return Ok(());
        }
        let before = b.admin;
        b.admin = state;
        b.last_change = format!("admin: {state:?} (was {before:?})").to_lowercase();
        info!(vip, backend = %addr, from = ?before, to = ?state, "backend admin state changed");
        if state == AdminState::Disabled {
            self.invalidate_flows(vip, addr)?;
        }
        self.publish(vip, None)
    }

    /// Re-read the configuration file and apply the difference with the least disturbance.
    pub fn reload(&mut self) -> Result<String> {
        let span = info_span!("reload", path = %self.config_path.display());
        let _enter = span.enter();
        let mut new = config::load(&self.config_path).context("the running configuration stays")?;
        if let Some(iface) = &self.interface_override {
            new.agent.interface = iface.clone();
        }
        restart_only_fields_unchanged(&self.config, &new)?;
        if new.agent != self.config.agent {
            self.write_lb_config(&new.agent)?;
        }
        if let (Some(speaker), Some(bgp)) = (&self.bgp, &new.bgp) {
            speaker.reconfigure(bgp.clone());
        }
        let old_names: BTreeSet<String> = self.vips.keys().cloned().collect();
        let new_names: BTreeSet<String> = new.vips.iter().map(|v| v.name.clone()).collect();
        let mut changes = Vec::new();
        for name in old_names.difference(&new_names) {
            self.remove_vip(name)?;
            changes.push(format!("removed VIP {name}"));
        }
        for cfg in &new.vips {
            match self.vips.get(&cfg.name) {
                None => {
                    self.add_vip(cfg, &HashMap::new(), &HashMap::new())?;
                    changes.push(format!("added VIP {}", cfg.name));
                }
                Some(old) if vip_key(&old.cfg) != vip_key(cfg) => {
                    self.remove_vip(&cfg.name)?;
                    self.add_vip(cfg, &HashMap::new(), &HashMap::new())?;
                    changes.push(format!("replaced VIP {}", cfg.name));
                }
                Some(old) if old.cfg != *cfg => {
                    self.update_vip(cfg)?;
                    changes.push(format!("updated VIP {}", cfg.name));
                }
                Some(_) => {}
            }
        }
        self.config = new;
        let names: Vec<String> = self.vips.keys().cloned().collect();
        for name in names {
            self.publish(&name, None)?;
        }
        let summary = if changes.is_empty() {
            "configuration reloaded: no change".to_string()
        } else {
            format!("configuration reloaded: {}", changes.join(", "))
        };
        info!("{summary}");
        Ok(summary)
    }

    fn remove_vip(&mut self, name: &str) -> Result<()> {
        let Some(vip) = self.vips.remove(name) else {
            return Ok(());
        };
        for b in vip.backends.values() {
            if let Some(t) = &b.checker {
                t.cancel();
            }
            self.free_backend(b.id, b.generation)?;
        }
        self.dp.remove_vip(&vip.key)?;
        info!(vip = %name, "VIP removed");
        Ok(())
    }

    /// Same VIP key: keep its id and tables; apply flags and the backend difference.
    fn update_vip(&mut self, cfg: &VipConfig) -> Result<()> {
        let key = vip_key(cfg);
        let old_cfg = self
            .vips
            .get(&cfg.name)
            .map(|v| v.cfg.clone())
            .ok_or_else(|| anyhow!("VIP {} vanished", cfg.name))?;
        if vip_flags(&old_cfg) != vip_flags(cfg) {
            let meta = self.dp.vip(&key)?;
            self.dp.set_vip(
                &key,
                &VipMeta {
                    flags: vip_flags(cfg),
                    ..meta
                },
            )?;
        }
        let checks_changed = old_cfg.health_check != cfg.health_check || old_cfg.port != cfg.port;
        let old: BTreeMap<IpAddr, config::BackendConfig> = old_cfg
            .backends
            .iter()
            .map(|b| (b.address, b.clone()))
            .collect();
        let new: BTreeMap<IpAddr, config::BackendConfig> = cfg
            .backends
            .iter()
            .map(|b| (b.address, b.clone()))
            .collect();
        let vip_id = self.vips.get(&cfg.name).map_or(0, |v| v.id);
        for addr in old.keys().filter(|a| !new.contains_key(a)) {
            if let Some(b) = self
                .vips
                .get_mut(&cfg.name)
                .and_then(|v| v.backends.remove(addr))
            {
                if let Some(t) = &b.checker {
                    t.cancel();
                }
                self.free_backend(b.id, b.generation)?;
                info!(vip = %cfg.name, backend = %addr, "backend removed");
            }
        }
        for (addr, bcfg) in &new {
            match old.get(addr) {
                None => {
                    let (id, generation) = self.allocate_backend()?;
                    self.dp
                        .set_backend(id, &Backend::new(*addr, generation, vip_id))?;
                    let rt = self.backend_rt(cfg, bcfg, id, generation);
                    if let Some(v) = self.vips.get_mut(&cfg.name) {
                        v.backends.insert(*addr, rt);
                    }
                    info!(vip = %cfg.name, backend = %addr, "backend added");
                }
                Some(before) => {
                    let current = self
                        .vips
                        .get(&cfg.name)
                        .and_then(|v| v.backends.get(addr))
                        .map_or(Health::Up, |b| b.health);
                    let restart = checks_changed.then(|| self.start_checker(cfg, *addr, current));
                    let disable = before.state != bcfg.state && bcfg.state == AdminState::Disabled;
                    if let Some(b) = self
                        .vips
                        .get_mut(&cfg.name)
                        .and_then(|v| v.backends.get_mut(addr))
                    {
                        if before.state != bcfg.state {
                            b.admin = bcfg.state;
                        }
                        b.cfg = bcfg.clone();
                        if let Some(token) = restart {
                            if let Some(old_token) = b.checker.take() {
                                old_token.cancel();
                            }
                            b.checker = token;
                        }
                    }
                    if disable {
                        self.invalidate_flows(&cfg.name, *addr)?;
                    }
                }
            }
        }
        if let Some(v) = self.vips.get_mut(&cfg.name) {
            v.cfg = cfg.clone();
        }
        Ok(())
    }

    pub fn status(&self) -> StatusReport {
        let counters = self
            .dp
            .stats()
            .map(|all| {
                all.into_iter()
                    .map(|(s, v)| (s.name().to_string(), v))
                    .collect()
            })
            .unwrap_or_default();
        let vips = self
            .vips
            .values()
            .map(|v| {
                let traffic = self.dp.vip_counters(v.id).unwrap_or_default();
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
                    packets: traffic.packets,
                    bytes: traffic.bytes,
                    backends: v
                        .backends
                        .values()
                        .map(|b| {
                            let t = self.dp.backend_counters(b.id).unwrap_or_default();
                            let unchecked = v.cfg.health_check.kind == CheckKind::None;
                            BackendStatus {
                                address: b.cfg.address,
                                id: b.id,
                                weight: b.cfg.weight,
                                effective_weight: v
                                    .published
                                    .iter()
                                    .find(|(id, _)| *id == b.id)
                                    .map_or(0, |(_, w)| *w),
                                admin_state: b.admin,
                                health: BackendHealth::of(b.health, !unchecked),
                                slots: v.slots.get(&b.id).copied().unwrap_or(0),
                                packets: t.packets,
                                bytes: t.bytes,
                                checks_ok: b.checks_ok,
                                checks_failed: b.checks_failed,
                                last_check_latency_ms: b
                                    .last_latency
                                    .map(|d| d.as_secs_f64() * 1000.0),
                                last_change: b.last_change.clone(),
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        StatusReport {
            interface: self.interface.clone(),
            xdp_mode: self
                .attachment
                .map_or("detached".to_string(), |a| a.to_string()),
            table_size: self.dp.options().table_size,
            uptime_secs: self.started.elapsed().as_secs(),
            config_path: self.config_path.display().to_string(),
            vips,
            counters,
            bgp: self.bgp.as_ref().map(Speaker::status),
            conn_sweep: self.sweep_summary.zip(self.last_sweep).map(|(s, at)| {
                crate::admin::ConnSweepStatus {
                    live_entries: s.live,
                    removed_entries: s.removed,
                    took_ms: s.took.as_millis() as u64,
                    secs_ago: at.elapsed().as_secs(),
                }
            }),
        }
    }

    /// Announce over BGP from now on; called once the tables are published.
    pub fn set_speaker(&mut self, speaker: Speaker) {
        self.bgp = Some(speaker);
        self.sync_announcements();
    }

    pub fn take_speaker(&mut self) -> Option<Speaker> {
        self.bgp.take()
    }

    /// Tell the speaker which VIP addresses can serve (at least one of their VIPs has a
    /// published table with backends); it acts only on a change.
    pub fn sync_announcements(&self) {
        if let Some(speaker) = &self.bgp {
            speaker.announce(
                self.vips
                    .values()
                    .filter(|v| v.serving && v.table_generation > 0)
                    .map(|v| v.cfg.address)
                    .collect(),
            );
        }
    }

    /// The data plane, for tests and benchmarks that run packets through it.
    pub fn balancer(&mut self) -> &mut Balancer {
        &mut self.dp
    }

    /// Attach (or swap into the pinned link) once the maps are programmed.
    pub fn attach(&mut self, iface: &str, mode: config::XdpMode) -> Result<Attachment> {
        let how = self.dp.attach(iface, mode)?;
        self.attachment = Some(how);
        Ok(how)
    }

    /// Stop every health checker (the data plane is left as it is).
    pub fn stop_checkers(&self) {
        for v in self.vips.values() {
            for b in v.backends.values() {
                if let Some(t) = &b.checker {
                    t.cancel();
                }
            }
        }
    }
}

/// Settings that shape maps, sockets or devices cannot change without a restart.
fn restart_only_fields_unchanged(old_config: &Config, new_config: &Config) -> Result<()> {
    let (old, new) = (&old_config.agent, &new_config.agent);
    let mut changed = Vec::new();
    match (&old_config.bgp, &new_config.bgp) {
        (Some(a), Some(b)) if a.announce_interface != b.announce_interface => {
            changed.push("bgp.announce_interface")
        }
        (Some(_), None) | (None, Some(_)) => changed.push("the [bgp] section"),
        _ => {}
    }
    if old.interface != new.interface {
        changed.push("agent.interface");
    }
    if old.xdp_mode != new.xdp_mode {
        changed.push("agent.xdp_mode");
    }
    if old.pin_path != new.pin_path {
        changed.push("agent.pin_path");
    }
    if old.admin_listen != new.admin_listen {
        changed.push("agent.admin_listen");
    }
    if old.table_size != new.table_size {
        changed.push("agent.table_size");
    }
    if old.max_vips != new.max_vips {
        changed.push("agent.max_vips");
    }
    if old.conn_table_size != new.conn_table_size {
        changed.push("agent.conn_table_size");
    }
    if old.gateway_mac != new.gateway_mac {
        changed.push("agent.gateway_mac");
    }
    if !changed.is_empty() {
        bail!(
            "{} changed: restart the agent to apply (the running configuration stays)",
            changed.join(", ")
        );
    }
    Ok(())
}

pub fn vip_key(cfg: &VipConfig) -> VipKey {
    let proto = match cfg.protocol {
        config::Protocol::Tcp => IPPROTO_TCP,
        config::Protocol::Udp => IPPROTO_UDP,
    };
    VipKey::new(cfg.address, cfg.port, proto)
}

fn vip_flags(cfg: &VipConfig) -> u32 {
    match cfg.hash {
        HashMode::FiveTuple => 0,
        HashMode::SourceIp => VIP_F_HASH_SRC_ONLY,
    }
}

/// Record when each moved slot of `slots` first moved; forget slots that are stable.
fn note_moves(moved_since: &mut HashMap<u32, Instant>, slots: &[lb_common::Slot], now: Instant) {
    for (index, slot) in slots.iter().enumerate() {
        let index = index as u32;
        if slot.is_moved() {
            moved_since.entry(index).or_insert(now);
        } else {
            moved_since.remove(&index);
        }
    }
}

/// FNV-1a over the backend address of every slot: equal on every balancer that has the same
/// backends, whatever ids each one gave them.
fn digest(table: &[u32], names: &HashMap<u32, IpAddr>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for id in table {
        match (id, names.get(id)) {
            (&NO_BACKEND, _) | (_, None) => eat(&[0xff]),
            (_, Some(IpAddr::V4(a))) => eat(&a.octets()),
            (_, Some(IpAddr::V6(a))) => eat(&a.octets()),
        }
    }
    format!("{h:016x}")
}
