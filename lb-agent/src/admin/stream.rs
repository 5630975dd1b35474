//! A scrape's response body: the scrape taken and its exposition written on a blocking thread,
//! sent to the client in chunks as they are written, so the 7 MB of a large scrape are never
//! held whole.

use super::{metrics::write_metrics, server::Reporter};
use axum::body::{Body, Bytes};
use std::{convert::Infallible, fmt, sync::Arc};
use tokio::sync::mpsc;

/// Bytes of text per chunk sent to the client, and chunks queued for it: the memory a scrape
/// holds beyond its report. Large, so that a connection task that waits for its turn finds
/// megabytes to write (64 KiB × 4 took up to 3 s at 10,000 backends when the admin listeners
/// still shared the checkers' runtime).
const CHUNK: usize = 256 * 1024;
const CHUNKS_QUEUED: usize = 8;

/// The response body of a scrape: the exposition of what `report` shows, both taken and written
/// on one blocking thread (one hop off the runtime, not two) and sent in [`CHUNK`]s as the
/// client takes them; `done` runs on that thread afterwards. A client that goes away stops the
/// writing; a scrape that fails ends the body without `# EOF`, which Prometheus counts as a
/// failed scrape.
pub(super) fn metrics_body(report: Reporter, done: fn()) -> Body {
    let (tx, mut rx) = mpsc::channel(CHUNKS_QUEUED);
    tokio::task::spawn_blocking(move || {
        let scrape = report.scrape();
        let mut out = Chunks {
            text: String::with_capacity(CHUNK),
            tx,
        };
        if write_metrics(Arc::new(scrape), &mut out)
            .and_then(|()| out.send())
            .is_err()
        {
            tracing::debug!("metrics scrape ended before its end (client gone)");
        }
        drop(out);
        done();
    });
    Body::from_stream(futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|chunk| chunk.map(Ok::<_, Infallible>))
    }))
}

/// A `fmt::Write` that hands its text on every [`CHUNK`] bytes.
struct Chunks {
    text: String,
    tx: mpsc::Sender<Bytes>,
}

impl Chunks {
    fn send(&mut self) -> fmt::Result {
        let text = std::mem::replace(&mut self.text, String::with_capacity(CHUNK));
        self.tx
            .blocking_send(Bytes::from(text))
            .map_err(|_| fmt::Error)
    }
}

impl fmt::Write for Chunks {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Sent before it would grow: a String that outgrows its capacity doubles it.
        if self.text.len() + s.len() > self.text.capacity() && !self.text.is_empty() {
            self.send()?;
        }
        self.text.push_str(s);
        Ok(())
    }
}
