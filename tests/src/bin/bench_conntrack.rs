//! `cargo xtask bench conntrack`: the connection table as flows grow, above its capacity, and
//! under a SYN flood; flows of stable slots (which never touch the table) beside flows of moved
//! slots (which look up every packet). BPF_PROG_TEST_RUN through the benchmark twin (`xdp_bench_lb`), whose
//! template cycles N flows (iteration count modulo N picks the source port and address), side
//! by side with the MAC-swap floor (`xdp_bench_reflect`) round by round. The thread is pinned to
//! one CPU: the table's LRU lists are per CPU, so a table holds `capacity / CPUs` flows
//! inserted from one CPU.

use anyhow::{ensure, Context, Result};
use lb_agent::dataplane::{BENCH_LB_PROGRAM, BENCH_REFLECT_PROGRAM};
use lb_common::{BenchFrame, Stat, BENCH_VARY_V4, DEFAULT_NEW_FLOWS_PER_SEC, IPPROTO_TCP};
use lb_tests::{
    benchkit::{median, pin, possible_cpus, prime_moved, run_twin, template},
    flood::{self, Flood, CLIENT, CPU, VIP},
    frames::{self, Tcp},
    lab::{backend_addr, flow_of, Lab},
    run::XDP_TX,
};
use std::net::{IpAddr, Ipv4Addr};

const ROUNDS: usize = 5;
/// Iterations per measurement: at least one pass over the largest flow set.
const ITERATIONS: u32 = 1_000_000;
const GROWTH: [u32; 4] = [1_000, 10_000, 100_000, 1_000_000];
/// Flows per CPU the small table holds: the same loads in a table sized to them (the cost
/// follows the table's size, not only its occupancy), then above its capacity.
const SMALL_SHARE: u32 = 131_072;
const OVER: [u32; 4] = [10_000, 100_000, 200_000, 1_000_000];
/// Flows checked against Maglev's choice after the over-capacity run.
const SAMPLE: u32 = 256;
const BACKENDS: [u32; 3] = [0, 1, 2];
/// The agent's default table; the flood is four times that.
const FLOOD_TABLE: u32 = 1_000_000;
const FLOOD_ESTABLISHED: u32 = 100_000;
const FLOOD_SYNS: u32 = 4_000_000;
/// A guard whose admissions stay below the free share (400,000) for floods up to ~15 s: the
/// default's do only for floods under ~3 s, and how long 4,000,000 SYNs take depends on load.
const LOW_GUARD: u32 = 25_000;

/// The backend every slot of the moved VIP points at now (new flows, SYNs, go there).
const MOVED_TO: u32 = BACKENDS[1];
/// A VIP whose every slot is moved; `VIP` keeps stable slots.
const MOVED_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 12);

fn flows_frame(vip: Ipv4Addr, flows: u32, tcp: Tcp) -> Result<BenchFrame> {
    template(BENCH_VARY_V4, flows, |p| {
        frames::tcp4(CLIENT, 0, vip, 80, tcp, p)
    })
}

/// A VIP of `BACKENDS` whose every slot is moved, with the equal table's pick as previous.
fn moved_vip(lab: &mut Lab) -> Result<lb_common::VipKey> {
    let key = lab.add_vip(MOVED_VIP.into(), 80, IPPROTO_TCP, 0, &BACKENDS)?;
    lab.move_every_slot(&key, BACKENDS[0], MOVED_TO)?;
    Ok(key)
}

/// Per-round figures of one flow count.
struct Row {
    flows: u32,
    moved: bool,
    lb: Vec<f64>,
    floor: Vec<f64>,
    hits: u64,
    lookups: u64,
}

impl Row {
    fn new(flows: u32, moved: bool) -> Self {
        Self {
            flows,
            moved,
            lb: Vec::new(),
            floor: Vec::new(),
            hits: 0,
            lookups: 0,
        }
    }

    fn print(&self, capacity: &str) {
        let ratio = median((0..ROUNDS).map(|r| self.lb[r] / self.floor[r]).collect());
        let net = median((0..ROUNDS).map(|r| self.lb[r] - self.floor[r]).collect());
        let (slots, hit) = if self.moved {
            (
                "moved",
                format!("{:.2}%", self.hits as f64 * 100.0 / self.lookups as f64),
            )
        } else {
            ("stable", "no lookup".to_string())
        };
        println!(
            "| {} | {slots} | {capacity} | {:.1} | {:.1} | {ratio:.2}x | {net:.1} | {hit} |",
            self.flows,
            median(self.lb.clone()),
            median(self.floor.clone()),
        );
    }
}

fn main() -> Result<()> {
    pin(0, CPU)?;
    let cpus = possible_cpus()?;
    eprintln!("conntrack: growth");
    let big = GROWTH[GROWTH.len() - 1];
    let mut lab = Lab::with_conn_table(big * cpus).context("loading the balancer (as root)")?;
    lab.add_vip(VIP.into(), 80, IPPROTO_TCP, 0, &BACKENDS)?;
    moved_vip(&mut lab)?;
    let mut growth = Vec::new();
    for flows in GROWTH {
        growth.push(measure(&mut lab, flows, false)?);
        growth.push(measure(&mut lab, flows, true)?);
    }

    eprintln!("conntrack: above capacity");
    let mut small = Lab::with_conn_table(SMALL_SHARE * cpus)?;
    let small_key = moved_vip(&mut small)?;
    let mut over = Vec::new();
    for flows in OVER {
        over.push(measure(&mut small, flows, true)?);
    }
    let checked = maglev_agrees(&mut small, &small_key, OVER[OVER.len() - 1])?;
    drop(small);
    drop(lab);

    eprintln!("conntrack: SYN flood");
    let mut floods = Vec::new();
    for (guard, moved) in [
        (0, false),
        (0, true),
        (DEFAULT_NEW_FLOWS_PER_SEC, true),
        (LOW_GUARD, true),
    ] {
        let outcome = flood::run(&Flood {
            conn_table: FLOOD_TABLE,
            established: FLOOD_ESTABLISHED,
            syns: FLOOD_SYNS,
            spoofed_acks: false,
            new_flows_per_sec: guard,
            moved,
        })?;
        floods.push((guard, moved, outcome));
    }

    println!(
        "BPF_PROG_TEST_RUN through the benchmark twin, {ROUNDS} rounds x {ITERATIONS} iterations \
         per flow count, one CPU; every packet a non-SYN of one of N flows cycled in order. \
         Stable slots: the Maglev table alone routes the flows. Moved slots (every slot of the VIP \
         moved): the connection table, primed with one pass of the flows' SYNs first. ns per \
         packet; the floor (MAC swap through the same harness) runs in the same round."
    );
    println!();
    println!(
        "| flows | slots | table (flows per CPU) | ns/pkt | floor ns | / floor | minus floor ns | \
         conn hit |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for row in &growth {
        row.print(&format!("{} ({big})", big * cpus));
    }
    for row in &over {
        row.print(&format!("{} ({SMALL_SHARE})", SMALL_SHARE * cpus));
    }
    println!();
    println!(
        "Moved slots are primed with each flow's SYN (only a SYN makes an entry there). Above \
         capacity a non-SYN whose entry was evicted goes to the slot's previous backend and makes \
         no entry; {checked} sampled flows of the {} set were each sent to their entry's backend \
         or, without one, to the previous backend Maglev picks for them.",
        OVER[OVER.len() - 1]
    );
    println!();
    println!(
        "SYN flood: {FLOOD_ESTABLISHED} established flows in a table of {FLOOD_TABLE} ({} per \
         CPU), then {FLOOD_SYNS} unique SYNs on the same CPU, then each established flow once \
         more: in moved slots it must still hit its entry, in stable slots the slot routes it.",
        FLOOD_TABLE / cpus
    );
    println!();
    println!(
        "| slots | new-flow guard (per CPU per s) | flood ns/SYN | flood s | entries admitted | \
         established flows still on their backend |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for (guard, moved, o) in &floods {
        let guard = if *guard == 0 {
            "off".to_string()
        } else {
            guard.to_string()
        };
        let slots = if *moved { "moved" } else { "stable" };
        let admitted = o
            .entries_after
            .map_or(FLOOD_SYNS as u64 - o.skipped, |entries| entries as u64);
        println!(
            "| {slots} | {guard} | {:.1} | {:.2} | {admitted} | {} of {FLOOD_ESTABLISHED} ({:.1}%) |",
            o.ns_per_syn,
            o.seconds,
            o.survivors,
            o.survivors as f64 * 100.0 / FLOOD_ESTABLISHED as f64
        );
    }
    Ok(())
}

/// Rounds of floor and balancer over `flows` flows of the stable or the moved VIP. Moved:
/// primed first, and counters must account for every packet as a hit or a non-SYN miss.
/// Stable: every packet must be routed by its stable slot.
fn measure(lab: &mut Lab, flows: u32, moved: bool) -> Result<Row> {
    eprintln!(
        "  {flows} flows, {} slots",
        if moved { "moved" } else { "stable" }
    );
    if !moved {
        return measure_stable(lab, flows);
    }
    let frame = flows_frame(MOVED_VIP, flows, Tcp::Ack)?;
    prime_moved(lab, &flows_frame(MOVED_VIP, flows, Tcp::Syn)?)?;
    let mut row = Row::new(flows, true);
    for _ in 0..ROUNDS {
        row.floor
            .push(run_twin(lab, BENCH_REFLECT_PROGRAM, &frame, ITERATIONS)?);
        let (hits, misses) = (
            lab.lb.stat(Stat::ConnHit)?,
            lab.lb.stat(Stat::ConnMissNonSyn)?,
        );
        row.lb
            .push(run_twin(lab, BENCH_LB_PROGRAM, &frame, ITERATIONS)?);
        let hits = lab.lb.stat(Stat::ConnHit)? - hits;
        let misses = lab.lb.stat(Stat::ConnMissNonSyn)? - misses;
        ensure!(
            hits + misses == ITERATIONS as u64,
            "{flows} flows: {hits} hits + {misses} misses of {ITERATIONS} packets"
        );
        row.hits += hits;
        row.lookups += ITERATIONS as u64;
    }
    Ok(row)
}

fn measure_stable(lab: &mut Lab, flows: u32) -> Result<Row> {
    let frame = flows_frame(VIP, flows, Tcp::Ack)?;
    let mut row = Row::new(flows, false);
    for _ in 0..ROUNDS {
        row.floor
            .push(run_twin(lab, BENCH_REFLECT_PROGRAM, &frame, ITERATIONS)?);
        let before = lab.lb.stat(Stat::StableSlot)?;
        row.lb
            .push(run_twin(lab, BENCH_LB_PROGRAM, &frame, ITERATIONS)?);
        let stable = lab.lb.stat(Stat::StableSlot)? - before;
        ensure!(
            stable == ITERATIONS as u64,
            "{flows} flows: {stable} of {ITERATIONS} packets routed by a stable slot"
        );
    }
    Ok(row)
}

/// Send `SAMPLE` flows of the `flows` set (built as the harness builds them) through `xdp_lb`
/// once each and check each went to its entry's backend or, evicted, to Maglev's previous
/// pick; returns how many were checked.
fn maglev_agrees(lab: &mut Lab, key: &lb_common::VipKey, flows: u32) -> Result<u32> {
    let step = flows / SAMPLE;
    for i in 0..SAMPLE {
        let flow = i * step + i % 7;
        let o = CLIENT.octets();
        let src = Ipv4Addr::new(o[0], o[1], o[2], o[3].wrapping_add((flow >> 16) as u8));
        let frame = frames::tcp4(src, flow as u16, MOVED_VIP, 80, Tcp::Ack, &[]);
        // A flow whose SYN's entry survived keeps the backend its SYN took, the slot's own;
        // an evicted one goes to the slot's previous backend, the equal table's pick.
        let hits = lab.lb.stat(Stat::ConnHit)?;
        let (verdict, out) = lab.run(&frame)?;
        let want = if lab.lb.stat(Stat::ConnHit)? > hits {
            MOVED_TO
        } else {
            lab.predict(key, &flow_of(&frame)?, &BACKENDS)?
        };
        let want = backend_addr(&lab.lb, want)?;
        ensure!(verdict == XDP_TX, "flow {flow}: verdict {verdict}");
        let got = IpAddr::V4(Ipv4Addr::new(out[30], out[31], out[32], out[33]));
        ensure!(
            got == want,
            "flow {flow}: sent to {got}, Maglev picks {want}"
        );
    }
    Ok(SAMPLE)
}
