//! The backend-side decapsulation program and its maps.

use super::{attach::attach_xdp, load, maps, sum_u64, Attachment, DECAP_OBJECT};
use anyhow::{Context, Result};
use aya::{
    maps::{HashMap, MapData, PerCpuArray},
    programs::Xdp,
    Ebpf,
};
use lb_common::{AddrKey, DecapStat, DECAP_MAX_LOCALS};
use std::{net::IpAddr, path::Path};

/// The backend side's programs.
pub const DECAP_PROGRAM: &str = "xdp_decap";
pub const PASS_PROGRAM: &str = "xdp_pass";

pub struct Decap {
    ebpf: Ebpf,
    locals: HashMap<MapData, AddrKey, u32>,
    stats: PerCpuArray<MapData, u64>,
}

impl Decap {
    pub fn load() -> Result<Self> {
        Self::with_capacity(DECAP_MAX_LOCALS)
    }

    /// Load with room for `locals` tunnel destinations instead of the compiled 64 (a host, or a
    /// benchmark, that answers for more addresses).
    pub fn with_capacity(locals: u32) -> Result<Self> {
        let mut loader = load::loader();
        loader.map_max_entries(maps::DECAP_DSTS.def.name, locals);
        let mut ebpf = loader
            .load(load::object(DECAP_OBJECT, "decap")?)
            .context("loading the decap eBPF object")?;
        for name in [DECAP_PROGRAM, PASS_PROGRAM] {
            load::load_xdp(&mut ebpf, name)?;
        }
        Ok(Self {
            locals: maps::DECAP_DSTS.take(&mut ebpf)?,
            stats: maps::DECAP_STATS.take(&mut ebpf)?,
            ebpf,
        })
    }

    pub fn program(&mut self, name: &str) -> Result<&mut Xdp> {
        load::xdp(&mut self.ebpf, name)
    }

    /// Attach `xdp_decap` to `iface`, pinning its link at `link_pin` so it stays after this
    /// process exits; an existing pin is reused (the program is swapped in place).
    pub fn attach(
        &mut self,
        iface: &str,
        mode: crate::config::XdpMode,
        link_pin: &Path,
    ) -> Result<Attachment> {
        attach_xdp(self.program(DECAP_PROGRAM)?, iface, mode, Some(link_pin))
    }

    /// Decapsulate tunnel packets addressed to `addr`.
    pub fn add_local(&mut self, addr: IpAddr) -> Result<()> {
        let name = maps::DECAP_DSTS.def.name;
        self.locals
            .insert(AddrKey::new(addr), 1, 0)
            .with_context(|| format!("adding {addr} to {name}"))
    }

    pub fn stat(&self, stat: DecapStat) -> Result<u64> {
        sum_u64(&self.stats, stat as u32)
    }

    /// The decap program's counters summed over CPUs, in `DecapStat` order.
    pub fn stats(&self) -> Result<Vec<(DecapStat, u64)>> {
        DecapStat::ALL
            .iter()
            .map(|s| Ok((*s, self.stat(*s)?)))
            .collect()
    }
}
