//! The connection table, consulted only in moved slots: there an established flow keeps its
//! backend while the slot points elsewhere, unless that backend went down or was removed (its
//! generation moved on).

use crate::{
    counters::count,
    maglev::Choice,
    maps::{BACKENDS, CONN_TABLE, FLOOD_GUARD},
};
use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use lb_common::{FlowKey, FlowState, LbConfig, Stat};

const NS_PER_SEC: u64 = 1_000_000_000;

pub enum Lookup {
    /// A live entry: its backend.
    Hit(Choice),
    /// An entry whose backend went down or was replaced.
    Stale,
    Miss,
}

/// The flow's entry; a hit refreshes its idle clock, once a second at most.
#[inline(always)]
pub fn lookup(flow: &FlowKey) -> Lookup {
    let Some(state) = CONN_TABLE.get_ptr_mut(flow) else {
        return Lookup::Miss;
    };
    // SAFETY: a pointer to the entry's value from the lookup above; the entry's fields are
    // plain integers, and a racing writer on another CPU can at worst tear `last_seen`.
    let (backend_id, generation, last_seen) =
        unsafe { ((*state).backend, (*state).generation, (*state).last_seen) };
    if let Some(backend) = BACKENDS.get(backend_id) {
        if backend.generation == generation {
            let now = now_secs();
            if last_seen != now {
                // SAFETY: as above.
                unsafe { (*state).last_seen = now };
            }
            count(Stat::ConnHit);
            return Lookup::Hit(Choice {
                id: backend_id,
                backend,
            });
        }
    }
    count(Stat::ConnStale);
    Lookup::Stale
}

/// Remember the flow's backend, unless this CPU is above its new-flow rate: then a SYN flood
/// cannot evict the entries of established flows.
#[inline(always)]
pub fn insert(flow: &FlowKey, choice: &Choice, vip_id: u32, cfg: &LbConfig) {
    let now = coarse_ns();
    if !may_insert(cfg.new_flows_per_sec, now) {
        count(Stat::ConnInsertSkipped);
        return;
    }
    let state = FlowState {
        backend: choice.id,
        generation: choice.backend.generation,
        vip_id,
        last_seen: (now / NS_PER_SEC) as u32,
    };
    // An LRU insert only fails on allocation failure; the flow is still forwarded.
    let _ = CONN_TABLE.insert(flow, state, 0);
}

/// CLOCK_MONOTONIC at jiffies resolution: plenty for second-granular idle times and one-second
/// guard windows, and cheaper than ktime.
#[inline(always)]
fn coarse_ns() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

#[inline(always)]
fn now_secs() -> u32 {
    (coarse_ns() / NS_PER_SEC) as u32
}

#[inline(always)]
fn may_insert(limit: u32, now: u64) -> bool {
    if limit == 0 {
        return true;
    }
    let Some(window) = FLOOD_GUARD.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: per-CPU slot with no concurrent writer.
    unsafe {
        if now.wrapping_sub((*window).window_start_ns) >= NS_PER_SEC {
            (*window).window_start_ns = now;
            (*window).inserts = 0;
        }
        if (*window).inserts >= limit as u64 {
            return false;
        }
        (*window).inserts += 1;
    }
    true
}
