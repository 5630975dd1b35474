//! Runtime weights: `lb-agent backend weight VIP ADDR N` sets a backend's weight until the
//! next reload of the file. The change goes through `publish` like a drain or a health change
//! (Maglev rebuild, moved slots keep established flows where they are). Any successful reload
//! clears every override, the reload's summary lists them (`reload::cleared_weights`): the
//! file is where weights are kept, and a reload is the operator saying "the file, as it is".

use super::Controller;
use crate::{
    config::{AdminState, Weight},
    health::Health,
};
use anyhow::Result;
use std::net::IpAddr;
use tracing::info;

impl Controller {
    /// Set backend `addr` of VIP `vip` to `weight` until the next reload; a weight equal to the
    /// file's removes the override. The answer says what is in force now.
    pub(super) fn set_weight(&mut self, vip: &str, addr: IpAddr, weight: Weight) -> Result<String> {
        let b = self.backend_mut(vip, addr)?;
        let file = b.cfg.weight;
        let wanted = override_for(file, weight);
        let answer = answer(vip, addr, file, wanted, b.admin, b.health);
        if b.weight_override == wanted {
            return Ok(answer);
        }
        let before = b.weight_override;
        b.weight_override = wanted;
        b.last_change = match wanted {
            Some(w) => format!("weight: {w} (override, config {file})"),
            None => format!("weight: {file} (config, override cleared)"),
        };
        info!(
            vip,
            backend = %addr,
            from = before.unwrap_or(file),
            to = weight.get(),
            config = file,
            "backend weight changed until the next reload"
        );
        self.shared.changed(vip);
        self.publish(vip, None)?;
        Ok(answer)
    }

    /// Every override in force: (VIP, backend, weight).
    pub(super) fn weight_overrides(&self) -> Vec<(String, IpAddr, u32)> {
        self.vips
            .iter()
            .flat_map(|(name, v)| {
                v.backends
                    .iter()
                    .filter_map(|(addr, b)| Some((name.clone(), *addr, b.weight_override?)))
            })
            .collect()
    }

    /// A reload was applied: every backend has the file's weight again. The caller publishes.
    pub(super) fn clear_weight_overrides(&mut self) {
        for (name, v) in &mut self.vips {
            let mut changed = false;
            for b in v.backends.values_mut() {
                if let Some(w) = b.weight_override.take() {
                    b.last_change = format!(
                        "reload: weight override {w} cleared, weight {}",
                        b.cfg.weight
                    );
                    changed = true;
                }
            }
            if changed {
                self.shared.changed(name);
            }
        }
    }
}

/// The override that makes a backend whose file says `file` have `wanted`: none when they are
/// equal (setting the file's weight is how an override is removed without a reload).
pub(super) fn override_for(file: u32, wanted: Weight) -> Option<u32> {
    (wanted.get() != file).then_some(wanted.get())
}

/// The operator's confirmation: the weight in force and where it comes from, and why the table
/// does not show it yet when the backend takes no new flows.
pub(super) fn answer(
    vip: &str,
    addr: IpAddr,
    file: u32,
    weight_override: Option<u32>,
    admin: AdminState,
    health: Health,
) -> String {
    let weight = match weight_override {
        Some(w) => format!("weight {w} (override, config {file}) until the next reload"),
        None => format!("weight {file} (config, no override)"),
    };
    let waiting = match (admin, health) {
        (AdminState::Drain, _) => "; it is drained: the weight applies once it is undrained",
        (AdminState::Disabled, _) => "; it is disabled: the weight applies once it is enabled",
        (AdminState::Active, Health::Down) => {
            "; it is down: the weight applies once its checks pass"
        }
        (AdminState::Active, Health::Up) => "",
    };
    format!("backend {addr} of VIP {vip}: {weight}{waiting}")
}

#[cfg(test)]
#[path = "tests/weights.rs"]
mod tests;
