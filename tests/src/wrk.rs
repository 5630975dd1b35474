//! `wrk`, the HTTP load generator, run in the client namespace for a fixed time with a fixed
//! number of threads and connections (HTTP/1.1 keep-alive). A Lua `done` hook prints the exact
//! figures; a `setup` hook can point each thread at its own server, round robin.

use anyhow::{bail, Context, Result};
use std::{
    io::Read,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub threads: u32,
    pub connections: u32,
    pub duration: Duration,
    /// Pause before each request on a connection (wrk's `delay` hook), 0 for none: with it the
    /// load is light enough to leave the machine partly idle.
    pub delay_ms: u32,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct WrkResult {
    pub requests: u64,
    pub duration: Duration,
    pub p50: Duration,
    pub p99: Duration,
    /// connect, read, write, timeout errors and non-2xx/3xx answers.
    pub errors: u64,
}

impl WrkResult {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.duration.as_secs_f64().max(1e-9)
    }
}

const MARK: &str = "wrk-result";

/// Lua script: thread i's connections go to `targets[i % len]` (none: the URL's address).
fn script(targets: &[SocketAddr], delay_ms: u32) -> String {
    let list: Vec<String> = targets
        .iter()
        .map(|t| format!("{{ \"{}\", \"{}\" }}", t.ip(), t.port()))
        .collect();
    format!(
        r#"local targets = {{ {} }}
local n = 0
function setup(thread)
  if #targets > 0 then
    local t = targets[n % #targets + 1]
    n = n + 1
    thread.addr = wrk.lookup(t[1], t[2])[1]
  end
end
if {delay_ms} > 0 then
  function delay() return {delay_ms} end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("{MARK} requests=%.0f duration_us=%.0f p50_us=%.0f p99_us=%.0f errors=%.0f\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"#,
        list.join(", ")
    )
}

/// Run wrk in namespace `ns` against `url`, spreading threads over `targets` when given.
pub fn run(
    ns: &str,
    dir: &Path,
    url: &str,
    targets: &[SocketAddr],
    load: Load,
) -> Result<WrkResult> {
    let path: PathBuf = dir.join("wrk.lua");
    std::fs::write(&path, script(targets, load.delay_ms)).context("writing the wrk script")?;
    let mut child = crate::netns::command(ns, "wrk")
        .args(["--timeout", "2s"])
        .arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.duration.as_secs()))
        .arg("-s")
        .arg(&path)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting wrk (is it installed? cargo xtask setup)")?;
    // Bounded even if wrk hangs.
    let deadline = Instant::now() + load.duration + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("wrk did not finish by its deadline");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut out)?;
    }
    if let Some(mut s) = child.stderr.take() {
        s.read_to_string(&mut err)?;
    }
    if !status.success() {
        bail!("wrk failed ({status}): {err}{out}");
    }
    parse(&out).with_context(|| format!("wrk output:\n{out}{err}"))
}

fn parse(out: &str) -> Result<WrkResult> {
    let line = out
        .lines()
        .find(|l| l.starts_with(MARK))
        .context("no result line from the done hook")?;
    let field = |name: &str| -> Result<u64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .with_context(|| format!("no {name}"))?
            .parse()
            .with_context(|| format!("parsing {name}"))
    };
    Ok(WrkResult {
        requests: field("requests")?,
        duration: Duration::from_micros(field("duration_us")?),
        p50: Duration::from_micros(field("p50_us")?),
        p99: Duration::from_micros(field("p99_us")?),
        errors: field("errors")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_done_hook_line() {
        let out = "Running 1s test\nwrk-result requests=1200 duration_us=1000000 p50_us=350 p99_us=2100 errors=3\n";
        let r = parse(out).unwrap();
        assert_eq!(r.requests, 1200);
        assert_eq!(r.p50, Duration::from_micros(350));
        assert_eq!(r.p99, Duration::from_micros(2100));
        assert_eq!(r.errors, 3);
        assert!((r.rps() - 1200.0).abs() < 1e-9);
        assert!(parse("no line").is_err());
    }
}
