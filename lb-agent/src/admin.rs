//! The agent's admin endpoint (HTTP/1, `admin_listen`, localhost by default) and the CLI's client
//! for it.
//!
//! The controller task owns all state; the handlers here only exchange typed [`AdminRequest`]s
//! with it and give up with `503 Service Unavailable` when it does not answer within 5 s.
//!
//! Routes:
//!
//! | Method | Path                                         | Answer                                   |
//! |--------|----------------------------------------------|------------------------------------------|
//! | GET    | `/metrics`                                   | OpenMetrics text ([`render_metrics`])    |
//! | GET    | `/status`                                    | JSON [`StatusReport`]                    |
//! | POST   | `/vips/{vip}/backends/{addr}/drain`          | admin state `drain`                      |
//! | POST   | `/vips/{vip}/backends/{addr}/undrain`        | admin state `active`                     |
//! | POST   | `/vips/{vip}/backends/{addr}/disable`        | admin state `disabled`                   |
//! | POST   | `/vips/{vip}/backends/{addr}/enable`         | admin state `active`                     |
//! | POST   | `/reload`                                    | re-read the configuration file           |
//!
//! Backend actions answer 200 with a one-line confirmation, 400 for an address that does not
//! parse, 404 for an unknown action or when the controller refuses (unknown VIP or backend; the
//! body is the controller's message). `/reload` answers 200 with the controller's summary or 422
//! with its error. Every body except `/status` and `/metrics` is one line of plain text.

use crate::config::{AdminState, AllDown, HashMode, Protocol};
use anyhow::{anyhow, bail, Context as _};
use axum::{
    extract::{Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post as post_route},
    Json, Router,
};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Metric, Registry},
};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    future::IntoFuture as _,
    net::{IpAddr, SocketAddr},
    sync::atomic::AtomicU64,
    time::Duration,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot},
};
use tokio_util::sync::CancellationToken;

/// How long a handler waits for the controller, and the CLI for the agent.
const TIMEOUT: Duration = Duration::from_secs(5);
/// After `shutdown`, how long open connections may take to finish before `serve` returns anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Content type of [`render_metrics`]' output (prometheus-client writes OpenMetrics text).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A request from the admin endpoint to the controller.
#[derive(Debug)]
pub enum AdminRequest {
    /// A snapshot of everything the agent knows.
    Status(oneshot::Sender<StatusReport>),
    /// Change a backend's admin state; `Err` (unknown VIP or backend) is shown to the operator
    /// as is, with 404.
    SetBackendState {
        vip: String,
        backend: IpAddr,
        state: AdminState,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Re-read the configuration file: `Ok` is a summary of what changed, `Err` why nothing did.
    Reload(oneshot::Sender<Result<String, String>>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub interface: String,
    pub xdp_mode: String,
    pub table_size: u32,
    pub uptime_secs: u64,
    pub config_path: String,
    pub vips: Vec<VipStatus>,
    /// data-path counters by name (e.g. "forwarded", "drop_malformed", "conn_hit"), summed over
    /// CPUs
    pub counters: BTreeMap<String, u64>,
    /// BGP announcements through BIRD; absent without a `[bgp]` section
    #[serde(default)]
    pub bgp: Option<crate::bgp::BgpStatus>,
    /// the last sweep of the connection table; absent before the first
    #[serde(default)]
    pub conn_sweep: Option<ConnSweepStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnSweepStatus {
    /// live entries left
    pub live_entries: u64,
    /// idle or stale entries the sweep removed
    pub removed_entries: u64,
    pub took_ms: u64,
    pub secs_ago: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VipStatus {
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub hash: HashMode,
    pub all_down: AllDown,
    /// table publications since start
    pub table_generation: u64,
    /// hex digest of the live table, equal on every balancer with the same backends
    pub table_digest: String,
    /// slots whose flows from before a table change are still looked up in the connection
    /// table (see docs/design.md, "Moved slots")
    #[serde(default)]
    pub moved_slots: u64,
    pub serving: bool,
    pub packets: u64,
    pub bytes: u64,
    pub backends: Vec<BackendStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub address: IpAddr,
    pub id: u32,
    pub weight: u32,
    pub effective_weight: u32,
    pub admin_state: AdminState,
    /// "up", "down" or "unchecked"
    pub health: String,
    pub slots: u32,
    pub packets: u64,
    pub bytes: u64,
    pub checks_ok: u64,
    pub checks_failed: u64,
    pub last_check_latency_ms: Option<f64>,
    pub last_change: String,
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct AppState {
    requests: mpsc::Sender<AdminRequest>,
    timeout: Duration,
}

/// Serve until `shutdown` is cancelled.
///
/// After cancellation, requests in flight get [`SHUTDOWN_GRACE`] to finish; then `serve`
/// returns regardless.
pub async fn serve(
    listener: TcpListener,
    requests: mpsc::Sender<AdminRequest>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_with_timeout(listener, requests, shutdown, TIMEOUT).await
}

async fn serve_with_timeout(
    listener: TcpListener,
    requests: mpsc::Sender<AdminRequest>,
    shutdown: CancellationToken,
    timeout: Duration,
) -> anyhow::Result<()> {
    let local = listener
        .local_addr()
        .context("admin endpoint: local address of the listener")?;
    tracing::info!(%local, "admin endpoint listening");
    let app = router(AppState { requests, timeout });
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    let grace_over = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = server => result.with_context(|| format!("admin endpoint on {local}"))?,
        () = grace_over => {
            tracing::warn!(%local, "admin endpoint: connections still open after shutdown, leaving them");
        }
    }
    tracing::info!(%local, "admin endpoint stopped");
    Ok(())
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/status", get(status_handler))
        .route(
            "/vips/{vip}/backends/{addr}/{action}",
            post_route(backend_handler),
        )
        .route("/reload", post_route(reload_handler))
        .with_state(state)
}

/// A plain-text answer, newline-terminated for `curl`.
fn text(status: StatusCode, body: impl std::fmt::Display) -> Response {
    let mut body = body.to_string();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Sends a request built around a fresh reply channel and waits for the answer, at most
/// `state.timeout` in all (a full queue counts against it too).
async fn ask<T>(
    state: &AppState,
    make: impl FnOnce(oneshot::Sender<T>) -> AdminRequest,
) -> Result<T, Response> {
    let (reply, answer) = oneshot::channel();
    let exchange = async {
        state
            .requests
            .send(make(reply))
            .await
            .map_err(|_| "the agent's controller has stopped")?;
        answer
            .await
            .map_err(|_| "the agent's controller dropped the request")
    };
    match tokio::time::timeout(state.timeout, exchange).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(message)) => Err(text(StatusCode::SERVICE_UNAVAILABLE, message)),
        Err(_) => Err(text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the agent's controller did not answer within {} s; try again",
                state.timeout.as_secs_f64()
            ),
        )),
    }
}

async fn status_handler(State(state): State<AppState>) -> Response {
    let response = match ask(&state, AdminRequest::Status).await {
        Ok(report) => Json(report).into_response(),
        Err(response) => response,
    };
    release_freed_heap();
    response
}

async fn metrics_handler(State(state): State<AppState>) -> Response {
    let response = match ask(&state, AdminRequest::Status).await {
        Ok(report) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
            render_metrics(&report),
        )
            .into_response(),
        Err(response) => response,
    };
    release_freed_heap();
    response
}

/// A report of 10,000 backends takes tens of MB to build and render; glibc keeps what is
/// freed inside its heaps and arenas, so each scrape would leave the agent's RSS that much
/// higher. Hand the free pages back to the kernel.
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

async fn backend_handler(
    State(state): State<AppState>,
    Path((vip, addr, action)): Path<(String, String, String)>,
) -> Response {
    let admin_state = match action.as_str() {
        "drain" => AdminState::Drain,
        "undrain" | "enable" => AdminState::Active,
        "disable" => AdminState::Disabled,
        other => {
            return text(
                StatusCode::NOT_FOUND,
                format!("unknown action {other:?}: use drain, undrain, disable or enable"),
            )
        }
    };
    let backend: IpAddr = match addr.parse() {
        Ok(backend) => backend,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("invalid backend address {addr:?}: {e} (expected an IPv4 or IPv6 address)"),
            )
        }
    };
    let answer = ask(&state, |reply| AdminRequest::SetBackendState {
        vip: vip.clone(),
        backend,
        state: admin_state,
        reply,
    })
    .await;
    match answer {
        Ok(Ok(())) => text(
            StatusCode::OK,
            format!(
                "backend {backend} of VIP {vip}: admin state {}",
                name_of(&admin_state)
            ),
        ),
        Ok(Err(message)) => text(StatusCode::NOT_FOUND, message),
        Err(response) => response,
    }
}

async fn reload_handler(State(state): State<AppState>) -> Response {
    match ask(&state, AdminRequest::Reload).await {
        Ok(Ok(summary)) => text(StatusCode::OK, summary),
        Ok(Err(message)) => text(StatusCode::UNPROCESSABLE_ENTITY, message),
        Err(response) => response,
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

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

/// Prometheus text exposition of a report (OpenMetrics text, [`METRICS_CONTENT_TYPE`], ends
/// with `# EOF`). A fresh registry per scrape: counters are set from the absolute values the
/// controller reports.
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
/// | `lb_backend_admin_state{vip,backend,state}`            | gauge   | 1 for the current state (`active`, `drain`, `disabled`), 0 for the others |
/// | `lb_health_checks_total{vip,backend,result}`           | counter | health checks, `result` = `ok` or `failed` |
/// | `lb_health_check_latency_seconds{vip,backend}`         | gauge   | latency of the last check (absent before the first) |
/// | `lb_table_generation{vip}`                             | gauge   | lookup-table publications since start    |
/// | `lb_vip_serving{vip}`                                  | gauge   | 1 if the VIP forwards traffic            |
/// | `lb_vip_moved_slots{vip}`                              | gauge   | slots whose older flows still use the connection table |
/// | `lb_conn_table_live_entries`                           | gauge   | live connection-table entries at the last sweep (absent before it) |
/// | `lb_datapath_events_total{event}`                      | counter | data-path counters, summed over CPUs     |
/// | `lb_agent_uptime_seconds`                              | gauge   | seconds since the agent started          |
/// | `lb_bgp_announced{address}`                            | gauge   | 1 if BIRD announces the VIP address, 0 if it should but does not yet |
/// | `lb_bgp_session_established{neighbor}`                 | gauge   | 1 if the BGP session is established      |
pub fn render_metrics(report: &StatusReport) -> String {
    let mut registry = Registry::default();

    let vip_packets: Family<Labels, Counter> = family(
        &mut registry,
        "lb_vip_packets",
        "Packets balanced for the VIP",
    );
    let vip_bytes: Family<Labels, Counter> =
        family(&mut registry, "lb_vip_bytes", "Bytes balanced for the VIP");
    let backend_packets: Family<Labels, Counter> = family(
        &mut registry,
        "lb_backend_packets",
        "Packets sent to the backend",
    );
    let backend_bytes: Family<Labels, Counter> = family(
        &mut registry,
        "lb_backend_bytes",
        "Bytes sent to the backend",
    );
    let backend_up: Family<Labels, Gauge> = family(
        &mut registry,
        "lb_backend_up",
        "1 if the backend's health check says up, 0 otherwise",
    );
    let backend_weight: Family<Labels, Gauge> = family(
        &mut registry,
        "lb_backend_weight",
        "Effective weight of the backend",
    );
    let backend_admin_state: Family<Labels, Gauge> = family(
        &mut registry,
        "lb_backend_admin_state",
        "1 for the backend's current admin state, 0 for the others",
    );
    let health_checks: Family<Labels, Counter> = family(
        &mut registry,
        "lb_health_checks",
        "Health checks of the backend by result",
    );
    let check_latency: Family<Labels, Gauge<f64, AtomicU64>> = family(
        &mut registry,
        "lb_health_check_latency_seconds",
        "Latency of the backend's last health check",
    );
    let table_generation: Family<Labels, Gauge> = family(
        &mut registry,
        "lb_table_generation",
        "Lookup-table publications for the VIP since the agent started",
    );
    let vip_serving: Family<Labels, Gauge> = family(
        &mut registry,
        "lb_vip_serving",
        "1 if the VIP forwards traffic, 0 otherwise",
    );
    let moved_slots: Family<Labels, Gauge> = family(
        &mut registry,
        "lb_vip_moved_slots",
        "Slots of the VIP's table whose older flows still use the connection table",
    );
    let datapath_events: Family<Labels, Counter> = family(
        &mut registry,
        "lb_datapath_events",
        "Data-path counters summed over CPUs",
    );
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
    registry.register(
        "lb_agent_uptime_seconds",
        "Seconds since the agent started",
        uptime.clone(),
    );

    for vip in &report.vips {
        let v: Labels = vec![("vip", label(&vip.name))];
        vip_packets.get_or_create(&v).inc_by(vip.packets);
        vip_bytes.get_or_create(&v).inc_by(vip.bytes);
        table_generation
            .get_or_create(&v)
            .set(gauge_value(vip.table_generation));
        vip_serving.get_or_create(&v).set(i64::from(vip.serving));
        moved_slots
            .get_or_create(&v)
            .set(gauge_value(vip.moved_slots));
        for backend in &vip.backends {
            let b: Labels = vec![
                ("vip", label(&vip.name)),
                ("backend", label(backend.address)),
            ];
            backend_packets.get_or_create(&b).inc_by(backend.packets);
            backend_bytes.get_or_create(&b).inc_by(backend.bytes);
            backend_up
                .get_or_create(&b)
                .set(i64::from(backend.health == "up"));
            backend_weight
                .get_or_create(&b)
                .set(i64::from(backend.effective_weight));
            for state in [AdminState::Active, AdminState::Drain, AdminState::Disabled] {
                let mut s = b.clone();
                s.push(("state", label(name_of(&state))));
                backend_admin_state
                    .get_or_create(&s)
                    .set(i64::from(state == backend.admin_state));
            }
            for (result, count) in [("ok", backend.checks_ok), ("failed", backend.checks_failed)] {
                let mut r = b.clone();
                r.push(("result", result.to_owned()));
                health_checks.get_or_create(&r).inc_by(count);
            }
            if let Some(ms) = backend.last_check_latency_ms {
                check_latency.get_or_create(&b).set(ms / 1000.0);
            }
        }
    }
    for (event, count) in &report.counters {
        datapath_events
            .get_or_create(&vec![("event", label(event))])
            .inc_by(*count);
    }
    uptime.set(gauge_value(report.uptime_secs));
    if let Some(bgp) = &report.bgp {
        let announced: Family<Labels, Gauge> = family(
            &mut registry,
            "lb_bgp_announced",
            "1 if BIRD announces the VIP address, 0 if it should but does not yet",
        );
        let established: Family<Labels, Gauge> = family(
            &mut registry,
            "lb_bgp_session_established",
            "1 if the BGP session is established",
        );
        for address in bgp.wanted.iter().chain(&bgp.announced) {
            announced
                .get_or_create(&vec![("address", label(address))])
                .set(i64::from(bgp.announced.contains(address)));
        }
        for peer in &bgp.peers {
            established
                .get_or_create(&vec![("neighbor", label(peer.neighbor))])
                .set(i64::from(peer.established));
        }
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

// ---------------------------------------------------------------------------------------------
// Human-readable output
// ---------------------------------------------------------------------------------------------

/// The serde name of a config enum (`five-tuple`, `drain`, ...), as in the configuration file.
fn name_of<T: Serialize>(value: &T) -> String {
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
    if let Some(bgp) = &report.bgp {
        let list = |a: &[std::net::IpAddr]| {
            let v: Vec<String> = a.iter().map(ToString::to_string).collect();
            if v.is_empty() {
                "nothing".to_owned()
            } else {
                v.join(", ")
            }
        };
        let _ = writeln!(out, "bgp: announcing {}", list(&bgp.announced));
        if bgp.wanted != bgp.announced {
            let _ = writeln!(out, "  wanted {}", list(&bgp.wanted));
        }
        if let Some(e) = &bgp.error {
            let _ = writeln!(out, "  BIRD: {e}");
        }
        for p in &bgp.peers {
            let _ = writeln!(
                out,
                "  neighbor {} ({}): {}",
                p.neighbor, p.protocol, p.state
            );
        }
    }
    if report.vips.is_empty() {
        out.push_str("\nno VIPs configured\n");
    }
    for vip in &report.vips {
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
            continue;
        }
        let rows: Vec<Vec<String>> = vip
            .backends
            .iter()
            .map(|b| {
                vec![
                    b.address.to_string(),
                    b.health.clone(),
                    name_of(&b.admin_state),
                    format!("{}/{}", b.weight, b.effective_weight),
                    b.slots.to_string(),
                    b.packets.to_string(),
                    b.last_check_latency_ms
                        .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1}")),
                    b.last_change.clone(),
                ]
            })
            .collect();
        table(
            &mut out,
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
    }
    out
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

// ---------------------------------------------------------------------------------------------
// Client (CLI)
// ---------------------------------------------------------------------------------------------

fn not_running_hint(addr: SocketAddr) -> String {
    format!(
        "is `lb-agent run` running? admin_listen is {addr} here; if the agent listens \
         elsewhere, pass `--admin ADDR` or `--config FILE` (its `admin_listen`)"
    )
}

/// One request on a fresh HTTP/1 connection; the status and the body as text.
async fn request(
    addr: SocketAddr,
    method: hyper::Method,
    path: &str,
) -> anyhow::Result<(hyper::StatusCode, String)> {
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let exchange = async {
        let stream = TcpStream::connect(addr).await.with_context(|| {
            format!(
                "cannot connect to the agent's admin endpoint at {addr}; {}",
                not_running_hint(addr)
            )
        })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP handshake with the admin endpoint at {addr}"))?;
        let request = hyper::Request::builder()
            .method(method.clone())
            .uri(path.as_str())
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .with_context(|| format!("building the request {method} {path}"))?;
        let response = async {
            let response = sender
                .send_request(request)
                .await
                .with_context(|| format!("{method} {path} on {addr}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .with_context(|| format!("reading the answer to {method} {path} from {addr}"))?
                .to_bytes();
            anyhow::Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::pin!(response);
        tokio::select! {
            result = &mut response => result,
            closed = connection => {
                // The connection may finish once the whole answer is buffered: read it.
                closed.with_context(|| format!("connection to {addr} failed"))?;
                response.await
            }
        }
    };
    tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| {
        anyhow!(
            "the agent at {addr} did not answer {method} {path} within {} s; it may be \
                 overloaded or stuck (check its log), or {addr} is not its admin endpoint",
            TIMEOUT.as_secs()
        )
    })?
}

/// `GET /status` from a running agent.
pub async fn fetch_status(addr: SocketAddr) -> anyhow::Result<StatusReport> {
    let (status, body) = request(addr, hyper::Method::GET, "/status").await?;
    if !status.is_success() {
        bail!("GET /status on {addr}: {status}: {}", body.trim_end());
    }
    serde_json::from_str(&body).with_context(|| {
        format!(
            "the answer of {addr} to GET /status is not a status report; is {addr} an lb-agent \
             of the same version as this CLI?"
        )
    })
}

/// `GET /metrics` from a running agent: the OpenMetrics text.
pub async fn fetch_metrics(addr: SocketAddr) -> anyhow::Result<String> {
    let (status, body) = request(addr, hyper::Method::GET, "/metrics").await?;
    if !status.is_success() {
        bail!("GET /metrics on {addr}: {status}: {}", body.trim_end());
    }
    Ok(body)
}

/// `POST path` (e.g. `/reload`, `/vips/web/backends/198.18.1.1/drain`) to a running agent: the
/// answer's text on 2xx, an error carrying the status and the agent's message otherwise.
pub async fn post(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let (status, body) = request(addr, hyper::Method::POST, path).await?;
    let body = body.trim_end().to_owned();
    if !status.is_success() {
        bail!("POST {path} on {addr}: {status}: {body}");
    }
    Ok(body)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::task::JoinHandle;

    fn backend(address: &str, id: u32, packets: u64) -> BackendStatus {
        BackendStatus {
            address: address.parse().unwrap(),
            id,
            weight: 100,
            effective_weight: 100,
            admin_state: AdminState::Active,
            health: "up".to_owned(),
            slots: 100,
            packets,
            bytes: packets * 100,
            checks_ok: 10,
            checks_failed: 0,
            last_check_latency_ms: Some(1.5),
            last_change: "2025-01-01T00:00:00Z".to_owned(),
        }
    }

    fn canned_report() -> StatusReport {
        let mut b2 = backend("198.18.1.2", 2, 7);
        b2.health = "down".to_owned();
        b2.admin_state = AdminState::Drain;
        b2.effective_weight = 0;
        b2.checks_failed = 3;
        b2.last_check_latency_ms = None;
        let mut b3 = backend("2001:db8::3", 3, 5);
        b3.health = "unchecked".to_owned();
        b3.admin_state = AdminState::Disabled;
        StatusReport {
            interface: "eth0".to_owned(),
            xdp_mode: "native".to_owned(),
            table_size: 65_537,
            uptime_secs: 3_723,
            config_path: "/etc/lb-agent/lb.toml".to_owned(),
            vips: vec![
                VipStatus {
                    name: "web".to_owned(),
                    address: "192.0.2.10".parse().unwrap(),
                    port: 80,
                    protocol: Protocol::Tcp,
                    hash: HashMode::FiveTuple,
                    all_down: AllDown::FailOpen,
                    table_generation: 3,
                    table_digest: "9f86d081884c7d65".to_owned(),
                    moved_slots: 12,
                    serving: true,
                    packets: 49,
                    bytes: 4_900,
                    backends: vec![backend("198.18.1.1", 1, 42), b2],
                },
                VipStatus {
                    name: "dns".to_owned(),
                    address: "2001:db8::53".parse().unwrap(),
                    port: 53,
                    protocol: Protocol::Udp,
                    hash: HashMode::SourceIp,
                    all_down: AllDown::Drop,
                    table_generation: 1,
                    table_digest: "00ff00ff00ff00ff".to_owned(),
                    moved_slots: 0,
                    serving: false,
                    packets: 5,
                    bytes: 500,
                    backends: vec![b3],
                },
            ],
            counters: BTreeMap::from([
                ("forwarded".to_owned(), 54),
                ("drop_malformed".to_owned(), 2),
                ("conn_hit".to_owned(), 40),
            ]),
            conn_sweep: None,
            bgp: Some(crate::bgp::BgpStatus {
                wanted: vec![
                    "198.18.10.1".parse().unwrap(),
                    "198.18.10.2".parse().unwrap(),
                ],
                announced: vec!["198.18.10.1".parse().unwrap()],
                error: None,
                peers: vec![crate::bgp::BgpPeer {
                    neighbor: "198.18.0.1".parse().unwrap(),
                    protocol: "lb_peer_198_18_0_1".to_owned(),
                    state: "Established".to_owned(),
                    established: true,
                }],
            }),
        }
    }

    type Calls = Arc<Mutex<Vec<(String, IpAddr, AdminState)>>>;

    /// A controller answering from the canned report; records SetBackendState calls.
    async fn fake_controller(
        mut requests: mpsc::Receiver<AdminRequest>,
        report: StatusReport,
        reload: Result<String, String>,
        calls: Calls,
    ) {
        while let Some(request) = requests.recv().await {
            match request {
                AdminRequest::Status(reply) => {
                    let _ = reply.send(report.clone());
                }
                AdminRequest::SetBackendState {
                    vip,
                    backend,
                    state,
                    reply,
                } => {
                    let answer = match report.vips.iter().find(|v| v.name == vip) {
                        None => Err(format!("unknown VIP {vip:?}")),
                        Some(v) if !v.backends.iter().any(|b| b.address == backend) => {
                            Err(format!("VIP {vip:?} has no backend {backend}"))
                        }
                        Some(_) => {
                            calls.lock().unwrap().push((vip, backend, state));
                            Ok(())
                        }
                    };
                    let _ = reply.send(answer);
                }
                AdminRequest::Reload(reply) => {
                    let _ = reply.send(reload.clone());
                }
            }
        }
    }

    struct Harness {
        addr: SocketAddr,
        calls: Calls,
        shutdown: CancellationToken,
        server: JoinHandle<anyhow::Result<()>>,
    }

    async fn start(reload: Result<String, String>) -> Harness {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(8);
        let calls = Calls::default();
        tokio::spawn(fake_controller(rx, canned_report(), reload, calls.clone()));
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, tx, shutdown.clone()));
        Harness {
            addr,
            calls,
            shutdown,
            server,
        }
    }

    async fn raw_get(addr: SocketAddr, path: &str) -> (hyper::StatusCode, String) {
        request(addr, hyper::Method::GET, path).await.unwrap()
    }

    #[tokio::test]
    async fn status_round_trips() {
        let h = start(Ok("reloaded".to_owned())).await;
        let report = fetch_status(h.addr).await.unwrap();
        assert_eq!(report, canned_report());
    }

    #[tokio::test]
    async fn metrics_exposition() {
        let h = start(Ok("reloaded".to_owned())).await;
        let (status, body) = raw_get(h.addr, "/metrics").await;
        assert_eq!(status, hyper::StatusCode::OK);
        let lines: Vec<&str> = body.lines().collect();
        for expected in [
            r#"lb_vip_packets_total{vip="web"} 49"#,
            r#"lb_vip_bytes_total{vip="web"} 4900"#,
            r#"lb_vip_packets_total{vip="dns"} 5"#,
            r#"lb_backend_packets_total{vip="web",backend="198.18.1.1"} 42"#,
            r#"lb_backend_bytes_total{vip="web",backend="198.18.1.1"} 4200"#,
            r#"lb_backend_packets_total{vip="dns",backend="2001:db8::3"} 5"#,
            r#"lb_backend_up{vip="web",backend="198.18.1.1"} 1"#,
            r#"lb_backend_up{vip="web",backend="198.18.1.2"} 0"#,
            r#"lb_backend_up{vip="dns",backend="2001:db8::3"} 0"#,
            r#"lb_backend_weight{vip="web",backend="198.18.1.1"} 100"#,
            r#"lb_backend_weight{vip="web",backend="198.18.1.2"} 0"#,
            r#"lb_backend_admin_state{vip="web",backend="198.18.1.1",state="active"} 1"#,
            r#"lb_backend_admin_state{vip="web",backend="198.18.1.1",state="drain"} 0"#,
            r#"lb_backend_admin_state{vip="web",backend="198.18.1.2",state="drain"} 1"#,
            r#"lb_backend_admin_state{vip="dns",backend="2001:db8::3",state="disabled"} 1"#,
            r#"lb_health_checks_total{vip="web",backend="198.18.1.1",result="ok"} 10"#,
            r#"lb_health_checks_total{vip="web",backend="198.18.1.2",result="failed"} 3"#,
            r#"lb_health_check_latency_seconds{vip="web",backend="198.18.1.1"} 0.0015"#,
            r#"lb_table_generation{vip="web"} 3"#,
            r#"lb_vip_moved_slots{vip="web"} 12"#,
            r#"lb_table_generation{vip="dns"} 1"#,
            r#"lb_vip_serving{vip="web"} 1"#,
            r#"lb_vip_serving{vip="dns"} 0"#,
            r#"lb_datapath_events_total{event="forwarded"} 54"#,
            r#"lb_datapath_events_total{event="drop_malformed"} 2"#,
            r#"lb_datapath_events_total{event="conn_hit"} 40"#,
            r#"lb_bgp_announced{address="198.18.10.1"} 1"#,
            r#"lb_bgp_announced{address="198.18.10.2"} 0"#,
            r#"lb_bgp_session_established{neighbor="198.18.0.1"} 1"#,
            "lb_agent_uptime_seconds 3723",
            "# TYPE lb_vip_packets counter",
            "# TYPE lb_backend_up gauge",
            "# TYPE lb_health_check_schedule_lag_seconds histogram",
        ] {
            assert!(lines.contains(&expected), "missing {expected:?} in\n{body}");
        }
        // The lag histogram is process-wide (other tests' checkers feed it): only its shape.
        for series in [
            r#"lb_health_check_schedule_lag_seconds_bucket{le="0.001"} "#,
            r#"lb_health_check_schedule_lag_seconds_bucket{le="+Inf"} "#,
            "lb_health_check_schedule_lag_seconds_count ",
        ] {
            assert!(
                lines.iter().any(|l| l.starts_with(series)),
                "missing {series:?} in\n{body}"
            );
        }
        // No latency before the first check.
        assert!(
            !body.contains(r#"lb_health_check_latency_seconds{vip="web",backend="198.18.1.2"}"#)
        );
        assert!(body.ends_with("# EOF\n"), "{body}");
    }

    #[tokio::test]
    async fn metrics_content_type() {
        let h = start(Ok("reloaded".to_owned())).await;
        let stream = TcpStream::connect(h.addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::get("/metrics")
            .header(hyper::header::HOST, "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(
            response.headers()[hyper::header::CONTENT_TYPE],
            METRICS_CONTENT_TYPE
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut report = canned_report();
        report.vips[0].name = "we\"b\\".to_owned();
        let body = render_metrics(&report);
        assert!(
            body.contains(r#"lb_vip_packets_total{vip="we\"b\\"} 49"#),
            "{body}"
        );
    }

    #[tokio::test]
    async fn backend_actions_reach_the_controller() {
        let h = start(Ok("reloaded".to_owned())).await;
        let b1: IpAddr = "198.18.1.1".parse().unwrap();
        let b3: IpAddr = "2001:db8::3".parse().unwrap();
        let answer = post(h.addr, "/vips/web/backends/198.18.1.1/drain")
            .await
            .unwrap();
        assert!(answer.contains("drain"), "{answer}");
        post(h.addr, "/vips/web/backends/198.18.1.1/undrain")
            .await
            .unwrap();
        post(h.addr, "/vips/dns/backends/2001:db8::3/disable")
            .await
            .unwrap();
        post(h.addr, "/vips/dns/backends/2001:db8::3/enable")
            .await
            .unwrap();
        assert_eq!(
            *h.calls.lock().unwrap(),
            vec![
                ("web".to_owned(), b1, AdminState::Drain),
                ("web".to_owned(), b1, AdminState::Active),
                ("dns".to_owned(), b3, AdminState::Disabled),
                ("dns".to_owned(), b3, AdminState::Active),
            ]
        );
    }

    #[tokio::test]
    async fn unknown_vip_or_backend_is_404_with_the_controllers_message() {
        let h = start(Ok("reloaded".to_owned())).await;
        let e = post(h.addr, "/vips/nope/backends/198.18.1.1/drain")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("404"), "{e}");
        assert!(e.contains(r#"unknown VIP "nope""#), "{e}");
        let e = post(h.addr, "/vips/web/backends/198.18.9.9/drain")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("404"), "{e}");
        assert!(e.contains("has no backend 198.18.9.9"), "{e}");
        assert!(h.calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn bad_address_is_400_and_bad_action_404() {
        let h = start(Ok("reloaded".to_owned())).await;
        let e = post(h.addr, "/vips/web/backends/not-an-ip/drain")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("400"), "{e}");
        assert!(e.contains("not-an-ip"), "{e}");
        let e = post(h.addr, "/vips/web/backends/198.18.1.1/explode")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("404"), "{e}");
        assert!(h.calls.lock().unwrap().is_empty());
        // Wrong method.
        let (status, _) = raw_get(h.addr, "/vips/web/backends/198.18.1.1/drain").await;
        assert_eq!(status, hyper::StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn reload_ok_and_err() {
        let h = start(Ok("reloaded: 2 VIPs, 1 backend added".to_owned())).await;
        assert_eq!(
            post(h.addr, "/reload").await.unwrap(),
            "reloaded: 2 VIPs, 1 backend added"
        );
        let h = start(Err("line 3: unknown key `wieght`".to_owned())).await;
        let e = post(h.addr, "/reload").await.unwrap_err().to_string();
        assert!(e.contains("422"), "{e}");
        assert!(e.contains("line 3: unknown key `wieght`"), "{e}");
    }

    #[tokio::test]
    async fn silent_controller_is_503() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel::<AdminRequest>(8);
        // Keeps every request, answers none.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(request) = rx.recv().await {
                held.push(request);
            }
        });
        let shutdown = CancellationToken::new();
        tokio::spawn(serve_with_timeout(
            listener,
            tx,
            shutdown.clone(),
            Duration::from_millis(100),
        ));
        let e = fetch_status(addr).await.unwrap_err().to_string();
        assert!(e.contains("503"), "{e}");
        let e = post(addr, "/reload").await.unwrap_err().to_string();
        assert!(e.contains("503"), "{e}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn stopped_controller_is_503() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel::<AdminRequest>(8);
        drop(rx);
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(listener, tx, shutdown.clone()));
        let e = fetch_status(addr).await.unwrap_err().to_string();
        assert!(e.contains("503"), "{e}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn serve_stops_when_cancelled() {
        let h = start(Ok("reloaded".to_owned())).await;
        fetch_status(h.addr).await.unwrap();
        h.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), h.server)
            .await
            .expect("serve did not stop")
            .unwrap()
            .unwrap();
        let e = fetch_status(h.addr).await.unwrap_err().to_string();
        assert!(e.contains("lb-agent run"), "{e}");
    }

    #[tokio::test]
    async fn no_agent_error_says_how_to_fix() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = format!("{:#}", post(addr, "/reload").await.unwrap_err());
        assert!(e.contains("is `lb-agent run` running?"), "{e}");
        assert!(e.contains(&format!("admin_listen is {addr}")), "{e}");
    }

    #[test]
    fn human_output() {
        let report = canned_report();
        let status = render_status(&report);
        let stats = render_stats(&report);
        for text in [&status, &stats] {
            for needle in ["web", "dns", "198.18.1.1", "198.18.1.2", "2001:db8::3"] {
                assert!(text.contains(needle), "missing {needle} in\n{text}");
            }
        }
        for needle in [
            "192.0.2.10:80/tcp",
            "[2001:db8::53]:53/udp",
            "generation 3",
            "9f86d081884c7d65",
            "five-tuple",
            "fail-open",
            "NOT SERVING",
            "drain",
            "disabled",
            "100/0",
            "1h 2m 3s",
            "bgp: announcing 198.18.10.1",
            "wanted 198.18.10.1, 198.18.10.2",
            "neighbor 198.18.0.1 (lb_peer_198_18_0_1): Established",
        ] {
            assert!(status.contains(needle), "missing {needle} in\n{status}");
        }
        // Counters sorted by name.
        let conn = stats.find("conn_hit").unwrap();
        let drop = stats.find("drop_malformed").unwrap();
        let fwd = stats.find("forwarded").unwrap();
        assert!(conn < drop && drop < fwd, "{stats}");
        assert!(stats.contains("4200"), "{stats}");
    }
}
