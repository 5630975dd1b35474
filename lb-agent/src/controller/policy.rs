//! Table policy: which backends a VIP's Maglev table holds and with what weight, from their
//! health, admin state, weight override, slow-start clock and the VIP's all-down policy. Pure: the controller
//! gathers the facts, this decides, `publish` writes the result.

use crate::{
    config::{AdminState, AllDown},
    health::{slow_start_weight, Health},
};
use std::{collections::HashSet, net::IpAddr, time::Duration};

/// What the policy needs to know of one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: u32,
    pub address: IpAddr,
    /// The configured weight (1..=10000).
    pub weight: u32,
    /// A weight set at run time (`lb-agent backend weight`), in force instead of `weight`
    /// until the next reload.
    pub weight_override: Option<u32>,
    pub admin: AdminState,
    pub health: Health,
    /// How long ago the backend came up while slow start still ramps it; None: at full weight.
    pub up_for: Option<Duration>,
}

/// One backend of a table, with the weight it is published with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u32,
    pub weight: u32,
    pub address: IpAddr,
}

impl Candidate {
    /// The full weight the backend should have: the runtime override, else the file's.
    pub fn weight_in_force(&self) -> u32 {
        self.weight_override.unwrap_or(self.weight)
    }
}

/// The table a VIP should have now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TablePlan {
    pub members: Vec<Member>,
    /// Every backend is down and `all_down = "fail-open"` put the active ones back.
    pub fail_open: bool,
    /// Backends whose established flows stay with them across this table change (see
    /// `maglev::moves::next_slots`).
    pub keep: HashSet<u32>,
}

impl TablePlan {
    /// The table forwards: it has at least one backend.
    pub fn serving(&self) -> bool {
        !self.members.is_empty()
    }

    /// (id, weight) of each member: equal plans publish equal tables.
    pub fn weights(&self) -> Vec<(u32, u32)> {
        self.members.iter().map(|m| (m.id, m.weight)).collect()
    }
}

/// The weight a backend gets in a newly built table: its weight in force (an override set at
/// run time, else the configured one), ramped while slow start runs; 0 unless it is active and
/// up, whatever its override.
pub fn weight(c: &Candidate, slow_start: Duration) -> u32 {
    match (c.admin, c.health) {
        (AdminState::Active, Health::Up) => match c.up_for {
            Some(elapsed) => slow_start_weight(c.weight_in_force(), elapsed, slow_start),
            None => c.weight_in_force(),
        },
        _ => 0,
    }
}

/// Decide a VIP's table. `fail_open_live`: the live table is a fail-open one.
pub fn plan(
    candidates: &[Candidate],
    all_down: AllDown,
    slow_start: Duration,
    fail_open_live: bool,
) -> TablePlan {
    let mut members: Vec<Member> = candidates
        .iter()
        .filter_map(|c| {
            let weight = weight(c, slow_start);
            (weight > 0).then_some(Member {
                id: c.id,
                weight,
                address: c.address,
            })
        })
        .collect();
    let fail_open = members.is_empty() && all_down == AllDown::FailOpen;
    if fail_open {
        // Every backend is down: a checker outage must not take the service down.
        members = candidates
            .iter()
            .filter(|c| c.admin == AdminState::Active)
            .map(|c| Member {
                id: c.id,
                weight: c.weight_in_force(),
                address: c.address,
            })
            .collect();
    }
    // Established flows stay on a backend that is up, even one drained to weight 0, and on one
    // a fail-open table was serving: when a balancer that saw every backend down (its own
    // outage, most likely) recovers one backend at a time, the slots must remember the full
    // table its flows, and those of its peers, were using.
    let keep = candidates
        .iter()
        .filter(|c| {
            c.admin != AdminState::Disabled
                && (c.health == Health::Up || (fail_open_live && c.admin == AdminState::Active))
        })
        .map(|c| c.id)
        .collect();
    TablePlan {
        members,
        fail_open,
        keep,
    }
}

#[cfg(test)]
#[path = "tests/policy.rs"]
mod tests;
