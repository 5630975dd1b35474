//! `lb-agent top`'s screen: plain text that fits 80 columns, so it works over ssh and in any
//! terminal (the caller adds the ANSI clear-and-home before each frame).

use super::view::{BackendRates, TopView, VipRates};
use std::fmt::Write as _;

/// Widest line `render` writes.
pub const WIDTH: usize = 80;

/// 1234 -> "1.2k", 5_600_000 -> "5.6M": four characters or so for any rate.
pub fn human(v: f64) -> String {
    let units = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    for (scale, unit) in units {
        if v >= scale {
            return format!("{:.1}{unit}", v / scale);
        }
    }
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn uptime(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    match (d, h) {
        (0, 0) => format!("{m}m{:02}s", secs % 60),
        (0, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h:02}h"),
    }
}

/// Cut to `width` characters (an IPv6 address or a long VIP name must not wrap the screen).
fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut cut: String = s.chars().take(width.saturating_sub(1)).collect();
        cut.push('~');
        cut
    }
}

const HEADER: &str =
    "VIP / backend                  health    admin    weight          pkt/s    bit/s";

pub fn render(view: &TopView) -> String {
    let mut out = String::new();
    let title = format!(
        "lb-agent top: {} (xdp {}), every {:.1} s",
        view.interface, view.xdp_mode, view.interval_secs
    );
    let up = format!("up {}", uptime(view.uptime_secs));
    let pad = WIDTH
        .saturating_sub(title.chars().count() + up.len())
        .max(1);
    let _ = writeln!(
        out,
        "{}{}{up}",
        fit(&title, WIDTH - up.len() - 1),
        " ".repeat(pad)
    );
    let _ = writeln!(out, "{HEADER}");
    for vip in &view.vips {
        vip_lines(&mut out, vip);
    }
    if view.drops.is_empty() {
        let _ = writeln!(out, "drops/s: none");
    } else {
        let mut line = String::from("drops/s:");
        for d in &view.drops {
            let item = format!(" {} {}", d.reason, human(d.per_sec));
            if line.len() + item.len() > WIDTH {
                let _ = writeln!(out, "{line}");
                line = String::from("        ");
            }
            line.push_str(&item);
        }
        let _ = writeln!(out, "{line}");
    }
    out
}

fn vip_lines(out: &mut String, vip: &VipRates) {
    let state = if vip.serving {
        "serving"
    } else {
        "NOT SERVING"
    };
    let _ = writeln!(
        out,
        "{:<30} {:<31} {:>8} {:>8}",
        fit(&format!("{} {}", vip.name, vip.endpoint), 30),
        state,
        human(vip.packets_per_sec),
        human(vip.bytes_per_sec * 8.0),
    );
    for b in &vip.backends {
        let _ = writeln!(out, "{}", backend_line(b));
    }
}

fn backend_line(b: &BackendRates) -> String {
    let weight = match b.slow_start_percent {
        Some(p) => format!("{}/{} {p}%", b.effective_weight, b.weight),
        None => format!("{}/{}", b.effective_weight, b.weight),
    };
    let admin = format!("{:?}", b.admin_state).to_lowercase();
    format!(
        "  {:<28} {:<9} {:<8} {:<12} {:>8} {:>8}",
        fit(&b.address.to_string(), 28),
        b.health.as_str(),
        admin,
        fit(&weight, 12),
        human(b.packets_per_sec),
        human(b.bytes_per_sec * 8.0),
    )
}
