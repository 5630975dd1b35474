//! The agent's admin endpoints and the CLI's client for them.
//!
//! The controller task owns all state; the handlers here only exchange typed [`AdminRequest`]s
//! with it and give up with `503 Service Unavailable` when it does not answer within 5 s; a
//! request given up is never carried out (`reply`).
//!
//! Three listeners, each with a connection cap and header/idle timeouts (`listen`):
//!
//! * read-only, `admin_listen` (TCP, 127.0.0.1:9300 by default): `GET /metrics` (OpenMetrics
//!   text, [`render_metrics`]) and `GET /status` (JSON [`StatusReport`]); any other method on
//!   them is 405, any other path 404. Prometheus scrapes it; it changes nothing.
//! * the control socket, `control_socket` (Unix, `/run/lb-agent/admin.sock`, mode 0600, peers
//!   with uid 0 or the agent's uid): the control API below. The CLI's default.
//! * optionally a TCP control listener, `control_listen`, only together with
//!   `control_token_file`: the control API for requests with `Authorization: Bearer <token>`.
//!
//! Control API (every action logged with its peer):
//!
//! | Method | Path                                         | Answer                                   |
//! |--------|----------------------------------------------|------------------------------------------|
//! | GET    | `/status`                                    | JSON [`StatusReport`]                    |
//! | POST   | `/vips/{vip}/backends/{addr}/drain`          | admin state `drain`                      |
//! | POST   | `/vips/{vip}/backends/{addr}/undrain`        | admin state `active`                     |
//! | POST   | `/vips/{vip}/backends/{addr}/disable`        | admin state `disabled`                   |
//! | POST   | `/vips/{vip}/backends/{addr}/enable`         | admin state `active`                     |
//! | POST   | `/vips/{vip}/backends/{addr}/weight/{n}`     | weight `n` (1..=10000) until the next reload |
//! | POST   | `/reload`                                    | re-read the configuration file           |
//! | POST   | `/maintenance/on`, `/maintenance/off`        | BGP maintenance mode (drain, withdraw)   |
//!
//! Backend actions answer 200 with a one-line confirmation, 400 for an address (or a weight)
//! that does not parse, 404 for an unknown action or when the controller refuses (unknown VIP
//! or backend; the body is the controller's message). `/reload` answers 200 with the controller's summary or 422
//! with its error; `/maintenance/*` 200 with what happens next or 409 without a `[bgp]`
//! section. The controller gets 5 s to answer, then the request is 503. A refused peer
//! gets 401 (TCP: no or wrong token) or 403 (socket: not root).
//!
//! Layout: `api` holds the types the controller, the server and the CLI share; `server` the
//! routers and handlers; `listen` the accept loop; `endpoints` binds and runs the listeners;
//! `thread` runs them on a thread and runtime of their own, below the agent's priority;
//! `socket` the control socket file; `token` the bearer token; `render` turns a [`StatusReport`]
//! into text, `metrics` and `series` a [`Scrape`] (what `/metrics` shows, taken from the
//! controller's snapshot without building a report), `stream` sends a scrape in chunks;
//! `client` is the CLI's side.

mod api;
mod client;
mod endpoints;
mod listen;
mod metrics;
mod render;
mod reply;
mod scrape;
mod series;
mod server;
mod socket;
mod stream;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_listen;
#[cfg(test)]
mod tests_metrics;
#[cfg(test)]
mod tests_thread;
#[cfg(test)]
mod tests_weight;
mod thread;
mod token;

// Flat re-exports: callers (daemon, controller, CLI, lb-tests) name everything as `admin::X`.
pub use api::{
    AdminRequest, AgentInfo, BackendHealth, BackendStats, BackendStatus, ConnSweepStatus,
    ProbeStatus, ReloadStatus, StatsReport, StatusReport, VipStats, VipStatus,
    METRICS_CONTENT_TYPE,
};
pub use client::{fetch_metrics, fetch_status, fetch_status_control, post, Control};
pub use endpoints::{serve, Listeners};
pub use listen::Peer;
pub use metrics::render_metrics;
pub use render::{render_stats, render_status};
pub use reply::{reply_channel, NoAnswer, Reply, Waiter};
pub use scrape::{BackendTraffic, Scrape};
pub use server::{Reporter, Reports};
pub use socket::ControlSocket;
pub use thread::{spawn as spawn_thread, NICE};
pub use token::{check_file as check_token_file, Token};
