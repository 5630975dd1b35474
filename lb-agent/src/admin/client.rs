//! The CLI's side: one short-lived HTTP/1 connection per command, to the read-only listener
//! (status, metrics) or to the control API (socket or token-protected TCP), with errors that
//! say what to check when no agent answers.

use super::{
    api::{StatusReport, TIMEOUT},
    token::Token,
};
use anyhow::{anyhow, bail, Context as _};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::{
    fmt,
    io::ErrorKind,
    net::SocketAddr,
    path::{Path, PathBuf},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpStream, UnixStream},
};

/// Where control requests (drain, reload, ...) go.
#[derive(Clone, Debug)]
pub enum Control {
    /// The agent's control socket (`agent.control_socket`).
    Socket(PathBuf),
    /// A TCP control listener (`agent.control_listen`) and its token.
    Tcp { addr: SocketAddr, token: Token },
}

impl fmt::Display for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Control::Socket(path) => write!(f, "{}", path.display()),
            Control::Tcp { addr, .. } => write!(f, "{addr}"),
        }
    }
}

/// Where one request goes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Target<'a> {
    /// The read-only listener (`admin_listen`).
    Read(SocketAddr),
    Control(&'a Control),
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Read(addr) => write!(f, "{addr}"),
            Target::Control(control) => write!(f, "{control}"),
        }
    }
}

fn not_running_hint(addr: SocketAddr) -> String {
    format!(
        "is `lb-agent run` running? admin_listen is {addr} here; if the agent listens \
         elsewhere, pass `--admin ADDR` or `--config FILE` (its `admin_listen`)"
    )
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

async fn connect(target: Target<'_>) -> anyhow::Result<Box<dyn Io>> {
    match target {
        Target::Read(addr) => {
            let stream = TcpStream::connect(addr).await.with_context(|| {
                format!(
                    "cannot connect to the agent's admin endpoint at {addr}; {}",
                    not_running_hint(addr)
                )
            })?;
            Ok(Box::new(stream))
        }
        Target::Control(Control::Tcp { addr, .. }) => {
            let stream = TcpStream::connect(addr).await.with_context(|| {
                format!(
                    "cannot connect to the agent's control listener at {addr}; is `lb-agent \
                     run` running with agent.control_listen = \"{addr}\"? Without --control, \
                     the CLI uses the control socket"
                )
            })?;
            Ok(Box::new(stream))
        }
        Target::Control(Control::Socket(path)) => Ok(Box::new(connect_socket(path).await?)),
    }
}

async fn connect_socket(path: &Path) -> anyhow::Result<UnixStream> {
    UnixStream::connect(path).await.map_err(|e| {
        let hint = match e.kind() {
            ErrorKind::PermissionDenied => {
                "the control socket is root-only (mode 0600): run this as root (sudo)".to_owned()
            }
            _ => format!(
                "is `lb-agent run` running? control_socket is {} here; if the agent uses \
                 another, pass `--socket PATH` or `--config FILE` (its `control_socket`)",
                path.display()
            ),
        };
        anyhow!(
            "cannot connect to the agent's control socket {}: {e}; {hint}",
            path.display()
        )
    })
}

/// One request on a fresh HTTP/1 connection; the status and the body as text.
pub(super) async fn request(
    target: Target<'_>,
    method: hyper::Method,
    path: &str,
) -> anyhow::Result<(hyper::StatusCode, String)> {
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let exchange = async {
        let stream = connect(target).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP handshake with the agent at {target}"))?;
        let host = match target {
            Target::Read(addr) | Target::Control(&Control::Tcp { addr, .. }) => addr.to_string(),
            Target::Control(Control::Socket(_)) => "localhost".to_owned(),
        };
        let mut request = hyper::Request::builder()
            .method(method.clone())
            .uri(path.as_str())
            .header(hyper::header::HOST, host);
        if let Target::Control(Control::Tcp { token, .. }) = target {
            request = request.header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", token.as_str()),
            );
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .with_context(|| format!("building the request {method} {path}"))?;
        let response = async {
            let response = sender
                .send_request(request)
                .await
                .with_context(|| format!("{method} {path} on {target}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .with_context(|| format!("reading the answer to {method} {path} from {target}"))?
                .to_bytes();
            // The agent's answers are UTF-8, taken as they are (a scrape is megabytes); anything
            // else is shown lossily.
            let body = String::from_utf8(Vec::from(body))
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            anyhow::Ok((status, body))
        };
        tokio::pin!(response);
        tokio::select! {
            result = &mut response => result,
            closed = connection => {
                // The connection may finish once the whole answer is buffered: read it.
                closed.with_context(|| format!("connection to {target} failed"))?;
                response.await
            }
        }
    };
    tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| {
        anyhow!(
            "the agent at {target} did not answer {method} {path} within {} s; it may be \
                 overloaded or stuck (check its log), or {target} is not its admin endpoint",
            TIMEOUT.as_secs()
        )
    })?
}

fn parse_status(body: &str, target: Target<'_>) -> anyhow::Result<StatusReport> {
    serde_json::from_str(body).with_context(|| {
        format!(
            "the answer of {target} to GET /status is not a status report; is {target} an \
             lb-agent of the same version as this CLI?"
        )
    })
}

/// `GET /status` over the control API (root, or the token).
pub async fn fetch_status_control(control: &Control) -> anyhow::Result<StatusReport> {
    let target = Target::Control(control);
    let (status, body) = request(target, hyper::Method::GET, "/status").await?;
    if !status.is_success() {
        bail!("GET /status on {target}: {status}: {}", body.trim_end());
    }
    parse_status(&body, target)
}

/// `GET /status` from a running agent.
pub async fn fetch_status(addr: SocketAddr) -> anyhow::Result<StatusReport> {
    let (status, body) = request(Target::Read(addr), hyper::Method::GET, "/status").await?;
    if !status.is_success() {
        bail!("GET /status on {addr}: {status}: {}", body.trim_end());
    }
    parse_status(&body, Target::Read(addr))
}

/// `GET /metrics` from a running agent: the OpenMetrics text.
pub async fn fetch_metrics(addr: SocketAddr) -> anyhow::Result<String> {
    let (status, body) = request(Target::Read(addr), hyper::Method::GET, "/metrics").await?;
    if !status.is_success() {
        bail!("GET /metrics on {addr}: {status}: {}", body.trim_end());
    }
    Ok(body)
}

/// `POST path` (e.g. `/reload`, `/vips/web/backends/198.18.1.1/drain`) to a running agent's
/// control API: the answer's text on 2xx, an error carrying the status and the agent's message
/// otherwise.
pub async fn post(control: &Control, path: &str) -> anyhow::Result<String> {
    let (status, body) = request(Target::Control(control), hyper::Method::POST, path).await?;
    let body = body.trim_end().to_owned();
    if !status.is_success() {
        bail!("POST {path} on {control}: {status}: {body}");
    }
    Ok(body)
}
