//! CPU time from /proc: a process's (all its threads, user + system) and the whole machine's.
//!
//! This kernel has no IRQ time accounting (`CONFIG_IRQ_TIME_ACCOUNTING` unset), so softirq work
//! (packet receive, veth hops, XDP) is charged to whatever task the tick interrupts: a process's
//! figure includes some of the network stack's work done on its CPU.

use anyhow::{bail, Context, Result};
use std::time::Duration;

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

fn ticks(n: u64) -> Duration {
    Duration::from_micros(n * 1_000_000 / ticks_per_second())
}

/// User + system time of process `pid` (every thread, live or exited).
pub fn process_cpu(pid: u32) -> Result<Duration> {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

/// User + system time of thread `tid` of process `pid` alone (`/proc/TID/stat` would be the
/// whole process's).
pub fn thread_cpu(pid: u32, tid: u32) -> Result<Duration> {
    stat_cpu(&format!("/proc/{pid}/task/{tid}/stat"))
}

fn stat_cpu(path: &str) -> Result<Duration> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i - 3)
            .context("short /proc/PID/stat")?
            .parse()
            .context("parsing /proc/PID/stat")
    };
    Ok(ticks(field(14)? + field(15)?))
}

/// Machine-wide CPU time, all cores summed.
#[derive(Clone, Copy, Debug, Default)]
pub struct MachineCpu {
    pub busy: Duration,
    pub softirq: Duration,
    pub total: Duration,
}

impl MachineCpu {
    pub fn sample() -> Result<Self> {
        let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
            bail!("no cpu line in /proc/stat");
        };
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        if v.len() < 8 {
            bail!("short cpu line in /proc/stat");
        }
        // user nice system idle iowait irq softirq steal (guest time is already in user).
        let total: u64 = v[..8].iter().sum();
        let idle = v[3] + v[4];
        Ok(Self {
            busy: ticks(total - idle),
            softirq: ticks(v[6]),
            total: ticks(total),
        })
    }

    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            busy: self.busy.saturating_sub(earlier.busy),
            softirq: self.softirq.saturating_sub(earlier.softirq),
            total: self.total.saturating_sub(earlier.total),
        }
    }

    /// Busy share of all cores, 0..1.
    pub fn busy_share(&self) -> f64 {
        self.busy.as_secs_f64() / self.total.as_secs_f64().max(1e-9)
    }
}
