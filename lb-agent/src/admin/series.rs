//! The bulk of `/metrics`: the per-VIP and per-backend families (about 100,000 series at
//! 100 VIPs × 100 backends), written as text here rather than through prometheus-client's
//! encoder. That encoder makes about twenty calls on a `dyn fmt::Write` per series (label keys,
//! quotes, commas, the value), 13 ms a scrape at that size; here a VIP's series of one family
//! are formatted into one reused buffer, each backend's labels once per scrape, and handed on
//! in one write. The text is byte for byte what the encoder wrote: `tests_metrics` compares the
//! two on the same input.

use super::{
    api::{BackendHealth, BackendStatus, VipStatus},
    render::name_of,
    scrape::Scrape,
};
use crate::config::AdminState;
use lb_common::TrafficCounters;
use std::fmt::{self, Display};

/// Label values as OpenMetrics wants them; prometheus-client writes them verbatim.
pub(super) fn escape(value: impl Display) -> String {
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

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Counter,
    Gauge,
}

/// A family: its name, help text (without the final period) and kind.
type Family = (&'static str, &'static str, Kind);

/// A series' value, formatted as the encoder does (itoa for integers, dtoa for floats).
#[derive(Clone, Copy)]
enum Value {
    Counter(u64),
    Gauge(i64),
    Float(f64),
}

fn gauge_value(v: u64) -> Value {
    Value::Gauge(i64::try_from(v).unwrap_or(i64::MAX))
}

/// Writes series into a buffer that is handed to the output a VIP at a time.
struct Writer<'o, W: fmt::Write> {
    out: &'o mut W,
    buf: String,
}

impl<W: fmt::Write> Writer<'_, W> {
    /// `# HELP` and `# TYPE`, as `Registry::register` and `encode_descriptor` wrote them.
    fn descriptor(&mut self, (name, help, kind): Family) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let b = &mut self.buf;
        for part in [
            "# HELP ",
            name,
            " ",
            help,
            ".\n# TYPE ",
            name,
            " ",
            kind,
            "\n",
        ] {
            b.push_str(part);
        }
    }

    /// `name[_total]{labels[,key="value"]} value`; `labels` are escaped and joined already.
    fn series(&mut self, name: &str, labels: &str, extra: Option<(&str, &str)>, value: Value) {
        let b = &mut self.buf;
        b.push_str(name);
        if let Value::Counter(_) = value {
            b.push_str("_total");
        }
        b.push('{');
        b.push_str(labels);
        if let Some((key, value)) = extra {
            for part in [",", key, "=\"", value, "\""] {
                b.push_str(part);
            }
        }
        b.push_str("} ");
        match value {
            Value::Counter(v) => b.push_str(itoa::Buffer::new().format(v)),
            Value::Gauge(v) => b.push_str(itoa::Buffer::new().format(v)),
            Value::Float(v) => b.push_str(dtoa::Buffer::new().format(v)),
        }
        b.push('\n');
    }

    fn flush(&mut self) -> fmt::Result {
        self.out.write_str(&self.buf)?;
        self.buf.clear();
        Ok(())
    }
}

/// A VIP's labels (`vip="…"`) and each backend's (`vip="…",backend="…"`), escaped once.
struct Labeled<'s> {
    vip: &'s VipStatus,
    traffic: TrafficCounters,
    labels: String,
    backends: Vec<String>,
}

fn labeled(scrape: &Scrape) -> Vec<Labeled<'_>> {
    scrape
        .vips
        .iter()
        .map(|(vip, traffic)| {
            let labels = format!("vip=\"{}\"", escape(&vip.name));
            let backends = vip
                .backends
                .iter()
                // An address's text has nothing to escape.
                .map(|b| format!("{labels},backend=\"{}\"", b.address))
                .collect();
            Labeled {
                vip,
                traffic: *traffic,
                labels,
                backends,
            }
        })
        .collect()
}

/// Writes the per-VIP and per-backend families and `lb_datapath_events`, in the order the
/// exposition always had.
pub(super) fn write(scrape: &Scrape, out: &mut impl fmt::Write) -> fmt::Result {
    let vips = labeled(scrape);
    let mut w = Writer {
        out,
        buf: String::with_capacity(64 * 1024),
    };
    vip_traffic(&mut w, &vips)?;
    backend_traffic(&mut w, &vips, scrape)?;
    backend_state(&mut w, &vips)?;
    health_checks(&mut w, &vips)?;
    vip_tables(&mut w, &vips)?;
    datapath(&mut w, scrape)
}

/// A family with one series per VIP.
fn per_vip<W: fmt::Write>(
    w: &mut Writer<W>,
    family: Family,
    vips: &[Labeled],
    value: impl Fn(&Labeled) -> Value,
) -> fmt::Result {
    w.descriptor(family);
    for v in vips {
        w.series(family.0, &v.labels, None, value(v));
    }
    w.flush()
}

/// A family with series per backend: `series(writer, labels, backend)` writes them.
fn per_backend<W: fmt::Write>(
    w: &mut Writer<W>,
    family: Family,
    vips: &[Labeled],
    series: impl Fn(&mut Writer<W>, &str, &BackendStatus),
) -> fmt::Result {
    w.descriptor(family);
    for v in vips {
        for (backend, labels) in v.vip.backends.iter().zip(&v.backends) {
            series(w, labels, backend);
        }
        w.flush()?;
    }
    Ok(())
}

/// `lb_vip_packets`, `lb_vip_bytes`.
fn vip_traffic<W: fmt::Write>(w: &mut Writer<W>, vips: &[Labeled]) -> fmt::Result {
    use Kind::Counter;
    let packets = ("lb_vip_packets", "Packets balanced for the VIP", Counter);
    per_vip(w, packets, vips, |v| Value::Counter(v.traffic.packets))?;
    let bytes = ("lb_vip_bytes", "Bytes balanced for the VIP", Counter);
    per_vip(w, bytes, vips, |v| Value::Counter(v.traffic.bytes))
}

/// `lb_backend_packets`, `lb_backend_bytes`.
fn backend_traffic<W: fmt::Write>(
    w: &mut Writer<W>,
    vips: &[Labeled],
    scrape: &Scrape,
) -> fmt::Result {
    use Kind::Counter;
    let packets = ("lb_backend_packets", "Packets sent to the backend", Counter);
    per_backend(w, packets, vips, |w, l, b| {
        let value = Value::Counter(scrape.traffic(b).packets);
        w.series(packets.0, l, None, value)
    })?;
    let bytes = ("lb_backend_bytes", "Bytes sent to the backend", Counter);
    per_backend(w, bytes, vips, |w, l, b| {
        w.series(bytes.0, l, None, Value::Counter(scrape.traffic(b).bytes))
    })
}

/// `lb_backend_up`, `lb_backend_weight`, `lb_backend_weight_override`, `lb_backend_admin_state`.
fn backend_state<W: fmt::Write>(w: &mut Writer<W>, vips: &[Labeled]) -> fmt::Result {
    use Kind::Gauge;
    let up = (
        "lb_backend_up",
        "1 if the backend's health check says up, 0 otherwise",
        Gauge,
    );
    per_backend(w, up, vips, |w, l, b| {
        let value = Value::Gauge(i64::from(b.health == BackendHealth::Up));
        w.series(up.0, l, None, value)
    })?;
    let weight = (
        "lb_backend_weight",
        "Effective weight of the backend",
        Gauge,
    );
    per_backend(w, weight, vips, |w, l, b| {
        let value = Value::Gauge(i64::from(b.effective_weight));
        w.series(weight.0, l, None, value)
    })?;
    let weight_override = (
        "lb_backend_weight_override",
        "Weight set at run time, in force instead of the file's until the next reload",
        Gauge,
    );
    // Only overridden backends: the series' presence is the alert ("an override is in force").
    per_backend(w, weight_override, vips, |w, l, b| {
        if let Some(o) = b.weight_override {
            w.series(weight_override.0, l, None, Value::Gauge(i64::from(o)))
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
    per_backend(w, admin_state, vips, |w, l, b| {
        for (state, name) in &states {
            let value = Value::Gauge(i64::from(*state == b.admin_state));
            w.series(admin_state.0, l, Some(("state", name)), value);
        }
    })
}

/// `lb_health_checks`, `lb_health_check_latency_seconds`.
fn health_checks<W: fmt::Write>(w: &mut Writer<W>, vips: &[Labeled]) -> fmt::Result {
    let checks = (
        "lb_health_checks",
        "Health checks of the backend by result",
        Kind::Counter,
    );
    per_backend(w, checks, vips, |w, l, b| {
        for (result, count) in [("ok", b.checks_ok), ("failed", b.checks_failed)] {
            w.series(checks.0, l, Some(("result", result)), Value::Counter(count));
        }
    })?;
    let latency = (
        "lb_health_check_latency_seconds",
        "Latency of the backend's last health check",
        Kind::Gauge,
    );
    per_backend(w, latency, vips, |w, l, b| {
        if let Some(ms) = b.last_check_latency_ms {
            w.series(latency.0, l, None, Value::Float(ms / 1000.0))
        }
    })
}

/// `lb_table_generation`, `lb_vip_serving`, `lb_vip_moved_slots`, `lb_vip_table_info`.
fn vip_tables<W: fmt::Write>(w: &mut Writer<W>, vips: &[Labeled]) -> fmt::Result {
    use Kind::Gauge;
    let generation = (
        "lb_table_generation",
        "Lookup-table publications for the VIP since the agent started",
        Gauge,
    );
    per_vip(w, generation, vips, |v| gauge_value(v.vip.table_generation))?;
    let serving = (
        "lb_vip_serving",
        "1 if the VIP forwards traffic, 0 otherwise",
        Gauge,
    );
    per_vip(w, serving, vips, |v| Value::Gauge(i64::from(v.vip.serving)))?;
    let moved = (
        "lb_vip_moved_slots",
        "Slots of the VIP's table whose older flows still use the connection table",
        Gauge,
    );
    per_vip(w, moved, vips, |v| gauge_value(v.vip.moved_slots))?;
    // An info metric: a fleet alerts when balancers' digests for one VIP differ.
    let info = (
        "lb_vip_table_info",
        "The digest of the VIP's live table (equal on every balancer with the same backends)",
        Gauge,
    );
    w.descriptor(info);
    for v in vips {
        let digest = escape(&v.vip.table_digest);
        w.series(
            info.0,
            &v.labels,
            Some(("digest", digest.as_str())),
            Value::Gauge(1),
        );
    }
    w.flush()
}

/// `lb_datapath_events`.
fn datapath<W: fmt::Write>(w: &mut Writer<W>, scrape: &Scrape) -> fmt::Result {
    let family = (
        "lb_datapath_events",
        "Data-path counters summed over CPUs",
        Kind::Counter,
    );
    w.descriptor(family);
    for (event, count) in &scrape.counters {
        let labels = format!("event=\"{}\"", escape(event));
        w.series(family.0, &labels, None, Value::Counter(*count));
    }
    w.flush()
}
