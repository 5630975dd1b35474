//! `series` writes the per-VIP and per-backend families by hand; here they are also encoded
//! the way they were before, through prometheus-client's encoder (the code as it was), and the
//! two texts must be equal byte for byte.

// The encoder's thin wrappers are the agent's own (`metrics`), still used for its other families.
use super::{
    api::{BackendHealth, BackendStatus, StatusReport, VipStatus},
    metrics::{family, gauge, gauge_value, Label},
    render::name_of,
    scrape::{BackendTraffic, Scrape},
    series,
    tests::{canned_report, large_report},
};
use crate::config::AdminState;
use lb_common::TrafficCounters;
use prometheus_client::{
    collector::Collector,
    encoding::{text::encode_registry, DescriptorEncoder, MetricEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};
use std::{
    fmt::{self, Display},
    sync::Arc,
};

/// The report part as prometheus-client encoded it.
fn reference(report: &StatusReport) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition(Arc::new(report.clone()))));
    let mut text = String::new();
    encode_registry(&mut text, &registry).unwrap();
    text
}

fn written(scrape: &Scrape) -> String {
    let mut text = String::new();
    series::write(scrape, &mut text).unwrap();
    text
}

/// What the canned reports lack: a VIP without backends, counters and gauges at their limits,
/// weight overrides, latencies of every magnitude, every health and admin state.
fn odd_report() -> StatusReport {
    let mut report = large_report();
    let mut empty = report.vips[0].clone();
    empty.name = "empty".to_owned();
    empty.backends.clear();
    empty.table_generation = u64::MAX;
    empty.packets = u64::MAX;
    report.vips.push(empty);
    let latencies = [0.0, 1e-9, 0.000_25, 1.0, 123_456.789, 1e21, f64::NAN];
    for (i, b) in report.vips[2].backends.iter_mut().enumerate() {
        b.weight_override = (i % 4 == 1).then_some(i as u32 * 10);
        b.last_check_latency_ms = latencies.get(i % 8).copied();
        b.health = [
            BackendHealth::Up,
            BackendHealth::Down,
            BackendHealth::Unchecked,
        ][i % 3];
        b.admin_state = [AdminState::Active, AdminState::Drain, AdminState::Disabled][i % 3];
        b.checks_ok = u64::MAX - i as u64;
        b.bytes = u64::MAX;
        b.effective_weight = i as u32 * 1000;
    }
    report.counters.insert("a\"quoted\\event".to_owned(), 9);
    report
}

#[test]
fn written_as_prometheus_client_encoded() {
    for report in [canned_report(), large_report(), odd_report()] {
        let expected = reference(&report);
        assert!(expected.contains("lb_backend_admin_state{"), "{expected}");
        assert!(
            written(&Scrape::from(report)) == expected,
            "differs from:\n{expected}"
        );
    }
}

/// The agent's scrapes carry traffic by backend id beside statuses that hold zeros.
#[test]
fn traffic_by_id_as_in_the_status() {
    let report = odd_report();
    let expected = reference(&report);
    let mut by_id = vec![TrafficCounters::default(); 1000];
    let mut scrape = Scrape::from(report);
    // The canned reports reuse ids across VIPs; the agent's never do.
    let mut ids = 0..;
    for (vip, _) in &mut scrape.vips {
        let vip = Arc::make_mut(vip);
        for b in &mut vip.backends {
            b.id = ids.next().unwrap();
            by_id[b.id as usize] = TrafficCounters {
                packets: b.packets,
                bytes: b.bytes,
            };
            (b.packets, b.bytes) = (0, 0);
        }
    }
    scrape.backend_traffic = BackendTraffic::ById(by_id);
    assert!(written(&scrape) == expected, "differs from:\n{expected}");
}

/// The families before the lag histogram.
#[derive(Debug)]
struct Exposition(Arc<StatusReport>);

impl Collector for Exposition {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        let report = &*self.0;
        let names = Names::of(&report.vips);
        vip_traffic(&mut out, &names)?;
        backends(&mut out, &names)?;
        health_checks(&mut out, &names)?;
        vip_tables(&mut out, &names)?;
        datapath(&mut out, report)
    }
}

/// Label values as OpenMetrics wants them; prometheus-client writes them verbatim.
fn escape(value: impl Display) -> String {
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

/// Every VIP and backend with its label values, escaped once per scrape: a backend has 11
/// series, and formatting its address for each was a third of the time.
struct Names<'a> {
    vips: Vec<(&'a VipStatus, String, Vec<String>)>,
}

impl<'a> Names<'a> {
    fn of(vips: &'a [VipStatus]) -> Self {
        let vips = vips
            .iter()
            .map(|v| {
                let backends = v.backends.iter().map(|b| escape(b.address)).collect();
                (v, escape(&v.name), backends)
            })
            .collect();
        Self { vips }
    }
}

/// One series of a family: its labels, then the value.
fn counter(family: &mut MetricEncoder, labels: &[Label], value: u64) -> fmt::Result {
    family
        .encode_family(&labels)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// A family with one series per VIP.
fn per_vip(
    out: &mut DescriptorEncoder,
    (name, help, kind): (&str, &str, MetricType),
    names: &Names,
    value: impl Fn(&VipStatus) -> u64,
) -> fmt::Result {
    let mut f = family(out, name, help, kind)?;
    for (vip, vip_name, _) in &names.vips {
        let labels = [("vip", vip_name.as_str())];
        match kind {
            MetricType::Counter => counter(&mut f, &labels, value(vip))?,
            _ => gauge(&mut f, &labels, gauge_value(value(vip)))?,
        }
    }
    Ok(())
}

/// `lb_vip_packets`, `lb_vip_bytes`.
fn vip_traffic(out: &mut DescriptorEncoder, vips: &Names) -> fmt::Result {
    use MetricType::Counter;
    let packets = ("lb_vip_packets", "Packets balanced for the VIP", Counter);
    per_vip(out, packets, vips, |v| v.packets)?;
    let bytes = ("lb_vip_bytes", "Bytes balanced for the VIP", Counter);
    per_vip(out, bytes, vips, |v| v.bytes)
}

/// A family with series per backend, from `series(encoder, labels, backend)`.
fn per_backend(
    out: &mut DescriptorEncoder,
    (name, help, kind): (&str, &str, MetricType),
    names: &Names,
    series: impl Fn(&mut MetricEncoder, [Label; 2], &BackendStatus) -> fmt::Result,
) -> fmt::Result {
    let mut f = family(out, name, help, kind)?;
    for (vip, vip_name, backend_names) in &names.vips {
        for (backend, backend_name) in vip.backends.iter().zip(backend_names) {
            let labels = [
                ("vip", vip_name.as_str()),
                ("backend", backend_name.as_str()),
            ];
            series(&mut f, labels, backend)?;
        }
    }
    Ok(())
}

/// `lb_backend_packets`, `lb_backend_bytes`, `lb_backend_up`, `lb_backend_weight`,
/// `lb_backend_weight_override`, `lb_backend_admin_state`.
fn backends(out: &mut DescriptorEncoder, vips: &Names) -> fmt::Result {
    use MetricType::{Counter, Gauge};
    let packets = ("lb_backend_packets", "Packets sent to the backend", Counter);
    per_backend(out, packets, vips, |f, l, b| counter(f, &l, b.packets))?;
    let bytes = ("lb_backend_bytes", "Bytes sent to the backend", Counter);
    per_backend(out, bytes, vips, |f, l, b| counter(f, &l, b.bytes))?;
    let up = (
        "lb_backend_up",
        "1 if the backend's health check says up, 0 otherwise",
        Gauge,
    );
    per_backend(out, up, vips, |f, l, b| {
        gauge(f, &l, i64::from(b.health == BackendHealth::Up))
    })?;
    let weight = (
        "lb_backend_weight",
        "Effective weight of the backend",
        Gauge,
    );
    per_backend(out, weight, vips, |f, l, b| {
        gauge(f, &l, i64::from(b.effective_weight))
    })?;
    let weight_override = (
        "lb_backend_weight_override",
        "Weight set at run time, in force instead of the file's until the next reload",
        Gauge,
    );
    // Only overridden backends: the series' presence is the alert ("an override is in force").
    per_backend(out, weight_override, vips, |f, l, b| {
        match b.weight_override {
            Some(w) => gauge(f, &l, i64::from(w)),
            None => Ok(()),
        }
    })?;
    let admin_state = (
        "lb_backend_admin_state",
        "1 for the backend's current admin state, 0 for the others",
        Gauge,
    );
    // Every state gets a series (0 or 1) so dashboards can sum over `state`.
    let states = [AdminState::Active, AdminState::Drain, AdminState::Disabled]
        .map(|state| (state, escape(name_of(&state))));
    per_backend(out, admin_state, vips, |f, [vip, backend], b| {
        for (state, name) in &states {
            let labels = [vip, backend, ("state", name.as_str())];
            gauge(f, &labels, i64::from(*state == b.admin_state))?;
        }
        Ok(())
    })
}

/// `lb_health_checks`, `lb_health_check_latency_seconds`.
fn health_checks(out: &mut DescriptorEncoder, vips: &Names) -> fmt::Result {
    let checks = (
        "lb_health_checks",
        "Health checks of the backend by result",
        MetricType::Counter,
    );
    per_backend(out, checks, vips, |f, [vip, backend], b| {
        for (result, count) in [("ok", b.checks_ok), ("failed", b.checks_failed)] {
            let labels = [vip, backend, ("result", result)];
            counter(f, &labels, count)?;
        }
        Ok(())
    })?;
    let latency = (
        "lb_health_check_latency_seconds",
        "Latency of the backend's last health check",
        MetricType::Gauge,
    );
    per_backend(out, latency, vips, |f, l, b| {
        match b.last_check_latency_ms {
            Some(ms) => f.encode_family(&l)?.encode_gauge(&(ms / 1000.0)),
            None => Ok(()),
        }
    })
}

/// `lb_table_generation`, `lb_vip_serving`, `lb_vip_moved_slots`, `lb_vip_table_info`.
fn vip_tables(out: &mut DescriptorEncoder, vips: &Names) -> fmt::Result {
    use MetricType::Gauge;
    let generation = (
        "lb_table_generation",
        "Lookup-table publications for the VIP since the agent started",
        Gauge,
    );
    per_vip(out, generation, vips, |v| v.table_generation)?;
    let serving = (
        "lb_vip_serving",
        "1 if the VIP forwards traffic, 0 otherwise",
        Gauge,
    );
    per_vip(out, serving, vips, |v| u64::from(v.serving))?;
    let moved = (
        "lb_vip_moved_slots",
        "Slots of the VIP's table whose older flows still use the connection table",
        Gauge,
    );
    per_vip(out, moved, vips, |v| v.moved_slots)?;
    // An info metric: a fleet alerts when balancers' digests for one VIP differ.
    let mut info = family(
        out,
        "lb_vip_table_info",
        "The digest of the VIP's live table (equal on every balancer with the same backends)",
        MetricType::Gauge,
    )?;
    for (vip, vip_name, _) in &vips.vips {
        let digest = escape(&vip.table_digest);
        gauge(&mut info, &[("vip", vip_name), ("digest", &digest)], 1)?;
    }
    Ok(())
}

/// `lb_datapath_events`.
fn datapath(out: &mut DescriptorEncoder, report: &StatusReport) -> fmt::Result {
    let mut f = family(
        out,
        "lb_datapath_events",
        "Data-path counters summed over CPUs",
        MetricType::Counter,
    )?;
    for (event, count) in &report.counters {
        counter(&mut f, &[("event", escape(event).as_str())], *count)?;
    }
    Ok(())
}
