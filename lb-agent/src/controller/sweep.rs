//! Connection-table sweeps: started by the controller, run on a blocking thread (seconds of
//! syscalls at a million entries), applied back on the controller: moved slots that no live
//! flow needs any more become stable.

use super::Controller;
use crate::{
    dataplane::{Sweep, Sweeper},
    maglev::moves,
};
use anyhow::{anyhow, Context, Result};
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};
use tracing::{info, info_span};

/// The connection table as the last sweep found it (status and metrics).
#[derive(Clone, Copy, Debug, Default)]
pub struct SweepSummary {
    pub live: u64,
    pub removed: u64,
    pub took: Duration,
}

/// A sweep of the connection table, to run off the controller's task (`SweepJob::run`).
pub struct SweepJob {
    sweeper: Sweeper,
    idle: Duration,
    /// The data path's flow hash key: the sweep computes each entry's slot with it.
    key: lb_common::hash::FlowHashKey,
    started: Instant,
    /// Table generation of each VIP when the sweep began: a VIP republished since is left for
    /// the next sweep, whose view of the entries is newer than that publication.
    generations: HashMap<String, u64>,
}

pub struct SweepDone {
    job: SweepJob,
    result: Result<Sweep>,
}

impl SweepJob {
    pub fn run(mut self) -> SweepDone {
        let result = self.sweeper.sweep(self.idle, &self.key);
        SweepDone { job: self, result }
    }
}

/// Sweeps run four times per idle timeout, within these bounds.
const SWEEP_EVERY_MIN: Duration = Duration::from_millis(250);
const SWEEP_EVERY_MAX: Duration = Duration::from_secs(30);

/// How often to sweep for a flow idle timeout.
fn sweep_every(idle: Duration) -> Duration {
    (idle / 4).clamp(SWEEP_EVERY_MIN, SWEEP_EVERY_MAX)
}

impl Controller {
    fn flow_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.config.agent.flow_idle_timeout_ms)
    }

    /// A sweep to run now, if a VIP has moved slots and the last sweep is old enough.
    pub fn sweep_due(&mut self) -> Option<SweepJob> {
        let every = sweep_every(self.flow_idle_timeout());
        if self.vips.values().all(|v| v.moved_since.is_empty())
            || self.last_sweep.is_some_and(|at| at.elapsed() < every)
        {
            return None;
        }
        self.start_sweep()
    }

    fn start_sweep(&mut self) -> Option<SweepJob> {
        let sweeper = self.sweeper.take()?;
        let started = Instant::now();
        self.last_sweep = Some(started);
        Some(SweepJob {
            sweeper,
            idle: self.flow_idle_timeout(),
            key: self.flow_hash_key,
            started,
            generations: self
                .vips
                .iter()
                .map(|(name, v)| (name.clone(), v.table_generation))
                .collect(),
        })
    }

    /// Apply a finished sweep: moved slots that no live flow needs any more become stable.
    pub fn on_swept(&mut self, done: SweepDone) -> Result<()> {
        let SweepDone { job, result } = done;
        self.sweeper = Some(job.sweeper);
        let sweep = result.context("sweeping the connection table")?;
        self.sweep_summary = Some(SweepSummary {
            live: sweep.live,
            removed: sweep.expired + sweep.stale,
            took: sweep.took,
        });
        self.shared.sweep_changed();
        // Flows idle since before this are gone; a move older than it holds no silent flow.
        let Some(cutoff) = job.started.checked_sub(job.idle) else {
            return Ok(());
        };
        for (name, generation) in job.generations {
            self.settle(&name, generation, &sweep, cutoff)?;
        }
        Ok(())
    }

    /// Return the VIP's settled moved slots to stable, unless it was republished since the
    /// sweep began (`generation`).
    fn settle(
        &mut self,
        name: &str,
        generation: u64,
        sweep: &Sweep,
        cutoff: Instant,
    ) -> Result<()> {
        let Some(vip) = self.vips.get_mut(name) else {
            return Ok(());
        };
        if vip.table_generation != generation || vip.moved_since.is_empty() {
            return Ok(());
        }
        let live = self.dp.live_table(&self.dp.vip(&vip.key)?)?;
        let settled = moves::settled(&live, &vip.moved_since, sweep.claims.get(&vip.id), cutoff);
        if settled.is_empty() {
            return Ok(());
        }
        let span = info_span!("settle", vip = %name);
        let _enter = span.enter();
        self.dp
            .publish_table(&vip.key, &moves::stabilize(&live, &settled))?;
        for slot in &settled {
            vip.moved_since.remove(slot);
        }
        info!(
            settled = settled.len(),
            still_moved = vip.moved_since.len(),
            live_entries = sweep.live,
            "moved slots back to stable"
        );
        self.shared.changed(name);
        Ok(())
    }

    /// Sweep on this thread and apply the result at once.
    pub fn sweep_now(&mut self) -> Result<()> {
        let job = self
            .start_sweep()
            .ok_or_else(|| anyhow!("a sweep is already running"))?;
        self.on_swept(job.run())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_four_times_per_idle_timeout_within_bounds() {
        assert_eq!(
            sweep_every(Duration::from_secs(60)),
            Duration::from_secs(15)
        );
        assert_eq!(sweep_every(Duration::from_millis(100)), SWEEP_EVERY_MIN);
        assert_eq!(sweep_every(Duration::from_secs(3600)), SWEEP_EVERY_MAX);
    }
}
