//! The one definition of every map the agent touches: name (from `lb_common::maps`, which the
//! eBPF statics are checked against at compile time), key and value types, how many entries,
//! and whether it is pinned. The loader sizes and pins maps from this table, adoption checks
//! pinned maps against it, `unpin_all` removes what it pins, and opening a map is typed by it
//! (`MapSpec::take` only yields an aya map of the spec's key and value). A unit test compares
//! the table with the compiled objects.

use super::LoadOptions;
use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray},
    Ebpf, EbpfLoader, Pod,
};
use lb_common::{
    maps as name, AddrKey, Backend, BenchFrame, FloodWindow, FlowKey, FlowState, LbConfig,
    TraceControl, TraceScratch, TrafficCounters, VipKey, VipMeta, VipSlot, ADDR_FILTER_WORDS,
    BENCH_STAT_COUNT, DECAP_MAX_LOCALS, DECAP_STAT_COUNT, MAX_BACKENDS, PROBE_STAT_COUNT,
    SLOTS_PER_ELEMENT, STAT_COUNT, TRACE_RING_BYTES, VIP_INDEX_SLOTS,
};
use std::{marker::PhantomData, os::fd::AsFd, path::Path};

/// How many entries a map has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entries {
    /// As compiled into the object. Indices are constants of both sides, so a pinned map may
    /// hold more (a counter array from an agent that had more counters), never fewer.
    Compiled(u32),
    /// `max_vips`, set at load.
    MaxVips,
    /// `max_vips × 2 × table_size` slots, `SLOTS_PER_ELEMENT` to an element, set at load.
    MaglevElements,
    /// `conn_table_entries`, set at load.
    ConnTable,
}

impl Entries {
    /// The size the loader sets; `None`: the object's own.
    pub fn configured(self, options: &LoadOptions) -> Result<Option<u32>> {
        Ok(match self {
            Entries::Compiled(_) => None,
            Entries::MaxVips => Some(options.max_vips),
            Entries::ConnTable => Some(options.conn_table_entries),
            Entries::MaglevElements => Some(
                options
                    .max_vips
                    .checked_mul(2)
                    .and_then(|n| n.checked_mul(options.table_size))
                    .ok_or_else(|| anyhow!("max_vips * 2 * table_size overflows"))?
                    .div_ceil(SLOTS_PER_ELEMENT),
            ),
        })
    }

    /// Whether a pinned map of `have` entries serves `options`. A configured size must match
    /// exactly: the data path computes indices (table geometry) from it.
    fn fits(self, have: u32, options: &LoadOptions) -> Result<Option<u32>> {
        Ok(match (self, self.configured(options)?) {
            (Entries::Compiled(want), _) => (have < want).then_some(want),
            (_, Some(want)) => (have != want).then_some(want),
            (_, None) => None,
        })
    }
}

/// One map, untyped: what loading, pin checks and removal read.
#[derive(Clone, Copy, Debug)]
pub struct MapDef {
    pub name: &'static str,
    pub key_size: usize,
    pub value_size: usize,
    pub entries: Entries,
    /// Pinned in the pin directory: state that must survive an agent restart.
    pub pinned: bool,
}

/// A [`MapDef`] with its key and value types.
pub struct MapSpec<K, V> {
    pub def: MapDef,
    types: PhantomData<fn() -> (K, V)>,
}

const PINNED: bool = true;
const UNPINNED: bool = false;

impl<K, V> MapSpec<K, V> {
    const fn new(name: &'static str, entries: Entries, pinned: bool) -> Self {
        Self {
            def: MapDef {
                name,
                key_size: size_of::<K>(),
                value_size: size_of::<V>(),
                entries,
                pinned,
            },
            types: PhantomData,
        }
    }

    /// Take the map out of `ebpf` as `T` (an aya map of this key and value).
    pub fn take<T: Open<K, V>>(&self, ebpf: &mut Ebpf) -> Result<T> {
        let name = self.def.name;
        let map = ebpf
            .take_map(name)
            .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))?;
        T::open(map).with_context(|| format!("map {name} has an unexpected type"))
    }

    /// A second handle on the map (a duplicated descriptor), for a reader on another thread.
    pub fn dup<T: Open<K, V>>(&self, ebpf: &Ebpf) -> Result<T> {
        let name = self.def.name;
        let fd = map_data(ebpf, name)?
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .with_context(|| format!("duplicating the descriptor of map {name}"))?;
        let data = MapData::from_fd(fd).with_context(|| format!("reopening map {name}"))?;
        let map = Map::from_map_data(data).with_context(|| format!("reopening map {name}"))?;
        T::open(map).with_context(|| format!("map {name} has an unexpected type"))
    }
}

/// An aya map type that holds keys `K` and values `V`.
pub trait Open<K, V>: Sized {
    fn open(map: Map) -> Result<Self, MapError>;
}

impl<V: Pod> Open<u32, V> for Array<MapData, V> {
    fn open(map: Map) -> Result<Self, MapError> {
        Self::try_from(map)
    }
}

impl<V: Pod> Open<u32, V> for PerCpuArray<MapData, V> {
    fn open(map: Map) -> Result<Self, MapError> {
        Self::try_from(map)
    }
}

impl<K: Pod, V: Pod> Open<K, V> for HashMap<MapData, K, V> {
    fn open(map: Map) -> Result<Self, MapError> {
        Self::try_from(map)
    }
}

/// The bare map, for the table writers' shared mappings.
impl<V> Open<u32, V> for MapData {
    fn open(map: Map) -> Result<Self, MapError> {
        match map {
            Map::Array(data) => Ok(data),
            _ => Err(MapError::InvalidMapType { map_type: 0 }),
        }
    }
}

fn map_data<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a MapData> {
    match ebpf.map(name) {
        Some(
            Map::Array(d)
            | Map::PerCpuArray(d)
            | Map::HashMap(d)
            | Map::LruHashMap(d)
            | Map::RingBuf(d),
        ) => Ok(d),
        Some(_) => bail!("map {name} has an unexpected type"),
        None => bail!("map {name} missing from the eBPF object"),
    }
}

type Slots = [u16; SLOTS_PER_ELEMENT as usize];

// The balancer object.
pub const CONFIG: MapSpec<u32, LbConfig> = MapSpec::new(name::CONFIG, Entries::Compiled(1), PINNED);
pub const ADDR_FILTER: MapSpec<u32, u64> = MapSpec::new(
    name::ADDR_FILTER,
    Entries::Compiled(ADDR_FILTER_WORDS),
    PINNED,
);
pub const VIP_ADDRS: MapSpec<AddrKey, u32> =
    MapSpec::new(name::VIP_ADDRS, Entries::MaxVips, PINNED);
pub const VIPS: MapSpec<VipKey, VipMeta> = MapSpec::new(name::VIPS, Entries::MaxVips, PINNED);
/// Rebuilt from `VIPS` by every agent that loads the object (`vip_index`), hence not pinned.
pub const VIP_INDEX: MapSpec<u32, VipSlot> = MapSpec::new(
    name::VIP_INDEX,
    Entries::Compiled(VIP_INDEX_SLOTS),
    UNPINNED,
);
pub const MAGLEV: MapSpec<u32, Slots> = MapSpec::new(name::MAGLEV, Entries::MaglevElements, PINNED);
pub const MAGLEV_PREVIOUS: MapSpec<u32, Slots> =
    MapSpec::new(name::MAGLEV_PREVIOUS, Entries::MaglevElements, PINNED);
pub const BACKENDS: MapSpec<u32, Backend> =
    MapSpec::new(name::BACKENDS, Entries::Compiled(MAX_BACKENDS), PINNED);
pub const CONN_TABLE: MapSpec<FlowKey, FlowState> =
    MapSpec::new(name::CONN_TABLE, Entries::ConnTable, PINNED);
pub const FLOOD_GUARD: MapSpec<u32, FloodWindow> =
    MapSpec::new(name::FLOOD_GUARD, Entries::Compiled(1), PINNED);
pub const STATS: MapSpec<u32, u64> =
    MapSpec::new(name::STATS, Entries::Compiled(STAT_COUNT), PINNED);
pub const VIP_STATS: MapSpec<u32, TrafficCounters> =
    MapSpec::new(name::VIP_STATS, Entries::MaxVips, PINNED);
pub const BACKEND_STATS: MapSpec<u32, TrafficCounters> =
    MapSpec::new(name::BACKEND_STATS, Entries::Compiled(MAX_BACKENDS), PINNED);
pub const PROBE_STATS: MapSpec<u32, u64> = MapSpec::new(
    name::PROBE_STATS,
    Entries::Compiled(PROBE_STAT_COUNT),
    PINNED,
);
pub const BENCH_FRAME: MapSpec<u32, BenchFrame> =
    MapSpec::new(name::BENCH_FRAME, Entries::Compiled(1), UNPINNED);
pub const BENCH_STATS: MapSpec<u32, u64> = MapSpec::new(
    name::BENCH_STATS,
    Entries::Compiled(BENCH_STAT_COUNT),
    UNPINNED,
);

pub const TRACE_CONTROL: MapSpec<u32, TraceControl> =
    MapSpec::new(name::TRACE_CONTROL, Entries::Compiled(1), PINNED);
/// A ring buffer: no key or value, its size in bytes.
pub const TRACE_EVENTS: MapSpec<(), ()> = MapSpec::new(
    name::TRACE_EVENTS,
    Entries::Compiled(TRACE_RING_BYTES),
    PINNED,
);
pub const TRACE_SCRATCH: MapSpec<u32, TraceScratch> =
    MapSpec::new(name::TRACE_SCRATCH, Entries::Compiled(1), UNPINNED);

/// Every map of the balancer object.
pub const LB_MAPS: [MapDef; 19] = [
    CONFIG.def,
    ADDR_FILTER.def,
    VIP_ADDRS.def,
    VIPS.def,
    VIP_INDEX.def,
    MAGLEV.def,
    MAGLEV_PREVIOUS.def,
    BACKENDS.def,
    CONN_TABLE.def,
    FLOOD_GUARD.def,
    STATS.def,
    VIP_STATS.def,
    BACKEND_STATS.def,
    PROBE_STATS.def,
    BENCH_FRAME.def,
    BENCH_STATS.def,
    TRACE_CONTROL.def,
    TRACE_EVENTS.def,
    TRACE_SCRATCH.def,
];

// The decap object.
pub const DECAP_DSTS: MapSpec<AddrKey, u32> = MapSpec::new(
    name::DECAP_DSTS,
    Entries::Compiled(DECAP_MAX_LOCALS),
    UNPINNED,
);
pub const DECAP_STATS: MapSpec<u32, u64> = MapSpec::new(
    name::DECAP_STATS,
    Entries::Compiled(DECAP_STAT_COUNT),
    UNPINNED,
);

/// Every map of the decap object.
pub const DECAP_MAPS: [MapDef; 2] = [DECAP_DSTS.def, DECAP_STATS.def];

/// The pinned maps of the balancer object.
pub fn pinned() -> impl Iterator<Item = &'static MapDef> {
    LB_MAPS.iter().filter(|m| m.pinned)
}

/// Size the balancer's maps for `options` and pin those that carry state into `pin_dir`.
pub fn configure(
    loader: &mut EbpfLoader<'_>,
    options: &LoadOptions,
    pin_dir: Option<&Path>,
) -> Result<()> {
    for map in &LB_MAPS {
        if let Some(entries) = map.entries.configured(options)? {
            loader.map_max_entries(map.name, entries);
        }
        if let Some(dir) = pin_dir.filter(|_| map.pinned) {
            loader.map_pin_path(map.name, dir.join(map.name));
        }
    }
    Ok(())
}

/// Adopted maps keep the layout and sizes they were created with; using them with others would
/// misread entries or index past their ends.
pub fn check_pinned(ebpf: &Ebpf, options: &LoadOptions) -> Result<()> {
    let dir = options
        .pin_dir
        .as_ref()
        .map_or(String::new(), |d| d.display().to_string());
    for map in pinned() {
        let info = map_data(ebpf, map.name)?
            .info()
            .with_context(|| format!("reading the info of map {}", map.name))?;
        let (key, value) = (info.key_size() as usize, info.value_size() as usize);
        if (key, value) != (map.key_size, map.value_size) {
            bail!(
                "the pinned maps were made by an agent with another map layout ({} has {key}-byte \
                 keys and {value}-byte values, this agent's are {} and {}): remove the pin \
                 directory {dir} and restart (this drops the connection table)",
                map.name,
                map.key_size,
                map.value_size,
            );
        }
        if let Some(want) = map.entries.fits(info.max_entries(), options)? {
            bail!(
                "the pinned map {} holds {} entries but this agent needs {want} (table_size, \
                 max_vips or conn_table_size changed): keep the old sizes, or remove the pin \
                 directory {dir} to start afresh (this drops the connection table)",
                map.name,
                info.max_entries(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::{DEFAULT_CONN_TABLE_ENTRIES, DEFAULT_MAX_VIPS};

    /// The table and the compiled objects name the same maps, with the same key and value sizes
    /// and compiled sizes. Skipped when the agent was built without the objects.
    #[test]
    fn table_matches_the_objects() {
        let defaults = LoadOptions::default();
        for (object, table) in [
            (super::super::LB_OBJECT, &LB_MAPS[..]),
            (super::super::DECAP_OBJECT, &DECAP_MAPS[..]),
        ] {
            if object.is_empty() {
                eprintln!("skipped: this build has no eBPF objects (LB_EBPF_DIR)");
                return;
            }
            let parsed = aya_obj::Object::parse(object).expect("the object parses");
            // Sections such as .rodata (TABLE_SIZE) become maps too; ours have plain names.
            let mut names: Vec<&str> = parsed
                .maps
                .keys()
                .map(String::as_str)
                .filter(|n| !n.starts_with('.'))
                .collect();
            names.sort_unstable();
            let mut listed: Vec<&str> = table.iter().map(|m| m.name).collect();
            listed.sort_unstable();
            assert_eq!(names, listed);
            for def in table {
                let map = &parsed.maps[def.name];
                let entries = match def.entries {
                    Entries::Compiled(n) => n,
                    Entries::MaxVips => DEFAULT_MAX_VIPS,
                    Entries::ConnTable => DEFAULT_CONN_TABLE_ENTRIES,
                    Entries::MaglevElements => def.entries.configured(&defaults).unwrap().unwrap(),
                };
                assert_eq!(
                    (
                        map.key_size() as usize,
                        map.value_size() as usize,
                        map.max_entries()
                    ),
                    (def.key_size, def.value_size, entries),
                    "{}",
                    def.name
                );
            }
        }
    }

    #[test]
    fn pinned_sizes_fit_by_rule() {
        let options = LoadOptions::default();
        let fits = |e: Entries, have| e.fits(have, &options).unwrap().is_none();
        assert!(fits(Entries::Compiled(20), 20));
        assert!(fits(Entries::Compiled(20), 24));
        assert!(!fits(Entries::Compiled(20), 19));
        assert!(fits(Entries::MaxVips, options.max_vips));
        assert!(!fits(Entries::MaxVips, options.max_vips + 1));
        assert!(!fits(Entries::ConnTable, options.conn_table_entries - 1));
    }

    fn map_names(object: &[u8]) -> Vec<String> {
        let parsed = aya_obj::Object::parse(object).expect("the object parses");
        let mut names: Vec<String> = parsed
            .maps
            .keys()
            .filter(|n| !n.starts_with('.'))
            .cloned()
            .collect();
        names.sort_unstable();
        names
    }

    /// The `ebpf-log` variant holds the balancer's maps (so it adopts the same pins) and
    /// aya-log's ring buffer; the default object has no trace of aya-log.
    #[test]
    fn only_the_log_variant_has_the_aya_log_ring() {
        let (default, variant) = (super::super::LB_OBJECT, super::super::LB_LOG_OBJECT);
        if default.is_empty() || variant.is_empty() {
            eprintln!("skipped: this build has no eBPF objects (LB_EBPF_DIR)");
            return;
        }
        assert!(!map_names(default).iter().any(|n| n == "AYA_LOGS"));
        let mut expected: Vec<String> = LB_MAPS.iter().map(|m| m.name.to_string()).collect();
        expected.push("AYA_LOGS".to_string());
        expected.sort_unstable();
        assert_eq!(map_names(variant), expected);
    }
}
