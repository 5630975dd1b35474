//! The connection-table sweep: removes entries idle longer than the idle timeout (and entries
//! no backend or VIP answers to any more), and reports which backends the remaining live entries
//! name in each moved slot, so the controller can return slots to stable
//! (`maglev::moves`). It reads the maps through its own descriptors and runs on a blocking
//! thread: a table of a million entries takes seconds of syscalls, which must not delay a
//! failover.

use crate::maglev::moves::Claim;
use anyhow::{Context, Result};
use aya::maps::{Array, HashMap, MapData, MapError};
use lb_common::{
    hash::{table_slot, FlowHashKey},
    Backend, FlowKey, FlowState, VipKey, VipMeta,
};
use std::time::{Duration, Instant};

pub struct Sweeper {
    conn_table: HashMap<MapData, FlowKey, FlowState>,
    backends: Array<MapData, Backend>,
    vips: HashMap<MapData, VipKey, VipMeta>,
    table_size: u32,
}

/// What one sweep found.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Live entries left in the table.
    pub live: u64,
    /// Entries idle longer than the timeout, removed.
    pub expired: u64,
    /// Entries whose backend went down or whose VIP is gone, removed.
    pub stale: u64,
    /// Per VIP id: slot -> the backends its live entries name.
    pub claims: std::collections::HashMap<u32, std::collections::HashMap<u32, Claim>>,
    pub took: Duration,
}

impl Sweeper {
    /// `conn_table`, `backends` and `vips`: the sweeper's own descriptors of those maps.
    pub fn new(
        conn_table: HashMap<MapData, FlowKey, FlowState>,
        backends: Array<MapData, Backend>,
        vips: HashMap<MapData, VipKey, VipMeta>,
        table_size: u32,
    ) -> Self {
        Self {
            conn_table,
            backends,
            vips,
            table_size,
        }
    }

    /// One pass over the connection table; `key`: the data path's flow hash key.
    pub fn sweep(&mut self, idle: Duration, key: &FlowHashKey) -> Result<Sweep> {
        let started = Instant::now();
        let now = monotonic_coarse_secs()?;
        let idle = u32::try_from(idle.as_secs()).unwrap_or(u32::MAX);
        let mut flags = std::collections::HashMap::new();
        for kv in self.vips.iter() {
            let (_, meta) = kv.context("reading VIPS")?;
            flags.insert(meta.id, meta.flags);
        }
        let mut generations = std::collections::HashMap::new();
        let mut sweep = Sweep::default();
        let mut remove = Vec::new();
        for kv in self.conn_table.iter() {
            let (flow, state) = match kv {
                Ok(kv) => kv,
                // Evicted or removed by the data path between listing and reading it.
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(e).context("reading CONN_TABLE"),
            };
            if now.saturating_sub(state.last_seen) > idle {
                sweep.expired += 1;
                remove.push(flow);
                continue;
            }
            let generation = *generations.entry(state.backend).or_insert_with(|| {
                self.backends
                    .get(&state.backend, 0)
                    .ok()
                    .map(|b| b.generation)
            });
            let vip_flags = flags.get(&state.vip_id);
            let Some(vip_flags) = vip_flags.filter(|_| generation == Some(state.generation)) else {
                sweep.stale += 1;
                remove.push(flow);
                continue;
            };
            sweep.live += 1;
            let slot = table_slot(&flow, *vip_flags, self.table_size, key);
            let slots = sweep.claims.entry(state.vip_id).or_default();
            let claim = Claim::add(slots.get(&slot).copied(), state.backend);
            slots.insert(slot, claim);
        }
        for flow in remove {
            // Gone already (evicted, or replaced by a new flow's entry) is fine.
            let _ = self.conn_table.remove(&flow);
        }
        sweep.took = started.elapsed();
        Ok(sweep)
    }
}

/// The data path's clock (`bpf_ktime_get_coarse_ns`) in seconds.
fn monotonic_coarse_secs() -> Result<u32> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } != 0 {
        return Err(std::io::Error::last_os_error()).context("clock_gettime");
    }
    Ok(ts.tv_sec as u32)
}
