//! The agent's admin listeners, bound from `[agent]`: the read-only one (`admin_listen`:
//! `/metrics`, `/status`), the control socket (`control_socket`, root only) and, when
//! configured with a token file, a TCP control listener (`control_listen`).

use super::{
    api::{AdminRequest, TIMEOUT},
    listen::{self, Access, Bound, Limits, LIMITS},
    server::{control_router, read_router, Reporter},
    socket::ControlSocket,
    token::Token,
};
use crate::config::AgentConfig;
use anyhow::Context as _;
use std::{net::SocketAddr, time::Duration};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Every admin listener, bound and not yet served.
#[derive(Debug)]
pub struct Listeners {
    pub read: TcpListener,
    pub control: Option<ControlSocket>,
    pub control_tcp: Option<(TcpListener, Token)>,
}

impl Listeners {
    /// Binds what `agent` configures. The token file is read here, so a bad one stops the
    /// start with its reason.
    pub async fn bind(agent: &AgentConfig) -> anyhow::Result<Listeners> {
        let read = bind_tcp(agent.admin_listen, "admin_listen (metrics and status)").await?;
        if !agent.admin_listen.ip().is_loopback() {
            warn!(
                listen = %agent.admin_listen,
                "the read-only admin listener is not on loopback: /metrics and /status (backend \
                 addresses and health) are readable by whoever reaches it; firewall it"
            );
        }
        let control = ControlSocket::bind(&agent.control_socket).await?;
        let control_tcp = match (agent.control_listen, &agent.control_token_file) {
            (Some(addr), Some(token_file)) => {
                let token = Token::from_file(token_file)?;
                Some((bind_tcp(addr, "control_listen").await?, token))
            }
            _ => None,
        };
        Ok(Listeners {
            read,
            control: Some(control),
            control_tcp,
        })
    }
}

async fn bind_tcp(addr: SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!(
            "binding agent.{key} to {addr}: is another agent (or program) using it? Stop it or \
             choose another address"
        )
    })
}

/// Serves every listener until `shutdown` is cancelled; then open connections get 5 s to
/// finish, and the control socket file is removed.
pub async fn serve(
    listeners: Listeners,
    requests: mpsc::Sender<AdminRequest>,
    report: Reporter,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_with(listeners, requests, report, shutdown, TIMEOUT, LIMITS).await
}

/// [`serve`] with the controller timeout and the connection limits chosen (tests).
pub(super) async fn serve_with(
    listeners: Listeners,
    requests: mpsc::Sender<AdminRequest>,
    report: Reporter,
    shutdown: CancellationToken,
    timeout: Duration,
    limits: Limits,
) -> anyhow::Result<()> {
    let Listeners {
        read,
        control,
        control_tcp,
    } = listeners;
    let control_api = control_router(requests, report.clone(), timeout);
    let mut tasks = tokio::task::JoinSet::new();
    let local = read
        .local_addr()
        .context("address of the read-only listener")?;
    info!(%local, "admin listener up: GET /metrics, GET /status");
    tasks.spawn(listen::serve(
        Bound::Tcp(read),
        "read-only",
        read_router(report),
        Access::Open,
        limits,
        shutdown.clone(),
    ));
    let mut socket_file = None;
    if let Some(socket) = control {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        info!(path = %socket.path().display(), "control socket up (mode 0600)");
        socket_file = Some(socket.file);
        tasks.spawn(listen::serve(
            Bound::Unix(socket.listener),
            "control-socket",
            control_api.clone(),
            Access::Owner { uid },
            limits,
            shutdown.clone(),
        ));
    }
    if let Some((listener, token)) = control_tcp {
        let local = listener
            .local_addr()
            .context("address of the control listener")?;
        info!(%local, "control listener up (bearer token required)");
        tasks.spawn(listen::serve(
            Bound::Tcp(listener),
            "control-tcp",
            control_api,
            Access::Token(token),
            limits,
            shutdown.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
    if let Some(file) = socket_file {
        file.remove();
    }
    Ok(())
}
