//! Human-readable `lb-agent status` and `lb-agent stats` output.

use super::api::{StatusReport, VipStatus};
use crate::bgp::BgpStatus;
use serde::Serialize;
use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
};

/// The serde name of a config enum (`five-tuple`, `drain`, ...), as in the configuration file.
pub(super) fn name_of<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "?".to_owned(),
    }
}

fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h {m}m {s}s")
    } else if h > 0 {
        format!("{h}h {m}m {s}s")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// Left-aligned columns (numbers right-aligned), two spaces apart, each line indented.
fn table(out: &mut String, indent: &str, header: &[&str], rows: &[Vec<String>], numeric: &[bool]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::from(indent);
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            if numeric.get(i).copied().unwrap_or(false) {
                let _ = write!(line, "{cell:>width$}");
            } else {
                let _ = write!(line, "{cell:<width$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

fn vip_heading(vip: &VipStatus) -> String {
    format!(
        "VIP {}  {}/{}",
        vip.name,
        SocketAddr::new(vip.address, vip.port),
        name_of(&vip.protocol)
    )
}

/// Human-readable `lb-agent status` output: the agent, then one table per VIP.
pub fn render_status(report: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "lb-agent on {} (xdp {}), up {}, table size {}, config {}",
        report.interface,
        report.xdp_mode,
        duration(report.uptime_secs),
        report.table_size,
        report.config_path
    );
    if let Some(reload) = &report.agent.last_reload {
        let ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |now| now.as_secs_f64() - reload.at_unix)
            .max(0.0);
        let outcome = if reload.applied {
            "applied"
        } else {
            "REJECTED"
        };
        let _ = writeln!(
            out,
            "last reload: {outcome} {} ago: {}",
            duration(ago as u64),
            reload.message
        );
    }
    let _ = writeln!(out, "flow hash key {}", report.flow_hash_key_digest);
    if let Some(bgp) = &report.bgp {
        bgp_status(&mut out, bgp);
    }
    if report.vips.is_empty() {
        out.push_str("\nno VIPs configured\n");
    }
    for vip in &report.vips {
        vip_status(&mut out, vip);
    }
    out
}

/// The `bgp:` block of `status`: what is announced, and each BIRD session.
fn bgp_status(out: &mut String, bgp: &BgpStatus) {
    let list = |a: &[IpAddr]| {
        let v: Vec<String> = a.iter().map(ToString::to_string).collect();
        if v.is_empty() {
            "nothing".to_owned()
        } else {
            v.join(", ")
        }
    };
    let _ = writeln!(out, "bgp: announcing {}", list(&bgp.announced));
    let m = &bgp.maintenance;
    if m.on {
        let left = m
            .drain_left_ms
            .map(|ms| format!(", withdrawing in {:.1} s", ms as f64 / 1000.0))
            .unwrap_or_default();
        let _ = writeln!(out, "  maintenance: {}{left}", m.phase);
    }
    if bgp.wanted != bgp.announced {
        let _ = writeln!(out, "  wanted {}", list(&bgp.wanted));
    }
    if let Some(e) = &bgp.error {
        let _ = writeln!(out, "  BIRD: {e}");
    }
    for p in &bgp.peers {
        let why = p
            .last_error
            .as_ref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  neighbor {} ({}): {}{why}",
            p.neighbor, p.protocol, p.state
        );
    }
}

/// One VIP of `status`: its heading, table line and backend table.
fn vip_status(out: &mut String, vip: &VipStatus) {
    let _ = writeln!(
        out,
        "\n{}  hash {}  all-down {}  {}",
        vip_heading(vip),
        name_of(&vip.hash),
        name_of(&vip.all_down),
        if vip.serving {
            "serving"
        } else {
            "NOT SERVING"
        }
    );
    let _ = writeln!(
        out,
        "  table generation {}  digest {}  moved slots {}",
        vip.table_generation, vip.table_digest, vip.moved_slots
    );
    if vip.backends.is_empty() {
        out.push_str("  no backends\n");
        return;
    }
    let rows: Vec<Vec<String>> = vip
        .backends
        .iter()
        .map(|b| {
            vec![
                b.address.to_string(),
                b.health.to_string(),
                name_of(&b.admin_state),
                format!(
                    "{}{}/{}",
                    b.weight_in_force(),
                    if b.weight_override.is_some() { "*" } else { "" },
                    b.effective_weight
                ),
                b.slots.to_string(),
                b.packets.to_string(),
                b.last_check_latency_ms
                    .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1}")),
                b.last_change.clone(),
            ]
        })
        .collect();
    table(
        out,
        "  ",
        &[
            "BACKEND",
            "HEALTH",
            "ADMIN",
            "WEIGHT/EFF",
            "SLOTS",
            "PACKETS",
            "CHECK MS",
            "LAST CHANGE",
        ],
        &rows,
        &[false, false, false, true, true, true, true, false],
    );
    overrides(out, vip);
}

/// One line per backend whose weight was set at run time (`*` in WEIGHT/EFF).
fn overrides(out: &mut String, vip: &VipStatus) {
    for b in &vip.backends {
        if let Some(w) = b.weight_override {
            let _ = writeln!(
                out,
                "  * {}: weight {w} (override, config {}) until the next reload",
                b.address, b.weight
            );
        }
    }
}

/// Human-readable `lb-agent stats` output: data-path counters (sorted by name), then packets and
/// bytes per VIP and per backend.
pub fn render_stats(report: &StatusReport) -> String {
    let mut out = String::new();
    out.push_str("data-path counters (all CPUs)\n");
    if report.counters.is_empty() {
        out.push_str("  none\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .counters
            .iter()
            .map(|(name, value)| vec![name.clone(), value.to_string()])
            .collect();
        table(&mut out, "  ", &["COUNTER", "VALUE"], &rows, &[false, true]);
    }
    for vip in &report.vips {
        let _ = writeln!(
            out,
            "\n{}  {} packets  {} bytes",
            vip_heading(vip),
            vip.packets,
            vip.bytes
        );
        if vip.backends.is_empty() {
            out.push_str("  no backends\n");
            continue;
        }
        let rows: Vec<Vec<String>> = vip
            .backends
            .iter()
            .map(|b| {
                vec![
                    b.address.to_string(),
                    b.packets.to_string(),
                    b.bytes.to_string(),
                    b.checks_ok.to_string(),
                    b.checks_failed.to_string(),
                ]
            })
            .collect();
        table(
            &mut out,
            "  ",
            &["BACKEND", "PACKETS", "BYTES", "CHECKS OK", "CHECKS FAILED"],
            &rows,
            &[false, true, true, true, true],
        );
    }
    out
}
