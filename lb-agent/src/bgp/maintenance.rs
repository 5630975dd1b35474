//! Maintenance mode as a pure state machine: `on` announces with the graceful-shutdown
//! community for the drain time, then withdraws; `off` announces normally again. The speaker's
//! handle records the operator's wish with its time; the handle (for status) and the speaker
//! task (for BIRD) advance a copy to the present, so both see the same phase.

use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeSet,
    fmt,
    net::IpAddr,
    time::{Duration, Instant},
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Not in maintenance: the VIPs that can serve are announced as usual.
    #[default]
    Normal,
    /// Maintenance: still announced, with the graceful-shutdown community, until the drain ends.
    Draining,
    /// Maintenance, drained: nothing announced.
    Withdrawn,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Normal, Phase::Draining, Phase::Withdrawn];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Normal => "normal",
            Phase::Draining => "draining",
            Phase::Withdrawn => "withdrawn",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What status shows of maintenance mode.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MaintenanceStatus {
    /// the operator's setting (`lb-agent maintenance on|off`)
    pub on: bool,
    pub phase: Phase,
    /// while draining: time left until the routes are withdrawn
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_left_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Maintenance {
    phase: Phase,
    /// End of the drain, while draining.
    until: Option<Instant>,
}

/// What BIRD should announce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    pub prefixes: BTreeSet<IpAddr>,
    pub graceful_shutdown: bool,
}

impl Maintenance {
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// When the drain ends, while draining.
    pub fn deadline(&self) -> Option<Instant> {
        self.until
    }

    /// The operator's wish `on` at `now`; a new drain lasts `drain`. Repeating the current
    /// wish changes nothing (a second `on` does not restart the drain). Returns whether the
    /// phase changed.
    pub fn set(&mut self, on: bool, now: Instant, drain: Duration) -> bool {
        let before = self.phase;
        match (on, self.phase) {
            (false, _) => *self = Self::default(),
            (true, Phase::Normal) if drain.is_zero() => self.phase = Phase::Withdrawn,
            (true, Phase::Normal) => {
                self.phase = Phase::Draining;
                self.until = Some(now + drain);
            }
            (true, Phase::Draining | Phase::Withdrawn) => {}
        }
        // The drain may already be over (a late wake-up).
        self.tick(now);
        self.phase != before
    }

    /// Time passes: the drain ends at its deadline. Returns whether the phase changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        match self.until {
            Some(until) if self.phase == Phase::Draining && now >= until => {
                self.phase = Phase::Withdrawn;
                self.until = None;
                true
            }
            _ => false,
        }
    }

    /// What to announce of `wanted` (the VIP addresses that can serve) in this phase.
    pub fn announcement(&self, wanted: &BTreeSet<IpAddr>) -> Announcement {
        match self.phase {
            Phase::Normal => Announcement {
                prefixes: wanted.clone(),
                graceful_shutdown: false,
            },
            Phase::Draining => Announcement {
                prefixes: wanted.clone(),
                graceful_shutdown: true,
            },
            Phase::Withdrawn => Announcement {
                prefixes: BTreeSet::new(),
                graceful_shutdown: false,
            },
        }
    }

    pub fn status(&self, now: Instant) -> MaintenanceStatus {
        MaintenanceStatus {
            on: self.phase != Phase::Normal,
            phase: self.phase,
            drain_left_ms: self
                .until
                .map(|u| u.saturating_duration_since(now).as_millis() as u64),
        }
    }
}

#[cfg(test)]
mod tests;
