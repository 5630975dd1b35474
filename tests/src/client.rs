//! Client-side traffic, run inside the client namespace: short HTTP connections, UDP queries,
//! and long-lived TCP connections that notice any reset. Every loop is bounded in count and time.

use anyhow::{bail, Context, Result};
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpStream, UdpSocket},
    time::timeout,
};

const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// One short HTTP/1.1 request on its own connection; the body (the backend's name).
pub async fn http_get(addr: SocketAddr) -> Result<String> {
    let mut s = timeout(IO_TIMEOUT, TcpStream::connect(addr))
        .await
        .context("connect timeout")??;
    s.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
        .await?;
    let mut reply = Vec::new();
    timeout(IO_TIMEOUT, s.read_to_end(&mut reply))
        .await
        .context("read timeout")??;
    let text = String::from_utf8_lossy(&reply);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("no HTTP reply: {text:?}");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!("HTTP status: {head}");
    }
    Ok(body.trim().to_string())
}

/// Tally of many requests: answers per backend and errors.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub by_backend: BTreeMap<String, u64>,
    pub errors: Vec<String>,
}

impl Tally {
    pub fn total(&self) -> u64 {
        self.by_backend.values().sum()
    }
}

/// `count` requests, `concurrency` at a time.
pub async fn http_burst(addr: SocketAddr, count: usize, concurrency: usize) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (tally, next) = (tally.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < count as u64 {
                let result = http_get(addr).await;
                let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                match result {
                    Ok(name) => *t.by_backend.entry(name).or_insert(0) += 1,
                    Err(e) => t.errors.push(format!("{e:#}")),
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let t = tally.lock().unwrap_or_else(|p| p.into_inner()).clone();
    t
}

/// Requests at a steady pace for `duration` (bounded: at most `duration / pace` requests).
pub async fn http_paced(
    addr: SocketAddr,
    duration: Duration,
    pace: Duration,
) -> Vec<(Duration, Result<String>)> {
    let start = tokio::time::Instant::now();
    let mut out = Vec::new();
    while start.elapsed() < duration {
        let at = start.elapsed();
        let r = http_get(addr).await;
        out.push((at, r));
        tokio::time::sleep(pace).await;
    }
    out
}

/// One UDP query; the answering backend's name.
pub async fn udp_query(addr: SocketAddr, local_port: u16) -> Result<String> {
    let bind: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], local_port).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, local_port).into()
    };
    let s = UdpSocket::bind(bind).await?;
    s.send_to(b"query", addr).await?;
    let mut buf = [0u8; 512];
    let (n, _) = timeout(IO_TIMEOUT, s.recv_from(&mut buf))
        .await
        .context("UDP reply timeout")??;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Long-lived connections that exchange a line every `period` and record the backend that
/// answers and any failure (a reset, a close, a stall).
pub struct LongLived {
    pub backends: Vec<Arc<Mutex<Option<String>>>>,
    pub failures: Arc<Mutex<Vec<String>>>,
    pub exchanges: Arc<AtomicU64>,
    /// The longest exchange so far, in microseconds (see [`LongLived::take_longest`]).
    longest_us: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl LongLived {
    pub async fn open(addr: SocketAddr, count: usize, period: Duration) -> Result<Self> {
        Self::open_with_stall(addr, count, period, IO_TIMEOUT).await
    }

    /// `stall`: how long one exchange may take before it counts as a failure (longer than
    /// TCP's retransmission backoff where an outage is expected and must be survived).
    pub async fn open_with_stall(
        addr: SocketAddr,
        count: usize,
        period: Duration,
        stall: Duration,
    ) -> Result<Self> {
        let failures = Arc::new(Mutex::new(Vec::new()));
        let exchanges = Arc::new(AtomicU64::new(0));
        let longest_us = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut backends = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..count {
            let stream = timeout(IO_TIMEOUT, TcpStream::connect(addr))
                .await
                .context("connect timeout")??;
            let backend = Arc::new(Mutex::new(None));
            backends.push(backend.clone());
            let (failures, exchanges, stop) = (failures.clone(), exchanges.clone(), stop.clone());
            let longest_us = longest_us.clone();
            tasks.push(tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while !stop.load(Ordering::Relaxed) {
                    let step = async {
                        write.write_all(b"ping\n").await?;
                        match lines.next_line().await? {
                            Some(name) => Ok::<String, std::io::Error>(name),
                            None => Err(std::io::Error::other("closed by peer")),
                        }
                    };
                    let began = std::time::Instant::now();
                    match timeout(stall, step).await {
                        Ok(Ok(name)) => {
                            longest_us
                                .fetch_max(began.elapsed().as_micros() as u64, Ordering::Relaxed);
                            let mut b = backend.lock().unwrap_or_else(|p| p.into_inner());
                            if let Some(old) = b.as_ref().filter(|old| **old != name) {
                                failures
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .push(format!("connection {i} moved from {old} to {name}"));
                            }
                            *b = Some(name);
                            exchanges.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(e)) => {
                            failures
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(format!("connection {i}: {e}"));
                            return;
                        }
                        Err(_) => {
                            failures
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(format!("connection {i}: stalled"));
                            return;
                        }
                    }
                    tokio::time::sleep(period).await;
                }
            }));
        }
        Ok(Self {
            backends,
            failures,
            exchanges,
            longest_us,
            stop,
            tasks,
        })
    }

    /// Backend name per connection (after at least one exchange).
    pub fn backend_names(&self) -> Vec<Option<String>> {
        self.backends
            .iter()
            .map(|b| b.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }

    /// The longest exchange since the last call: how long the worst-hit connection waited.
    pub fn take_longest(&self) -> Duration {
        Duration::from_micros(self.longest_us.swap(0, Ordering::Relaxed))
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub async fn close(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.tasks) {
            let _ = timeout(Duration::from_secs(5), t).await;
        }
        self.failures()
    }
}
