//! The connection table: an established flow keeps its backend when the VIP's table changes,
//! unless that backend went down or was removed (its generation moved on).

use crate::{
    counters::count,
    maps::{BACKENDS, CONN_TABLE, FLOOD_GUARD},
};
use lb_common::{Backend, FlowKey, FlowState, LbConfig, Stat};

const NS_PER_SEC: u64 = 1_000_000_000;

/// A live entry: backend id, backend, VIP id.
pub struct Established {
    pub backend_id: u32,
    pub backend: Backend,
    pub vip_id: u32,
}

/// The flow's backend if it has a live entry; counts hits and stale entries.
#[inline(always)]
pub fn lookup(flow: &FlowKey) -> Option<Established> {
    // SAFETY: the value is copied out at once.
    let state = unsafe { CONN_TABLE.get(flow) }.copied()?;
    if let Some(backend) = BACKENDS.get(state.backend) {
        if backend.generation == state.generation {
            count(Stat::ConnHit);
            return Some(Established {
                backend_id: state.backend,
                backend: *backend,
                vip_id: state.vip_id,
            });
        }
    }
    count(Stat::ConnStale);
    None
}

/// Remember the flow's backend, unless this CPU is above its new-flow rate: then a SYN flood
/// cannot evict the entries of established flows.
#[inline(always)]
pub fn insert(flow: &FlowKey, backend_id: u32, backend: &Backend, vip_id: u32, cfg: &LbConfig) {
    if !may_insert(cfg.new_flows_per_sec) {
        count(Stat::ConnInsertSkipped);
        return;
    }
    let state = FlowState {
        backend: backend_id,
        generation: backend.generation,
        vip_id,
    };
    // An LRU insert only fails on allocation failure; the flow is still forwarded.
    let _ = CONN_TABLE.insert(flow, state, 0);
}

#[inline(always)]
fn may_insert(limit: u32) -> bool {
    if limit == 0 {
        return true;
    }
    let Some(window) = FLOOD_GUARD.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: helper without arguments; per-CPU slot with no concurrent writer. The coarse
    // clock (jiffies resolution) is plenty for one-second windows and cheaper than ktime.
    unsafe {
        let now = aya_ebpf::helpers::bpf_ktime_get_coarse_ns();
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
