//! The `/metrics` exposition, written by prometheus-client's text encoder straight from one
//! [`StatusReport`] (a [`Collector`]); `stream` sends it to the client in chunks.
//!
//! A scrape of 100 VIPs × 100 backends is about 100,000 series and 7 MB of text. Filling a
//! registry of `Family`s first (a label `Vec` and `String`s per series, a hash map per family)
//! took hundreds of ms and tens of MB at that size; encoding from the report allocates nothing
//! per series, and chunks keep the text from being held whole.

use super::{
    api::{AgentInfo, BackendHealth, BackendStatus, StatusReport, VipStatus},
    render::name_of,
};
use crate::config::AdminState;
use prometheus_client::{
    collector::Collector,
    encoding::{
        text::{encode, encode_registry},
        DescriptorEncoder, MetricEncoder, NoLabelSet,
    },
    metrics::MetricType,
    registry::Registry,
};
use std::{
    fmt::{self, Display},
    sync::Arc,
};

/// Prometheus text exposition of a report (OpenMetrics text,
/// [`METRICS_CONTENT_TYPE`](super::METRICS_CONTENT_TYPE), ends with `# EOF`), whole. The
/// server streams it instead ([`metrics_body`](super::stream::metrics_body)); the text is the same.
///
/// Metric names (stable):
///
/// | Name                                                   | Type    | Meaning                                  |
/// |--------------------------------------------------------|---------|------------------------------------------|
/// | `lb_vip_packets_total{vip}`                            | counter | packets balanced for the VIP             |
/// | `lb_vip_bytes_total{vip}`                              | counter | bytes balanced for the VIP               |
/// | `lb_backend_packets_total{vip,backend}`                | counter | packets sent to the backend              |
/// | `lb_backend_bytes_total{vip,backend}`                  | counter | bytes sent to the backend                |
/// | `lb_backend_up{vip,backend}`                           | gauge   | 1 if the health check says up, else 0    |
/// | `lb_backend_weight{vip,backend}`                       | gauge   | effective weight (after slow start, admin state) |
/// | `lb_backend_weight_override{vip,backend}`              | gauge   | weight set at run time (`lb-agent backend weight`); only for backends with one, until the next reload |
/// | `lb_backend_admin_state{vip,backend,state}`            | gauge   | 1 for the current state (`active`, `drain`, `disabled`), 0 for the others |
/// | `lb_health_checks_total{vip,backend,result}`           | counter | health checks, `result` = `ok` or `failed` |
/// | `lb_health_check_latency_seconds{vip,backend}`         | gauge   | latency of the last check (absent before the first) |
/// | `lb_table_generation{vip}`                             | gauge   | lookup-table publications since start    |
/// | `lb_vip_serving{vip}`                                  | gauge   | 1 if the VIP forwards traffic            |
/// | `lb_vip_moved_slots{vip}`                              | gauge   | slots whose older flows still use the connection table |
/// | `lb_vip_table_info{vip,digest}`                        | gauge   | 1, with the digest of the VIP's live table |
/// | `lb_conn_table_live_entries`                           | gauge   | live connection-table entries at the last sweep (absent before it) |
/// | `lb_datapath_events_total{event}`                      | counter | data-path counters, summed over CPUs     |
/// | `lb_agent_uptime_seconds`                              | gauge   | seconds since the agent started          |
/// | `lb_agent_start_time_seconds`                          | gauge   | Unix time the agent started              |
/// | `lb_build_info{version}`                               | gauge   | 1, with the agent's version              |
/// | `lb_conn_table_capacity`                               | gauge   | connection-table entries configured, all CPUs together |
/// | `lb_reload_success`                                    | gauge   | 1 if the last reload was applied, 0 if rejected (absent before the first) |
/// | `lb_reload_timestamp_seconds`                          | gauge   | Unix time the last reload finished (absent before the first) |
/// | `lb_bgp_announced{address}`                            | gauge   | 1 if BIRD announces the VIP address, 0 if it should but does not yet |
/// | `lb_bgp_session_established{neighbor}`                 | gauge   | 1 if the BGP session is established      |
/// | `lb_maintenance{phase}`                                | gauge   | 1 for the current phase (`normal`, `draining`, `withdrawn`), 0 for the others |
pub fn render_metrics(report: &StatusReport) -> String {
    let mut out = String::new();
    if let Err(e) = write_metrics(Arc::new(report.clone()), &mut out) {
        // Writing to a String does not fail; keep the exposition well-formed regardless.
        tracing::error!(error = %e, "encoding metrics");
        out.clear();
        out.push_str("# EOF\n");
    }
    out
}

/// Writes the exposition of `report` to `out`, ending with `# EOF`.
pub(super) fn write_metrics(report: Arc<StatusReport>, out: &mut impl fmt::Write) -> fmt::Result {
    let registry = |part| {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Exposition(report.clone(), part)));
        registry
    };
    encode_registry(out, &registry(Part::Report))?;
    // The histogram's lock is held while it is encoded, and checkers on the runtime's threads
    // wait on it to record: into a String first, never while a slow client holds up `out`.
    let mut lag = Registry::default();
    lag.register(
        "lb_health_check_schedule_lag_seconds",
        "How late health checks started relative to their schedule",
        crate::health::schedule_lag(),
    );
    let mut text = String::new();
    encode_registry(&mut text, &lag)?;
    out.write_str(&text)?;
    encode(out, &registry(Part::Agent))
}

/// The families before the lag histogram, and those after it (the order they always had).
#[derive(Debug)]
enum Part {
    Report,
    Agent,
}

#[derive(Debug)]
struct Exposition(Arc<StatusReport>, Part);

impl Collector for Exposition {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        let report = &*self.0;
        if let Part::Report = self.1 {
            let names = Names::of(&report.vips);
            vip_traffic(&mut out, &names)?;
            backends(&mut out, &names)?;
            health_checks(&mut out, &names)?;
            vip_tables(&mut out, &names)?;
            return datapath(&mut out, report);
        }
        agent(&mut out, report)?;
        if let Some(bgp) = &report.bgp {
            bgp_announcements(&mut out, bgp)?;
        }
        Ok(())
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

/// A label name and its escaped value.
type Label<'a> = (&'static str, &'a str);

/// One series of a family: its labels, then the value.
fn counter(family: &mut MetricEncoder, labels: &[Label], value: u64) -> fmt::Result {
    family
        .encode_family(&labels)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn gauge(family: &mut MetricEncoder, labels: &[Label], value: i64) -> fmt::Result {
    family.encode_family(&labels)?.encode_gauge(&value)
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Writes a family's HELP and TYPE lines; the series follow through the returned encoder.
fn family<'s>(
    out: &'s mut DescriptorEncoder,
    name: &'s str,
    help: &str,
    kind: MetricType,
) -> Result<MetricEncoder<'s>, fmt::Error> {
    // As `Registry::register` writes help texts, which the exposition always had.
    out.encode_descriptor(name, &format!("{help}."), None, kind)
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

/// `lb_conn_table_live_entries` (after the first sweep), `lb_agent_uptime_seconds`: the
/// agent's own tasks (with the lag histogram before them).
fn agent(out: &mut DescriptorEncoder, report: &StatusReport) -> fmt::Result {
    if let Some(sweep) = &report.conn_sweep {
        family(
            out,
            "lb_conn_table_live_entries",
            "Live connection-table entries at the last sweep",
            MetricType::Gauge,
        )?
        .encode_gauge(&gauge_value(sweep.live_entries))?;
    }
    family(
        out,
        "lb_agent_uptime_seconds",
        "Seconds since the agent started",
        MetricType::Gauge,
    )?
    .encode_gauge(&gauge_value(report.uptime_secs))?;
    process(out, &report.agent)
}

/// `lb_build_info`, `lb_agent_start_time_seconds`, `lb_conn_table_capacity`, and after the
/// first reload `lb_reload_success` and `lb_reload_timestamp_seconds`.
fn process(out: &mut DescriptorEncoder, agent: &AgentInfo) -> fmt::Result {
    use MetricType::Gauge;
    let mut build = family(out, "lb_build_info", "The agent's version", Gauge)?;
    gauge(&mut build, &[("version", &escape(&agent.version))], 1)?;
    let start = "Unix time the agent started";
    family(out, "lb_agent_start_time_seconds", start, Gauge)?
        .encode_gauge(&agent.started_at_unix)?;
    let capacity = "Connection-table entries configured, all CPUs together";
    family(out, "lb_conn_table_capacity", capacity, Gauge)?
        .encode_gauge(&i64::from(agent.conn_table_capacity))?;
    if let Some(reload) = &agent.last_reload {
        let success = "1 if the last reload was applied, 0 if it was rejected";
        family(out, "lb_reload_success", success, Gauge)?
            .encode_gauge(&i64::from(reload.applied))?;
        let at = "Unix time the last reload finished";
        family(out, "lb_reload_timestamp_seconds", at, Gauge)?.encode_gauge(&reload.at_unix)?;
    }
    Ok(())
}

/// `lb_bgp_announced`, `lb_bgp_session_established`, `lb_maintenance`.
fn bgp_announcements(out: &mut DescriptorEncoder, bgp: &crate::bgp::BgpStatus) -> fmt::Result {
    let mut announced = family(
        out,
        "lb_bgp_announced",
        "1 if BIRD announces the VIP address, 0 if it should but does not yet",
        MetricType::Gauge,
    )?;
    // An address both wanted and announced is one series.
    let mut seen = std::collections::BTreeSet::new();
    for address in bgp.wanted.iter().chain(&bgp.announced) {
        if !seen.insert(address) {
            continue;
        }
        let value = i64::from(bgp.announced.contains(address));
        gauge(
            &mut announced,
            &[("address", escape(address).as_str())],
            value,
        )?;
    }
    let mut established = family(
        out,
        "lb_bgp_session_established",
        "1 if the BGP session is established",
        MetricType::Gauge,
    )?;
    for peer in &bgp.peers {
        let value = i64::from(peer.established);
        gauge(
            &mut established,
            &[("neighbor", escape(peer.neighbor).as_str())],
            value,
        )?;
    }
    let mut maintenance = family(
        out,
        "lb_maintenance",
        "1 for the maintenance phase the balancer is in",
        MetricType::Gauge,
    )?;
    for phase in crate::bgp::maintenance::Phase::ALL {
        let current = i64::from(phase == bgp.maintenance.phase);
        gauge(&mut maintenance, &[("phase", phase.as_str())], current)?;
    }
    Ok(())
}
