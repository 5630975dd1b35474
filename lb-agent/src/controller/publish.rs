//! Publishing a VIP's table: `policy` decides the members, Maglev builds the table, `moves`
//! keeps established flows where the table moved them, and the data plane flips to it.

use super::{
    policy::{self, Candidate, Member},
    Controller,
};
use crate::maglev::{build_table, moves, MaglevBackend};
use anyhow::Result;
use lb_common::{Slot, NO_BACKEND};
use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};
use tracing::{info, info_span, warn};

impl Controller {
    /// Recompute the VIP's table; publish it if it changed. `decided_at`: when the check
    /// result that caused this finished, to log the failover time.
    pub(super) fn publish(&mut self, name: &str, decided_at: Option<Instant>) -> Result<()> {
        let slow_start = Duration::from_millis(self.config.agent.slow_start_ms);
        let table_size = self.dp.options().table_size;
        let Some(vip) = self.vips.get_mut(name) else {
            return Ok(());
        };
        let now = Instant::now();
        let candidates: Vec<Candidate> = vip
            .backends
            .values()
            .map(|b| Candidate {
                id: b.id,
                address: b.cfg.address,
                weight: b.cfg.weight,
                weight_override: b.weight_override,
                admin: b.admin,
                health: b.health,
                up_for: b.up_since.map(|at| now - at),
            })
            .collect();
        let plan = policy::plan(
            &candidates,
            vip.cfg.all_down,
            slow_start,
            vip.fail_open_live,
        );
        let wanted = plan.weights();
        let previous_kept = vip.previous.iter().all(|p| plan.keep.contains(p));
        if wanted == vip.published && vip.table_generation > 0 && previous_kept {
            return Ok(());
        }
        let span = info_span!("publish", vip = %name);
        let _enter = span.enter();
        let table = build_table(&maglev_input(&plan.members), table_size)?;
        let live = if vip.has_live_table {
            Some(self.dp.live_table(&self.dp.vip(&vip.key)?)?)
        } else {
            None
        };
        let slots = moves::next_slots(live.as_deref(), &table, |id| plan.keep.contains(&id));
        self.dp.publish_table(&vip.key, &slots)?;
        note_moves(&mut vip.moved_since, &slots, now);
        vip.fail_open_live = plan.fail_open;
        vip.has_live_table = true;
        vip.published = wanted;
        vip.previous = slots.iter().filter_map(|s| s.previous()).collect();
        vip.table_generation += 1;
        vip.serving = plan.serving();
        vip.slots = slot_counts(&table);
        vip.digest = digest(&table, &plan.members);
        let failover_us = decided_at.map(|at| at.elapsed().as_micros() as u64);
        info!(
            generation = vip.table_generation,
            backends = plan.members.len(),
            moved_slots = vip.moved_since.len(),
            failover_us,
            "table published"
        );
        if !vip.serving {
            warn!(
                "no backend can serve (down, drained or disabled): packets to this VIP are dropped"
            );
        }
        self.shared.changed(name);
        Ok(())
    }
}

fn maglev_input(members: &[Member]) -> Vec<MaglevBackend> {
    members
        .iter()
        .map(|m| MaglevBackend {
            name: m.address.to_string(),
            id: m.id,
            weight: m.weight,
        })
        .collect()
}

/// Slots each backend id holds.
fn slot_counts(table: &[u32]) -> HashMap<u32, u32> {
    let mut slots = HashMap::new();
    for id in table {
        *slots.entry(*id).or_insert(0) += 1;
    }
    slots
}

/// Record when each moved slot of `slots` first moved; forget slots that are stable.
fn note_moves(moved_since: &mut HashMap<u32, Instant>, slots: &[Slot], now: Instant) {
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
fn digest(table: &[u32], members: &[Member]) -> String {
    let names: HashMap<u32, IpAddr> = members.iter().map(|m| (m.id, m.address)).collect();
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

#[cfg(test)]
#[path = "tests/publish.rs"]
mod tests;
