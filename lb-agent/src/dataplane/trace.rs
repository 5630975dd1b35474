//! The tracer's side of the packet trace: the running agent's pinned `TRACE_CONTROL` and
//! `TRACE_EVENTS`, and the `VIPS` and `BACKENDS` maps that name what an event refers to.
//! `lb-agent trace` is a process of its own; it never touches the agent's other maps.

use super::maps::{self, MapDef};
use anyhow::{bail, Context, Result};
use aya::maps::{Array, HashMap, Map, MapData, RingBuf};
use lb_common::{words_addr, Backend, TraceControl, VipKey, VipMeta, MAX_BACKENDS};
use std::{net::IpAddr, path::Path};

/// The directory in the pin directory whose `flock` a tracer holds (one trace at a time); the
/// agent removes it with its pins.
pub const TRACE_LOCK_DIR: &str = "trace_lock";

/// Handles on the pinned maps a tracer uses.
pub struct TraceMaps {
    pub control: Array<MapData, TraceControl>,
    pub events: RingBuf<MapData>,
    pub vips: HashMap<MapData, VipKey, VipMeta>,
    pub backends: Array<MapData, Backend>,
}

impl TraceMaps {
    /// Open the maps pinned in `pin_dir` by a running agent.
    pub fn open(pin_dir: &Path) -> Result<Self> {
        Ok(Self {
            control: Array::try_from(pinned(pin_dir, &maps::TRACE_CONTROL.def)?)
                .context("TRACE_CONTROL is not an array")?,
            events: RingBuf::try_from(pinned(pin_dir, &maps::TRACE_EVENTS.def)?)
                .context("TRACE_EVENTS is not a ring buffer")?,
            vips: HashMap::try_from(pinned(pin_dir, &maps::VIPS.def)?)
                .context("VIPS is not a hash map")?,
            backends: Array::try_from(pinned(pin_dir, &maps::BACKENDS.def)?)
                .context("BACKENDS is not an array")?,
        })
    }

    /// Every VIP the data path knows, with its id.
    pub fn vips(&self) -> Result<Vec<(VipKey, VipMeta)>> {
        self.vips
            .iter()
            .map(|kv| kv.context("iterating VIPS"))
            .collect()
    }

    /// A lookup of backend addresses by id (`None`: no such backend now).
    pub fn backend_reader(backends: Array<MapData, Backend>) -> impl Fn(u32) -> Option<IpAddr> {
        move |id| {
            let backend = (id < MAX_BACKENDS)
                .then(|| backends.get(&id, 0).ok())
                .flatten()
                .filter(|b| !b.is_free())?;
            words_addr(backend.addr, backend.family)
        }
    }
}

/// A pinned map, checked against the map table (an agent of another version may have pinned
/// another layout).
fn pinned(dir: &Path, def: &MapDef) -> Result<Map> {
    let path = dir.join(def.name);
    if !path.exists() {
        bail!(
            "{} does not exist: is an agent of this version running with pin_path {}? (give its \
             --config, or --pin-path)",
            path.display(),
            dir.display()
        );
    }
    let data = MapData::from_pin(&path)
        .with_context(|| format!("opening the pinned map {}", path.display()))?;
    let info = data
        .info()
        .with_context(|| format!("reading the info of {}", path.display()))?;
    let (key, value) = (info.key_size() as usize, info.value_size() as usize);
    if (key, value) != (def.key_size, def.value_size) {
        bail!(
            "{} has {key}-byte keys and {value}-byte values, this lb-agent expects {} and {}: \
             use the lb-agent binary of the running agent",
            path.display(),
            def.key_size,
            def.value_size
        );
    }
    Map::from_map_data(data).with_context(|| format!("opening {}", path.display()))
}
