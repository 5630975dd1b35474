//! Loading the embedded objects: the verifier, the balancer's maps from the table in `maps`
//! (sized, pinned, adopted), and the handles the `Balancer` keeps.

use super::{
    maps, Balancer, Counters, LoadOptions, Sweeper, TableWriter, LB_LOG_OBJECT, LB_OBJECT,
    LB_PROGRAMS,
};
use anyhow::{anyhow, bail, Context, Result};
use aya::{programs::Xdp, Ebpf, EbpfLoader};
use lb_common::ADDR_FILTER_WORDS;
use std::sync::Arc;

pub(super) fn object(bytes: &'static [u8], name: &str) -> Result<&'static [u8]> {
    if bytes.is_empty() {
        bail!("this lb-agent was built without its eBPF object `{name}`: build it with `cargo xtask build`");
    }
    Ok(bytes)
}

/// A loader; `LB_VERIFIER_LOG=1` asks the verifier for its full instruction-level log, which
/// load errors then carry (for debugging a rejected program).
pub(super) fn loader() -> EbpfLoader<'static> {
    let mut loader = EbpfLoader::new();
    if std::env::var_os("LB_VERIFIER_LOG").is_some_and(|v| v == "1") {
        loader.verifier_log_level(aya::VerifierLogLevel::VERBOSE | aya::VerifierLogLevel::STATS);
    }
    loader
}

pub(super) fn load_xdp(ebpf: &mut Ebpf, name: &str) -> Result<()> {
    let prog = xdp(ebpf, name)?;
    // The error's Display carries the verifier log, so a rejected change fails with it.
    prog.load()
        .with_context(|| format!("the verifier rejected {name}"))
}

pub(super) fn loader_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))
}

pub(super) fn xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    loader_program(ebpf, name)?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))
}

impl Balancer {
    /// Load the balancer object and its programs (through the verifier). With a pin directory
    /// that already holds the maps, those are adopted (checked against the map table first).
    pub fn load(options: LoadOptions) -> Result<Self> {
        if !lb_common::is_prime(options.table_size) {
            bail!("table_size {} is not a prime", options.table_size);
        }
        if options.max_vips == 0 || options.conn_table_entries == 0 {
            bail!("max_vips and conn_table_entries must be positive");
        }
        let pin_dir = options.pin_dir.as_deref();
        let adopted = pin_dir.is_some_and(|dir| dir.join(maps::VIPS.def.name).exists());
        if let Some(dir) = pin_dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the pin directory {}", dir.display()))?;
            // Before anything is adopted: another namespace's maps would be reprogrammed.
            super::pinned::claim(dir, |other| {
                format!("agent.pin_path = \"{}\"", other.display())
            })?;
        }
        let mut loader = loader();
        loader.override_global("TABLE_SIZE", &options.table_size, true);
        maps::configure(&mut loader, &options, pin_dir)?;
        let bytes = if options.ebpf_log {
            object(LB_LOG_OBJECT, "lb-log")?
        } else {
            object(LB_OBJECT, "lb")?
        };
        let mut ebpf = loader
            .load(bytes)
            .context("loading the balancer's eBPF object")?;
        if options.ebpf_log {
            super::ebpf_log::start(&mut ebpf)?;
        }
        if adopted {
            maps::check_pinned(&ebpf, &options)?;
        }
        for name in LB_PROGRAMS {
            load_xdp(&mut ebpf, name)?;
        }
        super::probe::load(&mut ebpf)?;
        Self::from_loaded(ebpf, options, adopted)
    }

    /// The handles on the loaded object's maps.
    fn from_loaded(mut ebpf: Ebpf, options: LoadOptions, adopted: bool) -> Result<Self> {
        let (size, max_vips) = (options.table_size, options.max_vips);
        let tables = TableWriter::new(
            maps::MAGLEV.take(&mut ebpf)?,
            maps::MAGLEV.def.name,
            size,
            max_vips,
        )?;
        let previous = TableWriter::new(
            maps::MAGLEV_PREVIOUS.take(&mut ebpf)?,
            maps::MAGLEV_PREVIOUS.def.name,
            size,
            max_vips,
        )?;
        let sweeper = Sweeper::new(
            maps::CONN_TABLE.dup(&ebpf)?,
            maps::BACKENDS.dup(&ebpf)?,
            maps::VIPS.dup(&ebpf)?,
            size,
        );
        let mut balancer = Self {
            config: maps::CONFIG.take(&mut ebpf)?,
            vips: maps::VIPS.take(&mut ebpf)?,
            vip_index: super::vip_index::VipIndex::new(maps::VIP_INDEX.take(&mut ebpf)?)?,
            vip_addrs: maps::VIP_ADDRS.take(&mut ebpf)?,
            addr_filter: maps::ADDR_FILTER.take(&mut ebpf)?,
            addr_filter_words: vec![0; ADDR_FILTER_WORDS as usize],
            backends: maps::BACKENDS.take(&mut ebpf)?,
            conn_table: maps::CONN_TABLE.take(&mut ebpf)?,
            counters: Arc::new(Counters::new(
                maps::STATS.take(&mut ebpf)?,
                maps::VIP_STATS.take(&mut ebpf)?,
                maps::BACKEND_STATS.take(&mut ebpf)?,
                maps::PROBE_STATS.take(&mut ebpf)?,
            )),
            bench_frame: maps::BENCH_FRAME.take(&mut ebpf)?,
            bench_stats: maps::BENCH_STATS.take(&mut ebpf)?,
            tables,
            previous,
            sweeper: Some(sweeper),
            last_flip: Default::default(),
            probe_link: None,
            options,
            adopted,
            ebpf,
        };
        if adopted {
            balancer.addr_filter_words = balancer.read_filter()?;
            // The index is not pinned: rebuilt from the adopted VIPS before the program that
            // reads it is attached.
            for (key, meta) in balancer.vips()? {
                balancer.vip_index.set(&key, &meta)?;
            }
        }
        Ok(balancer)
    }
}
