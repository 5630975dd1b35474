//! The balancer's counters, shared (`Arc`) so status and metrics read them on any thread
//! without the controller, which owns the `Balancer`. Reads only: no lock needed.

use super::{sum_traffic, sum_u64};
use anyhow::Result;
use aya::maps::{MapData, PerCpuArray};
use lb_common::{Stat, TrafficCounters};

pub struct Counters {
    stats: PerCpuArray<MapData, u64>,
    vip_stats: PerCpuArray<MapData, TrafficCounters>,
    backend_stats: PerCpuArray<MapData, TrafficCounters>,
}

impl Counters {
    pub(super) fn new(
        stats: PerCpuArray<MapData, u64>,
        vip_stats: PerCpuArray<MapData, TrafficCounters>,
        backend_stats: PerCpuArray<MapData, TrafficCounters>,
    ) -> Self {
        Self {
            stats,
            vip_stats,
            backend_stats,
        }
    }

    pub fn stat(&self, stat: Stat) -> Result<u64> {
        sum_u64(&self.stats, stat as u32)
    }

    /// Global counters summed over CPUs, in `Stat` order.
    pub fn stats(&self) -> Result<Vec<(Stat, u64)>> {
        Stat::ALL
            .iter()
            .map(|s| Ok((*s, sum_u64(&self.stats, *s as u32)?)))
            .collect()
    }

    pub fn vip(&self, vip_id: u32) -> Result<TrafficCounters> {
        sum_traffic(&self.vip_stats, vip_id)
    }

    pub fn backend(&self, backend_id: u32) -> Result<TrafficCounters> {
        sum_traffic(&self.backend_stats, backend_id)
    }
}
