//! Kernel run-time statistics of an attached XDP program (BPF_ENABLE_STATS): total time spent
//! in the program and how many times it ran. They cover the program's own instructions only:
//! not the driver's receive work before it, nor the transmit after XDP_TX.

use anyhow::{Context, Result};
use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        loaded_programs,
    },
    sys::{enable_stats, Stats},
};
use std::{os::fd::OwnedFd, path::Path, time::Duration};

/// Run time and run count of one program, read while statistics are on.
pub struct ProgStats {
    id: u32,
    // Statistics stay on while this fd is open.
    _enabled: OwnedFd,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ProgSample {
    pub run_time: Duration,
    pub run_count: u64,
}

impl ProgSample {
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            run_time: self.run_time.saturating_sub(earlier.run_time),
            run_count: self.run_count.saturating_sub(earlier.run_count),
        }
    }
}

impl ProgStats {
    /// The program behind the XDP link pinned at `pin` (the agent pins its link).
    pub fn for_pinned_link(pin: &Path) -> Result<Self> {
        let enabled = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")?;
        let link = FdLink::from(
            PinnedLink::from_pin(pin)
                .with_context(|| format!("opening the pinned link {}", pin.display()))?,
        );
        let id = link.info().context("reading link info")?.program_id();
        Ok(Self {
            id,
            _enabled: enabled,
        })
    }

    pub fn sample(&self) -> Result<ProgSample> {
        for info in loaded_programs() {
            let info = info.context("listing BPF programs")?;
            if info.id() == self.id {
                return Ok(ProgSample {
                    run_time: info.run_time(),
                    run_count: info.run_count(),
                });
            }
        }
        anyhow::bail!("program {} is gone", self.id)
    }
}
