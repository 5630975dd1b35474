//! `cargo xtask bench forwarding`: packets per second the balancer forwards through real veths,
//! side by side with the MAC-swap reflector in the same place (the limit).
//!
//! Topology (`pair::Pair`): fwgen ↔ fwlb. A generator (`xdp_bench_gen`, BPF_PROG_TEST_RUN in
//! live-frames mode with fwgen as ingress device) writes the template frame and transmits it
//! into fwlb; the program under test runs natively on fwlb and sends the frame back (XDP_TX);
//! fwgen's counting sink (`xdp_bench_sink`) drops it. Threaded NAPI lets each side be pinned:
//! generator and sink on one CPU, fwlb's receive path (veth receive, the program, XDP_TX) alone
//! on the other, so the figure is what one core forwards. The generator offers more than the
//! programs take: the surplus overflows fwlb's receive ring (reported as drops).
//!
//! The balancer and the reflector alternate on one attachment (bpf_link update) round by round;
//! each ratio is taken within its round. Counters prove the path: every frame the balancer
//! processed was forwarded, and every one hit the connection table.

use anyhow::{ensure, Context, Result};
use aya::{
    programs::{xdp::XdpLink, TestRun, TestRunAttrs, TestRunOptions, XdpMode},
    sys::{enable_stats, Stats},
};
use lb_agent::dataplane::{BENCH_GEN_PROGRAM, BENCH_SINK_PROGRAM, LB_PROGRAM, REFLECT_PROGRAM};
use lb_common::{
    BenchFrame, BenchStat, Stat, BENCH_FRAME_LEN, BENCH_VARY_V4, BENCH_VARY_V6, IPPROTO_TCP,
};
use lb_tests::{
    benchkit::{cpu_ns, pin},
    benchkit::{median, prime_moved, template},
    frames::{self, Tcp},
    lab::Lab,
    netns::scoped_in,
    pair::{napi_threads, Pair, GEN_IFACE, LB_IFACE},
};
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

const ROUNDS: usize = 5;
/// Frames the generator offers per measurement.
const FRAMES: u32 = 3_000_000;
/// Live-frames batch (frames per flush to the veth).
const BATCH: u32 = 64;
const GEN_CPU: usize = 0;
const LB_CPU: usize = 1;
/// Poll interval while waiting for the rings to drain after the generator stops.
const SETTLE: Duration = Duration::from_millis(50);
/// Longest wait for the drain: fwlb's thread may be kept off its CPU by other work.
const SETTLE_MAX: Duration = Duration::from_secs(5);
/// Connection table: 100,000 flows inserted from one CPU must fit that CPU's LRU share.
const CONN_TABLE: u32 = 1 << 19;
/// Issue #13's target for stable slots at `MANY` flows: the balancer's rate per core as a share of
/// the reflector's.
const TARGET: f64 = 0.85;
const MANY: u32 = 100_000;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 7);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 7);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
/// A VIP whose every slot is moved: every frame looks its flow up in the connection table.
const MOVED_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 12);

struct Case {
    name: String,
    frame: BenchFrame,
    /// Flows of moved slots (connection table): the SYN twin of `frame`, which puts them in
    /// the table. `None`: flows of stable slots (no table).
    syn: Option<BenchFrame>,
}

impl Case {
    fn moved(&self) -> bool {
        self.syn.is_some()
    }

    /// The share of the reflector's rate this case must reach, if it has a target.
    fn target(&self) -> Option<f64> {
        (self.frame.flows == MANY && !self.moved()).then_some(TARGET)
    }

    /// The counter that must grow by one per forwarded frame.
    fn proof(&self) -> Stat {
        if self.moved() {
            Stat::ConnHit
        } else {
            Stat::StableSlot
        }
    }
}

/// One generator run against the program on fwlb.
#[derive(Default, Clone, Copy)]
struct Sample {
    wall: f64,
    generated: u64,
    processed: u64,
    run_ns: u64,
    sunk: u64,
    forwarded: u64,
    /// CPU time of fwlb's NAPI thread (receive, program, XDP_TX).
    cpu_ns: u64,
}

impl Sample {
    /// Frames per wall second.
    fn pps(&self) -> f64 {
        self.processed as f64 / self.wall
    }
    /// Frames per second of the forwarding thread's own CPU time: what one core forwards when
    /// nothing else runs on it (this machine's CPUs are shared with other work).
    fn pps_core(&self) -> f64 {
        self.processed as f64 * 1e9 / self.cpu_ns.max(1) as f64
    }
    fn ns_per_packet(&self) -> f64 {
        self.run_ns as f64 / self.processed.max(1) as f64
    }
}

struct Bench {
    lab: Lab,
    pair: Pair,
    /// fwgen's index in its namespace: the generator's ingress device.
    gen_ifindex: u32,
    /// The attachment on fwlb, moved between the balancer and the reflector.
    link: Option<XdpLink>,
    attached: &'static str,
    /// fwlb's NAPI thread(s).
    napi: Vec<i32>,
}

fn main() -> Result<()> {
    let pair = Pair::build("fw").context("building the veth pair (run as root)")?;
    let mut lab = Lab::with_conn_table(CONN_TABLE).context("loading the balancer")?;
    lab.add_vip(VIP.into(), 80, IPPROTO_TCP, 0, &[0, 1, 2])?;
    lab.add_vip(VIP6.into(), 80, IPPROTO_TCP, 0, &[3, 4])?;
    let moved = lab.add_vip(MOVED_VIP.into(), 80, IPPROTO_TCP, 0, &[0, 1, 2])?;
    lab.move_every_slot(&moved, 0, 1)?;
    let gen_ifindex = pair.ifindex(&pair.gen, GEN_IFACE)?;
    let sink = lab.lb.program(BENCH_SINK_PROGRAM)?;
    scoped_in(&pair.gen, || {
        sink.attach(GEN_IFACE, XdpMode::Driver)
            .context("attaching the sink")
    })?;
    let prog = lab.lb.program(LB_PROGRAM)?;
    let link = scoped_in(&pair.lb, || {
        let id = prog
            .attach(LB_IFACE, XdpMode::Driver)
            .context("attaching xdp_lb natively")?;
        prog.take_link(id).context("taking the link")
    })?;
    for (dev, cpu) in [(LB_IFACE, LB_CPU), (GEN_IFACE, GEN_CPU)] {
        let threads = napi_threads(dev)?;
        ensure!(!threads.is_empty(), "no NAPI thread for {dev}");
        for pid in threads {
            pin(pid, cpu)?;
        }
    }
    let napi = napi_threads(LB_IFACE)?;
    // Run time and count of every program, for the per-packet cost in the live path.
    let _stats = enable_stats(Stats::RunTime).context("enabling BPF run-time stats")?;
    let mut bench = Bench {
        lab,
        pair,
        gen_ifindex,
        link: Some(link),
        attached: LB_PROGRAM,
        napi,
    };

    let mut cases = Vec::new();
    for flows in [1, MANY] {
        cases.push(Case {
            name: format!("IPv4 TCP, {flows} flow{}", if flows > 1 { "s" } else { "" }),
            frame: template(BENCH_VARY_V4, flows, |p| {
                frames::tcp4(CLIENT, 40000, VIP, 80, Tcp::Ack, p)
            })?,
            syn: None,
        });
        cases.push(Case {
            name: format!("IPv6 TCP, {flows} flow{}", if flows > 1 { "s" } else { "" }),
            frame: template(BENCH_VARY_V6, flows, |p| {
                frames::tcp6(CLIENT6, 40000, VIP6, 80, Tcp::Ack, p)
            })?,
            syn: None,
        });
    }
    // Not a steady state (a table change moves a few slots, not all), but the cost of the
    // connection table where it is in use.
    cases.push(Case {
        name: format!("IPv4 TCP, {MANY} flows, every slot moved"),
        frame: template(BENCH_VARY_V4, MANY, |p| {
            frames::tcp4(CLIENT, 40000, MOVED_VIP, 80, Tcp::Ack, p)
        })?,
        syn: Some(template(BENCH_VARY_V4, MANY, |p| {
            frames::tcp4(CLIENT, 40000, MOVED_VIP, 80, Tcp::Syn, p)
        })?),
    });

    // LB_BENCH_ONLY=<substring>: only the cases whose name has it (for profiling one path).
    if let Ok(only) = std::env::var("LB_BENCH_ONLY") {
        cases.retain(|c| c.name.contains(&only));
    }
    let mut rows = Vec::new();
    let mut missed = Vec::new();
    for case in &cases {
        eprintln!("forwarding: {}", case.name);
        bench.lab.lb.set_bench_frame(&case.frame)?;
        bench.prime(case)?;
        let lookups = |lab: &Lab| -> Result<[u64; 3]> {
            Ok([
                lab.lb.stat(Stat::Forwarded)?,
                lab.lb.stat(case.proof())?,
                lab.lb.stat(Stat::ConnMissNonSyn)?,
            ])
        };
        let start = lookups(&bench.lab)?;
        let mut lb = Vec::new();
        let mut reflect = Vec::new();
        for _ in 0..ROUNDS {
            lb.push(bench.measure(LB_PROGRAM, case)?);
            reflect.push(bench.measure(REFLECT_PROGRAM, case)?);
        }
        let end = lookups(&bench.lab)?;
        let (forwarded, hits, misses) = (end[0] - start[0], end[1] - start[1], end[2] - start[2]);
        // Checked over the whole case: with fwlb's thread starved by other work, a round's
        // window can split a frame's hit and forward counts.
        ensure!(
            hits == forwarded && misses == 0,
            "{}: of {forwarded} forwarded frames {hits} counted {}, {misses} missed the \
             connection table, which now holds {} entries",
            case.name,
            case.proof().name(),
            bench.lab.lb.conn_entries()?
        );
        let ratio = median(
            (0..ROUNDS)
                .map(|r| lb[r].pps_core() / reflect[r].pps_core())
                .collect(),
        );
        if case.target().is_some_and(|t| ratio < t) {
            missed.push(format!("{} at {:.0}%", case.name, ratio * 100.0));
        }
        let target = case
            .target()
            .map_or("-".to_string(), |t| format!(">= {:.0}%", t * 100.0));
        let path = format!(
            "{} {:.2}%",
            case.proof().name(),
            hits as f64 * 100.0 / forwarded as f64
        );
        rows.push((case.name.clone(), lb, reflect, ratio, target, path));
    }
    bench.detach()?;

    println!(
        "Live frames (BPF_PROG_TEST_RUN, BPF_F_TEST_XDP_LIVE_FRAMES, batch {BATCH}) through a veth \
         pair, {BENCH_FRAME_LEN}-byte frames, {ROUNDS} rounds x {FRAMES} offered frames per case \
         and program, balancer and reflector alternating; generator and sink pinned to CPU \
         {GEN_CPU}, the forwarding side (threaded NAPI of fwlb) to CPU {LB_CPU}."
    );
    println!();
    println!(
        "| case | balancer Mpps per core | reflector Mpps per core | balancer / reflector | target \
         | balancer ns/pkt in program | reflector ns/pkt in program | wall Mpps balancer / reflector \
         | offered Mpps | ring drops balancer / reflector | path |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, lb, reflect, ratio, target, path) in &rows {
        let med = |v: &[Sample], f: &dyn Fn(&Sample) -> f64| median(v.iter().map(f).collect());
        let drops = |s: &Sample| 1.0 - s.processed as f64 / s.generated as f64;
        println!(
            "| {name} | {:.2} | {:.2} | {:.0}% | {target} | {:.0} | {:.0} | {:.2} / {:.2} | {:.2} | {:.0}% / {:.0}% | {path} |",
            med(lb, &|s| s.pps_core()) / 1e6,
            med(reflect, &|s| s.pps_core()) / 1e6,
            ratio * 100.0,
            med(lb, &|s| s.ns_per_packet()),
            med(reflect, &|s| s.ns_per_packet()),
            med(lb, &|s| s.pps()) / 1e6,
            med(reflect, &|s| s.pps()) / 1e6,
            med(lb, &|s| s.generated as f64 / s.wall) / 1e6,
            med(lb, &drops) * 100.0,
            med(reflect, &drops) * 100.0,
        );
    }
    let sunk: u64 = rows
        .iter()
        .flat_map(|r| r.1.iter().chain(r.2.iter()))
        .map(|s| s.sunk)
        .sum();
    let processed: u64 = rows
        .iter()
        .flat_map(|r| r.1.iter().chain(r.2.iter()))
        .map(|s| s.processed)
        .sum();
    println!();
    println!(
        "Mpps per core: frames the program on fwlb processed (BPF run count) per second of CPU \
         time of fwlb's NAPI thread (/proc/PID/schedstat: veth receive, the program, XDP_TX \
         towards fwgen); the ratio is taken per round, median shown. Every frame the balancer \
         processed was counted `forwarded` and, as the path column says, routed by its stable \
         slot (`stable_slot`) or, in the moved case, found in the connection table (`conn_hit`). \
         ns/pkt in program: the program's own run time per frame (BPF stats). Wall Mpps: the same \
         frames per wall second, which on this shared machine depends on what else runs. Ring \
         drops: offered frames fwlb's receive ring had no room for (the generator outruns both \
         programs). The sink received {:.2}% of the processed frames.",
        sunk as f64 * 100.0 / processed as f64
    );
    if !missed.is_empty() {
        println!("\nbelow target: {}", missed.join("; "));
    }
    Ok(())
}

impl Bench {
    /// Put the program under test on fwlb (an atomic program swap on the same link).
    fn attach(&mut self, name: &'static str) -> Result<()> {
        if self.attached == name {
            return Ok(());
        }
        let link = self.link.take().context("no link")?;
        let prog = self.lab.lb.program(name)?;
        let id = prog
            .attach_to_link(link)
            .with_context(|| format!("swapping {name} in"))?;
        self.link = Some(prog.take_link(id)?);
        self.attached = name;
        Ok(())
    }

    fn detach(&mut self) -> Result<()> {
        drop(self.link.take());
        Ok(())
    }

    /// Offer `frames` frames of the current template from fwgen, on the generator's CPU.
    fn generate(&mut self, frames: u32, frame: &BenchFrame) -> Result<Duration> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress.
        let md: [u32; 6] = [0, BENCH_FRAME_LEN as u32, 0, self.gen_ifindex, 0, 0];
        let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let gen = self.lab.lb.program(BENCH_GEN_PROGRAM)?;
        scoped_in(&self.pair.gen, || {
            pin(0, GEN_CPU)?;
            let start = Instant::now();
            gen.test_run(TestRunOptions {
                data_in: Some(&frame.bytes),
                ctx_in: Some(&ctx),
                repeat: frames,
                attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                ..Default::default()
            })
            .context("live-frames BPF_PROG_TEST_RUN")?;
            Ok(start.elapsed())
        })
    }

    /// Put a moved case's flows in the connection table (nothing for stable ones): one pass of the benchmark twin over
    /// their SYNs cycles every flow exactly once (the live generator's ring drops would leave
    /// gaps). The measurement then proves that every forwarded frame hit.
    fn prime(&mut self, case: &Case) -> Result<()> {
        if let Some(syn) = &case.syn {
            prime_moved(&mut self.lab, syn)?;
            let entries = self.lab.lb.conn_entries()?;
            ensure!(
                entries >= syn.flows as usize,
                "{}: priming left {entries} connection-table entries for {} flows",
                case.name,
                syn.flows
            );
            self.lab.lb.set_bench_frame(&case.frame)?;
        }
        Ok(())
    }

    /// Wait until the program on fwlb stops running: counters are read only when no frame is
    /// in flight.
    fn settle(&mut self, name: &str) -> Result<()> {
        let start = Instant::now();
        let mut runs = self.lab.lb.program(name)?.info()?.run_count();
        while start.elapsed() < SETTLE_MAX {
            std::thread::sleep(SETTLE);
            let now = self.lab.lb.program(name)?.info()?.run_count();
            if now == runs {
                return Ok(());
            }
            runs = now;
        }
        anyhow::bail!("{name} still running {SETTLE_MAX:?} after the generator stopped")
    }

    fn measure(&mut self, name: &'static str, case: &Case) -> Result<Sample> {
        self.attach(name)?;
        let counters = |lb: &lb_agent::dataplane::Balancer| -> Result<[u64; 3]> {
            Ok([
                lb.bench_stat(BenchStat::Restored)?,
                lb.stat(Stat::Forwarded)?,
                lb.bench_stat(BenchStat::Sunk)?,
            ])
        };
        self.settle(name)?;
        let before = counters(&self.lab.lb)?;

        let info = self.lab.lb.program(name)?.info()?;
        let (runs, time) = (info.run_count(), info.run_time());
        let cpu = cpu_ns(&self.napi)?;
        let wall = self.generate(FRAMES, &case.frame)?;
        self.settle(name)?;
        let cpu = cpu_ns(&self.napi)? - cpu;
        let after = counters(&self.lab.lb)?;

        let info = self.lab.lb.program(name)?.info()?;
        let s = Sample {
            wall: wall.as_secs_f64(),
            generated: after[0] - before[0],
            processed: info.run_count() - runs,
            run_ns: (info.run_time() - time).as_nanos() as u64,
            forwarded: after[1] - before[1],
            sunk: after[2] - before[2],
            cpu_ns: cpu,
        };
        ensure!(
            s.generated == FRAMES as u64,
            "{}: the generator made {} frames, not {FRAMES}",
            case.name,
            s.generated
        );
        ensure!(s.processed > 0, "{}: {name} processed nothing", case.name);
        if name == LB_PROGRAM {
            ensure!(
                s.forwarded == s.processed,
                "{}: {} of {} frames forwarded: some took another path",
                case.name,
                s.forwarded,
                s.processed
            );
        }
        Ok(s)
    }
}
