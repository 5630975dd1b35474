//! Pieces the benchmarks (and the flood test) share: template frames for the harness, runs of
//! the benchmark twins, CPU pinning and accounting, medians.

use crate::lab::Lab;
use anyhow::{bail, ensure, Context, Result};
use aya::programs::{TestRun, TestRunOptions};
use lb_agent::dataplane::BENCH_LB_PROGRAM;
use lb_common::{BenchFrame, Stat, BENCH_FRAME_LEN};

/// A `BENCH_FRAME_LEN`-byte template built by `build` (given the padding payload), cycling
/// `flows` flows in `vary` mode (`BENCH_VARY_*`; flows 0: a new port every iteration).
pub fn template(vary: u32, flows: u32, build: impl Fn(&[u8]) -> Vec<u8>) -> Result<BenchFrame> {
    let headers = build(&[]).len();
    let frame = build(&vec![0x5a; BENCH_FRAME_LEN - headers]);
    ensure!(
        frame.len() == BENCH_FRAME_LEN,
        "template is {} bytes",
        frame.len()
    );
    let mut bytes = [0u8; BENCH_FRAME_LEN];
    bytes.copy_from_slice(&frame);
    Ok(BenchFrame {
        bytes,
        vary_source_port: vary,
        flows,
    })
}

/// Milliseconds, for tables.
pub fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median of a non-empty sample (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Run `program` (a benchmark twin) `repeat` times on `frame`'s template; nanoseconds per
/// iteration as the kernel measured them.
pub fn run_twin(lab: &mut Lab, program: &str, frame: &BenchFrame, repeat: u32) -> Result<f64> {
    lab.lb.set_bench_frame(frame)?;
    let result = lab
        .lb
        .program(program)?
        .test_run(TestRunOptions {
            data_in: Some(&frame.bytes),
            repeat,
            ..Default::default()
        })
        .with_context(|| format!("BPF_PROG_TEST_RUN of {program}"))?;
    Ok(result.duration.as_nanos() as f64)
}

/// Put the flows of `syn` (the SYN twin of a moved VIP's measured template) in the connection
/// table: one pass of the benchmark twin makes each SYN's entry. Only a SYN makes one in a moved
/// slot (a non-SYN without an entry goes to the previous backend: lb-ebpf forward.rs), so a pass
/// of the measured non-SYN template would leave the table empty. The measured template is set
/// again by the caller's next run.
pub fn prime_moved(lab: &mut Lab, syn: &BenchFrame) -> Result<()> {
    let before = lab.lb.stat(Stat::ConnMissSyn)?;
    run_twin(lab, BENCH_LB_PROGRAM, syn, syn.flows)?;
    let inserted = lab.lb.stat(Stat::ConnMissSyn)? - before;
    ensure!(
        inserted == syn.flows as u64,
        "priming: {inserted} of {} SYNs took the moved slot's insert path",
        syn.flows
    );
    Ok(())
}

/// CPUs the kernel may ever use: per-CPU maps and the connection table's per-CPU LRU lists
/// are split over these.
pub fn possible_cpus() -> Result<u32> {
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
    Ok(cpus as u32)
}

/// Nanoseconds the threads have spent on a CPU (`/proc/PID/schedstat`, first field): what a
/// NAPI thread costs, whatever else shares its CPU.
pub fn cpu_ns(pids: &[i32]) -> Result<u64> {
    let mut total = 0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
            .with_context(|| format!("reading the schedstat of {pid}"))?;
        total += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .with_context(|| format!("no run time in {stat:?}"))?;
    }
    Ok(total)
}

/// Pin a thread (0: the calling one) to one CPU.
pub fn pin(pid: i32, cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET and sched_setaffinity get valid
    // pointers and the set's size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "pinning {pid} to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}
