//! The only code that touches BPF maps and programs: loading the embedded objects, programming
//! the balancer's maps, reading its counters.

mod sweep;
mod table;

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    programs::Xdp,
    Ebpf, EbpfLoader,
};
use lb_common::{
    hash::addr_filter_bit, AddrKey, Backend, BenchFrame, FlowKey, FlowState, LbConfig, Slot, Stat,
    TrafficCounters, VipKey, VipMeta, ADDR_FILTER_WORDS, ADDR_F_TCP_ANY_PORT, ADDR_F_TCP_PORT,
    ADDR_F_UDP_ANY_PORT, ADDR_F_UDP_PORT, DEFAULT_CONN_TABLE_ENTRIES, DEFAULT_MAX_VIPS,
    DEFAULT_TABLE_SIZE, IPPROTO_TCP, MAX_BACKENDS, SLOTS_PER_ELEMENT,
};
use std::{
    net::IpAddr,
    os::fd::AsFd,
    path::PathBuf,
    time::{Duration, Instant},
};

pub use sweep::{Sweep, Sweeper};
pub use table::TableWriter;

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
/// The backend side's programs.
pub const DECAP_PROGRAM: &str = "xdp_decap";
pub const PASS_PROGRAM: &str = "xdp_pass";

#[cfg(not(lb_ebpf_missing))]
static LB_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb.o"));
#[cfg(not(lb_ebpf_missing))]
static DECAP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/decap.o"));
#[cfg(lb_ebpf_missing)]
static LB_OBJECT: &[u8] = &[];
#[cfg(lb_ebpf_missing)]
static DECAP_OBJECT: &[u8] = &[];

fn object(bytes: &'static [u8], name: &str) -> Result<&'static [u8]> {
    if bytes.is_empty() {
        bail!("this lb-agent was built without its eBPF object `{name}`: build it with `cargo xtask build`");
    }
    Ok(bytes)
}

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
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            table_size: DEFAULT_TABLE_SIZE,
            max_vips: DEFAULT_MAX_VIPS,
            conn_table_entries: DEFAULT_CONN_TABLE_ENTRIES,
            pin_dir: None,
        }
    }
}

/// Maps that carry the balancer's state across restarts (everything but the bench template).
const PINNED_MAPS: [&str; 12] = [
    "CONFIG",
    "ADDR_FILTER",
    "VIP_ADDRS",
    "VIPS",
    "MAGLEV",
    "MAGLEV_PREVIOUS",
    "BACKENDS",
    "CONN_TABLE",
    "FLOOD_GUARD",
    "STATS",
    "VIP_STATS",
    "BACKEND_STATS",
];

/// The pinned XDP link inside the pin directory is named after its interface, so a restart on
/// another interface attaches afresh instead of adopting a link that serves the old one.
const LINK_PIN_PREFIX: &str = "xdp_link_";

pub fn link_pin(dir: &std::path::Path, iface: &str) -> PathBuf {
    dir.join(format!("{LINK_PIN_PREFIX}{iface}"))
}

/// How the program ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    Native,
    Skb,
    /// A pinned link from an earlier agent now runs this program (mode unchanged).
    Adopted,
}

impl std::fmt::Display for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Attachment::Native => "native",
            Attachment::Skb => "skb",
            Attachment::Adopted => "adopted",
        })
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
    vip_addrs: HashMap<MapData, AddrKey, u32>,
    addr_filter: Array<MapData, u64>,
    /// What `addr_filter` holds, so a change writes only the words that differ.
    addr_filter_words: Vec<u64>,
    backends: Array<MapData, Backend>,
    conn_table: HashMap<MapData, FlowKey, FlowState>,
    stats: PerCpuArray<MapData, u64>,
    vip_stats: PerCpuArray<MapData, TrafficCounters>,
    backend_stats: PerCpuArray<MapData, TrafficCounters>,
    tables: TableWriter,
    previous: TableWriter,
    /// Handed to the controller, which runs it off its own task.
    sweeper: Option<Sweeper>,
    /// When each VIP last flipped tables: a table is rewritten only after packets that may
    /// still read it (an XDP run lasts well under a microsecond) are long gone.
    last_flip: std::collections::HashMap<u32, Instant>,
}

/// Least time between two table publications of one VIP.
const FLIP_QUIESCENCE: Duration = Duration::from_millis(1);

/// A loader; `LB_VERIFIER_LOG=1` asks the verifier for its full instruction-level log, which
/// load errors then carry (for debugging a rejected program).
fn loader() -> EbpfLoader<'static> {
    let mut loader = EbpfLoader::new();
    if std::env::var_os("LB_VERIFIER_LOG").is_some_and(|v| v == "1") {
        loader.verifier_log_level(aya::VerifierLogLevel::VERBOSE | aya::VerifierLogLevel::STATS);
    }
    loader
}

fn take<T: TryFrom<Map, Error = aya::maps::MapError>>(ebpf: &mut Ebpf, name: &str) -> Result<T> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

/// A second handle on a map (a duplicated descriptor), for a reader on another thread.
fn dup(ebpf: &Ebpf, name: &str) -> Result<Map> {
    let data = map_data(ebpf, name)?;
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .with_context(|| format!("duplicating the descriptor of map {name}"))?;
    let data = MapData::from_fd(fd).with_context(|| format!("reopening map {name}"))?;
    Map::from_map_data(data).with_context(|| format!("map {name} has an unexpected type"))
}

fn map_data<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a MapData> {
    match ebpf.map(name) {
        Some(Map::Array(d) | Map::HashMap(d) | Map::LruHashMap(d)) => Ok(d),
        Some(_) => bail!("map {name} has an unexpected type"),
        None => bail!("map {name} missing from the eBPF object"),
    }
}

fn load_xdp(ebpf: &mut Ebpf, name: &str) -> Result<()> {
    let prog = xdp(ebpf, name)?;
    // The error's Display carries the verifier log, so a rejected change fails with it.
    prog.load()
        .with_context(|| format!("the verifier rejected {name}"))
}

fn xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))
}

impl Balancer {
    /// Load the balancer object and its programs (through the verifier).
    pub fn load(options: LoadOptions) -> Result<Self> {
        if !lb_common::is_prime(options.table_size) {
            bail!("table_size {} is not a prime", options.table_size);
        }
        if options.max_vips == 0 || options.conn_table_entries == 0 {
            bail!("max_vips and conn_table_entries must be positive");
        }
        let adopted = options
            .pin_dir
            .as_ref()
            .is_some_and(|dir| dir.join("VIPS").exists());
        let maglev_elements = options
            .max_vips
            .checked_mul(2)
            .and_then(|n| n.checked_mul(options.table_size))
            .ok_or_else(|| anyhow!("max_vips * 2 * table_size overflows"))?
            .div_ceil(SLOTS_PER_ELEMENT);
        let mut loader = loader();
        loader
            .override_global("TABLE_SIZE", &options.table_size, true)
            .map_max_entries("MAGLEV", maglev_elements)
            .map_max_entries("MAGLEV_PREVIOUS", maglev_elements)
            .map_max_entries("VIPS", options.max_vips)
            .map_max_entries("VIP_ADDRS", options.max_vips)
            .map_max_entries("VIP_STATS", options.max_vips)
            .map_max_entries("CONN_TABLE", options.conn_table_entries);
        let pins: Vec<(&str, PathBuf)> = match &options.pin_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating the pin directory {}", dir.display()))?;
                PINNED_MAPS.iter().map(|m| (*m, dir.join(m))).collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(object(LB_OBJECT, "lb")?)
            .context("loading the balancer's eBPF object")?;
        if adopted {
            check_pinned_sizes(&ebpf, &options, maglev_elements)?;
        }
        for name in [
            LB_PROGRAM,
            REFLECT_PROGRAM,
            BENCH_LB_PROGRAM,
            BENCH_REFLECT_PROGRAM,
            BENCH_GEN_PROGRAM,
            BENCH_SINK_PROGRAM,
        ] {
            load_xdp(&mut ebpf, name)?;
        }
        let table_writer = |ebpf: &mut Ebpf, name: &'static str| -> Result<TableWriter> {
            match ebpf.take_map(name) {
                Some(Map::Array(data)) => {
                    TableWriter::new(data, name, options.table_size, options.max_vips)
                }
                _ => bail!("map {name} missing or not an array"),
            }
        };
        let tables = table_writer(&mut ebpf, "MAGLEV")?;
        let previous = table_writer(&mut ebpf, "MAGLEV_PREVIOUS")?;
        let sweeper = Sweeper::new(
            dup(&ebpf, "CONN_TABLE")?,
            dup(&ebpf, "BACKENDS")?,
            dup(&ebpf, "VIPS")?,
            options.table_size,
        )?;
        let mut balancer = Self {
            config: take(&mut ebpf, "CONFIG")?,
            vips: take(&mut ebpf, "VIPS")?,
            vip_addrs: take(&mut ebpf, "VIP_ADDRS")?,
            addr_filter: take(&mut ebpf, "ADDR_FILTER")?,
            addr_filter_words: vec![0; ADDR_FILTER_WORDS as usize],
            backends: take(&mut ebpf, "BACKENDS")?,
            conn_table: take(&mut ebpf, "CONN_TABLE")?,
            stats: take(&mut ebpf, "STATS")?,
            vip_stats: take(&mut ebpf, "VIP_STATS")?,
            backend_stats: take(&mut ebpf, "BACKEND_STATS")?,
            tables,
            previous,
            sweeper: Some(sweeper),
            last_flip: Default::default(),
            options,
            adopted,
            ebpf,
        };
        if adopted {
            balancer.addr_filter_words = balancer.read_filter()?;
        }
        Ok(balancer)
    }

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
    /// a pin directory, pinned so it outlives this process.
    pub fn attach(&mut self, iface: &str, mode: crate::config::XdpMode) -> Result<Attachment> {
        let pin = self.options.pin_dir.as_ref().map(|d| link_pin(d, iface));
        if let Some(dir) = &self.options.pin_dir {
            for other in pinned_links(dir)? {
                if Some(&other) != pin.as_ref() {
                    tracing::warn!(
                        link = %other.display(),
                        "a balancer link for another interface is still pinned (and forwarding); \
                         remove that file to detach it"
                    );
                }
            }
        }
        attach_xdp(self.program(LB_PROGRAM)?, iface, mode, pin.as_deref())
    }

    /// All backend slots in use: id and entry.
    pub fn backends_in_use(&self) -> Result<Vec<(u32, Backend)>> {
        let mut used = Vec::new();
        for id in 0..MAX_BACKENDS {
            let b = self.backend(id)?;
            if !b.is_free() {
                used.push((id, b));
            }
        }
        Ok(used)
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
        xdp(&mut self.ebpf, name)
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
        self.vips.insert(key, meta, 0).context("writing VIPS")?;
        self.refresh_address(key.addr, key.family)
    }

    pub fn remove_vip(&mut self, key: &VipKey) -> Result<()> {
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
        Stat::ALL
            .iter()
            .map(|s| Ok((*s, sum_u64(&self.stats, *s as u32)?)))
            .collect()
    }

    pub fn stat(&self, stat: Stat) -> Result<u64> {
        sum_u64(&self.stats, stat as u32)
    }

    pub fn vip_counters(&self, vip_id: u32) -> Result<TrafficCounters> {
        sum_traffic(&self.vip_stats, vip_id)
    }

    pub fn backend_counters(&self, backend_id: u32) -> Result<TrafficCounters> {
        sum_traffic(&self.backend_stats, backend_id)
    }

    /// Benchmark harness: the frame every iteration starts from.
    pub fn set_bench_frame(&mut self, frame: &BenchFrame) -> Result<()> {
        let mut frames: Array<&mut MapData, BenchFrame> = Array::try_from(
            self.ebpf
                .map_mut("BENCH_FRAME")
                .ok_or_else(|| anyhow!("map BENCH_FRAME missing"))?,
        )?;
        frames.set(0, frame, 0).context("writing BENCH_FRAME")
    }

    /// Benchmark harness: frames the forwarding benchmark's sink has received, over all CPUs.
    pub fn bench_sunk(&self) -> Result<u64> {
        let map = self
            .ebpf
            .map("BENCH_SINK")
            .ok_or_else(|| anyhow!("map BENCH_SINK missing"))?;
        sum_u64(&PerCpuArray::try_from(map)?, 0)
    }
}

/// Attach `prog` to `iface`, adopting the link pinned at `link_pin` when there is one.
fn attach_xdp(
    prog: &mut Xdp,
    iface: &str,
    mode: crate::config::XdpMode,
    link_pin: Option<&std::path::Path>,
) -> Result<Attachment> {
    use crate::config::XdpMode as Mode;
    use aya::programs::{links::FdLink, links::PinnedLink, xdp::XdpLink, XdpMode as Flags};
    if let Some(pin) = link_pin.filter(|p| p.exists()) {
        let pinned = PinnedLink::from_pin(pin)
            .with_context(|| format!("opening the pinned link {}", pin.display()))?;
        let link = XdpLink::try_from(FdLink::from(pinned))
            .context("the pinned link is not an XDP link")?;
        prog.attach_to_link(link)
            .context("swapping the new program into the pinned link")?;
        return Ok(Attachment::Adopted);
    }
    let (id, how) = match mode {
        Mode::Native => (prog.attach(iface, Flags::Driver), Attachment::Native),
        Mode::Skb => (prog.attach(iface, Flags::Skb), Attachment::Skb),
        Mode::Auto => match prog.attach(iface, Flags::Driver) {
            Ok(id) => (Ok(id), Attachment::Native),
            Err(native) => {
                tracing::warn!(
                    %iface,
                    error = %native,
                    "native XDP failed, falling back to skb (generic) mode: much slower; \
                     check the driver's XDP support with `lb-agent doctor`"
                );
                (prog.attach(iface, Flags::Skb), Attachment::Skb)
            }
        },
    };
    let id = id.with_context(|| format!("attaching to {iface} ({how} mode)"))?;
    if let Some(pin) = link_pin {
        let link = prog.take_link(id).context("taking the XDP link")?;
        let fd_link = FdLink::try_from(link)
            .context("the kernel gave no bpf_link for XDP (kernel too old to pin it)")?;
        if let Some(dir) = pin.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        fd_link
            .pin(pin)
            .with_context(|| format!("pinning the XDP link at {}", pin.display()))?;
    }
    Ok(how)
}

/// Detach the program behind the link pinned at `pin` by removing the pin (the last reference).
pub fn detach_pinned(pin: &std::path::Path) -> Result<()> {
    use aya::programs::links::PinnedLink;
    let pinned = PinnedLink::from_pin(pin)
        .with_context(|| format!("opening the pinned link {}", pin.display()))?;
    drop(pinned.unpin().context("unpinning the XDP link")?);
    Ok(())
}

/// Pinned maps keep the sizes they were created with; adopting them with other sizes would
/// index past their ends.
fn check_pinned_sizes(ebpf: &Ebpf, options: &LoadOptions, maglev_elements: u32) -> Result<()> {
    let entry = map_data(ebpf, "CONN_TABLE")?
        .info()
        .context("reading map info")?
        .value_size();
    if entry as usize != std::mem::size_of::<FlowState>() {
        bail!(
            "the pinned maps were made by an agent with another map layout (connection-table \
             entries of {entry} bytes, this agent's are {}): remove the pin directory {} and \
             restart (this drops the connection table)",
            std::mem::size_of::<FlowState>(),
            options
                .pin_dir
                .as_ref()
                .map_or(String::new(), |d| d.display().to_string())
        );
    }
    for (name, want) in [
        ("MAGLEV", maglev_elements),
        ("MAGLEV_PREVIOUS", maglev_elements),
        ("VIPS", options.max_vips),
        ("CONN_TABLE", options.conn_table_entries),
    ] {
        let have = map_data(ebpf, name)?
            .info()
            .context("reading map info")?
            .max_entries();
        if have != want {
            bail!(
                "the pinned map {name} holds {have} entries but the configuration asks for {want} \
                 (table_size, max_vips or conn_table_size changed): keep the old sizes, or remove \
                 the pin directory {} to start afresh (this drops the connection table)",
                options
                    .pin_dir
                    .as_ref()
                    .map_or(String::new(), |d| d.display().to_string())
            );
        }
    }
    Ok(())
}

/// Balancer links pinned in `dir`, whatever their interface.
fn pinned_links(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    Ok(entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(LINK_PIN_PREFIX))
        .map(|e| e.path())
        .collect())
}

/// Remove the pinned links (detaching the program) and the pinned maps.
pub fn unpin_all(pin_dir: &std::path::Path) -> Result<()> {
    for link in pinned_links(pin_dir)? {
        detach_pinned(&link)?;
    }
    for name in PINNED_MAPS {
        let path = pin_dir.join(name);
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
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

/// The backend-side decapsulation program.
pub struct Decap {
    ebpf: Ebpf,
    locals: HashMap<MapData, AddrKey, u32>,
    stats: PerCpuArray<MapData, u64>,
}

impl Decap {
    pub fn load() -> Result<Self> {
        let mut ebpf = loader()
            .load(object(DECAP_OBJECT, "decap")?)
            .context("loading the decap eBPF object")?;
        for name in [DECAP_PROGRAM, PASS_PROGRAM] {
            load_xdp(&mut ebpf, name)?;
        }
        Ok(Self {
            locals: take(&mut ebpf, "DECAP_DSTS")?,
            stats: take(&mut ebpf, "STATS")?,
            ebpf,
        })
    }

    pub fn program(&mut self, name: &str) -> Result<&mut Xdp> {
        xdp(&mut self.ebpf, name)
    }

    /// Attach `xdp_decap` to `iface`, pinning its link at `link_pin` so it stays after this
    /// process exits; an existing pin is reused (the program is swapped in place).
    pub fn attach(
        &mut self,
        iface: &str,
        mode: crate::config::XdpMode,
        link_pin: &std::path::Path,
    ) -> Result<Attachment> {
        attach_xdp(self.program(DECAP_PROGRAM)?, iface, mode, Some(link_pin))
    }

    /// Decapsulate tunnel packets addressed to `addr`.
    pub fn add_local(&mut self, addr: IpAddr) -> Result<()> {
        self.locals
            .insert(AddrKey::new(addr), 1, 0)
            .with_context(|| format!("adding {addr} to DECAP_DSTS"))
    }

    pub fn stat(&self, stat: Stat) -> Result<u64> {
        sum_u64(&self.stats, stat as u32)
    }
}
