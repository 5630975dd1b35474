//! Publishing a VIP's table: `policy` decides the members, Maglev builds the table, `moves`
//! keeps established flows where the table moved them, and the data plane flips to it.

use super::{
    policy::{self, Candidate, Member},
    Controller,
};
use crate::maglev::{
    layout::{Layout, PoolMember},
    moves,
};
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
        let layout = self.layouts.get(&pool(&plan.members), table_size)?;
        let ids: HashMap<IpAddr, u32> = plan.members.iter().map(|m| (m.address, m.id)).collect();
        let table = layout.table(|m| id_of(&ids, m));
        let live = if vip.has_live_table {
            Some(self.dp.live_table(&self.dp.vip(&vip.key)?)?)
        } else {
            None
        };
        let slots = moves::next_slots(live.as_deref(), &table, |id| plan.keep.contains(&id));
        self.dp.publish_table(&vip.key, &slots)?;
        // The table is live from here: what follows is bookkeeping.
        let failover_us = decided_at.map(|at| at.elapsed().as_micros() as u64);
        note_moves(&mut vip.moved_since, &slots, now);
        vip.fail_open_live = plan.fail_open;
        vip.has_live_table = true;
        vip.published = wanted;
        vip.previous = slots.iter().filter_map(|s| s.previous()).collect();
        vip.table_generation += 1;
        vip.serving = plan.serving();
        vip.slots = slot_counts(&layout, &ids);
        vip.digest = layout.digest().to_string();
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

fn pool(members: &[Member]) -> Vec<PoolMember> {
    members
        .iter()
        .map(|m| PoolMember {
            address: m.address,
            weight: m.weight,
        })
        .collect()
}

/// The id of the plan's member at `m`'s address (a layout's members are the plan's).
fn id_of(ids: &HashMap<IpAddr, u32>, m: &PoolMember) -> u32 {
    ids.get(&m.address).copied().unwrap_or(NO_BACKEND)
}

/// Slots each backend id holds.
fn slot_counts(layout: &Layout, ids: &HashMap<IpAddr, u32>) -> HashMap<u32, u32> {
    layout.slots().map(|(m, n)| (id_of(ids, m), n)).collect()
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
