//! `lb-agent top`: a live view of the running agent, refreshed every interval: per VIP and
//! backend packets and bits per second, health, weight and slow-start progress, drops by
//! reason. Built from two `/status` reports (the read-only listener; it never waits on the
//! controller). `--once` prints one frame, `--json` the same view as JSON for scripts.

mod render;
mod view;

pub use render::{human, render, WIDTH};
pub use view::{view, BackendRates, DropRate, TopView, VipRates};

use crate::admin::{self, StatusReport};
use anyhow::{Context, Result};
use std::{
    io::{IsTerminal as _, Write as _},
    net::SocketAddr,
    time::{Duration, Instant},
};

/// How `top` runs.
#[derive(Clone, Copy, Debug)]
pub struct TopOptions {
    pub interval: Duration,
    /// Frames to show before exiting; None: until Ctrl-C.
    pub count: Option<u64>,
    pub json: bool,
}

async fn sample(addr: SocketAddr) -> Result<(StatusReport, Instant)> {
    let report = admin::fetch_status(addr).await?;
    Ok((report, Instant::now()))
}

/// Run the view against the agent at `addr`.
pub async fn run(addr: SocketAddr, options: TopOptions) -> Result<()> {
    let mut previous = sample(addr).await?;
    let mut shown = 0u64;
    let mut tick = tokio::time::interval(options.interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let frame = match sample(addr).await {
            Ok(now) => {
                let secs = now.1.duration_since(previous.1).as_secs_f64();
                let v = view(&previous.0, &now.0, secs);
                previous = now;
                frame(&v, options.json)?
            }
            // A restarting agent: say so and keep trying, as `top` does for a dying process.
            Err(e) if options.count.is_none() => format!("{e:#}\n"),
            Err(e) => return Err(e),
        };
        let mut stdout = std::io::stdout().lock();
        if !options.json && stdout.is_terminal() {
            // Home and clear: redraw in place.
            write!(stdout, "\x1b[H\x1b[2J").context("writing to the terminal")?;
        }
        write!(stdout, "{frame}").context("writing to the terminal")?;
        stdout.flush().context("writing to the terminal")?;
        shown += 1;
        if options.count.is_some_and(|n| shown >= n) {
            return Ok(());
        }
    }
}

fn frame(v: &TopView, json: bool) -> Result<String> {
    if json {
        Ok(format!("{}\n", serde_json::to_string(v)?))
    } else {
        Ok(render(v))
    }
}

#[cfg(test)]
mod tests;
