//! `lb-agent trace`: the running agent's packets, one line each (and a pcap file), straight
//! from the data path's ring buffer.
//!
//! The tracer is a process of its own: it opens the maps the agent pinned, writes the filter
//! with a lease into `TRACE_CONTROL`, renews the lease every second, and clears it when it
//! stops (Ctrl-C, SIGTERM, `--count` reached, an error). A tracer killed outright leaves a
//! lease that runs out within `TRACE_LEASE_NS`, after which the data path ignores it. One
//! tracer at a time: it holds a `flock` on the directory `<pin_path>/trace_lock` (bpffs refuses
//! names with a dot, and holds no regular files).

pub mod event;
pub mod filter;
pub mod flow;
mod pcap;

use crate::{
    dataplane::{TraceMaps, TRACE_LOCK_DIR},
    pinlock::PinLock,
};
use anyhow::{Context, Result};
use aya::maps::{Array, MapData, RingBuf};
use filter::Filter;
use lb_common::{TraceControl, TraceEvent, VipKey, TRACE_LEASE_NS};
use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

const LOCK_HINT: &str = "Another `lb-agent trace` is running for this agent: one trace at a \
                         time. Stop it first.";
const RENEW_EVERY: Duration = Duration::from_secs(1);

pub struct TraceOptions {
    pub pin_dir: PathBuf,
    /// VIP name to trace, resolved with `vips`.
    pub vip: Option<String>,
    pub filter: Filter,
    /// The agent's VIPs by name (from its /status), for `--vip` and for the lines.
    pub vips: Vec<(String, VipKey)>,
    pub count: Option<u64>,
    pub pcap: Option<PathBuf>,
}

/// The trace's lease in `TRACE_CONTROL`; cleared when dropped, however the trace ends.
struct Lease {
    control: Array<MapData, TraceControl>,
    value: TraceControl,
}

impl Lease {
    fn renew(&mut self) -> Result<()> {
        self.value.until_ns = monotonic_ns()? + TRACE_LEASE_NS;
        self.control
            .set(0, self.value, 0)
            .context("renewing the trace in TRACE_CONTROL")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Err(e) = self.control.set(0, TraceControl::default(), 0) {
            tracing::warn!("clearing TRACE_CONTROL: {e} (the trace stops when its lease ends)");
        }
    }
}

fn clock_ns(clock: libc::clockid_t) -> Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(std::io::Error::last_os_error()).context("clock_gettime");
    }
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// CLOCK_MONOTONIC, the data path's bpf_ktime_get_ns.
fn monotonic_ns() -> Result<u64> {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// What turns records into lines and pcap records, and counts them.
struct Printer<F> {
    vip_names: HashMap<u32, String>,
    backend_addr: F,
    backend_addrs: HashMap<u32, Option<IpAddr>>,
    pcap: Option<pcap::Pcap>,
    /// Wall clock of an event = its monotonic time + this offset.
    offset: u64,
    shown: u64,
}

impl<F: Fn(u32) -> Option<IpAddr>> Printer<F> {
    fn show(&mut self, record: &[u8]) -> Result<()> {
        let e: TraceEvent = event::decode(record)?;
        let wall = e.header.ts_ns.wrapping_add(self.offset);
        let backend = *self
            .backend_addrs
            .entry(e.header.backend_id)
            .or_insert_with(|| (self.backend_addr)(e.header.backend_id));
        let names = event::Names {
            vip: self.vip_names.get(&e.header.vip_id).map(String::as_str),
            backend,
        };
        println!("{}", event::line(&e, wall, &names));
        if let Some(p) = self.pcap.as_mut() {
            p.write(&e, wall)?;
        }
        self.shown += 1;
        Ok(())
    }
}

/// Run the trace until Ctrl-C, SIGTERM or `count` events; the number of events shown.
pub async fn run(mut options: TraceOptions) -> Result<u64> {
    let _lock = PinLock::acquire(&options.pin_dir.join(TRACE_LOCK_DIR), LOCK_HINT)?;
    let maps = TraceMaps::open(&options.pin_dir)?;
    let in_map = maps.vips()?;
    if let Some(name) = &options.vip {
        options.filter.vip_id = Some(filter::vip_id(name, &options.vips, &in_map)?);
    }
    let pcap = options
        .pcap
        .as_deref()
        .map(pcap::Pcap::create)
        .transpose()?;
    let TraceMaps {
        control,
        events,
        backends,
        ..
    } = maps;
    let mut lease = Lease {
        control,
        value: options.filter.control(0, std::process::id()),
    };
    lease.renew()?;
    let mut printer = Printer {
        vip_names: filter::vip_names(&options.vips, &in_map)
            .into_iter()
            .collect(),
        backend_addr: TraceMaps::backend_reader(backends),
        backend_addrs: HashMap::new(),
        pcap,
        offset: clock_ns(libc::CLOCK_REALTIME)?.wrapping_sub(monotonic_ns()?),
        shown: 0,
    };
    // SAFETY: the ring buffer owns its descriptor for as long as the AsyncFd owns the ring.
    let mut events = unsafe { AsyncFd::register(events) }
        .map_err(|e| anyhow::anyhow!("polling TRACE_EVENTS: {e}"))?;
    let limit = options.count.unwrap_or(u64::MAX);
    follow(&mut lease, &mut events, &mut printer, limit).await?;
    // Off first, then what the data path sent before it saw the lease end.
    drop(lease);
    while printer.shown < limit {
        let Some(record) = events.get_mut().next() else {
            break;
        };
        printer.show(&record)?;
    }
    Ok(printer.shown)
}

/// Show events as they come, renewing the lease, until a signal or `limit` events.
async fn follow<F: Fn(u32) -> Option<IpAddr>>(
    lease: &mut Lease,
    events: &mut AsyncFd<RingBuf<MapData>>,
    printer: &mut Printer<F>,
    limit: u64,
) -> Result<()> {
    let mut renew = tokio::time::interval(RENEW_EVERY);
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    while printer.shown < limit {
        tokio::select! {
            _ = renew.tick() => lease.renew()?,
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            ready = events.readable_mut() => {
                let mut guard = ready.context("polling TRACE_EVENTS")?;
                while printer.shown < limit {
                    let Some(record) = guard.get_inner_mut().next() else { break };
                    printer.show(&record)?;
                }
                guard.clear_ready();
            }
        }
    }
    Ok(())
}

/// The pin directory of `--pin-path`, else the configuration's `agent.pin_path`.
pub fn pin_dir(flag: Option<&Path>, config_pin_path: Option<PathBuf>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or(config_pin_path)
        .unwrap_or_else(|| PathBuf::from("/sys/fs/bpf/lb"))
}
