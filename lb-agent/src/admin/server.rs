//! The axum server. Control handlers turn an HTTP request into an [`AdminRequest`] for the
//! controller and its answer into a response; `/status` and `/metrics` are answered from a
//! [`Reporter`] (the controller's latest snapshot and counters read on the spot), never by the
//! controller, so a scrape never waits on it nor delays it.

use super::{
    api::{AdminRequest, StatusReport, TIMEOUT},
    metrics::metrics_body,
    render::name_of,
    METRICS_CONTENT_TYPE,
};
use crate::config::AdminState;
use anyhow::Context as _;
use axum::{
    extract::{Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use std::{future::IntoFuture as _, net::IpAddr, sync::Arc, time::Duration};
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
};
use tokio_util::sync::CancellationToken;

/// After `shutdown`, how long open connections may take to finish before `serve` returns anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Builds the current status report (it reads counters: may block, run it off the runtime).
pub type Reporter = Arc<dyn Fn() -> StatusReport + Send + Sync>;

#[derive(Clone)]
struct AppState {
    requests: mpsc::Sender<AdminRequest>,
    report: Reporter,
    timeout: Duration,
}

/// Serve until `shutdown` is cancelled.
///
/// After cancellation, requests in flight get `SHUTDOWN_GRACE` (5 s) to finish; then `serve`
/// returns regardless.
pub async fn serve(
    listener: TcpListener,
    requests: mpsc::Sender<AdminRequest>,
    report: Reporter,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_with_timeout(listener, requests, report, shutdown, TIMEOUT).await
}

pub(super) async fn serve_with_timeout(
    listener: TcpListener,
    requests: mpsc::Sender<AdminRequest>,
    report: Reporter,
    shutdown: CancellationToken,
    timeout: Duration,
) -> anyhow::Result<()> {
    let local = listener
        .local_addr()
        .context("admin endpoint: local address of the listener")?;
    tracing::info!(%local, "admin endpoint listening");
    let app = router(AppState {
        requests,
        report,
        timeout,
    });
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
            post(backend_handler),
        )
        .route("/reload", post(reload_handler))
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

/// The report, built on a blocking thread (a per-CPU counter read per VIP and backend).
async fn current_report(state: &AppState) -> Result<StatusReport, Response> {
    let report = state.report.clone();
    tokio::task::spawn_blocking(move || report())
        .await
        .map_err(|e| {
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("building the report: {e}"),
            )
        })
}

async fn status_handler(State(state): State<AppState>) -> Response {
    let response = match current_report(&state).await {
        Ok(report) => Json(report).into_response(),
        Err(response) => response,
    };
    release_freed_heap();
    response
}

/// The exposition streams from a blocking thread, which trims the heap once it is written.
async fn metrics_handler(State(state): State<AppState>) -> Response {
    match current_report(&state).await {
        Ok(report) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
            metrics_body(report, release_freed_heap),
        )
            .into_response(),
        Err(response) => response,
    }
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
