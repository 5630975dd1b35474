use super::{
    client::{request, Target},
    endpoints::serve_with,
    listen::LIMITS,
    *,
};
use crate::config::{AdminState, AllDown, HashMode, Protocol};
use crate::health::Health;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

fn backend(address: &str, id: u32, packets: u64) -> BackendStatus {
    BackendStatus {
        address: address.parse().unwrap(),
        id,
        weight: 100,
        weight_override: None,
        effective_weight: 100,
        admin_state: AdminState::Active,
        health: BackendHealth::Up,
        slots: 100,
        packets,
        bytes: packets * 100,
        checks_ok: 10,
        checks_failed: 0,
        last_check_latency_ms: Some(1.5),
        last_change: "2025-01-01T00:00:00Z".to_owned(),
        probe: None,
        probe_vips: 0,
    }
}

pub(super) fn canned_report() -> StatusReport {
    let mut b2 = backend("198.18.1.2", 2, 7);
    b2.health = BackendHealth::Down;
    b2.admin_state = AdminState::Drain;
    b2.effective_weight = 0;
    b2.checks_failed = 3;
    b2.last_check_latency_ms = None;
    let mut b3 = backend("2001:db8::3", 3, 5);
    b3.health = BackendHealth::Unchecked;
    b3.admin_state = AdminState::Disabled;
    StatusReport {
        interface: "eth0".to_owned(),
        xdp_mode: "native".to_owned(),
        table_size: 65_537,
        uptime_secs: 3_723,
        config_path: "/etc/lb-agent/lb.toml".to_owned(),
        flow_hash_key_digest: "none".to_owned(),
        vips: vec![
            VipStatus {
                name: "web".to_owned(),
                address: "192.0.2.10".parse().unwrap(),
                port: 80,
                protocol: Protocol::Tcp,
                hash: HashMode::FiveTuple,
                all_down: AllDown::FailOpen,
                table_generation: 3,
                table_digest: "9f86d081884c7d65".to_owned(),
                moved_slots: 12,
                serving: true,
                packets: 49,
                bytes: 4_900,
                backends: vec![backend("198.18.1.1", 1, 42), b2],
            },
            VipStatus {
                name: "dns".to_owned(),
                address: "2001:db8::53".parse().unwrap(),
                port: 53,
                protocol: Protocol::Udp,
                hash: HashMode::SourceIp,
                all_down: AllDown::Drop,
                table_generation: 1,
                table_digest: "00ff00ff00ff00ff".to_owned(),
                moved_slots: 0,
                serving: false,
                packets: 5,
                bytes: 500,
                backends: vec![b3],
            },
        ],
        counters: BTreeMap::from([
            ("forwarded".to_owned(), 54),
            ("drop_malformed".to_owned(), 2),
            ("conn_hit".to_owned(), 40),
        ]),
        conn_sweep: None,
        bgp: Some(crate::bgp::BgpStatus {
            wanted: vec![
                "198.18.10.1".parse().unwrap(),
                "198.18.10.2".parse().unwrap(),
            ],
            announced: vec!["198.18.10.1".parse().unwrap()],
            error: None,
            peers: vec![crate::bgp::BgpPeer {
                neighbor: "198.18.0.1".parse().unwrap(),
                protocol: "lb_peer_198_18_0_1".to_owned(),
                state: "Established".to_owned(),
                established: true,
                last_error: None,
            }],
            maintenance: Default::default(),
        }),
        agent: AgentInfo {
            version: "1.2.3".to_owned(),
            started_at_unix: 1_764_500_000.5,
            conn_table_capacity: 1_048_576,
            last_reload: Some(ReloadStatus {
                applied: false,
                at_unix: 1_764_503_600.25,
                message: "vip[0].port: must be 1-65535".to_owned(),
            }),
        },
        probes: Vec::new(),
    }
}

type Calls = Arc<Mutex<Vec<(String, IpAddr, AdminState)>>>;
pub(super) type WeightCalls = Arc<Mutex<Vec<(String, IpAddr, u32)>>>;

/// Why the canned report's controller refuses a request about `vip` and `backend`, if it does.
fn refusal(report: &StatusReport, vip: &str, backend: IpAddr) -> Option<String> {
    match report.vips.iter().find(|v| v.name == vip) {
        None => Some(format!("unknown VIP {vip:?}")),
        Some(v) if !v.backends.iter().any(|b| b.address == backend) => {
            Some(format!("VIP {vip:?} has no backend {backend}"))
        }
        Some(_) => None,
    }
}

/// A controller answering from the canned report; records SetBackendState and
/// SetBackendWeight calls.
async fn fake_controller(
    mut requests: mpsc::Receiver<AdminRequest>,
    report: StatusReport,
    reload: Result<String, String>,
    calls: Calls,
    weights: WeightCalls,
) {
    while let Some(request) = requests.recv().await {
        match request {
            AdminRequest::SetBackendState {
                vip,
                backend,
                state,
                reply,
            } => {
                let Some(reply) = reply.claim() else { continue };
                let answer = match refusal(&report, &vip, backend) {
                    Some(message) => Err(message),
                    None => {
                        calls.lock().unwrap().push((vip, backend, state));
                        Ok(())
                    }
                };
                let _ = reply.send(answer);
            }
            AdminRequest::SetBackendWeight {
                vip,
                backend,
                weight,
                reply,
            } => {
                let Some(reply) = reply.claim() else { continue };
                let answer = match refusal(&report, &vip, backend) {
                    Some(message) => Err(message),
                    None => {
                        let answer = format!("backend {backend} of VIP {vip}: weight {weight}");
                        weights.lock().unwrap().push((vip, backend, weight.get()));
                        Ok(answer)
                    }
                };
                let _ = reply.send(answer);
            }
            AdminRequest::Reload(reply) => {
                if let Some(reply) = reply.claim() {
                    let _ = reply.send(reload.clone());
                }
            }
            AdminRequest::SetMaintenance { on, reply } => {
                let Some(reply) = reply.claim() else { continue };
                let _ = reply.send(match &report.bgp {
                    Some(_) => Ok(format!("maintenance {}", if on { "on" } else { "off" })),
                    None => Err("no [bgp] section".to_owned()),
                });
            }
        }
    }
}

/// A directory under the system's temp dir, removed on drop.
pub(super) struct TempDir(pub(super) std::path::PathBuf);

impl TempDir {
    pub(super) fn new(tag: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("lb-admin-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) const TOKEN: &str = "0123456789abcdef0123456789abcdef";

pub(super) struct Harness {
    /// The read-only listener.
    pub(super) addr: SocketAddr,
    /// The control socket.
    pub(super) control: Control,
    /// The TCP control listener with [`TOKEN`].
    pub(super) control_tcp: SocketAddr,
    pub(super) calls: Calls,
    pub(super) weights: WeightCalls,
    pub(super) shutdown: CancellationToken,
    pub(super) server: JoinHandle<anyhow::Result<()>>,
    pub(super) _dir: TempDir,
}

/// Every listener on loopback or in a temp dir, a fake controller behind them.
pub(super) async fn start_with(
    requests: mpsc::Sender<AdminRequest>,
    timeout: Duration,
    limits: listen::Limits,
) -> (Harness, mpsc::Sender<AdminRequest>) {
    let dir = TempDir::new("harness");
    let read = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = read.local_addr().unwrap();
    let socket_path = dir.0.join("admin.sock");
    let socket = ControlSocket::bind(&socket_path).await.unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control_tcp = tcp.local_addr().unwrap();
    let listeners = Listeners {
        read,
        control: Some(socket),
        control_tcp: Some((tcp, Token::parse(TOKEN).unwrap())),
    };
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve_with(
        listeners,
        requests.clone(),
        canned_reporter(),
        shutdown.clone(),
        timeout,
        limits,
    ));
    let h = Harness {
        addr,
        control: Control::Socket(socket_path),
        control_tcp,
        calls: Calls::default(),
        weights: WeightCalls::default(),
        shutdown,
        server,
        _dir: dir,
    };
    (h, requests)
}

pub(super) async fn start(reload: Result<String, String>) -> Harness {
    let (tx, rx) = mpsc::channel(8);
    let (h, _) = start_with(tx, Duration::from_secs(5), LIMITS).await;
    tokio::spawn(fake_controller(
        rx,
        canned_report(),
        reload,
        h.calls.clone(),
        h.weights.clone(),
    ));
    h
}

fn canned_reporter() -> Reporter {
    Arc::new(canned_report)
}

pub(super) async fn raw_get(addr: SocketAddr, path: &str) -> (hyper::StatusCode, String) {
    request(Target::Read(addr), hyper::Method::GET, path)
        .await
        .unwrap()
}

#[tokio::test]
async fn status_round_trips() {
    let h = start(Ok("reloaded".to_owned())).await;
    let report = fetch_status(h.addr).await.unwrap();
    assert_eq!(report, canned_report());
}

#[tokio::test]
async fn metrics_exposition() {
    let h = start(Ok("reloaded".to_owned())).await;
    let (status, body) = raw_get(h.addr, "/metrics").await;
    assert_eq!(status, hyper::StatusCode::OK);
    let lines: Vec<&str> = body.lines().collect();
    for expected in [
        r#"lb_vip_packets_total{vip="web"} 49"#,
        r#"lb_vip_bytes_total{vip="web"} 4900"#,
        r#"lb_vip_packets_total{vip="dns"} 5"#,
        r#"lb_backend_packets_total{vip="web",backend="198.18.1.1"} 42"#,
        r#"lb_backend_bytes_total{vip="web",backend="198.18.1.1"} 4200"#,
        r#"lb_backend_packets_total{vip="dns",backend="2001:db8::3"} 5"#,
        r#"lb_backend_up{vip="web",backend="198.18.1.1"} 1"#,
        r#"lb_backend_up{vip="web",backend="198.18.1.2"} 0"#,
        r#"lb_backend_up{vip="dns",backend="2001:db8::3"} 0"#,
        r#"lb_backend_weight{vip="web",backend="198.18.1.1"} 100"#,
        r#"lb_backend_weight{vip="web",backend="198.18.1.2"} 0"#,
        r#"lb_backend_admin_state{vip="web",backend="198.18.1.1",state="active"} 1"#,
        r#"lb_backend_admin_state{vip="web",backend="198.18.1.1",state="drain"} 0"#,
        r#"lb_backend_admin_state{vip="web",backend="198.18.1.2",state="drain"} 1"#,
        r#"lb_backend_admin_state{vip="dns",backend="2001:db8::3",state="disabled"} 1"#,
        r#"lb_health_checks_total{vip="web",backend="198.18.1.1",result="ok"} 10"#,
        r#"lb_health_checks_total{vip="web",backend="198.18.1.2",result="failed"} 3"#,
        r#"lb_health_check_latency_seconds{vip="web",backend="198.18.1.1"} 0.0015"#,
        r#"lb_table_generation{vip="web"} 3"#,
        r#"lb_vip_moved_slots{vip="web"} 12"#,
        r#"lb_table_generation{vip="dns"} 1"#,
        r#"lb_vip_serving{vip="web"} 1"#,
        r#"lb_vip_serving{vip="dns"} 0"#,
        r#"lb_datapath_events_total{event="forwarded"} 54"#,
        r#"lb_datapath_events_total{event="drop_malformed"} 2"#,
        r#"lb_datapath_events_total{event="conn_hit"} 40"#,
        r#"lb_bgp_announced{address="198.18.10.1"} 1"#,
        r#"lb_bgp_announced{address="198.18.10.2"} 0"#,
        r#"lb_bgp_session_established{neighbor="198.18.0.1"} 1"#,
        "lb_agent_uptime_seconds 3723",
        r#"lb_vip_table_info{vip="web",digest="9f86d081884c7d65"} 1"#,
        r#"lb_vip_table_info{vip="dns",digest="00ff00ff00ff00ff"} 1"#,
        r#"lb_build_info{version="1.2.3"} 1"#,
        "lb_agent_start_time_seconds 1764500000.5",
        "lb_conn_table_capacity 1048576",
        "lb_reload_success 0",
        "lb_reload_timestamp_seconds 1764503600.25",
        "# TYPE lb_vip_packets counter",
        "# TYPE lb_backend_up gauge",
        "# TYPE lb_health_check_schedule_lag_seconds histogram",
    ] {
        assert!(lines.contains(&expected), "missing {expected:?} in\n{body}");
    }
    // The lag histogram is process-wide (other tests' checkers feed it): only its shape.
    for series in [
        r#"lb_health_check_schedule_lag_seconds_bucket{le="0.001"} "#,
        r#"lb_health_check_schedule_lag_seconds_bucket{le="+Inf"} "#,
        "lb_health_check_schedule_lag_seconds_count ",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(series)),
            "missing {series:?} in\n{body}"
        );
    }
    // No latency before the first check.
    assert!(!body.contains(r#"lb_health_check_latency_seconds{vip="web",backend="198.18.1.2"}"#));
    assert!(body.ends_with("# EOF\n"), "{body}");
}

#[tokio::test]
async fn metrics_content_type() {
    let h = start(Ok("reloaded".to_owned())).await;
    let stream = TcpStream::connect(h.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get("/metrics")
        .header(hyper::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(
        response.headers()[hyper::header::CONTENT_TYPE],
        METRICS_CONTENT_TYPE
    );
}

#[test]
fn label_values_are_escaped() {
    let mut report = canned_report();
    report.vips[0].name = "we\"b\\".to_owned();
    let body = render_metrics(&report);
    assert!(
        body.contains(r#"lb_vip_packets_total{vip="we\"b\\"} 49"#),
        "{body}"
    );
}

#[tokio::test]
async fn backend_actions_reach_the_controller() {
    let h = start(Ok("reloaded".to_owned())).await;
    let b1: IpAddr = "198.18.1.1".parse().unwrap();
    let b3: IpAddr = "2001:db8::3".parse().unwrap();
    let answer = post(&h.control, "/vips/web/backends/198.18.1.1/drain")
        .await
        .unwrap();
    assert!(answer.contains("drain"), "{answer}");
    post(&h.control, "/vips/web/backends/198.18.1.1/undrain")
        .await
        .unwrap();
    post(&h.control, "/vips/dns/backends/2001:db8::3/disable")
        .await
        .unwrap();
    post(&h.control, "/vips/dns/backends/2001:db8::3/enable")
        .await
        .unwrap();
    assert_eq!(
        *h.calls.lock().unwrap(),
        vec![
            ("web".to_owned(), b1, AdminState::Drain),
            ("web".to_owned(), b1, AdminState::Active),
            ("dns".to_owned(), b3, AdminState::Disabled),
            ("dns".to_owned(), b3, AdminState::Active),
        ]
    );
}

#[tokio::test]
async fn unknown_vip_or_backend_is_404_with_the_controllers_message() {
    let h = start(Ok("reloaded".to_owned())).await;
    let e = post(&h.control, "/vips/nope/backends/198.18.1.1/drain")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("404"), "{e}");
    assert!(e.contains(r#"unknown VIP "nope""#), "{e}");
    let e = post(&h.control, "/vips/web/backends/198.18.9.9/drain")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("404"), "{e}");
    assert!(e.contains("has no backend 198.18.9.9"), "{e}");
    assert!(h.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn bad_address_is_400_and_bad_action_404() {
    let h = start(Ok("reloaded".to_owned())).await;
    let e = post(&h.control, "/vips/web/backends/not-an-ip/drain")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("400"), "{e}");
    assert!(e.contains("not-an-ip"), "{e}");
    let e = post(&h.control, "/vips/web/backends/198.18.1.1/explode")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("404"), "{e}");
    assert!(h.calls.lock().unwrap().is_empty());
    // Wrong method.
    let (status, _) = request(
        Target::Control(&h.control),
        hyper::Method::GET,
        "/vips/web/backends/198.18.1.1/drain",
    )
    .await
    .unwrap();
    assert_eq!(status, hyper::StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn reload_ok_and_err() {
    let h = start(Ok("reloaded: 2 VIPs, 1 backend added".to_owned())).await;
    assert_eq!(
        post(&h.control, "/reload").await.unwrap(),
        "reloaded: 2 VIPs, 1 backend added"
    );
    let h = start(Err("line 3: unknown key `wieght`".to_owned())).await;
    let e = post(&h.control, "/reload").await.unwrap_err().to_string();
    assert!(e.contains("422"), "{e}");
    assert!(e.contains("line 3: unknown key `wieght`"), "{e}");
}

/// Status and metrics never wait on the controller: they answer while it is silent; control
/// requests give up with 503.
#[tokio::test]
async fn silent_controller_is_503_for_control_only() {
    let (tx, mut rx) = mpsc::channel::<AdminRequest>(8);
    // Keeps every request, answers none.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(request) = rx.recv().await {
            held.push(request);
        }
    });
    let (h, _) = start_with(tx, Duration::from_millis(100), LIMITS).await;
    assert_eq!(fetch_status(h.addr).await.unwrap(), canned_report());
    assert_eq!(
        fetch_status_control(&h.control).await.unwrap(),
        canned_report()
    );
    assert!(fetch_metrics(h.addr).await.unwrap().ends_with("# EOF\n"));
    let e = post(&h.control, "/reload").await.unwrap_err().to_string();
    assert!(e.contains("503"), "{e}");
    h.shutdown.cancel();
}

#[tokio::test]
async fn stopped_controller_is_503_for_control_only() {
    let (tx, rx) = mpsc::channel::<AdminRequest>(8);
    drop(rx);
    let (h, _) = start_with(tx, Duration::from_secs(5), LIMITS).await;
    assert_eq!(fetch_status(h.addr).await.unwrap(), canned_report());
    let e = post(&h.control, "/vips/web/backends/198.18.1.1/drain")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("503"), "{e}");
    h.shutdown.cancel();
}

#[tokio::test]
async fn serve_stops_when_cancelled() {
    let h = start(Ok("reloaded".to_owned())).await;
    fetch_status(h.addr).await.unwrap();
    h.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), h.server)
        .await
        .expect("serve did not stop")
        .unwrap()
        .unwrap();
    let e = fetch_status(h.addr).await.unwrap_err().to_string();
    assert!(e.contains("lb-agent run"), "{e}");
    // The control socket file is gone with the agent.
    let Control::Socket(path) = &h.control else {
        unreachable!()
    };
    assert!(!path.exists(), "{} left behind", path.display());
}

#[tokio::test]
async fn no_agent_error_says_how_to_fix() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let e = format!("{:#}", fetch_status(addr).await.unwrap_err());
    assert!(e.contains("is `lb-agent run` running?"), "{e}");
    assert!(e.contains(&format!("admin_listen is {addr}")), "{e}");
    let dir = TempDir::new("no-agent");
    let path = dir.0.join("admin.sock");
    let e = format!(
        "{:#}",
        post(&Control::Socket(path.clone()), "/reload")
            .await
            .unwrap_err()
    );
    assert!(e.contains("is `lb-agent run` running?"), "{e}");
    assert!(
        e.contains(&format!("control_socket is {}", path.display())),
        "{e}"
    );
    assert!(e.contains("--socket PATH"), "{e}");
}

#[test]
fn human_output() {
    let report = canned_report();
    let status = render_status(&report);
    let stats = render_stats(&report);
    for text in [&status, &stats] {
        for needle in ["web", "dns", "198.18.1.1", "198.18.1.2", "2001:db8::3"] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
    for needle in [
        "192.0.2.10:80/tcp",
        "[2001:db8::53]:53/udp",
        "generation 3",
        "9f86d081884c7d65",
        "five-tuple",
        "fail-open",
        "NOT SERVING",
        "drain",
        "disabled",
        "100/0",
        "1h 2m 3s",
        "bgp: announcing 198.18.10.1",
        "wanted 198.18.10.1, 198.18.10.2",
        "neighbor 198.18.0.1 (lb_peer_198_18_0_1): Established",
    ] {
        assert!(status.contains(needle), "missing {needle} in\n{status}");
    }
    // Counters sorted by name.
    let conn = stats.find("conn_hit").unwrap();
    let drop = stats.find("drop_malformed").unwrap();
    let fwd = stats.find("forwarded").unwrap();
    assert!(conn < drop && drop < fwd, "{stats}");
    assert!(stats.contains("4200"), "{stats}");
}

#[test]
fn backend_health_words() {
    assert_eq!(BackendHealth::of(Health::Up, true), BackendHealth::Up);
    assert_eq!(BackendHealth::of(Health::Down, true), BackendHealth::Down);
    assert_eq!(
        BackendHealth::of(Health::Up, false),
        BackendHealth::Unchecked
    );
    assert_eq!(BackendHealth::of(Health::Down, false), BackendHealth::Down);
    for (health, word) in [
        (BackendHealth::Up, "up"),
        (BackendHealth::Down, "down"),
        (BackendHealth::Unchecked, "unchecked"),
    ] {
        assert_eq!(health.to_string(), word);
        assert_eq!(
            serde_json::to_string(&health).unwrap(),
            format!("\"{word}\"")
        );
        assert_eq!(
            serde_json::from_str::<BackendHealth>(&format!("\"{word}\"")).unwrap(),
            health
        );
    }
    let status = render_status(&canned_report());
    assert!(status.contains("unchecked"), "{status}");
}

#[test]
fn last_reload_in_status_text() {
    let rejected = render_status(&canned_report());
    let line = rejected.lines().nth(1).unwrap();
    assert!(
        line.starts_with("last reload: REJECTED ")
            && line.ends_with(" ago: vip[0].port: must be 1-65535"),
        "{rejected}"
    );
    let mut report = canned_report();
    report.agent.last_reload = None;
    assert!(!render_status(&report).contains("last reload"));
}

#[test]
fn flow_hash_key_digest_in_status_text_and_json() {
    let mut report = canned_report();
    report.flow_hash_key_digest = "0123456789abcdef".to_owned();
    let text = render_status(&report);
    assert!(
        text.lines().any(|l| l == "flow hash key 0123456789abcdef"),
        "{text}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["flow_hash_key_digest"], "0123456789abcdef");
}

#[test]
fn stats_json_shape() {
    let json = serde_json::to_string_pretty(&StatsReport::from(&canned_report())).unwrap();
    // Keys in alphabetical order, as `serde_json::json!` wrote them before the typed structs.
    let expected = r#"{
  "counters": {
    "conn_hit": 40,
    "drop_malformed": 2,
    "forwarded": 54
  },
  "vips": [
    {
      "backends": [
        {
          "address": "198.18.1.1",
          "bytes": 4200,
          "packets": 42
        },
        {
          "address": "198.18.1.2",
          "bytes": 700,
          "packets": 7
        }
      ],
      "bytes": 4900,
      "name": "web",
      "packets": 49
    },
    {
      "backends": [
        {
          "address": "2001:db8::3",
          "bytes": 500,
          "packets": 5
        }
      ],
      "bytes": 500,
      "name": "dns",
      "packets": 5
    }
  ]
}"#;
    assert_eq!(json, expected);
}

#[tokio::test]
async fn maintenance_on_and_off_reach_the_controller() {
    let h = start(Ok("reloaded".to_owned())).await;
    assert_eq!(
        post(&h.control, "/maintenance/on").await.unwrap(),
        "maintenance on"
    );
    assert_eq!(
        post(&h.control, "/maintenance/off").await.unwrap(),
        "maintenance off"
    );
    let e = post(&h.control, "/maintenance/sideways")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("404") && e.contains("use on or off"), "{e}");
    // The read-only listener has no control routes at all.
    let (status, _) = raw_get(h.addr, "/maintenance/on").await;
    assert_eq!(status, hyper::StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn maintenance_without_bgp_is_409_with_the_controllers_reason() {
    let (tx, rx) = mpsc::channel(8);
    let (h, _) = start_with(tx, Duration::from_secs(5), LIMITS).await;
    let report = StatusReport {
        bgp: None,
        ..canned_report()
    };
    tokio::spawn(fake_controller(
        rx,
        report,
        Ok(String::new()),
        Calls::default(),
        WeightCalls::default(),
    ));
    let e = post(&h.control, "/maintenance/on")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("409") && e.contains("no [bgp] section"), "{e}");
    h.shutdown.cancel();
}

fn in_maintenance(phase: crate::bgp::maintenance::Phase, left: Option<u64>) -> StatusReport {
    let mut report = canned_report();
    if let Some(bgp) = report.bgp.as_mut() {
        bgp.maintenance = crate::bgp::maintenance::MaintenanceStatus {
            on: true,
            phase,
            drain_left_ms: left,
        };
        bgp.peers[0].state = "Active".to_owned();
        bgp.peers[0].last_error = Some("Socket: Connection refused".to_owned());
    }
    report
}

/// A report with what the canned one lacks: a sweep, an address both wanted and announced,
/// label values to escape, and a few hundred backends.
pub(super) fn large_report() -> StatusReport {
    let mut report = canned_report();
    report.conn_sweep = Some(ConnSweepStatus {
        live_entries: 17,
        removed_entries: 3,
        took_ms: 2,
        secs_ago: 9,
    });
    report.vips[1].name = "we\"ird\\name\nhere".to_owned();
    if let Some(bgp) = &mut report.bgp {
        bgp.wanted.push("198.18.10.1".parse().unwrap());
    }
    for v in 0..5u32 {
        let mut vip = report.vips[0].clone();
        vip.name = format!("v{v}");
        vip.backends = (0..60)
            .map(|b| {
                let mut backend = backend(&format!("198.18.{v}.{b}"), v * 100 + b, u64::from(b));
                backend.admin_state = [AdminState::Active, AdminState::Drain][b as usize % 2];
                backend.last_check_latency_ms = (b % 3 != 0).then_some(f64::from(b) / 7.0);
                backend
            })
            .collect();
        report.vips.push(vip);
    }
    report
}

#[test]
fn maintenance_in_status_text_and_metrics() {
    use crate::bgp::maintenance::Phase;
    let normal = render_status(&canned_report());
    assert!(!normal.contains("maintenance"), "{normal}");
    let draining = render_status(&in_maintenance(Phase::Draining, Some(12_345)));
    assert!(
        draining.contains("  maintenance: draining, withdrawing in 12.3 s\n"),
        "{draining}"
    );
    assert!(
        draining.contains(
            "neighbor 198.18.0.1 (lb_peer_198_18_0_1): Active (Socket: Connection refused)"
        ),
        "{draining}"
    );
    let withdrawn = render_status(&in_maintenance(Phase::Withdrawn, None));
    assert!(
        withdrawn.contains("  maintenance: withdrawn\n"),
        "{withdrawn}"
    );

    let metrics = render_metrics(&in_maintenance(Phase::Draining, Some(1)));
    for line in [
        r#"lb_maintenance{phase="normal"} 0"#,
        r#"lb_maintenance{phase="draining"} 1"#,
        r#"lb_maintenance{phase="withdrawn"} 0"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line} in\n{metrics}"
        );
    }
    let normal = render_metrics(&canned_report());
    assert!(
        normal
            .lines()
            .any(|l| l == r#"lb_maintenance{phase="normal"} 1"#),
        "{normal}"
    );
    // The JSON carries the phase for scripts.
    let json = serde_json::to_value(in_maintenance(Phase::Withdrawn, None)).unwrap();
    assert_eq!(json["bgp"]["maintenance"]["phase"], "withdrawn");
}

/// Family blocks (HELP, TYPE, then sorted series), the process-wide lag histogram without
/// values (checkers of other tests move it between two renders).
fn families(text: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let mut blocks: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    for line in text.lines() {
        if line.starts_with("# HELP") || blocks.is_empty() {
            blocks.push((Vec::new(), Vec::new()));
        }
        let block = blocks.last_mut().unwrap();
        if line.starts_with('#') {
            block.0.push(line.to_owned());
        } else if line.starts_with("lb_health_check_schedule_lag_seconds") {
            block.1.push(line.rsplit_once(' ').unwrap().0.to_owned());
        } else {
            block.1.push(line.to_owned());
        }
    }
    for block in &mut blocks {
        block.1.sort();
    }
    blocks
}

/// The streamed body is the same text as the whole one.
#[tokio::test]
async fn streamed_body_is_the_whole_exposition() {
    let report = large_report();
    let body = super::stream::metrics_body(Arc::new(large_report), || {});
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    let streamed = String::from_utf8(bytes.to_vec()).unwrap();
    assert_eq!(families(&streamed), families(&render_metrics(&report)));
}

/// A body of many chunks reaches the CLI's client whole.
#[tokio::test]
async fn large_exposition_through_the_server() {
    let read = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = read.local_addr().unwrap();
    let listeners = Listeners {
        read,
        control: None,
        control_tcp: None,
    };
    let (tx, _rx) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let report = large_report();
    let reporter: Reporter = Arc::new(large_report);
    tokio::spawn(serve_with(
        listeners,
        tx,
        reporter,
        shutdown.clone(),
        Duration::from_secs(5),
        LIMITS,
    ));
    let body = fetch_metrics(addr).await.unwrap();
    assert_eq!(families(&body), families(&render_metrics(&report)));
    shutdown.cancel();
}
