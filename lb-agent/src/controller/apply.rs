//! Carrying out configuration: the VIPs and backends of the file at start, and the plan of a
//! reload (`reload::plan`). Writes the VIPS and BACKENDS maps and starts or stops checkers;
//! tables are published afterwards by the caller.

use super::{
    ids,
    reload::{self, KeptBackend, VipChange, VipUpdate},
    BackendRt, Controller, VipRt,
};
use crate::{
    config::{BackendConfig, Config, VipConfig},
    health::Health,
};
use anyhow::{anyhow, Result};
use lb_common::{words_addr, Backend, VipKey, VipMeta, MAX_BACKENDS};
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
};
use tracing::{info, info_span};

/// Ids an earlier agent used, found in the pinned maps.
#[derive(Default)]
struct Adopted {
    vips: HashMap<VipKey, u32>,
    /// (VIP id, backend address) -> backend id.
    backends: HashMap<(u32, IpAddr), u32>,
}

impl Controller {
    /// Configure `vips`, reusing the ids of what an earlier agent left pinned, and remove what
    /// it left that the configuration no longer has.
    pub(super) fn adopt_and_configure(&mut self, vips: &[VipConfig]) -> Result<()> {
        let adopted = self.adopted()?;
        let wanted: Vec<VipKey> = vips.iter().map(reload::vip_key).collect();
        let ids = ids::assign_vip_ids(&adopted.vips, &wanted, self.dp.options().max_vips)
            .ok_or_else(|| too_many_vips(wanted.len(), self.dp.options().max_vips))?;
        // First, so that a VIP whose key changed can take the id its old key had.
        let wanted_keys: HashSet<VipKey> = wanted.iter().copied().collect();
        for (key, meta) in self.dp.vips()? {
            if !wanted_keys.contains(&key) {
                info!(
                    vip_id = meta.id,
                    "removing a VIP the configuration no longer has"
                );
                self.dp.remove_vip(&key)?;
            }
        }
        // Before any allocation: a restart onto another configuration as large as the old one
        // needs the ids the old one held.
        let kept = kept_backend_ids(&adopted, vips, &ids);
        let stale: Vec<u32> = self.ids.taken().filter(|id| !kept.contains(id)).collect();
        for id in stale {
            self.free_backend(id)?;
        }
        for (vip, key) in vips.iter().zip(&wanted) {
            let id = ids[key];
            // Backends are adopted only by the VIP that owned them, never by one that took
            // over the id of a removed VIP.
            let owned = adopted.vips.get(key) == Some(&id);
            let backends = if owned {
                &adopted.backends
            } else {
                &HashMap::new()
            };
            self.add_vip(vip, id, backends)?;
        }
        Ok(())
    }

    fn adopted(&self) -> Result<Adopted> {
        let mut adopted = Adopted::default();
        if !self.dp.adopted() {
            return Ok(adopted);
        }
        for (key, meta) in self.dp.vips()? {
            adopted.vips.insert(key, meta.id);
        }
        for (id, b) in self.dp.backends_in_use()? {
            if let Some(ip) = words_addr(b.addr, b.family) {
                adopted.backends.insert((b.vip_id, ip), id);
            }
        }
        info!(
            vips = adopted.vips.len(),
            backends = adopted.backends.len(),
            "adopted the pinned data plane: connection table and tables kept"
        );
        Ok(adopted)
    }

    /// Configure a VIP under `id`; `adopted`: (VIP id, address) -> backend id an earlier
    /// agent gave this VIP's backends.
    fn add_vip(
        &mut self,
        cfg: &VipConfig,
        id: u32,
        adopted: &HashMap<(u32, IpAddr), u32>,
    ) -> Result<()> {
        let key = reload::vip_key(cfg);
        let flags = reload::vip_flags(cfg);
        let (meta, has_live_table) = match self.dp.vip(&key) {
            // Keep the live table index so an adopted VIP keeps forwarding until republished.
            Ok(old) if old.id == id => (VipMeta { flags, ..old }, true),
            _ => (
                VipMeta {
                    id,
                    flags,
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
            previous: HashSet::new(),
            slots: HashMap::new(),
            moved_since: HashMap::new(),
            has_live_table,
            fail_open_live: false,
            table_generation: 0,
            digest: String::new(),
            serving: false,
        };
        let mut backends = Vec::with_capacity(cfg.backends.len());
        for b in &cfg.backends {
            let bid = match adopted.get(&(id, b.address)) {
                Some(bid) if self.ids.is_taken(*bid) => *bid,
                _ => self.allocate_backend(id, b.address)?,
            };
            backends.push((b.address, Self::backend_rt(b, bid, Health::Up)));
        }
        // Built at once, its nodes full: inserted one by one in address order they stay about
        // half full (at 10,000 backends, ~1 MB more).
        vip.backends = backends.into_iter().collect();
        info!(vip = %cfg.name, address = %cfg.address, port = cfg.port, id, "VIP configured");
        self.shared.changed(&cfg.name);
        self.vips.insert(cfg.name.clone(), vip);
        Ok(())
    }

    /// A new backend id for `addr` of VIP `vip_id`, written into BACKENDS.
    fn allocate_backend(&mut self, vip_id: u32, addr: IpAddr) -> Result<u32> {
        let (id, generation) = self
            .ids
            .allocate()
            .ok_or_else(|| anyhow!("all {MAX_BACKENDS} backend slots are in use"))?;
        self.dp
            .set_backend(id, &Backend::new(addr, generation, vip_id))?;
        Ok(id)
    }

    /// Release a backend id; its flows stop matching at once.
    fn free_backend(&mut self, id: u32) -> Result<()> {
        let generation = self.ids.free(id);
        self.dp.set_backend(
            id,
            &Backend {
                generation,
                ..Backend::default()
            },
        )
    }

    /// A configured backend; optimistic start (as keepalived): a dead backend is found after
    /// `fall` checks, and a restarted agent does not disturb flows while its checks warm up.
    fn backend_rt(b: &BackendConfig, id: u32, initial: Health) -> BackendRt {
        BackendRt {
            cfg: b.clone(),
            id,
            admin: b.state,
            weight_override: None,
            health: initial,
            up_since: None,
            checks_ok: 0,
            checks_failed: 0,
            last_latency: None,
            last_change: "configured".to_string(),
            // Set by `sync_probes`, which also aligns the health with the probe's.
            probe: None,
        }
    }

    /// Apply a new configuration (read and parsed off this task, see `start_reload`) with the
    /// least disturbance; an error before any change (e.g. a restart-only key) keeps the
    /// running configuration whole.
    pub fn apply_config(&mut self, mut new: Config) -> Result<String> {
        let span = info_span!("reload", path = %self.config_path.display());
        let _enter = span.enter();
        if let Some(iface) = &self.interface_override {
            new.agent.interface = iface.clone();
        }
        let mut plan = reload::plan(&self.config, &new)?;
        plan.cleared_weights = reload::cleared_weights(&self.weight_overrides(), &new);
        if plan.agent_changed {
            self.write_lb_config(&new.agent)?;
        }
        if let (Some(speaker), Some(bgp)) = (&self.bgp, &new.bgp) {
            speaker.reconfigure(bgp.clone());
        }
        for change in &plan.vips {
            match change {
                VipChange::Remove(name) => self.remove_vip(name)?,
                VipChange::Add(cfg) => self.add_new_vip(cfg)?,
                VipChange::Replace(cfg) => {
                    self.remove_vip(&cfg.name)?;
                    self.add_new_vip(cfg)?;
                }
                VipChange::Update(update) => self.update_vip(update)?,
            }
        }
        self.config = new;
        self.sync_probes();
        self.clear_weight_overrides();
        let names: Vec<String> = self.vips.keys().cloned().collect();
        for name in names {
            self.publish(&name, None)?;
        }
        let summary = plan.summary();
        info!("{summary}");
        Ok(summary)
    }

    /// A VIP a reload added, under the lowest free id.
    fn add_new_vip(&mut self, cfg: &VipConfig) -> Result<()> {
        let used: BTreeSet<u32> = self.vips.values().map(|v| v.id).collect();
        let max = self.dp.options().max_vips;
        let id = ids::next_vip_id(&used, max).ok_or_else(|| too_many_vips(used.len() + 1, max))?;
        self.add_vip(cfg, id, &HashMap::new())
    }

    fn remove_vip(&mut self, name: &str) -> Result<()> {
        let Some(mut vip) = self.vips.remove(name) else {
            return Ok(());
        };
        for b in vip.backends.values_mut() {
            self.free_backend(b.id)?;
        }
        self.dp.remove_vip(&vip.key)?;
        self.shared.removed(name);
        info!(vip = %name, "VIP removed");
        Ok(())
    }

    /// Same VIP key: keep its id and tables; apply flags and the backend difference.
    fn update_vip(&mut self, update: &VipUpdate) -> Result<()> {
        let name = &update.cfg.name;
        let mut vip = self
            .vips
            .remove(name)
            .ok_or_else(|| anyhow!("VIP {name} vanished"))?;
        // Taken out of the map while it changes, and put back whatever happens.
        let result = self.update_backends(&mut vip, update);
        vip.cfg = update.cfg.clone();
        self.vips.insert(name.clone(), vip);
        self.shared.changed(name);
        result
    }

    fn update_backends(&mut self, vip: &mut VipRt, update: &VipUpdate) -> Result<()> {
        if update.flags_changed {
            let meta = self.dp.vip(&vip.key)?;
            let flags = reload::vip_flags(&update.cfg);
            self.dp.set_vip(&vip.key, &VipMeta { flags, ..meta })?;
        }
        for addr in &update.removed {
            if let Some(b) = vip.backends.remove(addr) {
                self.free_backend(b.id)?;
                info!(vip = %vip.cfg.name, backend = %addr, "backend removed");
            }
        }
        for b in &update.added {
            let id = self.allocate_backend(vip.id, b.address)?;
            let rt = Self::backend_rt(b, id, Health::Up);
            vip.backends.insert(b.address, rt);
            info!(vip = %vip.cfg.name, backend = %b.address, "backend added");
        }
        for kept in &update.kept {
            self.update_backend(vip, kept)?;
        }
        Ok(())
    }

    fn update_backend(&mut self, vip: &mut VipRt, kept: &KeptBackend) -> Result<()> {
        let addr = kept.cfg.address;
        let Some(b) = vip.backends.get_mut(&addr) else {
            return Ok(());
        };
        if let Some(state) = kept.admin {
            b.admin = state;
        }
        b.cfg = kept.cfg.clone();
        // A changed check is a new probe: `sync_probes` starts it from this backend's health.
        if kept.disables() {
            let id = b.id;
            self.new_generation(vip.id, id, addr)?;
        }
        Ok(())
    }
}

fn too_many_vips(count: usize, max: u32) -> anyhow::Error {
    anyhow!(
        "{count} VIPs do not fit in agent.max_vips = {max}: remove VIPs, or raise max_vips and \
         restart with a new agent.pin_path (the VIP maps are sized at creation)"
    )
}

/// The adopted backend ids the configuration `vips` (under VIP ids `ids`) keeps: those of a
/// backend it still lists under the VIP that owned it. Every other adopted id is free to reuse.
fn kept_backend_ids(
    adopted: &Adopted,
    vips: &[VipConfig],
    ids: &HashMap<VipKey, u32>,
) -> HashSet<u32> {
    let mut kept = HashSet::new();
    for vip in vips {
        let key = reload::vip_key(vip);
        let Some(&id) = ids.get(&key) else { continue };
        if adopted.vips.get(&key) != Some(&id) {
            continue;
        }
        kept.extend(
            vip.backends
                .iter()
                .filter_map(|b| adopted.backends.get(&(id, b.address))),
        );
    }
    kept
}

#[cfg(test)]
#[path = "tests/apply.rs"]
mod tests;
