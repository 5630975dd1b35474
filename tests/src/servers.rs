//! Real servers in the backend namespaces: HTTP answering with the backend's name (and
//! /healthz), a UDP echo that answers with the name, and a line echo for long-lived TCP.

use crate::netns::enter;
use anyhow::{Context, Result};
use axum::{
    http::{StatusCode, Uri},
    routing::get,
    Router,
};
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, UdpSocket},
};
use tokio_util::sync::CancellationToken;

pub const HTTP_PORT: u16 = 80;
pub const UDP_PORT: u16 = 53;
pub const LONG_PORT: u16 = 7000;

/// A backend's servers, stopped (listeners and connections closed) by `stop` or drop.
pub struct Servers {
    cancel: CancellationToken,
    thread: Option<JoinHandle<Result<()>>>,
    flapping: Arc<AtomicBool>,
}

impl Servers {
    pub fn start(ns: &str, name: &str) -> Result<Self> {
        let cancel = CancellationToken::new();
        let flapping = Arc::new(AtomicBool::new(false));
        // Answers per health-check path: each VIP's checker (its own `?vip=` query) sees a
        // strict alternation of its own, whatever the other checkers of this server do.
        let (flap, answered) = (
            flapping.clone(),
            Arc::new(Mutex::new(HashMap::<String, u64>::new())),
        );
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let (ns, name, token) = (ns.to_string(), name.to_string(), cancel.clone());
        let thread = std::thread::spawn(move || -> Result<()> {
            enter(&ns)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                // [::] also takes IPv4 (bindv6only is 0 in a fresh namespace).
                let http = TcpListener::bind(("::", HTTP_PORT)).await.context("http bind")?;
                let udp = UdpSocket::bind(("::", UDP_PORT)).await.context("udp bind")?;
                let long = TcpListener::bind(("::", LONG_PORT)).await.context("long bind")?;
                let _ = ready_tx.send(Ok(()));
                let body = name.clone();
                let app = Router::new()
                    .route("/", get(move || async move { body }))
                    .route(
                        "/healthz",
                        get(move |uri: Uri| {
                            // Flapping: every other health check of each checker fails.
                            let mut counts = answered.lock().unwrap_or_else(|p| p.into_inner());
                            let n = counts.entry(uri.query().unwrap_or("").to_string()).or_insert(0);
                            *n += 1;
                            let failing = flap.load(Ordering::Relaxed) && *n % 2 == 0;
                            async move {
                                if failing {
                                    (StatusCode::SERVICE_UNAVAILABLE, "flapping")
                                } else {
                                    (StatusCode::OK, "ok")
                                }
                            }
                        }),
                    );
                let stop = token.clone();
                let http_task = tokio::spawn(async move {
                    axum::serve(http, app)
                        .with_graceful_shutdown(async move { stop.cancelled().await })
                        .await
                });
                let udp_name = name.clone();
                let udp_task = tokio::spawn(async move {
                    let mut buf = [0u8; 1500];
                    while let Ok((_, peer)) = udp.recv_from(&mut buf).await {
                        let _ = udp.send_to(udp_name.as_bytes(), peer).await;
                    }
                });
                let long_name = name.clone();
                let conn_stop = token.clone();
                let long_task = tokio::spawn(async move {
                    while let Ok((stream, _)) = long.accept().await {
                        let (name, stop) = (long_name.clone(), conn_stop.clone());
                        tokio::spawn(async move {
                            let (read, mut write) = stream.into_split();
                            let mut lines = BufReader::new(read).lines();
                            loop {
                                tokio::select! {
                                    line = lines.next_line() => match line {
                                        Ok(Some(_)) => {
                                            if write.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                                                break;
                                            }
                                        }
                                        _ => break,
                                    },
                                    _ = stop.cancelled() => break,
                                }
                            }
                        });
                    }
                });
                token.cancelled().await;
                udp_task.abort();
                long_task.abort();
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), http_task).await;
                Ok(())
            })
        });
        ready_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .context("servers did not start")??;
        Ok(Self {
            cancel,
            thread: Some(thread),
            flapping,
        })
    }

    /// Make /healthz alternate between 200 and 503 on every request of each checker.
    pub fn set_flapping(&self, on: bool) {
        self.flapping.store(on, Ordering::Relaxed);
    }

    pub fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The servers of every backend namespace, each stoppable and restartable (a backend that
/// dies and comes back). Backend `i` answers with the name `backend<i>`.
pub struct Backends {
    namespaces: Vec<String>,
    servers: Vec<Option<Servers>>,
}

pub fn backend_name(i: usize) -> String {
    format!("backend{i}")
}

impl Backends {
    pub fn start(namespaces: &[String]) -> Result<Self> {
        let servers = namespaces
            .iter()
            .enumerate()
            .map(|(i, ns)| Servers::start(ns, &backend_name(i)).map(Some))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            namespaces: namespaces.to_vec(),
            servers,
        })
    }

    pub fn get(&self, i: usize) -> Option<&Servers> {
        self.servers.get(i).and_then(Option::as_ref)
    }

    pub fn stop(&mut self, i: usize) {
        if let Some(mut s) = self.servers.get_mut(i).and_then(Option::take) {
            s.stop();
        }
    }

    pub fn start_again(&mut self, i: usize) -> Result<()> {
        if self.servers[i].is_none() {
            self.servers[i] = Some(Servers::start(&self.namespaces[i], &backend_name(i))?);
        }
        Ok(())
    }
}
