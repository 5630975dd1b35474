//! One admin listener's accept loop: HTTP/1 through hyper with a header (and keep-alive idle)
//! timeout, a lifetime per connection, a cap on open connections, the peer of each request, and
//! the listener's access rule. Connections beyond the cap are closed at once, so no number of
//! clients can take the descriptors health checks need.

use super::token::Token;
use axum::{
    body::Body,
    http::{header, Request, Response, StatusCode},
    Router,
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use std::{
    fmt,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
    sync::Semaphore,
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tracing::{info, warn};

/// Bounds of one listener.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open connections at most; more are closed as soon as they are accepted.
    pub max_conns: usize,
    /// A request's headers must arrive within this; it also ends an idle keep-alive
    /// connection (hyper starts it whenever it waits for a request).
    pub header_timeout: Duration,
    /// A connection is closed after this, whatever it does.
    pub max_age: Duration,
}

/// Defaults: far above what a scraper and an operator need, far below the descriptors the
/// agent has.
pub const LIMITS: Limits = Limits {
    max_conns: 64,
    header_timeout: Duration::from_secs(10),
    max_age: Duration::from_secs(120),
};

/// After shutdown, how long open connections may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed accept (e.g. out of descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Refused connections and accept errors are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Who sent a request: logged with every control action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
    Unix { uid: u32, pid: Option<i32> },
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(addr) => write!(f, "tcp {addr}"),
            Peer::Unix {
                uid,
                pid: Some(pid),
            } => write!(f, "unix uid {uid} pid {pid}"),
            Peer::Unix { uid, pid: None } => write!(f, "unix uid {uid}"),
        }
    }
}

/// Who may use a listener.
#[derive(Clone, Debug)]
pub enum Access {
    /// Anyone who can connect (the read-only listener).
    Open,
    /// Requests carry `Authorization: Bearer <token>`.
    Token(Token),
    /// Unix peers with uid 0 or `uid` (the agent's own); the socket's mode is the first gate.
    Owner { uid: u32 },
}

/// What a listener accepts on.
pub enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Counts what is not logged, so a flood produces one line per [`LOG_EVERY`].
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// Whether to log now; the number of events since the last line.
    fn due(&mut self) -> Option<u64> {
        self.suppressed += 1;
        if self.last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Serves `router` on `bound` until `shutdown`; then gives open connections
/// [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(
    bound: Bound,
    name: &'static str,
    router: Router,
    access: Access,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_conns));
    let graceful = GracefulShutdown::new();
    let mut refused = Throttle::default();
    let mut failed = Throttle::default();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = accept(&bound) => accepted,
        };
        let (io, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                if let Some(n) = failed.due() {
                    warn!(listener = name, errors = n, "admin accept failed: {e}");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Dropping the stream closes it: the descriptor is back at once.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            if let Some(n) = refused.due() {
                warn!(
                    listener = name, %peer, refused = n, max = limits.max_conns,
                    "admin connections at their cap: closing new ones"
                );
            }
            continue;
        };
        spawn_connection(io, &peer, &router, &access, limits, &graceful, permit);
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            warn!(listener = name, "admin connections still open after shutdown, leaving them");
        }
    }
    info!(listener = name, "admin listener stopped");
}

/// An accepted connection: its byte stream and its peer.
type Accepted = (Box<dyn Io>, Peer);

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

async fn accept(bound: &Bound) -> std::io::Result<Accepted> {
    match bound {
        Bound::Tcp(l) => {
            let (stream, addr) = l.accept().await?;
            Ok((Box::new(stream), Peer::Tcp(addr)))
        }
        Bound::Unix(l) => {
            let (stream, _) = l.accept().await?;
            let cred = stream.peer_cred()?;
            let peer = Peer::Unix {
                uid: cred.uid(),
                pid: cred.pid(),
            };
            Ok((Box::new(stream), peer))
        }
    }
}

/// Serves the HTTP/1 connection of one client on its own task: each request gets the peer as
/// an extension and passes the access rule before the router sees it. The permit is held until
/// the connection ends.
fn spawn_connection(
    io: Box<dyn Io>,
    peer: &Peer,
    router: &Router,
    access: &Access,
    limits: Limits,
    graceful: &GracefulShutdown,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let (peer, router, access) = (peer.clone(), router.clone(), access.clone());
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let denied = check_access(&access, &peer, request.headers())
            .map(|(status, why)| refusal(&peer, &request, status, why));
        request.extensions_mut().insert(peer.clone());
        let router = router.clone();
        async move {
            match denied {
                Some(response) => Ok(response),
                None => router.oneshot(request).await,
            }
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(io), service);
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        // Past its age the connection is dropped (closed), finished or not.
        let _ = tokio::time::timeout(limits.max_age, conn).await;
        drop(permit);
    });
}

/// `None` when `access` lets a request with `headers` from `peer` through, else the status
/// and reason of the refusal.
pub(super) fn check_access(
    access: &Access,
    peer: &Peer,
    headers: &header::HeaderMap,
) -> Option<(StatusCode, &'static str)> {
    match (access, peer) {
        (Access::Open, _) => None,
        (Access::Token(token), _) => {
            let presented = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| bearer(v.as_bytes()));
            match presented {
                Some(p) if token.matches(p) => None,
                Some(_) => Some((StatusCode::UNAUTHORIZED, "wrong token")),
                None => Some((
                    StatusCode::UNAUTHORIZED,
                    "missing Authorization: Bearer <token> header",
                )),
            }
        }
        (Access::Owner { uid }, Peer::Unix { uid: peer_uid, .. })
            if *peer_uid == 0 || peer_uid == uid =>
        {
            None
        }
        (Access::Owner { .. }, _) => Some((
            StatusCode::FORBIDDEN,
            "the control API is for root (and the agent's user) only",
        )),
    }
}

/// The answer to a refused request, logged with its peer.
fn refusal(
    peer: &Peer,
    request: &Request<Incoming>,
    status: StatusCode,
    why: &str,
) -> Response<Body> {
    warn!(%peer, method = %request.method(), path = %request.uri().path(), "admin request refused: {why}");
    let mut response = Response::new(Body::from(format!("{why}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// The credentials of an `Authorization: Bearer <token>` value (scheme in any case).
pub(super) fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}
