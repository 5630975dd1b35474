//! `cargo xtask bench`: per-packet cost of the balancer's forwarding paths, measured in the kernel
//! with BPF_PROG_TEST_RUN, side by side with a MAC-swap XDP_TX program (the floor).
//!
//! Every iteration runs a benchmark twin (`xdp_bench_lb`, `xdp_bench_reflect`): the program's
//! own code behind a prologue that restores the 128-byte template frame; the floor goes through
//! the same harness, so the restore cost is in both figures. After each run the data path's own counters must show that every iteration
//! took the intended path, or the benchmark fails.

use anyhow::{bail, ensure, Context, Result};
use aya::programs::{TestRun, TestRunOptions};
use lb_agent::dataplane::{BENCH_LB_PROGRAM, BENCH_REFLECT_PROGRAM, LB_PROGRAM, REFLECT_PROGRAM};
use lb_common::{BenchFrame, BenchStat, Stat, BENCH_VARY_NONE, BENCH_VARY_V4, IPPROTO_TCP};
use lb_tests::{
    benchkit::{self, median},
    frames::{self, Tcp},
    lab::Lab,
    run::{XDP_PASS, XDP_TX},
};
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::Duration,
};

const RUNS: usize = 5;
const ITERATIONS: u32 = 1_000_000;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 7);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 7);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
/// A VIP whose every slot is moved: every flow consults the connection table.
const MOVED_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 12);
const MOVED_VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x12);
const BARE_FLOOR: &str = "floor, bare (no harness)";
const NOT_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 5, 5);

struct Case {
    name: &'static str,
    program: &'static str,
    frame: BenchFrame,
    verdict: u32,
    /// The counter that must grow by exactly one per iteration.
    proof: Option<Stat>,
    /// Ratio to the floor this path should stay under (issue targets).
    target: Option<f64>,
    /// Net cost (harness taken off) as a ratio to the bare floor this path should stay under
    /// (issue #13 item 5).
    net_target: Option<f64>,
    /// Run once through the balancer before each measurement (puts the flow in the table).
    prime: Option<Vec<u8>>,
}

fn padded(vary_source_port: u32, build: impl Fn(&[u8]) -> Vec<u8>) -> Result<BenchFrame> {
    benchkit::template(vary_source_port, 0, build)
}

fn main() -> Result<()> {
    let mut lab = Lab::new().context("loading the balancer (run as root)")?;
    lab.add_vip(VIP.into(), 80, IPPROTO_TCP, 0, &[0, 1, 2])?;
    lab.add_vip(VIP6.into(), 80, IPPROTO_TCP, 0, &[3, 4])?;
    let moved = lab.add_vip(MOVED_VIP.into(), 80, IPPROTO_TCP, 0, &[0, 1, 2])?;
    lab.move_every_slot(&moved, 0, 1)?;
    let moved6 = lab.add_vip(MOVED_VIP6.into(), 80, IPPROTO_TCP, 0, &[3, 4])?;
    lab.move_every_slot(&moved6, 3, 4)?;

    // The same segment to different VIPs: an ACK of one established flow, or a SYN with a new
    // source port every iteration.
    let ack4 = |vip| {
        padded(BENCH_VARY_NONE, |p| {
            frames::tcp4(CLIENT, 40000, vip, 80, Tcp::Ack, p)
        })
    };
    let syn4 = |vip| {
        padded(BENCH_VARY_V4, |p| {
            frames::tcp4(CLIENT, 40001, vip, 80, Tcp::Syn, p)
        })
    };
    let ack6 = |vip| {
        padded(BENCH_VARY_NONE, |p| {
            frames::tcp6(CLIENT6, 40000, vip, 80, Tcp::Ack, p)
        })
    };
    let (v4_ack, v4_syn, v6_ack) = (ack4(VIP)?, syn4(VIP)?, ack6(VIP6)?);
    let (moved_ack, moved_syn, moved6_ack) =
        (ack4(MOVED_VIP)?, syn4(MOVED_VIP)?, ack6(MOVED_VIP6)?);
    let pass = ack4(NOT_VIP)?;
    // Established flows of moved slots: one SYN puts them in the connection table (again
    // before every run: the moved new-flow case floods the table and may evict them).
    let moved_prime = Some(frames::tcp4(CLIENT, 40000, MOVED_VIP, 80, Tcp::Syn, &[]));
    let moved6_prime = Some(frames::tcp6(CLIENT6, 40000, MOVED_VIP6, 80, Tcp::Syn, &[]));

    let cases = [
        Case {
            name: "floor: MAC swap + XDP_TX",
            program: BENCH_REFLECT_PROGRAM,
            frame: v4_ack,
            verdict: XDP_TX,
            proof: None,
            target: None,
            prime: None,
            net_target: None,
        },
        Case {
            name: "IPv4 TCP established, stable slot",
            program: BENCH_LB_PROGRAM,
            frame: v4_ack,
            verdict: XDP_TX,
            proof: Some(Stat::StableSlot),
            target: Some(3.5),
            prime: None,
            net_target: Some(2.5),
        },
        Case {
            name: "IPv4 TCP new flow (SYN), stable slot",
            program: BENCH_LB_PROGRAM,
            frame: v4_syn,
            verdict: XDP_TX,
            proof: Some(Stat::StableSlot),
            target: Some(3.5),
            prime: None,
            net_target: None,
        },
        Case {
            name: "IPv6 TCP established, stable slot",
            program: BENCH_LB_PROGRAM,
            frame: v6_ack,
            verdict: XDP_TX,
            proof: Some(Stat::StableSlot),
            target: Some(4.0),
            prime: None,
            net_target: Some(2.8),
        },
        Case {
            name: "IPv4 TCP established, moved slot (conn-table hit)",
            program: BENCH_LB_PROGRAM,
            frame: moved_ack,
            verdict: XDP_TX,
            proof: Some(Stat::ConnHit),
            target: Some(3.5),
            prime: moved_prime,
            net_target: Some(3.5),
        },
        Case {
            name: "IPv4 TCP new flow (SYN), moved slot (insert)",
            program: BENCH_LB_PROGRAM,
            frame: moved_syn,
            verdict: XDP_TX,
            proof: Some(Stat::ConnMissSyn),
            target: None,
            prime: None,
            net_target: None,
        },
        Case {
            name: "IPv6 TCP established, moved slot (conn-table hit)",
            program: BENCH_LB_PROGRAM,
            frame: moved6_ack,
            verdict: XDP_TX,
            proof: Some(Stat::ConnHit),
            target: Some(4.0),
            prime: moved6_prime,
            net_target: None,
        },
        Case {
            name: "non-VIP pass",
            program: BENCH_LB_PROGRAM,
            frame: pass,
            verdict: XDP_PASS,
            proof: Some(Stat::PassNotVip),
            target: Some(1.5),
            prime: None,
            net_target: None,
        },
        // Bare: the programs themselves, without the harness. Only paths that leave the frame
        // as it was can run so; the difference to the floor above is the harness's own cost.
        Case {
            name: BARE_FLOOR,
            program: REFLECT_PROGRAM,
            frame: v4_ack,
            verdict: XDP_TX,
            proof: None,
            target: None,
            prime: None,
            net_target: None,
        },
        Case {
            name: "non-VIP pass, bare",
            program: LB_PROGRAM,
            frame: pass,
            verdict: XDP_PASS,
            proof: Some(Stat::PassNotVip),
            target: None,
            prime: None,
            net_target: None,
        },
    ];

    // Profiling aid (`perf record` while one path runs): only the paths whose name contains
    // LB_BENCH_ONLY, for LB_BENCH_ROUNDS rounds, each round's ns per packet printed.
    if let Ok(only) = std::env::var("LB_BENCH_ONLY") {
        let rounds: usize = std::env::var("LB_BENCH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(RUNS);
        for case in cases.iter().filter(|c| c.name.contains(only.as_str())) {
            let ns: Vec<String> = (0..rounds)
                .map(|_| measure(&mut lab, case).map(|ns| format!("{ns:.0}")))
                .collect::<Result<_>>()?;
            println!("{}: {}", case.name, ns.join(" "));
        }
        return Ok(());
    }
    println!("BPF_PROG_TEST_RUN, {RUNS} rounds x {ITERATIONS} iterations per path, ns per packet");
    let info = lab.lb.program(LB_PROGRAM)?.info()?;
    println!(
        "\n`xdp_lb` as loaded: {} bytes JIT-compiled, {} bytes of eBPF after the verifier",
        info.size_jitted(),
        info.size_translated().unwrap_or(0)
    );
    // Rounds interleave the paths, so a slow spell of this shared machine hits the floor and
    // the paths alike; each ratio is taken within its round.
    let mut samples = vec![Vec::with_capacity(RUNS); cases.len()];
    for _ in 0..RUNS {
        for (i, case) in cases.iter().enumerate() {
            samples[i].push(measure(&mut lab, case)?);
        }
    }
    let mut rows = Vec::new();
    let mut missed = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let min = samples[i].iter().copied().fold(f64::INFINITY, f64::min);
        let med = median(samples[i].clone());
        let ratio = median((0..RUNS).map(|r| samples[i][r] / samples[0][r]).collect());
        if let Some(target) = case.target {
            if ratio > target {
                missed.push(format!("{} at {ratio:.2}x (target {target}x)", case.name));
            }
        }
        rows.push((case.name, min, med, ratio, case.target));
    }
    let bare_floor = cases
        .iter()
        .position(|c| c.name == BARE_FLOOR)
        .context("bare floor case")?;
    // Per round: harness = floor through it - bare floor; a path's net cost = its figure - harness.
    let net = |i: usize| -> Vec<f64> {
        (0..RUNS)
            .map(|r| samples[i][r] - (samples[0][r] - samples[bare_floor][r]))
            .collect()
    };
    let harness = median(
        (0..RUNS)
            .map(|r| samples[0][r] - samples[bare_floor][r])
            .collect(),
    );
    println!();
    println!("| path | min ns | median ns | median / floor | target |");
    println!("|---|---:|---:|---:|---:|");
    for &(name, min, med, ratio, target) in &rows {
        let target = target.map_or("-".to_string(), |t| format!("<= {t}x"));
        println!("| {name} | {min:.1} | {med:.1} | {ratio:.2}x | {target} |");
    }
    println!();
    println!(
        "Net of the harness ({harness:.1} ns per iteration, per-round median), against the bare floor \
         ({:.1} ns):",
        median(samples[bare_floor].clone())
    );
    println!("| path | net ns | net / bare floor | target |");
    println!("|---|---:|---:|---:|");
    for (i, case) in cases.iter().enumerate().take(bare_floor).skip(1) {
        let net_ns = median(net(i));
        let ratio = median(
            (0..RUNS)
                .map(|r| net(i)[r] / samples[bare_floor][r])
                .collect(),
        );
        if let Some(target) = case.net_target {
            if ratio > target {
                missed.push(format!(
                    "{} net at {ratio:.2}x (target {target}x)",
                    case.name
                ));
            }
        }
        let target = case
            .net_target
            .map_or("-".to_string(), |t| format!("<= {t}x"));
        println!("| {} | {net_ns:.1} | {ratio:.2}x | {target} |", case.name);
    }
    if !missed.is_empty() {
        println!("\nabove target: {}", missed.join("; "));
    }
    Ok(())
}

/// One run of `ITERATIONS` through the harness, checked by the data path's own counters.
fn measure(lab: &mut Lab, case: &Case) -> Result<f64> {
    lab.lb.set_bench_frame(&case.frame)?;
    if let Some(frame) = &case.prime {
        lab.run(frame)?;
    }
    let restored = lab.lb.bench_stat(BenchStat::Restored)?;
    let proof_before = case.proof.map(|s| lab.lb.stat(s)).transpose()?;
    let result = lab
        .lb
        .program(case.program)?
        .test_run(TestRunOptions {
            data_in: Some(&case.frame.bytes),
            repeat: ITERATIONS,
            ..Default::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    ensure!(
        result.return_value == case.verdict,
        "{}: verdict {} instead of {}",
        case.name,
        result.return_value,
        case.verdict
    );
    let harnessed = case.program == BENCH_LB_PROGRAM || case.program == BENCH_REFLECT_PROGRAM;
    ensure!(
        !harnessed || lab.lb.bench_stat(BenchStat::Restored)? - restored == ITERATIONS as u64,
        "{}: not every iteration restored the frame",
        case.name
    );
    if let (Some(stat), Some(before)) = (case.proof, proof_before) {
        let grew = lab.lb.stat(stat)? - before;
        if grew != ITERATIONS as u64 {
            bail!(
                "{}: {} grew by {grew}, not {ITERATIONS}: some iterations took another path",
                case.name,
                stat.name()
            );
        }
    }
    Ok(as_ns(result.duration))
}

fn as_ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}
