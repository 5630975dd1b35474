//! Rendering alone: the `/metrics` text and the `/status` JSON of a synthetic report of
//! 100 VIPs × 100 backends, timed in this process. What a scrape costs in CPU, apart from the
//! agent's runtime, the counter reads and the transfer that the scale section measures whole.

use super::{max, min, BACKENDS_PER_VIP, VIPS};
use anyhow::{ensure, Result};
use lb_agent::{
    admin::{render_metrics, BackendHealth, BackendStatus, StatusReport, VipStatus},
    config::{AdminState, AllDown, HashMode, Protocol},
};
use lb_tests::benchkit::median;
use std::{collections::BTreeMap, fmt::Write as _, time::Instant};

const RENDER_RUNS: usize = 20;

fn report() -> StatusReport {
    let backend = |v: u32, b: u32| BackendStatus {
        address: super::backend_addr(v, b).into(),
        id: v * BACKENDS_PER_VIP + b + 1,
        weight: 100,
        weight_override: None,
        effective_weight: 100,
        admin_state: AdminState::Active,
        health: BackendHealth::Up,
        slots: 655,
        // Counters of a balancer that has run for a while: long numbers, as in production.
        packets: 9_876_543_210 + u64::from(b),
        bytes: 12_345_678_901_234 + u64::from(v),
        checks_ok: 864_000 + u64::from(b),
        checks_failed: u64::from(b % 7),
        last_check_latency_ms: Some(0.25 + f64::from(b) / 1000.0),
        last_change: "2026-11-30T12:00:00Z".to_owned(),
        probe: Some(u64::from(v * BACKENDS_PER_VIP + b + 1)),
        probe_vips: 1,
    };
    let vips = (0..VIPS)
        .map(|v| VipStatus {
            name: format!("vip-{v:03}"),
            address: super::vip_addr(v),
            port: 80,
            protocol: Protocol::Tcp,
            hash: HashMode::FiveTuple,
            all_down: AllDown::FailOpen,
            table_generation: 3,
            table_digest: "0123456789abcdef".to_owned(),
            moved_slots: 0,
            serving: true,
            packets: 987_654_321_000,
            bytes: 1_234_567_890_123_456,
            backends: (0..BACKENDS_PER_VIP).map(|b| backend(v, b)).collect(),
        })
        .collect();
    StatusReport {
        interface: "eth0".to_owned(),
        xdp_mode: "native".to_owned(),
        table_size: lb_common::DEFAULT_TABLE_SIZE,
        uptime_secs: 3_600_000,
        config_path: "/etc/lb-agent/lb.toml".to_owned(),
        vips,
        counters: BTreeMap::from([("stable_slot".to_owned(), 1u64 << 40)]),
        bgp: None,
        conn_sweep: None,
        flow_hash_key_digest: "none".to_owned(),
        agent: Default::default(),
        probes: Vec::new(),
    }
}

pub fn render(out: &mut String) -> Result<()> {
    eprintln!("render: {VIPS} VIPs x {BACKENDS_PER_VIP} backends, {RENDER_RUNS} runs");
    let report = report();
    let (mut text_ms, mut json_ms) = (Vec::new(), Vec::new());
    let (mut text_bytes, mut json_bytes, mut series) = (0, 0, 0);
    for _ in 0..RENDER_RUNS {
        let t = Instant::now();
        let text = render_metrics(&report);
        text_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let json = serde_json::to_vec(&report)?;
        json_ms.push(t.elapsed().as_secs_f64() * 1e3);
        ensure!(text.ends_with("# EOF\n"), "the exposition has no # EOF");
        text_bytes = text.len();
        json_bytes = json.len();
        series = text.lines().filter(|l| !l.starts_with('#')).count();
    }
    writeln!(
        out,
        "### Rendering a report of {VIPS} VIPs × {BACKENDS_PER_VIP} backends\n\n\
         In the benchmark's process, release build, {RENDER_RUNS} runs each: the text \
         `/metrics` sends and the JSON `/status` sends, from one synthetic report (long counter \
         values, as after weeks of traffic).\n\n\
         | output | size | median ms | min ms | max ms |\n|---|---:|---:|---:|---:|"
    )?;
    for (name, size, v) in [
        (
            format!("`/metrics` text ({series} series)"),
            text_bytes,
            &text_ms,
        ),
        ("`/status` JSON".to_owned(), json_bytes, &json_ms),
    ] {
        writeln!(
            out,
            "| {name} | {:.1} MB | {:.1} | {:.1} | {:.1} |",
            size as f64 / 1e6,
            median(v.clone()),
            min(v),
            max(v)
        )?;
    }
    writeln!(out)?;
    Ok(())
}
