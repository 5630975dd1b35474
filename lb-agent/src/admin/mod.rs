//! The agent's admin endpoint (HTTP/1, `admin_listen`, localhost by default) and the CLI's client
//! for it.
//!
//! The controller task owns all state; the handlers here only exchange typed [`AdminRequest`]s
//! with it and give up with `503 Service Unavailable` when it does not answer within 5 s; a
//! request given up is never carried out (`reply`).
//!
//! Routes:
//!
//! | Method | Path                                         | Answer                                   |
//! |--------|----------------------------------------------|------------------------------------------|
//! | GET    | `/metrics`                                   | OpenMetrics text ([`render_metrics`])    |
//! | GET    | `/status`                                    | JSON [`StatusReport`]                    |
//! | POST   | `/vips/{vip}/backends/{addr}/drain`          | admin state `drain`                      |
//! | POST   | `/vips/{vip}/backends/{addr}/undrain`        | admin state `active`                     |
//! | POST   | `/vips/{vip}/backends/{addr}/disable`        | admin state `disabled`                   |
//! | POST   | `/vips/{vip}/backends/{addr}/enable`         | admin state `active`                     |
//! | POST   | `/reload`                                    | re-read the configuration file           |
//! | POST   | `/maintenance/on`, `/maintenance/off`        | BGP maintenance mode (drain, withdraw)   |
//!
//! Backend actions answer 200 with a one-line confirmation, 400 for an address that does not
//! parse, 404 for an unknown action or when the controller refuses (unknown VIP or backend; the
//! body is the controller's message). `/reload` answers 200 with the controller's summary or 422
//! with its error; `/maintenance/*` 200 with what happens next or 409 without a `[bgp]`
//! section. Every body except `/status` and `/metrics` is one line of plain text.
//!
//! Layout: `api` holds the types the controller, the server and the CLI share; `server` the
//! axum endpoint; `metrics` and `render` turn a [`StatusReport`] into text; `client` is the
//! CLI's side of the HTTP exchange.

mod api;
mod client;
mod metrics;
mod render;
mod reply;
mod server;
#[cfg(test)]
mod tests;

// Flat re-exports: callers (daemon, controller, CLI, lb-tests) name everything as `admin::X`.
pub use api::{
    AdminRequest, BackendHealth, BackendStats, BackendStatus, ConnSweepStatus, StatsReport,
    StatusReport, VipStats, VipStatus, METRICS_CONTENT_TYPE,
};
pub use client::{fetch_metrics, fetch_status, post};
pub use metrics::render_metrics;
pub use render::{render_stats, render_status};
pub use reply::{reply_channel, NoAnswer, Reply, Waiter};
pub use server::{serve, Reporter};
