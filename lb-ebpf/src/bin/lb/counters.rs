//! Per-CPU counters: the balancer's events (`Stat`, in `STATS`) and traffic per VIP and per
//! backend.

use crate::maps::{BACKEND_STATS, STATS, VIP_STATS};
use aya_ebpf::maps::PerCpuArray;
use lb_common::{Stat, TrafficCounters};
use lb_ebpf::increment;

#[inline(always)]
pub fn count(stat: Stat) {
    increment(&STATS, stat as u32)
}

#[inline(always)]
fn add(map: &PerCpuArray<TrafficCounters>, index: u32, bytes: usize) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no other writer while this program runs on this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
        }
    }
}

#[inline(always)]
pub fn vip(id: u32, bytes: usize) {
    add(&VIP_STATS, id, bytes)
}

#[inline(always)]
pub fn backend(id: u32, bytes: usize) {
    add(&BACKEND_STATS, id, bytes)
}
