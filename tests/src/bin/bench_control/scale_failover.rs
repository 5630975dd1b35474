//! Failover at 100 VIPs × 100 backends, idle and while `/metrics` is scraped every
//! [`SCRAPE_EVERY`], rounds alternating so a slow spell of the machine hits both alike.
//!
//! A round makes one backend refuse its checks right after the listener accepted one of them,
//! so every round starts at the same phase of the backend's check interval. Failing it at a
//! random moment instead added a delay uniform over one interval (1 s) to each round, and over
//! 10 rounds a side that noise alone moved the scraped/idle ratio by about the 10 % margin it is
//! held to. Times come from the agent's log lines' own timestamps (microseconds), not from
//! when the benchmark polled the log.

use super::{
    backend_addr, max, mib, min, rss, scrape, BACKENDS_PER_VIP, CHECK_INTERVAL_MS,
    SCRAPED_FAILOVER_TARGET, VIPS,
};
use anyhow::{ensure, Context, Result};
use lb_tests::{
    agentproc::Agent,
    benchkit::{median, ms},
    cpu::thread_cpu,
    netns::sh,
};
use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr},
    sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// Rounds in all, half of them scraped.
const ROUNDS: usize = 30;
pub const SCRAPE_EVERY: Duration = Duration::from_millis(100);
/// How often the agent's log is read for the next publication.
const LOG_POLL: Duration = Duration::from_millis(20);

/// Checks the listener accepted on the one backend address the benchmark watches.
#[derive(Debug, Default)]
pub struct Watched {
    /// The watched IPv4 address as a number; 0 watches none.
    addr: AtomicU32,
    accepted: AtomicU64,
}

impl Watched {
    /// Called by the listener for each connection it accepts, with the address it was made to.
    pub fn accepted(&self, local: std::io::Result<SocketAddr>) {
        if let Ok(SocketAddr::V4(local)) = local {
            if u32::from(*local.ip()) == self.addr.load(Ordering::Relaxed) {
                self.accepted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether a connection's local address is worth asking for (a syscall per accept).
    pub fn watching(&self) -> bool {
        self.addr.load(Ordering::Relaxed) != 0
    }

    /// Waits until the listener accepts a check made to `addr` (after this call).
    fn next_check(&self, addr: Ipv4Addr) -> Result<()> {
        self.addr.store(addr.into(), Ordering::Relaxed);
        let seen = self.accepted.load(Ordering::Relaxed);
        let limit = Duration::from_millis(3 * CHECK_INTERVAL_MS);
        let start = Instant::now();
        while self.accepted.load(Ordering::Relaxed) == seen {
            ensure!(
                start.elapsed() < limit,
                "no check of {addr} accepted within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

/// Failover figures of one kind of round, ms.
#[derive(Default)]
struct Rounds {
    down: Vec<f64>,
    down_decided: Vec<f64>,
    up: Vec<f64>,
    up_decided: Vec<f64>,
    published: Vec<f64>,
}

/// A publication of the agent's log: when its line was written, and its `failover_us`.
type Publication = (SystemTime, u64);

/// The publications VIP `vip`'s tables logged with a `failover_us`, in order.
fn publications(agent: &Agent, vip: &str) -> Vec<Publication> {
    let span = format!("publish{{vip={vip}}}");
    agent
        .log_text()
        .lines()
        .filter(|l| l.contains(&span))
        .filter_map(|l| {
            let us = l.split("failover_us=").nth(1)?;
            let us = us
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()?;
            Some((log_time(l)?, us))
        })
        .collect()
}

/// The timestamp a tracing log line starts with (`2026-12-01T05:24:55.443332Z`, UTC).
fn log_time(line: &str) -> Option<SystemTime> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut ymd = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut hms = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, s) = (hms.next()??, hms.next()??, hms.next()??);
    let micros: u64 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
    let secs = days_from_civil(y, m, d) * 86_400 + h * 3600 + mi * 60 + s;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Waits until VIP `vip` has more than `seen` publications logged with a failover time.
fn next_publication(agent: &Agent, vip: &str, seen: usize) -> Result<Publication> {
    let start = Instant::now();
    let limit = Duration::from_secs(30);
    loop {
        if let Some(&p) = publications(agent, vip).get(seen) {
            return Ok(p);
        }
        ensure!(
            start.elapsed() < limit,
            "VIP {vip}: no failover within {limit:?}"
        );
        std::thread::sleep(LOG_POLL);
    }
}

/// ms from `from` to `to` (negative if the clock says `to` came first).
fn between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => ms(d),
        Err(e) => -ms(e.duration()),
    }
}

/// Backend 7 of VIP `i` refuses checks right after it answered one (a `prohibit` route beats
/// the AnyIP one: connect fails at once) until its VIP's table is published without it, then
/// answers again until it is back; the figures go to `rounds`.
fn one_failover(
    agent: &Agent,
    ns: &str,
    watched: &Watched,
    i: u32,
    rounds: &mut Rounds,
) -> Result<()> {
    let (vip, addr) = (format!("v{i}"), backend_addr(i, 7));
    let seen = publications(agent, &vip).len();
    watched.next_check(addr)?;
    let route = |verb: &str| {
        sh(
            Some(ns),
            &format!("ip route {verb} prohibit {addr}/32 table local"),
        )
    };
    route("add")?;
    let refused_at = SystemTime::now();
    let down = next_publication(agent, &vip, seen);
    route("del")?;
    let answering_at = SystemTime::now();
    let (down_at, down_us) = down?;
    let (up_at, up_us) = next_publication(agent, &vip, seen + 1)?;
    let (down, up) = (between(refused_at, down_at), between(answering_at, up_at));
    let (down_us, up_us) = (down_us as f64 / 1e3, up_us as f64 / 1e3);
    rounds.down.push(down);
    rounds.down_decided.push(down - down_us);
    rounds.up.push(up);
    rounds.up_decided.push(up - up_us);
    rounds.published.extend([down_us, up_us]);
    Ok(())
}

/// Scrapes `/metrics` every `SCRAPE_EVERY` until `stop`: how long each answer took, ms.
fn scrape_until(agent: &Agent, stop: &AtomicBool) -> Result<Vec<f64>> {
    let mut took = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let asked = Instant::now();
        let (_, answer) = scrape(agent)?;
        took.push(ms(answer));
        std::thread::sleep(SCRAPE_EVERY.saturating_sub(asked.elapsed()));
    }
    Ok(took)
}

/// CPU time (user + system, s) of the agent's admin threads (`lb-admin…`: the listeners'
/// runtime and its blocking pool, where scrapes are read and encoded) that are alive now. The
/// pool keeps an idle thread for 10 s, longer than an idle round.
fn admin_cpu(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("lb-admin"))
        })
        .filter_map(|t| t.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|tid| thread_cpu(pid, tid).ok())
        .map(|d| d.as_secs_f64())
        .sum()
}

/// The value under which fraction `q` of a non-empty sample lies.
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len().max(1)) - 1;
    v.get(i).copied().unwrap_or(f64::NAN)
}

fn spread(v: &[f64], decimals: usize) -> String {
    format!(
        "{:.*} ({:.*}–{:.*})",
        decimals,
        median(v.to_vec()),
        decimals,
        min(v),
        decimals,
        max(v)
    )
}

/// Failover at 100 VIPs x 100 backends, alternately idle and while `/metrics` is scraped every
/// `SCRAPE_EVERY`; `watched` is the check listener's.
pub fn scale_failover(
    agent: &Agent,
    ns: &str,
    watched: &Watched,
    out: &mut String,
    missed: &mut Vec<String>,
) -> Result<()> {
    eprintln!("scale: {ROUNDS} failovers, idle and scraped in turn");
    let (mut idle, mut scraped, mut scrapes) = (Rounds::default(), Rounds::default(), Vec::new());
    let pid = agent.pid().context("agent not running")?;
    let mut scrape_cpu = 0.0;
    for round in 0..ROUNDS {
        let stop = AtomicBool::new(false);
        let vip = round as u32 % VIPS;
        std::thread::scope(|s| -> Result<()> {
            if round % 2 == 0 {
                return one_failover(agent, ns, watched, vip, &mut idle);
            }
            let cpu = admin_cpu(pid);
            let scraper = s.spawn(|| scrape_until(agent, &stop));
            let result = one_failover(agent, ns, watched, vip, &mut scraped);
            stop.store(true, Ordering::Relaxed);
            scrapes.extend(scraper.join().expect("the scraper panicked")?);
            scrape_cpu += admin_cpu(pid) - cpu;
            result
        })?;
    }
    let after = rss(pid)?;
    write_figures(out, missed, &idle, &scraped)?;
    writeln!(
        out,
        "\n`/metrics` during the scraped rounds: {} answers, {} ms, 90 % within {:.1} ms; the \
         agent's admin threads used {:.1} ms of CPU per answer. Agent RSS afterwards {:.1} MiB \
         (anon {:.1}), peak (VmHWM) {:.1} MiB.",
        scrapes.len(),
        spread(&scrapes, 1),
        quantile(&scrapes, 0.9),
        scrape_cpu * 1e3 / scrapes.len().max(1) as f64,
        mib(after.total),
        mib(after.anon),
        mib(after.peak)
    )?;
    Ok(())
}

/// A row of the table: step, idle and scraped samples, decimals, whether the target applies.
type Row<'a> = (&'a str, &'a Vec<f64>, &'a Vec<f64>, usize, bool);

fn write_figures(
    out: &mut String,
    missed: &mut Vec<String>,
    idle: &Rounds,
    scraped: &Rounds,
) -> Result<()> {
    writeln!(
        out,
        "\n### Failover at {VIPS} VIPs × {BACKENDS_PER_VIP} backends, idle and scraped\n"
    )?;
    writeln!(
        out,
        "The same agent, after the figures above: {ROUNDS} rounds, alternately idle and with \
         `/metrics` scraped every {} ms (start to start) throughout. A round makes one backend \
         refuse its TCP checks (a `prohibit` route) right after the listener accepted one of \
         them, until the agent publishes its VIP's table without it, then answer again until it \
         is back. Times end at the agent's log line of the publication (its own timestamp); \
         decision → published is its `failover_us`, and the \"decided\" rows are the rest. \
         Median (min–max), ms.\n",
        SCRAPE_EVERY.as_millis()
    )?;
    writeln!(out, "| step | idle | scraped | scraped / idle (medians) |")?;
    writeln!(out, "|---|---:|---:|---:|")?;
    let rows: [Row; 5] = [
        (
            "refused → down, published (fall 3 × 1 s)",
            &idle.down,
            &scraped.down,
            0,
            true,
        ),
        (
            "refused → down decided",
            &idle.down_decided,
            &scraped.down_decided,
            0,
            false,
        ),
        (
            "answering → up, published (rise 2 × 1 s)",
            &idle.up,
            &scraped.up,
            0,
            true,
        ),
        (
            "answering → up decided",
            &idle.up_decided,
            &scraped.up_decided,
            0,
            false,
        ),
        (
            "decision → table published",
            &idle.published,
            &scraped.published,
            2,
            false,
        ),
    ];
    for (step, a, b, decimals, target) in rows {
        let ratio = median(b.clone()) / median(a.clone());
        if target && ratio > SCRAPED_FAILOVER_TARGET {
            missed.push(format!("scraped failover ({step}) at {ratio:.2} × idle"));
        }
        writeln!(
            out,
            "| {step} | {} | {} | {ratio:.2} |",
            spread(a, decimals),
            spread(b, decimals)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_time_reads_tracing_timestamps() {
        let line = "2026-12-01T05:24:55.443332Z  INFO publish{vip=v1}: table published";
        let at = log_time(line).unwrap().duration_since(UNIX_EPOCH).unwrap();
        // `date -u -d 2026-12-01T05:24:55Z +%s`
        assert_eq!(
            at,
            Duration::from_secs(1_796_102_695) + Duration::from_micros(443_332)
        );
        let epoch = log_time("1970-01-01T00:00:00Z x").unwrap();
        assert_eq!(epoch, UNIX_EPOCH);
        let leap = log_time("2024-02-29T00:00:00.5Z x").unwrap();
        assert_eq!(
            leap.duration_since(UNIX_EPOCH).unwrap().as_millis(),
            1_709_164_800_500
        );
        assert!(log_time("not a timestamp").is_none());
        assert!(log_time("2026-13-xxT00:00:00Z").is_none());
    }
}
