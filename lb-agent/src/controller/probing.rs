//! Running the probes `probes` decides on: starting and stopping checker tasks, and fanning
//! each result out to every VIP the probe serves.

use super::{
    probes::{self, ProbeKey, Served},
    Controller,
};
use crate::{
    admin::ProbeStatus,
    config::CheckVia,
    health::{self, CheckReport, Health, ProbeId},
};
use anyhow::Result;
use std::{collections::BTreeSet, sync::Arc, time::Instant};
use tokio::task::JoinHandle;
use tracing::{debug, info, info_span};

/// A running probe.
pub(super) struct ProbeRt {
    pub(super) id: ProbeId,
    pub(super) vips: Served,
    /// Tunnel probes: the backend id its packets are marked with (`probes::mark_id`).
    mark: Option<u32>,
    /// As of its last transition (or its start).
    pub(super) health: Health,
    /// The checker task, stopped with the probe.
    task: JoinHandle<()>,
}

impl Drop for ProbeRt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Controller {
    /// Start, stop and re-share probes to match the configured VIPs; a backend takes the
    /// health of the probe it is now served by. Call after every change of VIPs or backends.
    pub(super) fn sync_probes(&mut self) {
        let wanted = probes::wanted(self.vips.values().map(|v| &v.cfg), &self.config.agent);
        let mut plan = probes::plan(&self.probes, wanted);
        self.restart_stale_marks(&mut plan);
        if !plan.is_quiet() {
            let span = info_span!("probes");
            let _enter = span.enter();
            info!(
                start = plan.start.len(),
                stop = plan.stop.len(),
                keep = plan.keep.len(),
                "health probes changed"
            );
        }
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for key in &plan.stop {
            if let Some(p) = self.probes.remove(key) {
                self.probe_keys.remove(&p.id);
                touched.extend(p.vips.iter().map(str::to_owned));
            }
        }
        for (key, vips) in plan.keep {
            if let Some(p) = self.probes.get_mut(&key) {
                if p.vips != vips {
                    touched.extend(p.vips.iter().map(str::to_owned));
                    touched.extend(vips.iter().map(str::to_owned));
                    p.vips = vips;
                }
            }
        }
        for (key, vips) in plan.start {
            touched.extend(vips.iter().map(str::to_owned));
            self.start_probe(key, vips);
        }
        self.align_health(&touched);
        for name in &touched {
            self.shared.changed(name);
        }
        self.shared_probes_changed();
    }

    /// A kept tunnel probe whose mark no longer names its backend in a VIP it serves (that
    /// VIP or backend is gone, and its id freed) is restarted with a valid one; it keeps its
    /// health through `start_probe`, which starts down when a served backend is down.
    fn restart_stale_marks(&self, plan: &mut probes::ProbePlan) {
        let id_of = |vip: &str, addr| Some(self.vips.get(vip)?.backends.get(&addr)?.id);
        let (stale, keep): (Vec<_>, Vec<_>) =
            std::mem::take(&mut plan.keep)
                .into_iter()
                .partition(|(key, served)| {
                    let mark = self.probes.get(key).and_then(|p| p.mark);
                    mark.is_some_and(|m| !probes::mark_still_valid(m, key.backend, served, id_of))
                });
        plan.keep = keep;
        for (key, served) in stale {
            plan.stop.push(key.clone());
            plan.start.push((key, served));
        }
    }

    /// Spawns the checker of `key`; it starts down when any backend it now serves is down (a
    /// replaced check must rise to bring a down backend back), else up.
    fn start_probe(&mut self, key: ProbeKey, vips: Served) {
        let down = vips.iter().any(|name| {
            self.vips
                .get(name)
                .and_then(|v| v.backends.get(&key.backend))
                .is_some_and(|b| b.health == Health::Down)
        });
        let initial = if down { Health::Down } else { Health::Up };
        let mark = match key.spec.route {
            health::Route::Direct => None,
            health::Route::Tunnel(_) => {
                let id_of = |vip: &str, addr| Some(self.vips.get(vip)?.backends.get(&addr)?.id);
                let Some(id) = probes::mark_id(key.backend, &vips, id_of) else {
                    // Cannot happen: `wanted` lists only VIPs that have the backend.
                    return;
                };
                Some(id)
            }
        };
        let spec = probes::with_mark(&key.spec, mark.unwrap_or(probes::KEY_ID));
        self.next_probe += 1;
        let id = self.next_probe;
        debug!(probe = id, backend = %key.backend, target = %key.spec.target, vips = vips.len(), "probe started");
        let task = health::spawn_checker(id, key.backend, spec, initial, self.reports.clone());
        // One copy of the key for both maps (10,000 of them at scale).
        let key = Arc::new(key);
        self.probe_keys.insert(id, key.clone());
        self.probes.insert(
            key,
            ProbeRt {
                id,
                vips,
                mark,
                health: initial,
                task,
            },
        );
    }

    /// Every backend of the `touched` VIPs takes its probe (id) and the probe's health.
    fn align_health(&mut self, touched: &BTreeSet<String>) {
        for p in self.probes.values() {
            for name in p.vips.iter().filter(|n| touched.contains(*n)) {
                let backend = self
                    .probe_keys
                    .get(&p.id)
                    .map(|k| k.backend)
                    .and_then(|addr| self.vips.get_mut(name)?.backends.get_mut(&addr));
                if let Some(b) = backend {
                    b.probe = Some(p.id);
                    if b.health != p.health {
                        b.health = p.health;
                        b.last_change = format!("{:?}: shared check", p.health).to_lowercase();
                    }
                }
            }
        }
    }

    /// A finished check: applied to the backend in every VIP its probe serves.
    pub fn on_check(&mut self, report: CheckReport) -> Result<()> {
        let Some(key) = self.probe_keys.get(&report.probe) else {
            // A stopped probe, reporting once more.
            return Ok(());
        };
        let Some(p) = self.probes.get_mut(key) else {
            return Ok(());
        };
        if let Some(t) = report.transition {
            p.health = t;
        }
        // A clone of the list, not of the names (shared).
        let vips = p.vips.clone();
        for vip in vips.iter() {
            self.on_check_of(vip, &report)?;
        }
        Ok(())
    }

    /// A check result applied to `report.backend` in `vip` alone, whatever probe it names:
    /// for tests that drive a backend's health without probes (`kind = "none"` VIPs).
    #[doc(hidden)]
    pub fn on_check_in(&mut self, vip: &str, report: &CheckReport) -> Result<()> {
        self.on_check_of(vip, report)
    }

    fn on_check_of(&mut self, vip: &str, report: &CheckReport) -> Result<()> {
        let Some(b) = self
            .vips
            .get_mut(vip)
            .and_then(|v| v.backends.get_mut(&report.backend))
        else {
            return Ok(());
        };
        if report.ok {
            b.checks_ok += 1;
        } else {
            b.checks_failed += 1;
        }
        b.last_latency = Some(report.latency);
        let Some(transition) = report.transition else {
            self.shared.touch(vip);
            return Ok(());
        };
        b.health = transition;
        b.last_change = match transition {
            Health::Up => "up: checks passing".to_string(),
            Health::Down => format!("down: {}", report.detail),
        };
        if transition == Health::Up {
            b.up_since = (self.config.agent.slow_start_ms > 0).then_some(Instant::now());
        }
        info!(
            vip = %vip,
            backend = %report.backend,
            probe = report.probe,
            state = ?transition,
            reason = %report.detail,
            "backend health changed"
        );
        if transition == Health::Down {
            self.invalidate_flows(vip, report.backend)?;
        }
        self.shared.changed(vip);
        self.publish(vip, Some(report.finished_at))
    }

    /// How many VIPs probe `id` serves (0 for a stopped one).
    pub(super) fn probe_vips(&self, id: ProbeId) -> usize {
        self.probe_keys
            .get(&id)
            .and_then(|k| self.probes.get(k))
            .map_or(0, |p| p.vips.len())
    }

    /// The probe list of the status report, by id.
    fn shared_probes_changed(&mut self) {
        let mut list: Vec<ProbeStatus> = self
            .probes
            .iter()
            .map(|(key, p)| ProbeStatus {
                id: p.id,
                backend: key.backend,
                target: key.spec.target,
                via: match key.spec.route {
                    health::Route::Direct => CheckVia::Direct,
                    health::Route::Tunnel(_) => CheckVia::Tunnel,
                },
                kind: key.spec.check.kind,
                vip_count: p.vips.len(),
                vips: p.vips.iter().map(str::to_owned).collect(),
            })
            .collect();
        list.sort_by_key(|p| p.id);
        self.shared.set_probes(list);
    }

    /// Stop every health checker (the data plane is left as it is).
    pub fn stop_checkers(&mut self) {
        self.probes.clear();
        self.probe_keys.clear();
    }
}
