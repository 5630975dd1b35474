//! A SYN flood against the connection table, through the benchmark twin on one CPU: K
//! established flows, then F unique SYNs, then how many of the K still hit. Shared by the
//! conntrack benchmark and the flood test.

use crate::{
    benchkit::{pin, run_twin, template},
    frames::{self, Tcp},
    lab::Lab,
};
use anyhow::{ensure, Result};
use lb_agent::dataplane::BENCH_LB_PROGRAM;
use lb_common::{Stat, BENCH_VARY_V4, IPPROTO_TCP};
use std::{net::Ipv4Addr, time::Instant};

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 7);
pub const FLOODER: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 1);
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
/// Everything runs here: with per-CPU LRU lists, only inserts on this CPU can evict the
/// entries made on it.
pub const CPU: usize = 0;

pub struct Flood {
    /// Connection-table capacity (split over the possible CPUs' LRU lists).
    pub conn_table: u32,
    pub established: u32,
    pub syns: u32,
    /// The guard during the flood (0: off).
    pub new_flows_per_sec: u32,
}

pub struct Outcome {
    /// Established flows that still hit the connection table after the flood.
    pub survivors: u64,
    /// Kernel-measured cost of one SYN during the flood.
    pub ns_per_syn: f64,
    /// SYNs whose entry the guard kept out (`conn_insert_skipped`).
    pub skipped: u64,
    pub seconds: f64,
}

/// Run the flood on a fresh balancer. Pins the calling thread to `CPU`.
pub fn run(f: &Flood) -> Result<Outcome> {
    pin(0, CPU)?;
    let mut lab = Lab::with_conn_table(f.conn_table)?;
    lab.add_vip(VIP.into(), 80, IPPROTO_TCP, 0, &[0, 1, 2])?;
    let established = template(BENCH_VARY_V4, f.established, |p| {
        frames::tcp4(CLIENT, 0, VIP, 80, Tcp::Ack, p)
    })?;
    let syn = template(BENCH_VARY_V4, f.syns, |p| {
        frames::tcp4(FLOODER, 0, VIP, 80, Tcp::Syn, p)
    })?;
    // One pass puts every established flow in the table (guard off: the lab's default).
    let misses = lab.lb.stat(Stat::ConnMissNonSyn)?;
    run_twin(&mut lab, BENCH_LB_PROGRAM, &established, f.established)?;
    ensure!(
        lab.lb.stat(Stat::ConnMissNonSyn)? - misses == f.established as u64,
        "the established flows were not all new"
    );
    let mut config = lab.config;
    config.new_flows_per_sec = f.new_flows_per_sec;
    lab.set_config(config)?;

    let (syns, skipped) = (
        lab.lb.stat(Stat::ConnMissSyn)?,
        lab.lb.stat(Stat::ConnInsertSkipped)?,
    );
    let start = Instant::now();
    let ns_per_syn = run_twin(&mut lab, BENCH_LB_PROGRAM, &syn, f.syns)?;
    let seconds = start.elapsed().as_secs_f64();
    ensure!(
        lab.lb.stat(Stat::ConnMissSyn)? - syns == f.syns as u64,
        "not every flood packet took the SYN path"
    );
    let skipped = lab.lb.stat(Stat::ConnInsertSkipped)? - skipped;

    // Each established flow once more: a hit means its entry survived.
    let hits = lab.lb.stat(Stat::ConnHit)?;
    run_twin(&mut lab, BENCH_LB_PROGRAM, &established, f.established)?;
    Ok(Outcome {
        survivors: lab.lb.stat(Stat::ConnHit)? - hits,
        ns_per_syn,
        skipped,
        seconds,
    })
}
