//! The only code that touches BPF maps and programs: loading the embedded objects, programming
//! the balancer's maps, reading its counters. Every map is defined once, in `maps`.

mod attach;
mod counters;
mod decap;
mod ebpf_log;
mod load;
pub mod maps;
pub mod pinned;
mod probe;
mod sweep;
mod table;
mod trace;
mod vip_index;

use anyhow::{bail, Context, Result};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::Xdp,
    Ebpf,
};
use lb_common::{
    hash::addr_filter_bit, AddrKey, Backend, BenchFrame, BenchStat, FlowKey, FlowState, LbConfig,
    Slot, Stat, TrafficCounters, VipKey, VipMeta, ADDR_FILTER_WORDS, ADDR_F_TCP_ANY_PORT,
    ADDR_F_TCP_PORT, ADDR_F_UDP_ANY_PORT, ADDR_F_UDP_PORT, DEFAULT_CONN_TABLE_ENTRIES,
    DEFAULT_MAX_VIPS, DEFAULT_TABLE_SIZE, IPPROTO_TCP, MAX_BACKENDS,
};
use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

pub use attach::{detach_pinned, link_pin, unpin_all, Attachment};
pub use counters::Counters;
pub use decap::{Decap, DECAP_PROGRAM, PASS_PROGRAM};
pub use probe::PROBE_PROGRAM;
pub use sweep::{Sweep, Sweeper};
pub use table::TableWriter;
pub use trace::{TraceMaps, TRACE_LOCK_DIR};

/// The balancer's programs: the data path, the benchmark floor, and their benchmark twins
/// (the same code behind a harness that restores the frame before each iteration).
pub const LB_PROGRAM: &str = "xdp_lb";
pub const REFLECT_PROGRAM: &str = "xdp_reflect";
pub const BENCH_LB_PROGRAM: &str = "xdp_bench_lb";
pub const BENCH_REFLECT_PROGRAM: &str = "xdp_bench_reflect";
/// The forwarding benchmark's live-frames generator and counting sink (never attached by the
/// agent).
pub const BENCH_GEN_PROGRAM: &str = "xdp_bench_gen";
pub const BENCH_SINK_PROGRAM: &str = "xdp_bench_sink";

/// Every program of the balancer object, loaded together.
const LB_PROGRAMS: [&str; 6] = [
    LB_PROGRAM,
    REFLECT_PROGRAM,
    BENCH_LB_PROGRAM,
    BENCH_REFLECT_PROGRAM,
    BENCH_GEN_PROGRAM,
    BENCH_SINK_PROGRAM,
];

#[cfg(not(lb_ebpf_missing))]
static LB_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb.o"));
#[cfg(not(lb_ebpf_missing))]
static DECAP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/decap.o"));
#[cfg(lb_ebpf_missing)]
static LB_OBJECT: &[u8] = &[];
/// The `ebpf-log` variant of `lb` (empty when the build did not find it).
static LB_LOG_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-log.o"));
#[cfg(lb_ebpf_missing)]
static DECAP_OBJECT: &[u8] = &[];

/// Sizes fixed when the balancer program is loaded, and where its state is pinned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Maglev table size per VIP (prime).
    pub table_size: u32,
    pub max_vips: u32,
    pub conn_table_entries: u32,
    /// bpffs directory for the maps and the XDP link: a later load adopts what is there, so
    /// the connection table and forwarding survive an agent restart. None: nothing pinned.
    pub pin_dir: Option<PathBuf>,
    /// Load the `ebpf-log` variant and forward its aya-log records to the agent's log.
    pub ebpf_log: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            table_size: DEFAULT_TABLE_SIZE,
            max_vips: DEFAULT_MAX_VIPS,
            conn_table_entries: DEFAULT_CONN_TABLE_ENTRIES,
            pin_dir: None,
            ebpf_log: false,
        }
    }
}

/// The loaded balancer program and its maps.
pub struct Balancer {
    ebpf: Ebpf,
    options: LoadOptions,
    /// The maps were found pinned (state from an earlier agent) rather than created.
    adopted: bool,
    config: Array<MapData, LbConfig>,
    vips: HashMap<MapData, VipKey, VipMeta>,
    /// The data path's first stop for a VIP key, kept in step with `vips`.
    vip_index: vip_index::VipIndex,
    vip_addrs: HashMap<MapData, AddrKey, u32>,
    addr_filter: Array<MapData, u64>,
    /// What `addr_filter` holds, so a change writes only the words that differ.
    addr_filter_words: Vec<u64>,
    backends: Array<MapData, Backend>,
    conn_table: HashMap<MapData, FlowKey, FlowState>,
    counters: Arc<Counters>,
    bench_frame: Array<MapData, BenchFrame>,
    bench_stats: PerCpuArray<MapData, u64>,
    tables: TableWriter,
    previous: TableWriter,
    /// Handed to the controller, which runs it off its own task.
    sweeper: Option<Sweeper>,
    /// When each VIP last flipped tables: a table is rewritten only after packets that may
    /// still read it (an XDP run lasts well under a microsecond) are long gone.
    last_flip: std::collections::HashMap<u32, Instant>,
    /// `tc_probe_encap`'s attachment, while there is one (`probe`).
    probe_link: Option<aya::programs::tc::SchedClassifierLinkId>,
}

/// Least time between two table publications of one VIP.
const FLIP_QUIESCENCE: Duration = Duration::from_millis(1);

impl Balancer {
    /// Whether the maps came from an earlier agent's pins.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    fn read_filter(&self) -> Result<Vec<u64>> {
        (0..ADDR_FILTER_WORDS)
            .map(|i| self.addr_filter.get(&i, 0).context("reading ADDR_FILTER"))
            .collect()
    }

    /// Attach `xdp_lb` to `iface`: through the pinned link if an earlier agent left one (the
    /// program is swapped atomically, forwarding never stops), else afresh in `mode` and, with
    /// a pin directory, pinned so it outlives this process. `tc_probe_encap` first: from then
    /// on no probe leaves `iface` unencapsulated.
    pub fn attach(&mut self, iface: &str, mode: crate::config::XdpMode) -> Result<Attachment> {
        self.attach_probe(iface)?;
        let pin = self.options.pin_dir.as_ref().map(|d| link_pin(d, iface));
        if let Some(dir) = &self.options.pin_dir {
            for other in attach::pinned_links(dir)? {
                if Some(&other) != pin.as_ref() {
                    tracing::warn!(
                        link = %other.display(),
                        "a balancer link for another interface is still pinned (and forwarding); \
                         remove that file to detach it"
                    );
                }
            }
        }
        attach::attach_xdp(self.program(LB_PROGRAM)?, iface, mode, pin.as_deref())
    }

    /// All backend slots in use: id and entry.
    pub fn backends_in_use(&self) -> Result<Vec<(u32, Backend)>> {
        Ok((0..MAX_BACKENDS)
            .zip(self.backend_entries()?)
            .filter(|(_, b)| !b.is_free())
            .collect())
    }

    /// Every entry of BACKENDS, id 0 first.
    pub fn backend_entries(&self) -> Result<Vec<Backend>> {
        (0..MAX_BACKENDS).map(|id| self.backend(id)).collect()
    }

    /// Every VIP in the map with its metadata.
    pub fn vips(&self) -> Result<Vec<(VipKey, VipMeta)>> {
        self.vips
            .iter()
            .map(|kv| kv.context("iterating VIPS"))
            .collect()
    }

    /// The VIP's live table as the data path reads it.
    pub fn live_table(&self, meta: &VipMeta) -> Result<Vec<Slot>> {
        let which = meta.active_table & 1;
        let tables = self.tables.read(meta.id, which)?;
        let previous = self.previous.read(meta.id, which)?;
        Ok(tables
            .into_iter()
            .zip(previous)
            .map(|(table, previous)| Slot { table, previous })
            .collect())
    }

    pub fn options(&self) -> &LoadOptions {
        &self.options
    }

    /// One of the loaded programs (`LB_PROGRAM`, `REFLECT_PROGRAM`, `BENCH_*`).
    pub fn program(&mut self, name: &str) -> Result<&mut Xdp> {
        load::xdp(&mut self.ebpf, name)
    }

    pub fn set_config(&mut self, config: &LbConfig) -> Result<()> {
        self.config.set(0, config, 0).context("writing CONFIG")
    }

    pub fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<()> {
        if id >= MAX_BACKENDS {
            bail!("backend id {id} is beyond the {MAX_BACKENDS} the data path holds");
        }
        self.backends
            .set(id, backend, 0)
            .with_context(|| format!("writing backend {id}"))
    }

    pub fn backend(&self, id: u32) -> Result<Backend> {
        self.backends
            .get(&id, 0)
            .with_context(|| format!("reading backend {id}"))
    }

    /// The sweep of the connection table, once: the controller runs it on a blocking thread.
    pub fn take_sweeper(&mut self) -> Option<Sweeper> {
        self.sweeper.take()
    }

    /// Fill the VIP's inactive table with `slots` and make it the live one. The data path
    /// reads either the old or the new table, never a mix.
    pub fn publish_table(&mut self, key: &VipKey, slots: &[Slot]) -> Result<VipMeta> {
        let mut meta = self.vip(key)?;
        if let Some(at) = self.last_flip.get(&meta.id) {
            if let Some(wait) = FLIP_QUIESCENCE.checked_sub(at.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let next = meta.active_table ^ 1;
        let halves: (Vec<u16>, Vec<u16>) = slots.iter().map(|s| (s.table, s.previous)).unzip();
        self.tables.write(meta.id, next, &halves.0)?;
        self.previous.write(meta.id, next, &halves.1)?;
        meta.active_table = next;
        self.vips
            .insert(key, meta, 0)
            .context("flipping the VIP's active table")?;
        self.vip_index.set(key, &meta)?;
        self.last_flip.insert(meta.id, Instant::now());
        Ok(meta)
    }

    /// Add or replace a VIP. Its tables are left as they are: publish one before traffic.
    pub fn set_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<()> {
        if meta.id >= self.options.max_vips {
            bail!(
                "VIP id {} is beyond max_vips {}",
                meta.id,
                self.options.max_vips
            );
        }
        // VIPS first: a key the index spills is found there.
        self.vips.insert(key, meta, 0).context("writing VIPS")?;
        self.vip_index.set(key, meta)?;
        self.refresh_address(key.addr, key.family)
    }

    pub fn remove_vip(&mut self, key: &VipKey) -> Result<()> {
        self.vip_index.remove(key)?;
        self.vips.remove(key).context("removing from VIPS")?;
        self.refresh_address(key.addr, key.family)
    }

    pub fn vip(&self, key: &VipKey) -> Result<VipMeta> {
        self.vips.get(key, 0).context("VIP not in the VIPS map")
    }

    /// Recompute which lookups an address needs from the VIPs that use it, and the bitmap that
    /// lets other traffic skip every lookup.
    fn refresh_address(&mut self, addr: [u32; 4], family: u8) -> Result<()> {
        self.refresh_address_flags(addr, family)?;
        self.refresh_filter()
    }

    fn refresh_filter(&mut self) -> Result<()> {
        let mut words = vec![0u64; ADDR_FILTER_WORDS as usize];
        for key in self.vips.keys() {
            let key = key.context("iterating VIPS")?;
            let bit = addr_filter_bit(&key.addr, key.family);
            words[(bit >> 6) as usize] |= 1 << (bit & 63);
        }
        for (i, (new, old)) in words.iter().zip(&self.addr_filter_words).enumerate() {
            if new != old {
                self.addr_filter
                    .set(i as u32, new, 0)
                    .context("writing ADDR_FILTER")?;
            }
        }
        self.addr_filter_words = words;
        Ok(())
    }

    fn refresh_address_flags(&mut self, addr: [u32; 4], family: u8) -> Result<()> {
        let mut flags = 0;
        for key in self.vips.keys() {
            let key = key.context("iterating VIPS")?;
            if key.addr != addr || key.family != family {
                continue;
            }
            flags |= match (key.proto == IPPROTO_TCP, key.port == 0) {
                (true, false) => ADDR_F_TCP_PORT,
                (true, true) => ADDR_F_TCP_ANY_PORT,
                (false, false) => ADDR_F_UDP_PORT,
                (false, true) => ADDR_F_UDP_ANY_PORT,
            };
        }
        let key = AddrKey {
            addr,
            family,
            _pad: [0; 3],
        };
        if flags == 0 {
            match self.vip_addrs.remove(&key) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
                Err(e) => Err(e).context("removing from VIP_ADDRS"),
            }
        } else {
            self.vip_addrs
                .insert(key, flags, 0)
                .context("writing VIP_ADDRS")
        }
    }

    /// The connection-table entry of a flow, if any.
    pub fn flow(&self, key: &FlowKey) -> Option<FlowState> {
        self.conn_table.get(key, 0).ok()
    }

    /// Entries in the connection table (one syscall per entry: for tests and tools).
    pub fn conn_entries(&self) -> Result<usize> {
        let mut n = 0;
        for key in self.conn_table.keys() {
            key.context("listing CONN_TABLE")?;
            n += 1;
        }
        Ok(n)
    }

    /// Global counters summed over CPUs, in `Stat` order.
    pub fn stats(&self) -> Result<Vec<(Stat, u64)>> {
        self.counters.stats()
    }

    /// The counters, for readers on other threads.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    pub fn stat(&self, stat: Stat) -> Result<u64> {
        self.counters.stat(stat)
    }

    pub fn vip_counters(&self, vip_id: u32) -> Result<TrafficCounters> {
        self.counters.vip(vip_id)
    }

    pub fn backend_counters(&self, backend_id: u32) -> Result<TrafficCounters> {
        self.counters.backend(backend_id)
    }

    /// Benchmark harness: the frame every iteration starts from.
    pub fn set_bench_frame(&mut self, frame: &BenchFrame) -> Result<()> {
        self.bench_frame
            .set(0, frame, 0)
            .context("writing BENCH_FRAME")
    }

    /// Benchmark harness: one of its counters (frames restored, frames sunk), over all CPUs.
    pub fn bench_stat(&self, stat: BenchStat) -> Result<u64> {
        sum_u64(&self.bench_stats, stat as u32)
    }
}

fn sum_u64<T: std::borrow::Borrow<MapData>>(map: &PerCpuArray<T, u64>, index: u32) -> Result<u64> {
    let values = map
        .get(&index, 0)
        .with_context(|| format!("reading counter {index}"))?;
    Ok(values.iter().sum())
}

fn sum_traffic(map: &PerCpuArray<MapData, TrafficCounters>, index: u32) -> Result<TrafficCounters> {
    let values = map
        .get(&index, 0)
        .with_context(|| format!("reading counters {index}"))?;
    Ok(values
        .iter()
        .fold(TrafficCounters::default(), |acc, v| TrafficCounters {
            packets: acc.packets + v.packets,
            bytes: acc.bytes + v.bytes,
        }))
}
