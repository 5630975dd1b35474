//! The `/metrics` exposition of one [`Scrape`]: the per-VIP and per-backend families written
//! by `series` (about 100,000 series at 100 VIPs × 100 backends), the health-check lag
//! histogram and the agent's own families by prometheus-client's text encoder; `stream` sends
//! it to the client in chunks.
//!
//! Filling a registry of `Family`s first (a label `Vec` and `String`s per series, a hash map per
//! family) took hundreds of ms and tens of MB at that size; encoding straight from the scrape
//! allocates nothing per series, and chunks keep the text from being held whole.

use super::{
    api::{AgentInfo, StatusReport},
    scrape::Scrape,
    series::{self, escape},
};
use prometheus_client::{
    collector::Collector,
    encoding::{
        text::{encode, encode_registry},
        DescriptorEncoder, MetricEncoder,
    },
    metrics::MetricType,
    registry::Registry,
};
use std::{fmt, sync::Arc};

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
    if let Err(e) = write_metrics(Arc::new(Scrape::from(report.clone())), &mut out) {
        // Writing to a String does not fail; keep the exposition well-formed regardless.
        tracing::error!(error = %e, "encoding metrics");
        out.clear();
        out.push_str("# EOF\n");
    }
    out
}

/// Writes the exposition of `scrape` to `out`, ending with `# EOF`.
pub(super) fn write_metrics(scrape: Arc<Scrape>, out: &mut impl fmt::Write) -> fmt::Result {
    series::write(&scrape, out)?;
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
    let mut agent = Registry::default();
    agent.register_collector(Box::new(AgentFamilies(scrape)));
    encode(out, &agent)
}

/// The families after the lag histogram (the order they always had).
#[derive(Debug)]
struct AgentFamilies(Arc<Scrape>);

impl Collector for AgentFamilies {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        let scrape = &*self.0;
        agent(&mut out, scrape)?;
        if let Some(bgp) = &scrape.bgp {
            bgp_announcements(&mut out, bgp)?;
        }
        Ok(())
    }
}

/// A label name and its escaped value.
pub(super) type Label<'a> = (&'static str, &'a str);

pub(super) fn gauge(family: &mut MetricEncoder, labels: &[Label], value: i64) -> fmt::Result {
    family.encode_family(&labels)?.encode_gauge(&value)
}

pub(super) fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Writes a family's HELP and TYPE lines; the series follow through the returned encoder.
pub(super) fn family<'s>(
    out: &'s mut DescriptorEncoder,
    name: &'s str,
    help: &str,
    kind: MetricType,
) -> Result<MetricEncoder<'s>, fmt::Error> {
    // As `Registry::register` writes help texts, which the exposition always had.
    out.encode_descriptor(name, &format!("{help}."), None, kind)
}

/// `lb_conn_table_live_entries` (after the first sweep), `lb_agent_uptime_seconds`: the
/// agent's own tasks (with the lag histogram before them).
fn agent(out: &mut DescriptorEncoder, scrape: &Scrape) -> fmt::Result {
    if let Some(live) = scrape.conn_live_entries {
        family(
            out,
            "lb_conn_table_live_entries",
            "Live connection-table entries at the last sweep",
            MetricType::Gauge,
        )?
        .encode_gauge(&gauge_value(live))?;
    }
    family(
        out,
        "lb_agent_uptime_seconds",
        "Seconds since the agent started",
        MetricType::Gauge,
    )?
    .encode_gauge(&gauge_value(scrape.uptime_secs))?;
    process(out, &scrape.agent)
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
