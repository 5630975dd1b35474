//! The registry-and-families renderer `/metrics` used until the streaming one, kept as the
//! reference the new output is compared with (same families, series, HELP and TYPE lines).

use super::super::{
    api::{BackendHealth, StatusReport, VipStatus},
    render::name_of,
};
use crate::config::AdminState;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Metric, Registry},
};
use std::sync::atomic::AtomicU64;

type Labels = Vec<(&'static str, String)>;

/// Registers a labelled metric family and returns a handle to fill it.
fn family<M>(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, M>
where
    M: Default,
    Family<Labels, M>: Metric + Clone,
{
    let family = Family::<Labels, M>::default();
    registry.register(name, help, family.clone());
    family
}

/// Label values as OpenMetrics wants them; prometheus-client writes them verbatim.
fn label(value: impl std::fmt::Display) -> String {
    let value = value.to_string();
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn render_metrics(report: &StatusReport) -> String {
    // prometheus-client writes families in registration order, so the groups below are called
    // in the order the families have always appeared in a scrape.
    let mut registry = Registry::default();
    vip_traffic(&mut registry, &report.vips);
    backends(&mut registry, &report.vips);
    health_checks(&mut registry, &report.vips);
    vip_tables(&mut registry, &report.vips);
    datapath(&mut registry, report);
    agent(&mut registry, report);
    if let Some(bgp) = &report.bgp {
        bgp_announcements(&mut registry, bgp);
    }

    let mut out = String::new();
    if let Err(e) = encode(&mut out, &registry) {
        // Writing to a String does not fail; keep the exposition well-formed regardless.
        tracing::error!(error = %e, "encoding metrics");
        out.clear();
        out.push_str("# EOF\n");
    }
    out
}

fn vip_labels(vip: &VipStatus) -> Labels {
    vec![("vip", label(&vip.name))]
}

fn backend_labels(vip: &VipStatus, address: std::net::IpAddr) -> Labels {
    vec![("vip", label(&vip.name)), ("backend", label(address))]
}

/// `lb_vip_packets`, `lb_vip_bytes`.
fn vip_traffic(registry: &mut Registry, vips: &[VipStatus]) {
    let packets: Family<Labels, Counter> =
        family(registry, "lb_vip_packets", "Packets balanced for the VIP");
    let bytes: Family<Labels, Counter> =
        family(registry, "lb_vip_bytes", "Bytes balanced for the VIP");
    for vip in vips {
        let v = vip_labels(vip);
        packets.get_or_create(&v).inc_by(vip.packets);
        bytes.get_or_create(&v).inc_by(vip.bytes);
    }
}

/// `lb_backend_packets`, `lb_backend_bytes`, `lb_backend_up`, `lb_backend_weight`,
/// `lb_backend_weight_override`, `lb_backend_admin_state`.
fn backends(registry: &mut Registry, vips: &[VipStatus]) {
    let packets: Family<Labels, Counter> = family(
        registry,
        "lb_backend_packets",
        "Packets sent to the backend",
    );
    let bytes: Family<Labels, Counter> =
        family(registry, "lb_backend_bytes", "Bytes sent to the backend");
    let up: Family<Labels, Gauge> = family(
        registry,
        "lb_backend_up",
        "1 if the backend's health check says up, 0 otherwise",
    );
    let weight: Family<Labels, Gauge> = family(
        registry,
        "lb_backend_weight",
        "Effective weight of the backend",
    );
    let weight_override: Family<Labels, Gauge> = family(
        registry,
        "lb_backend_weight_override",
        "Weight set at run time, in force instead of the file's until the next reload",
    );
    let admin_state: Family<Labels, Gauge> = family(
        registry,
        "lb_backend_admin_state",
        "1 for the backend's current admin state, 0 for the others",
    );
    for vip in vips {
        for backend in &vip.backends {
            let b = backend_labels(vip, backend.address);
            packets.get_or_create(&b).inc_by(backend.packets);
            bytes.get_or_create(&b).inc_by(backend.bytes);
            up.get_or_create(&b)
                .set(i64::from(backend.health == BackendHealth::Up));
            weight
                .get_or_create(&b)
                .set(i64::from(backend.effective_weight));
            if let Some(w) = backend.weight_override {
                weight_override.get_or_create(&b).set(i64::from(w));
            }
            // Every state gets a series (0 or 1) so dashboards can sum over `state`.
            for state in [AdminState::Active, AdminState::Drain, AdminState::Disabled] {
                let mut s = b.clone();
                s.push(("state", label(name_of(&state))));
                admin_state
                    .get_or_create(&s)
                    .set(i64::from(state == backend.admin_state));
            }
        }
    }
}

/// `lb_health_checks`, `lb_health_check_latency_seconds`.
fn health_checks(registry: &mut Registry, vips: &[VipStatus]) {
    let checks: Family<Labels, Counter> = family(
        registry,
        "lb_health_checks",
        "Health checks of the backend by result",
    );
    let latency: Family<Labels, Gauge<f64, AtomicU64>> = family(
        registry,
        "lb_health_check_latency_seconds",
        "Latency of the backend's last health check",
    );
    for vip in vips {
        for backend in &vip.backends {
            let b = backend_labels(vip, backend.address);
            for (result, count) in [("ok", backend.checks_ok), ("failed", backend.checks_failed)] {
                let mut r = b.clone();
                r.push(("result", result.to_owned()));
                checks.get_or_create(&r).inc_by(count);
            }
            if let Some(ms) = backend.last_check_latency_ms {
                latency.get_or_create(&b).set(ms / 1000.0);
            }
        }
    }
}

/// `lb_table_generation`, `lb_vip_serving`, `lb_vip_moved_slots`.
fn vip_tables(registry: &mut Registry, vips: &[VipStatus]) {
    let generation: Family<Labels, Gauge> = family(
        registry,
        "lb_table_generation",
        "Lookup-table publications for the VIP since the agent started",
    );
    let serving: Family<Labels, Gauge> = family(
        registry,
        "lb_vip_serving",
        "1 if the VIP forwards traffic, 0 otherwise",
    );
    let moved_slots: Family<Labels, Gauge> = family(
        registry,
        "lb_vip_moved_slots",
        "Slots of the VIP's table whose older flows still use the connection table",
    );
    for vip in vips {
        let v = vip_labels(vip);
        generation
            .get_or_create(&v)
            .set(gauge_value(vip.table_generation));
        serving.get_or_create(&v).set(i64::from(vip.serving));
        moved_slots
            .get_or_create(&v)
            .set(gauge_value(vip.moved_slots));
    }
}

/// `lb_datapath_events`.
fn datapath(registry: &mut Registry, report: &StatusReport) {
    let events: Family<Labels, Counter> = family(
        registry,
        "lb_datapath_events",
        "Data-path counters summed over CPUs",
    );
    for (event, count) in &report.counters {
        events
            .get_or_create(&vec![("event", label(event))])
            .inc_by(*count);
    }
}

/// `lb_health_check_schedule_lag_seconds`, `lb_conn_table_live_entries` (after the first
/// sweep), `lb_agent_uptime_seconds`: the agent's own tasks.
fn agent(registry: &mut Registry, report: &StatusReport) {
    registry.register(
        "lb_health_check_schedule_lag_seconds",
        "How late health checks started relative to their schedule",
        crate::health::schedule_lag(),
    );
    if let Some(sweep) = &report.conn_sweep {
        let live = Gauge::<i64>::default();
        live.set(gauge_value(sweep.live_entries));
        registry.register(
            "lb_conn_table_live_entries",
            "Live connection-table entries at the last sweep",
            live,
        );
    }
    let uptime = Gauge::<i64>::default();
    uptime.set(gauge_value(report.uptime_secs));
    registry.register(
        "lb_agent_uptime_seconds",
        "Seconds since the agent started",
        uptime,
    );
}

/// `lb_bgp_announced`, `lb_bgp_session_established`.
fn bgp_announcements(registry: &mut Registry, bgp: &crate::bgp::BgpStatus) {
    let announced: Family<Labels, Gauge> = family(
        registry,
        "lb_bgp_announced",
        "1 if BIRD announces the VIP address, 0 if it should but does not yet",
    );
    let established: Family<Labels, Gauge> = family(
        registry,
        "lb_bgp_session_established",
        "1 if the BGP session is established",
    );
    for address in bgp.wanted.iter().chain(&bgp.announced) {
        announced
            .get_or_create(&vec![("address", label(address))])
            .set(i64::from(bgp.announced.contains(address)));
    }
    let maintenance: Family<Labels, Gauge> = family(
        registry,
        "lb_maintenance",
        "1 for the maintenance phase the balancer is in",
    );
    for peer in &bgp.peers {
        established
            .get_or_create(&vec![("neighbor", label(peer.neighbor))])
            .set(i64::from(peer.established));
    }
    for phase in crate::bgp::maintenance::Phase::ALL {
        let current = i64::from(phase == bgp.maintenance.phase);
        maintenance
            .get_or_create(&vec![("phase", label(phase))])
            .set(current);
    }
}
