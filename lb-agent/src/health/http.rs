//! The HTTP side of `http` and `https` checks: one GET over a connection the probe opened,
//! its status matched against the expected set and, optionally, a substring searched in the
//! first [`MAX_BODY`] bytes of the body.

use super::{probe::error_chain, CheckSpec};
use http_body_util::{BodyExt as _, Empty};
use hyper::{
    body::Incoming,
    header::{CONNECTION, HOST},
    Method, Request, Response, Uri,
};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    task::JoinHandle,
};
use tracing::debug;

/// Bytes of the body searched for `expect_body`; the rest is never read.
pub const MAX_BODY: usize = 64 << 10;

/// Aborts the spawned hyper connection task when the check ends, whichever way (including the
/// timeout dropping the check future), so no task or socket outlives the check.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// GET `check.path` over `io` with `Connection: close`; `Ok("HTTP 200")` when the status is
/// in `check.expect_status` (and the body holds `check.expect_body`), else why not.
pub(super) async fn exchange<S>(io: S, spec: &CheckSpec) -> Result<String, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let check = &spec.check;
    let path = if check.path.is_empty() {
        "/"
    } else {
        check.path.as_str()
    };
    let uri: Uri = path
        .parse()
        .map_err(|e| format!("invalid path {path:?}: {e}"))?;
    let host = check
        .host
        .clone()
        .unwrap_or_else(|| spec.target.to_string());
    let request = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header(HOST, host)
        .header(CONNECTION, "close")
        .body(Empty::<&'static [u8]>::new())
        .map_err(|e| format!("request: {}", error_chain(&e)))?;

    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
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
    let status = response.status().as_u16();
    if !check.expect_status.contains(status) {
        return Err(format!("HTTP {status}"));
    }
    match &check.expect_body {
        // Only the status matters; the body is dropped unread and the connection closed.
        None => Ok(format!("HTTP {status}")),
        Some(needle) => match body_contains(response, needle.as_bytes()).await? {
            BodyMatch::Found => Ok(format!("HTTP {status}, body has {needle:?}")),
            BodyMatch::Missing(read) if read >= MAX_BODY => Err(format!(
                "HTTP {status} but the body's first {MAX_BODY} bytes lack {needle:?}"
            )),
            BodyMatch::Missing(read) => Err(format!(
                "HTTP {status} but the body ({read} bytes) lacks {needle:?}"
            )),
        },
    }
}

enum BodyMatch {
    Found,
    /// Not in this many bytes (all of the body, or [`MAX_BODY`]).
    Missing(usize),
}

/// Reads the body until `needle` appears, the body ends or [`MAX_BODY`] bytes were read.
async fn body_contains(response: Response<Incoming>, needle: &[u8]) -> Result<BodyMatch, String> {
    let mut body = response.into_body();
    let mut seen: Vec<u8> = Vec::new();
    while seen.len() < MAX_BODY {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame.map_err(|e| format!("body: {}", error_chain(&e)))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        // Only the new bytes (and the needle's length before them) can hold a new match.
        let from = seen.len().saturating_sub(needle.len().saturating_sub(1));
        let take = data.len().min(MAX_BODY - seen.len());
        seen.extend_from_slice(&data[..take]);
        if contains(&seen[from..], needle) {
            return Ok(BodyMatch::Found);
        }
    }
    Ok(BodyMatch::Missing(seen.len()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
