//! The CLI's side: one short-lived HTTP/1 connection per command, with errors that say what
//! to check when no agent answers.

use super::api::{StatusReport, TIMEOUT};
use anyhow::{anyhow, bail, Context as _};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use tokio::net::TcpStream;

fn not_running_hint(addr: SocketAddr) -> String {
    format!(
        "is `lb-agent run` running? admin_listen is {addr} here; if the agent listens \
         elsewhere, pass `--admin ADDR` or `--config FILE` (its `admin_listen`)"
    )
}

/// One request on a fresh HTTP/1 connection; the status and the body as text.
pub(super) async fn request(
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
