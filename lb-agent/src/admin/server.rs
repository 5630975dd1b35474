//! The routers and their handlers. Control handlers turn an HTTP request into an
//! [`AdminRequest`] for the controller and its answer into a response, and log each action
//! with its peer; `/status` and `/metrics` are answered from a [`Reporter`] (the controller's
//! latest snapshot and counters read on the spot), never by the controller, so a scrape never
//! waits on it nor delays it.

use super::{
    api::{AdminRequest, StatusReport},
    listen::Peer,
    render::name_of,
    reply::{reply_channel, NoAnswer, Reply},
    scrape::Scrape,
    stream::metrics_body,
    METRICS_CONTENT_TYPE,
};
use crate::config::{self, AdminState};
use axum::{
    extract::{Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Extension, Json, Router,
};
use std::{net::IpAddr, sync::Arc, time::Duration};
use tokio::{sync::mpsc, time::Instant};
use tracing::{info, warn};

/// What `/status` and `/metrics` are answered from. Both read counters, so may block: run them
/// off the runtime.
pub trait Reports: Send + Sync {
    /// The current status report.
    fn report(&self) -> StatusReport;

    /// What `/metrics` shows: the report's, unless the source can do without building one.
    fn scrape(&self) -> Scrape {
        Scrape::from(self.report())
    }
}

/// A function that builds reports (tests, tools) is a source.
impl<F: Fn() -> StatusReport + Send + Sync> Reports for F {
    fn report(&self) -> StatusReport {
        self()
    }
}

pub type Reporter = Arc<dyn Reports>;

#[derive(Clone)]
struct AppState {
    requests: mpsc::Sender<AdminRequest>,
    report: Reporter,
    timeout: Duration,
}

/// The read-only listener: `GET /metrics` and `GET /status`; other methods on them are 405,
/// other paths 404.
pub(super) fn read_router(report: Reporter) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/status", get(status_handler))
        .with_state(report)
}

/// The control API: backend actions, reload, and `GET /status` (so the CLI needs one
/// connection only). Handlers need the request's [`Peer`] extension (set by `listen`).
pub(super) fn control_router(
    requests: mpsc::Sender<AdminRequest>,
    report: Reporter,
    timeout: Duration,
) -> Router {
    Router::new()
        .route("/status", get(control_status_handler))
        .route(
            "/vips/{vip}/backends/{addr}/{action}",
            post(backend_handler),
        )
        .route(
            "/vips/{vip}/backends/{addr}/weight/{weight}",
            post(weight_handler),
        )
        .route("/reload", post(reload_handler))
        .route("/maintenance/{action}", post(maintenance_handler))
        .with_state(AppState {
            requests,
            report,
            timeout,
        })
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
/// `state.timeout` in all (a full queue counts against it too). A request not claimed by the
/// controller by then is given up and never acted on (`reply`); one it claimed is answered
/// with what it did.
async fn ask<T>(
    state: &AppState,
    make: impl FnOnce(Reply<T>) -> AdminRequest,
) -> Result<T, Response> {
    let deadline = Instant::now() + state.timeout;
    let (reply, waiter) = reply_channel();
    let unavailable = |message: &str| text(StatusCode::SERVICE_UNAVAILABLE, message);
    let timed_out = || {
        unavailable(&format!(
            "the agent's controller did not answer within {} s; nothing was changed, try again",
            state.timeout.as_secs_f64()
        ))
    };
    // A request still waiting for room in the queue at the deadline is dropped with the send.
    match tokio::time::timeout_at(deadline, state.requests.send(make(reply))).await {
        Err(_) => return Err(timed_out()),
        Ok(Err(_)) => return Err(unavailable("the agent's controller has stopped")),
        Ok(Ok(())) => {}
    }
    match waiter.wait(deadline).await {
        Ok(value) => Ok(value),
        Err(NoAnswer::TimedOut) => Err(timed_out()),
        Err(NoAnswer::Dropped) => Err(unavailable("the agent's controller dropped the request")),
    }
}

/// The report, built on a blocking thread (a per-CPU counter read per VIP and backend).
async fn current_report(report: &Reporter) -> Result<StatusReport, Response> {
    let report = report.clone();
    tokio::task::spawn_blocking(move || report.report())
        .await
        .map_err(|e| {
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("building the report: {e}"),
            )
        })
}

async fn control_status_handler(State(state): State<AppState>) -> Response {
    status_handler(State(state.report)).await
}

async fn status_handler(State(report): State<Reporter>) -> Response {
    let response = match current_report(&report).await {
        Ok(report) => Json(report).into_response(),
        Err(response) => response,
    };
    release_freed_heap();
    response
}

/// The report is built and the exposition written on one blocking thread, streamed as it is
/// written; the thread trims the heap at the end.
async fn metrics_handler(State(report): State<Reporter>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        metrics_body(report, release_freed_heap),
    )
        .into_response()
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
    Extension(peer): Extension<Peer>,
    Path((vip, addr, action)): Path<(String, String, String)>,
) -> Response {
    let admin_state = match action.as_str() {
        "drain" => AdminState::Drain,
        "undrain" | "enable" => AdminState::Active,
        "disable" => AdminState::Disabled,
        "weight" => {
            warn!(%peer, vip, backend = addr, action, "control: weight without a value");
            return text(
                StatusCode::BAD_REQUEST,
                format!("a weight needs its value: POST /vips/{vip}/backends/{addr}/weight/N"),
            );
        }
        other => {
            warn!(%peer, vip, backend = addr, action, "control: unknown action");
            return text(
                StatusCode::NOT_FOUND,
                format!(
                    "unknown action {other:?}: use drain, undrain, disable, enable or weight/N"
                ),
            );
        }
    };
    let backend = match backend_address(&addr) {
        Ok(backend) => backend,
        Err(message) => {
            warn!(%peer, vip, backend = addr, action, "control: invalid backend address");
            return text(StatusCode::BAD_REQUEST, message);
        }
    };
    info!(%peer, vip, %backend, action, "control: backend action requested");
    let answer = ask(&state, |reply| AdminRequest::SetBackendState {
        vip: vip.clone(),
        backend,
        state: admin_state,
        reply,
    })
    .await;
    match answer {
        Ok(Ok(())) => {
            info!(%peer, vip, %backend, action, "control: backend action applied");
            text(
                StatusCode::OK,
                format!(
                    "backend {backend} of VIP {vip}: admin state {}",
                    name_of(&admin_state)
                ),
            )
        }
        Ok(Err(message)) => {
            warn!(%peer, vip, %backend, action, "control: backend action refused: {message}");
            text(StatusCode::NOT_FOUND, message)
        }
        Err(response) => {
            warn!(%peer, vip, %backend, action, "control: backend action not answered");
            response
        }
    }
}

/// A backend address from a control path, or what the 400 answer says.
fn backend_address(addr: &str) -> Result<IpAddr, String> {
    addr.parse().map_err(|e| {
        format!("invalid backend address {addr:?}: {e} (expected an IPv4 or IPv6 address)")
    })
}

/// `POST /vips/{vip}/backends/{addr}/weight/{weight}`: 200 with the weight now in force, 400
/// for an address or a weight that does not parse (the file's range, 1..=10000), 404 when the
/// controller refuses (unknown VIP or backend). Nothing changes unless it answers 200.
async fn weight_handler(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path((vip, addr, weight)): Path<(String, String, String)>,
) -> Response {
    let backend = match backend_address(&addr) {
        Ok(backend) => backend,
        Err(message) => {
            warn!(%peer, vip, backend = addr, weight, "control: invalid backend address");
            return text(StatusCode::BAD_REQUEST, message);
        }
    };
    let weight = match config::parse_weight(&weight) {
        Ok(weight) => weight,
        Err(problem) => {
            warn!(%peer, vip, %backend, weight, "control: invalid weight");
            return text(
                StatusCode::BAD_REQUEST,
                format!("invalid weight for backend {backend} of VIP {vip}: {problem}"),
            );
        }
    };
    info!(%peer, vip, %backend, %weight, "control: backend weight requested");
    let answer = ask(&state, |reply| AdminRequest::SetBackendWeight {
        vip: vip.clone(),
        backend,
        weight,
        reply,
    })
    .await;
    match answer {
        Ok(Ok(answer)) => {
            info!(%peer, vip, %backend, %weight, "control: backend weight applied");
            text(StatusCode::OK, answer)
        }
        Ok(Err(message)) => {
            warn!(%peer, vip, %backend, %weight, "control: backend weight refused: {message}");
            text(StatusCode::NOT_FOUND, message)
        }
        Err(response) => {
            warn!(%peer, vip, %backend, %weight, "control: backend weight not answered");
            response
        }
    }
}

async fn reload_handler(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
) -> Response {
    info!(%peer, "control: reload requested");
    match ask(&state, AdminRequest::Reload).await {
        Ok(Ok(summary)) => {
            info!(%peer, "control: reload applied: {summary}");
            text(StatusCode::OK, summary)
        }
        Ok(Err(message)) => {
            warn!(%peer, "control: reload rejected: {message}");
            text(StatusCode::UNPROCESSABLE_ENTITY, message)
        }
        Err(response) => {
            warn!(%peer, "control: reload not answered");
            response
        }
    }
}

/// `POST /maintenance/on|off`: 200 with what happens next, 409 without a `[bgp]` section.
async fn maintenance_handler(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(action): Path<String>,
) -> Response {
    let on = match action.as_str() {
        "on" => true,
        "off" => false,
        other => {
            return text(
                StatusCode::NOT_FOUND,
                format!("unknown maintenance action {other:?}: use on or off"),
            )
        }
    };
    info!(%peer, on, "control: maintenance requested");
    match ask(&state, |reply| AdminRequest::SetMaintenance { on, reply }).await {
        Ok(Ok(message)) => text(StatusCode::OK, message),
        Ok(Err(message)) => text(StatusCode::CONFLICT, message),
        Err(response) => response,
    }
}
