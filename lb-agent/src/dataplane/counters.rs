//! The balancer's counters, shared (`Arc`) so status and metrics read them on any thread
//! without the controller, which owns the `Balancer`. Reads only: no lock needed.

use super::{sum_traffic, sum_u64};
use anyhow::{Context as _, Result};
use aya::{
    maps::{IterableMap as _, MapData, PerCpuArray},
    util::nr_cpus,
};
use lb_common::{ProbeStat, Stat, TrafficCounters};
use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
};

/// Entries per `BPF_MAP_LOOKUP_BATCH`: the buffer is this × possible CPUs × 16 bytes (64 KiB
/// on 16 CPUs), and 10,000 backends take 40 calls instead of 10,000.
const BATCH: usize = 256;

pub struct Counters {
    stats: PerCpuArray<MapData, u64>,
    vip_stats: PerCpuArray<MapData, TrafficCounters>,
    backend_stats: PerCpuArray<MapData, TrafficCounters>,
    probe_stats: PerCpuArray<MapData, u64>,
}

impl Counters {
    pub(super) fn new(
        stats: PerCpuArray<MapData, u64>,
        vip_stats: PerCpuArray<MapData, TrafficCounters>,
        backend_stats: PerCpuArray<MapData, TrafficCounters>,
        probe_stats: PerCpuArray<MapData, u64>,
    ) -> Self {
        Self {
            stats,
            vip_stats,
            backend_stats,
            probe_stats,
        }
    }

    /// `tc_probe_encap`'s counters summed over CPUs, in `ProbeStat` order.
    pub fn probe_stats(&self) -> Result<Vec<(ProbeStat, u64)>> {
        ProbeStat::ALL
            .iter()
            .map(|s| Ok((*s, sum_u64(&self.probe_stats, *s as u32)?)))
            .collect()
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

    /// Traffic of VIP ids `0..count` (fewer if the map is smaller), summed over CPUs.
    pub fn vips(&self, count: u32) -> Result<Vec<TrafficCounters>> {
        sum_all(&self.vip_stats, count).context("reading the VIP counters")
    }

    /// Traffic of backend ids `0..count` (fewer if the map is smaller), summed over CPUs.
    pub fn backends(&self, count: u32) -> Result<Vec<TrafficCounters>> {
        sum_all(&self.backend_stats, count).context("reading the backend counters")
    }
}

/// Entries `0..count` of a per-CPU traffic array, summed over CPUs, `BATCH` entries per
/// syscall. aya 0.14 reads a per-CPU array one entry per syscall (with an allocation each): at
/// 10,000 backends that alone was most of a scrape's budget.
fn sum_all(
    map: &PerCpuArray<MapData, TrafficCounters>,
    count: u32,
) -> Result<Vec<TrafficCounters>> {
    const _: () = assert!(std::mem::size_of::<TrafficCounters>().is_multiple_of(8));
    let count = count.min(map.len()) as usize;
    let cpus = nr_cpus().map_err(|(_, e)| e)?;
    let fd = map.map().fd().as_fd().as_raw_fd();
    // A value is one TrafficCounters per possible CPU (the kernel rounds each to 8 bytes).
    let mut values = vec![TrafficCounters::default(); BATCH * cpus];
    let mut keys = [0u32; BATCH];
    let mut sums = vec![TrafficCounters::default(); count];
    let mut after = None;
    while after.map_or(count > 0, |last: u32| (last as usize) + 1 < count) {
        let want = BATCH.min(count - after.map_or(0, |last| last as usize + 1));
        let (got, last) = lookup_batch(fd, after, &mut keys[..want], &mut values)?;
        if got == 0 {
            break;
        }
        for (key, per_cpu) in keys[..got].iter().zip(values.chunks(cpus)) {
            if let Some(sum) = sums.get_mut(*key as usize) {
                for v in per_cpu {
                    sum.packets += v.packets;
                    sum.bytes += v.bytes;
                }
            }
        }
        after = Some(last);
    }
    Ok(sums)
}

/// `bpf_attr` for the `BPF_MAP_*_BATCH` commands (linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// One `BPF_MAP_LOOKUP_BATCH` of up to `keys.len()` entries after key `after` (from the start
/// without one): the entries read and the last key read. Array maps support it since Linux
/// 5.6, below the 5.15 the agent needs; aya 0.14 does not wrap it.
fn lookup_batch(
    fd: i32,
    after: Option<u32>,
    keys: &mut [u32],
    values: &mut [TrafficCounters],
) -> Result<(usize, u32)> {
    let in_batch = after.unwrap_or(0);
    let mut out_batch = 0u32;
    let mut attr = BatchAttr {
        in_batch: after.map_or(0, |_| &in_batch as *const u32 as u64),
        out_batch: &mut out_batch as *mut u32 as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: keys.len() as u32,
        map_fd: fd as u32,
        ..Default::default()
    };
    // SAFETY: the kernel writes at most `count` keys and `count` values of the map's value size
    // (one TrafficCounters per possible CPU, which `values` holds for `keys.len()` entries), the
    // read count into `attr` and one key into `out_batch`; all outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_BATCH,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if rc < 0 {
        let error = io::Error::last_os_error();
        // ENOENT: the end of the map was reached; `count` says how much was read before it.
        if error.raw_os_error() != Some(libc::ENOENT) {
            return Err(error).context("BPF_MAP_LOOKUP_BATCH");
        }
    }
    Ok((attr.count as usize, out_batch))
}
