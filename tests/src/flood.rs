//! A flood against the connection table, through the benchmark twin on one CPU: K
//! established flows (opened with a SYN), then F unique SYNs or spoofed ACKs, then how many of
//! the K still reach their backend.
//! In moved slots (every slot moved) that takes their entries surviving; in stable slots no
//! flow has or needs one, and the flood inserts nothing. Shared by the conntrack benchmark and
//! the flood test.

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
    /// Flood with spoofed ACKs (segments of no connection) instead of SYNs.
    pub spoofed_acks: bool,
    /// The guard during the flood (0: off).
    pub new_flows_per_sec: u32,
    /// Every slot of the VIP moved (the connection table in use), or every slot stable.
    pub moved: bool,
}

pub struct Outcome {
    /// Established flows that still reach their backend after the flood: by a connection-table
    /// hit in moved slots, by the stable slot otherwise.
    pub survivors: u64,
    /// Stable slots only: connection-table entries after the flood.
    pub entries_after: Option<usize>,
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
    let vip = lab.add_vip(VIP.into(), 80, IPPROTO_TCP, 0, &[0, 1, 2])?;
    if f.moved {
        lab.move_every_slot(&vip, 0, 1)?;
    }
    // What proves each pass took the intended path.
    let (first_packet, flood_packet, survivor) = if f.moved {
        let flood = if f.spoofed_acks {
            Stat::ConnMissNonSyn
        } else {
            Stat::ConnMissSyn
        };
        (Stat::ConnMissSyn, flood, Stat::ConnHit)
    } else {
        (Stat::StableSlot, Stat::StableSlot, Stat::StableSlot)
    };
    let opening = template(BENCH_VARY_V4, f.established, |p| {
        frames::tcp4(CLIENT, 0, VIP, 80, Tcp::Syn, p)
    })?;
    let established = template(BENCH_VARY_V4, f.established, |p| {
        frames::tcp4(CLIENT, 0, VIP, 80, Tcp::Ack, p)
    })?;
    let flags = if f.spoofed_acks { Tcp::Ack } else { Tcp::Syn };
    let syn = template(BENCH_VARY_V4, f.syns, |p| {
        frames::tcp4(FLOODER, 0, VIP, 80, flags, p)
    })?;
    // One pass of SYNs puts every established flow in the table in moved slots (guard off: the
    // lab's default).
    let before = lab.lb.stat(first_packet)?;
    run_twin(&mut lab, BENCH_LB_PROGRAM, &opening, f.established)?;
    ensure!(
        lab.lb.stat(first_packet)? - before == f.established as u64,
        "the established flows did not all take the {} path",
        first_packet.name()
    );
    let mut config = lab.config;
    config.new_flows_per_sec = f.new_flows_per_sec;
    lab.set_config(config)?;

    let (syns, skipped) = (
        lab.lb.stat(flood_packet)?,
        lab.lb.stat(Stat::ConnInsertSkipped)?,
    );
    let start = Instant::now();
    let ns_per_syn = run_twin(&mut lab, BENCH_LB_PROGRAM, &syn, f.syns)?;
    let seconds = start.elapsed().as_secs_f64();
    ensure!(
        lab.lb.stat(flood_packet)? - syns == f.syns as u64,
        "not every flood packet took the {} path",
        flood_packet.name()
    );
    let skipped = lab.lb.stat(Stat::ConnInsertSkipped)? - skipped;
    let entries_after = if f.moved {
        None
    } else {
        Some(lab.lb.conn_entries()?)
    };

    // Each established flow once more.
    let before = lab.lb.stat(survivor)?;
    run_twin(&mut lab, BENCH_LB_PROGRAM, &established, f.established)?;
    Ok(Outcome {
        survivors: lab.lb.stat(survivor)? - before,
        entries_after,
        ns_per_syn,
        skipped,
        seconds,
    })
}
