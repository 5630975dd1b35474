//! Every map of the balancer program. The agent (lb-agent's dataplane module) is the only
//! user-space writer; its map table (`dataplane/maps.rs`) gives each map's key, value, size rule
//! and pinning, docs/design.md its purpose and writer. `named_map!` ties each static's name to
//! `lb_common::maps`.

use aya_ebpf::maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf};
use lb_common::{
    AddrKey, Backend, BenchFrame, FloodWindow, FlowKey, FlowState, LbConfig, TraceControl,
    TraceScratch, TrafficCounters, VipKey, VipMeta, VipSlot, ADDR_FILTER_WORDS, BENCH_STAT_COUNT,
    DEFAULT_CONN_TABLE_ENTRIES, DEFAULT_MAX_VIPS, DEFAULT_TABLE_SIZE, MAX_BACKENDS,
    PROBE_STAT_COUNT, SLOTS_PER_ELEMENT, STAT_COUNT, TRACE_RING_BYTES, VIP_INDEX_SLOTS,
};
use lb_ebpf::named_map;

/// BPF_F_NO_COMMON_LRU: one LRU list per CPU (no shared lock on insert) over one shared key
/// space, so a flow still hits when it lands on another CPU or the agent restarts.
const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;

/// BPF_F_MMAPABLE: the agent writes a whole table through shared memory in microseconds
/// instead of one syscall per slot.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Maglev table size (prime), fixed at load time by the agent.
#[no_mangle]
static TABLE_SIZE: u32 = DEFAULT_TABLE_SIZE;

#[inline(always)]
pub fn table_size() -> u32 {
    // SAFETY: a read-only global; volatile so the compiler does not fold the default value in.
    unsafe { core::ptr::read_volatile(&TABLE_SIZE) }
}

named_map! {
    pub static CONFIG: Array<LbConfig> = Array::with_max_entries(1, 0);
}

named_map! {
    /// One bit per VIP address (`hash::addr_filter_bit`): array lookups are inlined by the
    /// verifier, so most host traffic leaves after a few instructions instead of a hash lookup.
    pub static ADDR_FILTER: Array<u64> = Array::with_max_entries(ADDR_FILTER_WORDS, 0);
}

named_map! {
    /// Addresses that carry at least one VIP, with `ADDR_F_*` bits.
    pub static VIP_ADDRS: HashMap<AddrKey, u32> = HashMap::with_max_entries(DEFAULT_MAX_VIPS, 0);
}

named_map! {
    pub static VIPS: HashMap<VipKey, VipMeta> = HashMap::with_max_entries(DEFAULT_MAX_VIPS, 0);
}

named_map! {
    /// Direct-mapped index in front of `VIPS` (`lb_common::VipSlot`): most VIP packets find
    /// their VIP with an inlined array lookup instead of a hash-map call. Written word by word
    /// through a shared mapping (hence mmapable).
    pub static VIP_INDEX: Array<VipSlot> = Array::with_max_entries(VIP_INDEX_SLOTS, BPF_F_MMAPABLE);
}

named_map! {
    /// Two Maglev tables per VIP, packed: slot `n = (id * 2 + active_table) * TABLE_SIZE +
    /// hash % TABLE_SIZE` is half `n % 4` of element `n / 4`: the slot's backend id and moved bit
    /// (`lb_common::Slot::table`). Sized by the agent to `max_vips * 2 * table_size / 4`,
    /// rounded up.
    pub static MAGLEV: Array<[u16; SLOTS_PER_ELEMENT as usize]> = Array::with_max_entries(
        (DEFAULT_MAX_VIPS * 2 * DEFAULT_TABLE_SIZE).div_ceil(SLOTS_PER_ELEMENT),
        BPF_F_MMAPABLE,
    );
}

named_map! {
    /// The other half of each slot, same geometry: the backend a moved slot had before it moved.
    pub static MAGLEV_PREVIOUS: Array<[u16; SLOTS_PER_ELEMENT as usize]> = Array::with_max_entries(
        (DEFAULT_MAX_VIPS * 2 * DEFAULT_TABLE_SIZE).div_ceil(SLOTS_PER_ELEMENT),
        BPF_F_MMAPABLE,
    );
}

named_map! {
    pub static BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);
}

named_map! {
    pub static CONN_TABLE: LruHashMap<FlowKey, FlowState> =
        LruHashMap::with_max_entries(DEFAULT_CONN_TABLE_ENTRIES, BPF_F_NO_COMMON_LRU);
}

named_map! {
    pub static FLOOD_GUARD: PerCpuArray<FloodWindow> = PerCpuArray::with_max_entries(1, 0);
}

named_map! {
    pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);
}

named_map! {
    pub static VIP_STATS: PerCpuArray<TrafficCounters> =
        PerCpuArray::with_max_entries(DEFAULT_MAX_VIPS, 0);
}

named_map! {
    pub static BACKEND_STATS: PerCpuArray<TrafficCounters> =
        PerCpuArray::with_max_entries(MAX_BACKENDS, 0);
}

named_map! {
    /// `tc_probe_encap`'s verdicts (`ProbeStat`), apart from `xdp_lb`'s `STATS`.
    pub static PROBE_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(PROBE_STAT_COUNT, 0);
}

named_map! {
    /// Bench harness only: the frame restored before every iteration.
    pub static BENCH_FRAME: Array<BenchFrame> = Array::with_max_entries(1, 0);
}

named_map! {
    /// Bench harness only: its counters (`BenchStat`), apart from the balancer's `STATS`.
    pub static BENCH_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(BENCH_STAT_COUNT, 0);
}

named_map! {
    /// Packet trace: written by `lb-agent trace` only; `until_ns == 0` (the one field every
    /// packet reads) means off.
    pub static TRACE_CONTROL: Array<TraceControl> = Array::with_max_entries(1, 0);
}

named_map! {
    /// Packet trace: one `TraceEvent` per traced packet, read by `lb-agent trace`.
    pub static TRACE_EVENTS: RingBuf = RingBuf::with_byte_size(TRACE_RING_BYTES, 0);
}

named_map! {
    /// Packet trace: the event being built on this CPU (`TraceScratch`).
    pub static TRACE_SCRATCH: PerCpuArray<TraceScratch> = PerCpuArray::with_max_entries(1, 0);
}
