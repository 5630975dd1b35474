//! What `lb-agent top` shows: rates between two status reports. Pure.

use crate::{
    admin::{BackendHealth, StatusReport},
    config::AdminState,
};
use serde::Serialize;
use std::{collections::HashMap, net::IpAddr};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TopView {
    pub interface: String,
    pub xdp_mode: String,
    pub uptime_secs: u64,
    /// Seconds between the two reports the rates come from.
    pub interval_secs: f64,
    pub vips: Vec<VipRates>,
    /// Drop counters (`drop_*`) that moved, busiest first.
    pub drops: Vec<DropRate>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VipRates {
    pub name: String,
    pub endpoint: String,
    pub serving: bool,
    pub packets_per_sec: f64,
    pub bytes_per_sec: f64,
    pub backends: Vec<BackendRates>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BackendRates {
    pub address: IpAddr,
    pub health: BackendHealth,
    pub admin_state: AdminState,
    /// The weight in force: a runtime override (`lb-agent backend weight`), else the file's.
    pub weight: u32,
    pub effective_weight: u32,
    /// Slow start: percent of its weight a ramping backend has reached; None when not ramping.
    pub slow_start_percent: Option<u32>,
    pub slots: u32,
    pub packets_per_sec: f64,
    pub bytes_per_sec: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DropRate {
    pub reason: String,
    pub per_sec: f64,
    pub total: u64,
}

/// Per-second rate of a counter; a counter that went back (maps recreated) counts as 0.
fn rate(before: u64, now: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    now.saturating_sub(before) as f64 / secs
}

/// The view of `now`, with rates against `before` taken `secs` earlier. VIPs and backends
/// new since `before` show their whole count over the interval's length as a rate of 0.
pub fn view(before: &StatusReport, now: &StatusReport, secs: f64) -> TopView {
    let old_vips: HashMap<&str, _> = before.vips.iter().map(|v| (v.name.as_str(), v)).collect();
    let vips = now
        .vips
        .iter()
        .map(|v| {
            let old = old_vips.get(v.name.as_str());
            let old_backends: HashMap<IpAddr, (u64, u64)> = old
                .map(|o| {
                    o.backends
                        .iter()
                        .map(|b| (b.address, (b.packets, b.bytes)))
                        .collect()
                })
                .unwrap_or_default();
            let (p0, b0) = old.map_or((v.packets, v.bytes), |o| (o.packets, o.bytes));
            VipRates {
                name: v.name.clone(),
                endpoint: endpoint(v.address, v.port, &format!("{:?}", v.protocol)),
                serving: v.serving,
                packets_per_sec: rate(p0, v.packets, secs),
                bytes_per_sec: rate(b0, v.bytes, secs),
                backends: v
                    .backends
                    .iter()
                    .map(|b| {
                        let (p0, b0) = old_backends
                            .get(&b.address)
                            .copied()
                            .unwrap_or((b.packets, b.bytes));
                        BackendRates {
                            address: b.address,
                            health: b.health,
                            admin_state: b.admin_state,
                            weight: b.weight_in_force(),
                            effective_weight: b.effective_weight,
                            slow_start_percent: ramp(
                                b.weight_in_force(),
                                b.effective_weight,
                                b.health,
                                b.admin_state,
                            ),
                            slots: b.slots,
                            packets_per_sec: rate(p0, b.packets, secs),
                            bytes_per_sec: rate(b0, b.bytes, secs),
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    TopView {
        interface: now.interface.clone(),
        xdp_mode: now.xdp_mode.clone(),
        uptime_secs: now.uptime_secs,
        interval_secs: secs,
        vips,
        drops: drops(before, now, secs),
    }
}

/// A ramping backend: active, up, published below its weight (all-down fail-open publishes
/// at full weight, drained and disabled ones at 0, so this is slow start).
fn ramp(weight: u32, effective: u32, health: BackendHealth, admin: AdminState) -> Option<u32> {
    let up = matches!(health, BackendHealth::Up | BackendHealth::Unchecked);
    (admin == AdminState::Active && up && effective > 0 && effective < weight)
        .then(|| ((u64::from(effective) * 100) / u64::from(weight.max(1))) as u32)
}

fn endpoint(addr: IpAddr, port: u16, proto: &str) -> String {
    let proto = proto.to_lowercase();
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}/{proto}"),
        IpAddr::V6(a) => format!("[{a}]:{port}/{proto}"),
    }
}

fn drops(before: &StatusReport, now: &StatusReport, secs: f64) -> Vec<DropRate> {
    let mut drops: Vec<DropRate> = now
        .counters
        .iter()
        .filter(|(name, _)| name.starts_with("drop_"))
        .map(|(name, total)| DropRate {
            reason: name.clone(),
            per_sec: rate(
                before.counters.get(name).copied().unwrap_or(*total),
                *total,
                secs,
            ),
            total: *total,
        })
        .filter(|d| d.per_sec > 0.0)
        .collect();
    drops.sort_by(|a, b| {
        b.per_sec
            .total_cmp(&a.per_sec)
            .then(a.reason.cmp(&b.reason))
    });
    drops
}
