//! What a reload changes: the difference between the running configuration and a new one, as a
//! plan of VIP and backend changes that `apply` carries out with the least disturbance, and
//! the runtime weight overrides it clears (every one: the file states the weights). Pure.

use crate::config::{self, AdminState, BackendConfig, Config, HashMode, VipConfig};
use anyhow::{bail, Result};
use lb_common::{VipKey, IPPROTO_TCP, IPPROTO_UDP, VIP_F_HASH_SRC_ONLY};
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

/// The changes a reload makes, in the order they are applied.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReloadPlan {
    /// `[agent]` settings changed that reload may apply (the data path's CONFIG is rewritten).
    pub agent_changed: bool,
    /// Every `[agent]` and `[bgp]` key that changed, as `agent.KEY` / `bgp.KEY`.
    pub settings: Vec<String>,
    pub vips: Vec<VipChange>,
    /// Weight overrides set at run time that this reload clears (`cleared_weights`).
    pub cleared_weights: Vec<ClearedWeight>,
}

/// A weight set at run time (`lb-agent backend weight`) that a reload cleared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClearedWeight {
    pub vip: String,
    pub backend: IpAddr,
    /// The override that was in force.
    pub weight: u32,
    /// The new file's weight for the backend; `None`: the reload removed it (or its VIP).
    pub now: Option<u32>,
}

impl fmt::Display for ClearedWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (vip, backend, weight) = (&self.vip, self.backend, self.weight);
        match self.now {
            Some(now) => write!(f, "{vip} {backend} {weight} -> {now}"),
            None => write!(f, "{vip} {backend} {weight} (backend removed)"),
        }
    }
}

/// Every override of `overrides` (VIP, backend, weight) is cleared by a reload to `new`: a
/// reload means "the weights are the file's", and an override kept through one would be a
/// weight no file says. Each comes with the weight the backend has from now on.
pub fn cleared_weights(overrides: &[(String, IpAddr, u32)], new: &Config) -> Vec<ClearedWeight> {
    overrides
        .iter()
        .map(|(vip, backend, weight)| ClearedWeight {
            vip: vip.clone(),
            backend: *backend,
            weight: *weight,
            now: new
                .vips
                .iter()
                .find(|v| v.name == *vip)
                .and_then(|v| v.backends.iter().find(|b| b.address == *backend))
                .map(|b| b.weight),
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq)]
pub enum VipChange {
    Remove(String),
    Add(VipConfig),
    /// Address, port or protocol changed: a new VIP under the old name.
    Replace(VipConfig),
    Update(VipUpdate),
}

/// Same VIP key: it keeps its id and tables.
#[derive(Clone, Debug, PartialEq)]
pub struct VipUpdate {
    pub cfg: VipConfig,
    pub flags_changed: bool,
    pub removed: Vec<IpAddr>,
    pub added: Vec<BackendConfig>,
    /// Backends in both whose settings changed, or whose checker must restart.
    pub kept: Vec<KeptBackend>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct KeptBackend {
    pub cfg: BackendConfig,
    /// The file's admin state changed to this (it replaces one set at run time).
    pub admin: Option<AdminState>,
    /// The check definition or the VIP's port changed: the checker restarts.
    pub restart_check: bool,
}

impl KeptBackend {
    /// The backend's flows must be re-selected at once.
    pub fn disables(&self) -> bool {
        self.admin == Some(AdminState::Disabled)
    }
}

impl ReloadPlan {
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        !self.agent_changed && self.vips.is_empty() && self.cleared_weights.is_empty()
    }

    /// One line for the log and the reply to `reload`.
    pub fn summary(&self) -> String {
        let vips = self.vips.iter().map(|c| match c {
            VipChange::Remove(name) => format!("removed VIP {name}"),
            VipChange::Add(cfg) => format!("added VIP {}", cfg.name),
            VipChange::Replace(cfg) => format!("replaced VIP {}", cfg.name),
            VipChange::Update(u) => format!("updated VIP {}", u.cfg.name),
        });
        let changes: Vec<String> = self.settings.iter().cloned().chain(vips).collect();
        let mut summary = match (changes.is_empty(), self.cleared_weights.is_empty()) {
            (true, true) => return "configuration reloaded: no change".to_string(),
            (true, false) => "configuration reloaded: no change in the file".to_string(),
            (false, _) => format!("configuration reloaded: {}", changes.join(", ")),
        };
        if !self.cleared_weights.is_empty() {
            let cleared: Vec<String> = self.cleared_weights.iter().map(|c| c.to_string()).collect();
            summary.push_str("; weight overrides cleared: ");
            summary.push_str(&cleared.join(", "));
        }
        summary
    }
}

/// The plan that turns `old` into `new`; an error when `new` changes what only a restart can.
pub fn plan(old: &Config, new: &Config) -> Result<ReloadPlan> {
    restart_only_fields_unchanged(old, new)?;
    let running: BTreeMap<&str, &VipConfig> =
        old.vips.iter().map(|v| (v.name.as_str(), v)).collect();
    let wanted: BTreeSet<&str> = new.vips.iter().map(|v| v.name.as_str()).collect();
    let mut vips: Vec<VipChange> = running
        .keys()
        .filter(|name| !wanted.contains(*name))
        .map(|name| VipChange::Remove(name.to_string()))
        .collect();
    for cfg in &new.vips {
        match running.get(cfg.name.as_str()) {
            None => vips.push(VipChange::Add(cfg.clone())),
            Some(before) if vip_key(before) != vip_key(cfg) => {
                vips.push(VipChange::Replace(cfg.clone()))
            }
            Some(before) if *before != cfg => vips.push(VipChange::Update(update(before, cfg))),
            Some(_) => {}
        }
    }
    let mut settings = changed_keys("agent", &old.agent, &new.agent);
    settings.extend(changed_keys("bgp", &old.bgp, &new.bgp));
    Ok(ReloadPlan {
        agent_changed: old.agent != new.agent,
        settings,
        vips,
        cleared_weights: Vec::new(),
    })
}

/// `SECTION.KEY` of every top-level key whose value differs between two serializations of a
/// section: the list follows the schema without naming its fields here.
fn changed_keys<T: serde::Serialize>(section: &str, old: &T, new: &T) -> Vec<String> {
    use serde_json::{Map, Value};
    let table = |v: &T| match serde_json::to_value(v) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let (old, new) = (table(old), table(new));
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| format!("{section}.{k}"))
        .collect()
}

fn update(old: &VipConfig, new: &VipConfig) -> VipUpdate {
    let checks_changed = old.health_check != new.health_check || old.port != new.port;
    let before: BTreeMap<IpAddr, &BackendConfig> =
        old.backends.iter().map(|b| (b.address, b)).collect();
    let after: BTreeSet<IpAddr> = new.backends.iter().map(|b| b.address).collect();
    let mut added = Vec::new();
    let mut kept = Vec::new();
    for b in &new.backends {
        match before.get(&b.address) {
            None => added.push(b.clone()),
            Some(was) if **was != *b || checks_changed => kept.push(KeptBackend {
                cfg: b.clone(),
                admin: (was.state != b.state).then_some(b.state),
                restart_check: checks_changed,
            }),
            Some(_) => {}
        }
    }
    VipUpdate {
        cfg: new.clone(),
        flags_changed: vip_flags(old) != vip_flags(new),
        removed: before
            .keys()
            .filter(|a| !after.contains(a))
            .copied()
            .collect(),
        added,
        kept,
    }
}

/// Settings that shape maps, sockets or devices cannot change without a restart.
pub fn restart_only_fields_unchanged(old_config: &Config, new_config: &Config) -> Result<()> {
    let (old, new) = (&old_config.agent, &new_config.agent);
    let mut changed = Vec::new();
    match (&old_config.bgp, &new_config.bgp) {
        (Some(a), Some(b)) if a.announce_interface != b.announce_interface => {
            changed.push("bgp.announce_interface")
        }
        (Some(_), None) | (None, Some(_)) => changed.push("the [bgp] section"),
        _ => {}
    }
    let fields = [
        (old.interface != new.interface, "agent.interface"),
        (old.xdp_mode != new.xdp_mode, "agent.xdp_mode"),
        (old.pin_path != new.pin_path, "agent.pin_path"),
        (old.admin_listen != new.admin_listen, "agent.admin_listen"),
        (
            old.control_socket != new.control_socket,
            "agent.control_socket",
        ),
        (
            old.control_listen != new.control_listen,
            "agent.control_listen",
        ),
        (
            old.control_token_file != new.control_token_file,
            "agent.control_token_file",
        ),
        (old.table_size != new.table_size, "agent.table_size"),
        (old.max_vips != new.max_vips, "agent.max_vips"),
        (
            old.conn_table_size != new.conn_table_size,
            "agent.conn_table_size",
        ),
        (old.gateway_mac != new.gateway_mac, "agent.gateway_mac"),
        (old.accept_macs != new.accept_macs, "agent.accept_macs"),
        (
            old.flow_hash_key_file != new.flow_hash_key_file,
            "agent.flow_hash_key_file",
        ),
    ];
    changed.extend(fields.iter().filter(|(c, _)| *c).map(|(_, name)| *name));
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

pub fn vip_flags(cfg: &VipConfig) -> u32 {
    match cfg.hash {
        HashMode::FiveTuple => 0,
        HashMode::SourceIp => VIP_F_HASH_SRC_ONLY,
    }
}

#[cfg(test)]
#[path = "tests/reload.rs"]
mod tests;
