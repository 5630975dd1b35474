//! One check of a backend: TCP connect, or HTTP/1.1 GET.

use super::CheckSpec;
use crate::config::CheckKind;
use http_body_util::Empty;
use hyper::{
    header::{CONNECTION, HOST},
    Method, Request, Uri,
};
use hyper_util::rt::TokioIo;
use std::{
    error::Error as StdError,
    net::SocketAddr,
    time::{Duration, Instant},
};
use tokio::{net::TcpStream, task::JoinHandle};
use tracing::debug;

/// Runs one check (TCP connect, or HTTP/1.1 GET `path` with a `Host` header, expecting
/// `expect_status`), bounded by `spec.timeout`. `Ok(latency)` or `Err(detail)`.
///
/// `CheckKind::None` checks nothing and succeeds at once.
pub async fn check_once(spec: &CheckSpec) -> Result<Duration, String> {
    let start = Instant::now();
    let result = match spec.kind {
        CheckKind::None => return Ok(Duration::ZERO),
        CheckKind::Tcp => tokio::time::timeout(spec.timeout, tcp_check(spec.target)).await,
        CheckKind::Http => tokio::time::timeout(spec.timeout, http_check(spec)).await,
    };
    match result {
        Ok(Ok(())) => Ok(start.elapsed()),
        Ok(Err(detail)) => Err(detail),
        Err(_elapsed) => Err(format!("timeout after {} ms", spec.timeout.as_millis())),
    }
}

async fn tcp_check(target: SocketAddr) -> Result<(), String> {
    let stream = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect: {}", io_detail(&e)))?;
    // Close with a reset, as HAProxy's checks do: a FIN would leave a TIME_WAIT socket on this
    // host for every probe (600,000 at 10,000 checks a second), and cost a teardown exchange.
    // (A failure here only loses that saving.)
    let _ = stream.set_zero_linger();
    Ok(())
}

/// Aborts the spawned hyper connection task when the check ends, whichever way (including the
/// timeout dropping the check future), so no task or socket outlives the check.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn http_check(spec: &CheckSpec) -> Result<(), String> {
    let path = if spec.path.is_empty() {
        "/"
    } else {
        spec.path.as_str()
    };
    let uri: Uri = path
        .parse()
        .map_err(|e| format!("invalid path {path:?}: {e}"))?;
    let request = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header(HOST, spec.target.to_string())
        .header(CONNECTION, "close")
        .body(Empty::<&'static [u8]>::new())
        .map_err(|e| format!("request: {}", error_chain(&e)))?;

    let stream = TcpStream::connect(spec.target)
        .await
        .map_err(|e| format!("connect: {}", io_detail(&e)))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {}", error_chain(&e)))?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %error_chain(&e), "health-check connection ended with an error");
        }
    }));

    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {}", error_chain(&e)))?;
    // Only the status matters; the body is dropped unread and the connection closed.
    let status = response.status().as_u16();
    if status == spec.expect_status {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// `"Connection refused"` rather than `"Connection refused (os error 111)"`.
fn io_detail(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// An error and its sources, `": "`-separated (hyper's own message is often only the outer
/// layer, e.g. "connection error" with the io error as its source).
fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = match s.downcast_ref::<std::io::Error>() {
            Some(io) => io_detail(io),
            None => s.to_string(),
        };
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}
