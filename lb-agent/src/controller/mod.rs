//! The agent's state and the single task that changes it. Health reports, admin requests,
//! reloads and the slow-start tick arrive as typed messages; every decision ends in `publish`,
//! which asks `policy` for a VIP's table and flips it into the data plane. After each change
//! the controller shares a snapshot (`status`), which status and metrics read without it.
//!
//! | module    | job                                                          | pure |
//! |-----------|--------------------------------------------------------------|------|
//! | `ids`     | backend and VIP id allocation and generations                | yes  |
//! | `policy`  | a VIP's table members and weights                            | yes  |
//! | `probes`  | which health probes run and which VIPs each serves           | yes  |
//! | `probing` | starting and stopping probes, fanning their results out      | no   |
//! | `reload`  | what a new configuration changes, which weight overrides it clears | yes |
//! | `apply`   | adding, updating and removing VIPs and backends (maps, checkers) | no |
//! | `load`    | reading a reloaded file off this task, then applying it      | no   |
//! | `publish` | building and publishing a VIP's table                        | no   |
//! | `sweep`   | connection-table sweeps and settling moved slots             | no   |
//! | `status`  | the shared snapshot and the report built from it             | no   |
//! | `weights` | runtime weight overrides: set, answered, cleared by a reload | no   |

mod apply;
mod ids;
mod link;
mod load;
mod policy;
mod probes;
mod probing;
mod publish;
mod reload;
mod status;
mod sweep;
mod weights;

pub use load::LoadedConfig;
pub use reload::{vip_flags, vip_key};
pub use status::{Snapshot, StatusSource};
pub use sweep::{SweepDone, SweepJob, SweepSummary};

use crate::{
    admin::AdminRequest,
    bgp::Speaker,
    config::{self, AdminState, AgentConfig, Config, VipConfig},
    dataplane::{Balancer, Sweeper},
    health::{CheckReport, Health, ProbeId},
};
use anyhow::{anyhow, Result};
use ids::BackendIds;
use lb_common::{hash::FlowHashKey, LbConfig, VipKey, LOCAL_MACS};
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// One backend of one VIP, as the agent tracks it. Its generation lives in `BackendIds`.
struct BackendRt {
    cfg: config::BackendConfig,
    /// Index into the data plane's BACKENDS array (per VIP and backend).
    id: u32,
    /// Operator's wish: the file's `state`, changed at run time by the admin endpoint.
    admin: AdminState,
    /// A weight set at run time, in force instead of `cfg.weight` until the next reload.
    weight_override: Option<u32>,
    health: Health,
    /// When the backend last came up (slow start ramps from here); None: up since start.
    up_since: Option<Instant>,
    checks_ok: u64,
    checks_failed: u64,
    last_latency: Option<Duration>,
    last_change: String,
    /// The probe whose results this backend takes (shared with other VIPs); None unchecked.
    probe: Option<ProbeId>,
}

struct VipRt {
    cfg: VipConfig,
    key: VipKey,
    id: u32,
    backends: BTreeMap<IpAddr, BackendRt>,
    /// (backend id, weight) of the published table; a publish is skipped when unchanged.
    published: Vec<(u32, u32)>,
    /// Previous backends the published moved slots name. Republished, even with the same
    /// members, once one of them may no longer keep its flows (down or disabled while drained):
    /// flows without an entry follow the previous backend, and non-SYN misses insert none.
    previous: HashSet<u32>,
    /// Slots each backend id holds in the published table.
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
    /// The interface's own MAC: forwarded frames are sent to it (or to `agent.accept_macs`).
    pub local_mac: [u8; 6],
    /// `agent.flow_hash_key_file`'s key as read at start (`NO_KEY` without one).
    pub flow_hash_key: FlowHashKey,
}

pub struct Controller {
    dp: Balancer,
    config: Config,
    config_path: PathBuf,
    interface_override: Option<String>,
    gateway_mac: [u8; 6],
    local_mac: [u8; 6],
    flow_hash_key: FlowHashKey,
    xdp: link::XdpState,
    /// When to try attaching again to an interface that came back and refused the program.
    attach_retry: Option<Instant>,
    vips: BTreeMap<String, VipRt>,
    ids: BackendIds,
    reports: mpsc::Sender<CheckReport>,
    /// One per (backend, check definition), shared by the VIPs using them (`probes`).
    probes: HashMap<Arc<probes::ProbeKey>, probing::ProbeRt>,
    probe_keys: HashMap<ProbeId, Arc<probes::ProbeKey>>,
    /// The last probe id given.
    next_probe: ProbeId,
    bgp: Option<Speaker>,
    /// None while a sweep runs.
    sweeper: Option<Sweeper>,
    last_sweep: Option<Instant>,
    sweep_summary: Option<SweepSummary>,
    /// Recent Maglev layouts: VIPs over one pool build a new membership's layout once.
    layouts: crate::maglev::layout::Layouts,
    shared: status::Shared,
    /// Reads reloaded files on a blocking thread, one at a time.
    reader: config::Reader,
    loaded_tx: mpsc::Sender<LoadedConfig>,
    /// Taken by the event loop (`take_loaded`).
    loaded_rx: Option<mpsc::Receiver<LoadedConfig>>,
}

/// Least time between slow-start table updates.
pub const TICK: Duration = Duration::from_millis(500);

impl Controller {
    /// Take over the data plane (adopting what an earlier agent left pinned) and program it
    /// from `setup.config`.
    pub fn new(dp: Balancer, setup: Setup, reports: mpsc::Sender<CheckReport>) -> Result<Self> {
        let ids = BackendIds::from_entries(
            dp.backend_entries()?
                .into_iter()
                .map(|b| (!b.is_free(), b.generation)),
        );
        let shared = status::Shared::new(
            &setup,
            (dp.options().table_size, dp.options().conn_table_entries),
            dp.counters(),
        );
        let (loaded_tx, loaded_rx) = mpsc::channel(4);
        let mut ctl = Self {
            dp,
            config: setup.config.clone(),
            config_path: setup.config_path,
            interface_override: setup.interface_override,
            gateway_mac: setup.gateway_mac,
            local_mac: setup.local_mac,
            flow_hash_key: setup.flow_hash_key,
            xdp: link::XdpState::Pending,
            attach_retry: None,
            vips: BTreeMap::new(),
            ids,
            reports,
            probes: HashMap::new(),
            probe_keys: HashMap::new(),
            next_probe: 0,
            bgp: None,
            sweeper: None,
            last_sweep: None,
            sweep_summary: None,
            layouts: Default::default(),
            shared,
            reader: config::Reader::default(),
            loaded_tx,
            loaded_rx: Some(loaded_rx),
        };
        ctl.sweeper = ctl.dp.take_sweeper();
        ctl.write_lb_config(&setup.config.agent)?;
        ctl.adopt_and_configure(&setup.config.vips)?;
        ctl.sync_probes();
        let names: Vec<String> = ctl.vips.keys().cloned().collect();
        for name in names {
            ctl.publish(&name, None)?;
        }
        ctl.share_now();
        Ok(ctl)
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
            local_macs: self.local_macs(agent),
            flow_hash_key: self.flow_hash_key,
        };
        self.dp.set_config(&cfg)
    }

    /// The interface's MAC, then `accept_macs`; unused entries repeat the interface's.
    fn local_macs(&self, agent: &AgentConfig) -> [[u8; 6]; LOCAL_MACS] {
        let mut macs = [self.local_mac; LOCAL_MACS];
        for (slot, mac) in macs[1..].iter_mut().zip(&agent.accept_macs) {
            *slot = mac.0;
        }
        macs
    }

    /// Slow start: republish VIPs whose backends are still ramping up.
    pub fn on_tick(&mut self) -> Result<()> {
        self.retry_attach();
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

    /// A request of the control API; status and metrics never come here. A request whose
    /// requester gave up (its reply cannot be claimed) is dropped unapplied.
    pub fn on_admin(&mut self, request: AdminRequest) {
        match request {
            AdminRequest::SetBackendState {
                vip,
                backend,
                state,
                reply,
            } => {
                let Some(reply) = reply.claim() else {
                    warn!(vip, backend = %backend, ?state, "admin request given up by its sender before it was handled: not applied");
                    return;
                };
                let result = self.set_admin_state(&vip, backend, state);
                // Read-your-writes: `status` right after the command shows the change.
                self.share();
                let _ = reply.send(result.map_err(|e| format!("{e:#}")));
            }
            AdminRequest::SetBackendWeight {
                vip,
                backend,
                weight,
                reply,
            } => {
                let Some(reply) = reply.claim() else {
                    warn!(vip, backend = %backend, %weight, "weight request given up by its sender before it was handled: not applied");
                    return;
                };
                let result = self.set_weight(&vip, backend, weight);
                // Read-your-writes: `status` right after the command shows the change.
                self.share();
                let _ = reply.send(result.map_err(|e| format!("{e:#}")));
            }
            // Claimed once the file is read and parsed (`on_loaded`).
            AdminRequest::Reload(reply) => self.start_reload(Some(reply)),
            AdminRequest::SetMaintenance { on, reply } => {
                let Some(reply) = reply.claim() else {
                    warn!(on, "maintenance request given up by its sender before it was handled: not applied");
                    return;
                };
                let result = match &self.bgp {
                    Some(speaker) => {
                        let answer = speaker.set_maintenance(on);
                        // Status shows the new phase from the moment the command returns.
                        self.share_now();
                        Ok(answer)
                    }
                    None => Err(format!(
                        "maintenance mode changes BGP announcements, and {} has no [bgp] \
                         section: take this balancer out where its traffic is routed",
                        self.config_path.display()
                    )),
                };
                let _ = reply.send(result);
            }
        }
    }

    /// The backend an admin request names, or the error the operator sees.
    fn backend_mut(&mut self, vip: &str, addr: IpAddr) -> Result<&mut BackendRt> {
        self.vips
            .get_mut(vip)
            .ok_or_else(|| anyhow!("no VIP named {vip}"))?
            .backends
            .get_mut(&addr)
            .ok_or_else(|| anyhow!("VIP {vip} has no backend {addr}"))
    }

    fn set_admin_state(&mut self, vip: &str, addr: IpAddr, state: AdminState) -> Result<()> {
        let b = self.backend_mut(vip, addr)?;
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
        self.shared.changed(vip);
        self.publish(vip, None)
    }

    /// Bump a backend's generation: connection-table entries pointing at it are ignored from
    /// their next packet on (a dead or disabled backend).
    fn invalidate_flows(&mut self, vip: &str, addr: IpAddr) -> Result<()> {
        let Some(v) = self.vips.get(vip) else {
            return Ok(());
        };
        match v.backends.get(&addr) {
            Some(b) => self.new_generation(v.id, b.id, addr),
            None => Ok(()),
        }
    }

    fn new_generation(&mut self, vip_id: u32, id: u32, addr: IpAddr) -> Result<()> {
        let generation = self.ids.bump(id);
        self.dp
            .set_backend(id, &lb_common::Backend::new(addr, generation, vip_id))
    }

    /// The MAC encapsulated packets are sent to now.
    pub fn gateway_mac(&self) -> [u8; 6] {
        self.gateway_mac
    }

    /// The gateway's MAC changed (`gateway_mac = "auto"`): packets leave for the new one.
    pub fn on_gateway(&mut self, change: crate::gateway::GatewayChange) -> Result<()> {
        if change.to == self.gateway_mac {
            return Ok(());
        }
        let span = tracing::info_span!("gateway", via = %change.via);
        let _enter = span.enter();
        self.gateway_mac = change.to;
        let agent = self.config.agent.clone();
        self.write_lb_config(&agent)?;
        info!(
            from = %crate::netinfo::format_mac(&change.from),
            to = %crate::netinfo::format_mac(&change.to),
            "gateway MAC changed: encapsulated packets now go to the new MAC"
        );
        Ok(())
    }

    /// Announce over BGP from now on; called once the tables are published.
    pub fn set_speaker(&mut self, speaker: Speaker) {
        self.bgp = Some(speaker);
        self.sync_announcements();
        self.share_now();
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
}
