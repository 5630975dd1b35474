//! One check of a backend: TCP connect, TLS handshake, or an HTTP/1.1 GET (over TLS for
//! `https`). [`connect`] opens every probe's connection.

use super::{http, tls::TlsSetup, CheckSpec};
use crate::config::CheckKind;
use std::{
    error::Error as StdError,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::net::TcpStream;

/// A finished successful probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passed {
    pub latency: Duration,
    /// e.g. `"connected"`, `"HTTP 200"`, `"TLS handshake done"`.
    pub detail: String,
}

/// A check ready to run: its spec and, for TLS kinds, the client configuration built once.
/// Both behind pointers: a prober lives in each of thousands of idle checker tasks, and a
/// task's size is rounded up to 128 bytes. The spec is shared with the controller's probe key.
pub struct Prober {
    spec: Arc<CheckSpec>,
    /// `Err`: why no handshake can be made (every probe fails with it).
    tls: Option<Box<Result<TlsSetup, String>>>,
}

impl Prober {
    pub fn new(spec: impl Into<Arc<CheckSpec>>) -> Self {
        let spec = spec.into();
        let alpn: &[&[u8]] = match spec.check.kind {
            CheckKind::Https => &[b"http/1.1"],
            _ => &[],
        };
        let tls = spec
            .check
            .tls
            .as_ref()
            .map(|t| Box::new(TlsSetup::new(t, spec.target.ip(), alpn)));
        Self { spec, tls }
    }

    pub fn spec(&self) -> &CheckSpec {
        &self.spec
    }

    /// Runs one check, bounded by `spec.timeout`. `CheckKind::None` checks nothing and
    /// succeeds at once.
    pub async fn check(&self) -> Result<Passed, String> {
        let spec = &self.spec;
        let check = &spec.check;
        if check.kind == CheckKind::None {
            return Ok(Passed {
                latency: Duration::ZERO,
                detail: "not checked".to_owned(),
            });
        }
        let start = Instant::now();
        let work = async {
            match check.kind {
                CheckKind::None => Ok("not checked".to_owned()),
                CheckKind::Tcp => tcp_check(spec).await,
                CheckKind::Http => http::exchange(connect(spec).await?, spec).await,
                CheckKind::Tls => self.tls_check().await,
                CheckKind::Https => {
                    let stream = self.handshake().await?;
                    http::exchange(stream, spec).await
                }
            }
        };
        match tokio::time::timeout(check.timeout, work).await {
            Ok(Ok(detail)) => Ok(Passed {
                latency: start.elapsed(),
                detail,
            }),
            Ok(Err(detail)) => Err(detail),
            Err(_elapsed) => Err(format!("timeout after {} ms", check.timeout.as_millis())),
        }
    }

    async fn handshake(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        let setup = match self.tls.as_deref() {
            Some(Ok(setup)) => setup,
            Some(Err(e)) => return Err(e.clone()),
            None => return Err("TLS check without TLS settings".to_owned()),
        };
        let stream = connect(&self.spec).await?;
        setup
            .connector
            .connect(setup.name.clone(), stream)
            .await
            .map_err(|e| format!("TLS handshake: {}", io_detail(&e)))
    }

    async fn tls_check(&self) -> Result<String, String> {
        let stream = self.handshake().await?;
        let (tcp, session) = stream.get_ref();
        let version = session
            .protocol_version()
            .and_then(|v| v.as_str())
            .unwrap_or("TLS");
        // A reset rather than close_notify and FIN, as for TCP checks (see `tcp_check`).
        let _ = tcp.set_zero_linger();
        Ok(format!("{version} handshake done"))
    }
}

/// Runs one check of `spec` (building its TLS configuration first). `Ok(latency)` or
/// `Err(detail)`.
pub async fn check_once(spec: &CheckSpec) -> Result<Duration, String> {
    Prober::new(spec.clone()).check().await.map(|p| p.latency)
}

/// Opens the probe's TCP connection to `spec.target` the way `spec.route` says (through the
/// tunnel or straight to the backend): TCP, HTTP and TLS checks all start here.
pub async fn connect(spec: &CheckSpec) -> Result<TcpStream, String> {
    super::socket::connect(spec.target, &spec.route).await
}

async fn tcp_check(spec: &CheckSpec) -> Result<String, String> {
    let stream = connect(spec).await?;
    // Close with a reset, as HAProxy's checks do: a FIN would leave a TIME_WAIT socket on this
    // host for every probe (600,000 at 10,000 checks a second), and cost a teardown exchange.
    // (A failure here only loses that saving.)
    let _ = stream.set_zero_linger();
    Ok("connected".to_owned())
}

/// `"Connection refused"` rather than `"Connection refused (os error 111)"`.
pub(super) fn io_detail(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// An error and its sources, `": "`-separated (hyper's own message is often only the outer
/// layer, e.g. "connection error" with the io error as its source).
pub(super) fn error_chain(e: &(dyn StdError + 'static)) -> String {
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
