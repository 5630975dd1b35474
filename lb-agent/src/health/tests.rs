use super::checker::{first_delay, jittered_interval, MIN_INTERVAL};
use super::*;
use crate::config::StatusSet;
use std::io::ErrorKind;
use std::net::Ipv4Addr;
use tokio::net::TcpListener;
use tokio::{net::TcpStream, sync::mpsc, task::JoinHandle};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

pub(super) fn spec(kind: CheckKind, target: SocketAddr) -> CheckSpec {
    CheckSpec {
        target,
        route: crate::health::Route::Direct,
        check: std::sync::Arc::new(CheckDef {
            kind,
            path: "/healthz".to_owned(),
            expect_status: StatusSet::one(200),
            expect_body: None,
            host: None,
            tls: None,
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(200),
            rise: 2,
            fall: 2,
        }),
    }
}

/// The definition of `s`, to change in a test.
pub(super) fn def(s: &mut CheckSpec) -> &mut CheckDef {
    std::sync::Arc::make_mut(&mut s.check)
}

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// A port nothing listens on: bind one, take its port, drop it.
async fn closed_port() -> SocketAddr {
    let (l, addr) = listener().await;
    drop(l);
    addr
}

/// Reads an HTTP request head (up to the blank line).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if stream.readable().await.is_err() {
            break;
        }
        match stream.try_read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(_) => break,
        }
    }
    String::from_utf8(buf).unwrap()
}

/// Writes all of `data` (best effort: stops on an error). tokio's `io-util` feature is not
/// enabled in this crate, hence no `AsyncWriteExt`.
async fn write_all(stream: &TcpStream, mut data: &[u8]) {
    while !data.is_empty() {
        if stream.writable().await.is_err() {
            return;
        }
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
    }
}

/// Accepts one connection, answers it with `response` and returns the request head.
fn serve_once(listener: TcpListener, response: &'static str) -> JoinHandle<String> {
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let head = read_head(&mut stream).await;
        write_all(&stream, response.as_bytes()).await;
        // Dropping the stream closes it (FIN: the request was read in full).
        drop(stream);
        head
    })
}

/// Answers every connection with `response` until aborted (aborting drops the listener).
fn serve_forever(listener: TcpListener, response: &'static str) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                read_head(&mut stream).await;
                write_all(&stream, response.as_bytes()).await;
                // Dropping the stream closes it (FIN: the request was read in full).
                drop(stream);
            });
        }
    })
}

const OK_200: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
const UNAVAILABLE_503: &str =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndown";

// ---- Hysteresis ----

#[test]
fn hysteresis_rises_after_rise_successes() {
    let mut h = Hysteresis::new(3, 2, Health::Down);
    assert_eq!(h.state(), Health::Down);
    assert_eq!(h.record(true), None);
    assert_eq!(h.record(true), None);
    assert_eq!(h.state(), Health::Down);
    assert_eq!(h.record(true), Some(Health::Up));
    assert_eq!(h.state(), Health::Up);
    // Further successes do not report another transition.
    assert_eq!(h.record(true), None);
    assert_eq!(h.state(), Health::Up);
}

#[test]
fn hysteresis_failure_resets_success_streak() {
    let mut h = Hysteresis::new(3, 2, Health::Down);
    assert_eq!(h.record(true), None);
    assert_eq!(h.record(true), None);
    assert_eq!(h.record(false), None);
    assert_eq!(h.record(true), None);
    assert_eq!(h.record(true), None);
    assert_eq!(h.state(), Health::Down);
    assert_eq!(h.record(true), Some(Health::Up));
}

#[test]
fn hysteresis_falls_after_fall_failures() {
    let mut h = Hysteresis::new(2, 3, Health::Up);
    assert_eq!(h.state(), Health::Up);
    assert_eq!(h.record(false), None);
    assert_eq!(h.record(false), None);
    // A success resets the failure streak.
    assert_eq!(h.record(true), None);
    assert_eq!(h.record(false), None);
    assert_eq!(h.record(false), None);
    assert_eq!(h.state(), Health::Up);
    assert_eq!(h.record(false), Some(Health::Down));
    assert_eq!(h.state(), Health::Down);
    assert_eq!(h.record(false), None);
}

#[test]
fn hysteresis_initial_state_is_honoured() {
    // Up stays up on successes; down stays down on failures.
    let mut up = Hysteresis::new(2, 2, Health::Up);
    for _ in 0..5 {
        assert_eq!(up.record(true), None);
    }
    assert_eq!(up.state(), Health::Up);
    let mut down = Hysteresis::new(2, 2, Health::Down);
    for _ in 0..5 {
        assert_eq!(down.record(false), None);
    }
    assert_eq!(down.state(), Health::Down);
}

#[test]
fn hysteresis_rise_one_fall_one_flips_on_every_change() {
    let mut h = Hysteresis::new(1, 1, Health::Down);
    assert_eq!(h.record(true), Some(Health::Up));
    assert_eq!(h.record(true), None);
    assert_eq!(h.record(false), Some(Health::Down));
    assert_eq!(h.record(false), None);
    assert_eq!(h.record(true), Some(Health::Up));
    // 0 behaves as 1.
    let mut z = Hysteresis::new(0, 0, Health::Up);
    assert_eq!(z.record(false), Some(Health::Down));
    assert_eq!(z.record(true), Some(Health::Up));
}

#[test]
fn health_serializes_lowercase() {
    assert_eq!(serde_json::to_string(&Health::Up).unwrap(), "\"up\"");
    assert_eq!(serde_json::to_string(&Health::Down).unwrap(), "\"down\"");
}

// ---- check_once: TCP ----

#[tokio::test]
async fn tcp_check_succeeds_against_listener() {
    let (_l, addr) = listener().await;
    let latency = check_once(&spec(CheckKind::Tcp, addr)).await.unwrap();
    assert!(latency < Duration::from_millis(200), "{latency:?}");
}

#[tokio::test]
async fn tcp_check_fails_against_closed_port() {
    let addr = closed_port().await;
    let err = check_once(&spec(CheckKind::Tcp, addr)).await.unwrap_err();
    assert!(err.starts_with("connect: "), "{err}");
    assert!(err.to_lowercase().contains("refused"), "{err}");
}

#[tokio::test]
async fn none_check_succeeds_without_probing() {
    let addr = closed_port().await;
    assert_eq!(
        check_once(&spec(CheckKind::None, addr)).await,
        Ok(Duration::ZERO)
    );
}

// ---- check_once: HTTP ----

#[tokio::test]
async fn http_check_200_is_ok_and_sends_path_host_close() {
    let (l, addr) = listener().await;
    let server = serve_once(l, OK_200);
    let result = check_once(&spec(CheckKind::Http, addr)).await;
    assert!(result.is_ok(), "{result:?}");
    let head = server.await.unwrap();
    let request_line = head.lines().next().unwrap();
    assert_eq!(request_line, "GET /healthz HTTP/1.1");
    let lower = head.to_lowercase();
    assert!(lower.contains(&format!("\r\nhost: {addr}\r\n")), "{head}");
    assert!(lower.contains("\r\nconnection: close\r\n"), "{head}");
}

#[tokio::test]
async fn http_check_503_is_err() {
    let (l, addr) = listener().await;
    let server = serve_once(l, UNAVAILABLE_503);
    let result = check_once(&spec(CheckKind::Http, addr)).await;
    assert_eq!(result, Err("HTTP 503".to_owned()));
    let head = server.await.unwrap();
    assert!(head.starts_with("GET /healthz HTTP/1.1\r\n"), "{head}");
}

#[tokio::test]
async fn http_check_honours_expect_status() {
    let (l, addr) = listener().await;
    let server = serve_once(l, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
    let mut s = spec(CheckKind::Http, addr);
    def(&mut s).expect_status = StatusSet::one(204);
    def(&mut s).path = "/status?full=1".to_owned();
    assert!(check_once(&s).await.is_ok());
    let head = server.await.unwrap();
    assert!(
        head.starts_with("GET /status?full=1 HTTP/1.1\r\n"),
        "{head}"
    );

    // 200 is a failure when 204 is expected.
    let (l, addr) = listener().await;
    let _server = serve_once(l, OK_200);
    s.target = addr;
    assert_eq!(check_once(&s).await, Err("HTTP 200".to_owned()));
}

#[tokio::test]
async fn http_check_times_out_on_silent_server() {
    let (l, addr) = listener().await;
    let request = tokio::spawn(async move {
        let (mut stream, _) = l.accept().await.unwrap();
        let head = read_head(&mut stream).await;
        // Never answer; keep the connection open past the check's timeout.
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(stream);
        head
    });
    let s = spec(CheckKind::Http, addr);
    let start = Instant::now();
    let err = check_once(&s).await.unwrap_err();
    let took = start.elapsed();
    assert_eq!(err, "timeout after 200 ms");
    assert!(took >= Duration::from_millis(190), "{took:?}");
    assert!(took < Duration::from_millis(1000), "{took:?}");
    request.abort();
}

#[tokio::test]
async fn http_check_fails_against_closed_port() {
    let addr = closed_port().await;
    let err = check_once(&spec(CheckKind::Http, addr)).await.unwrap_err();
    assert!(err.starts_with("connect: "), "{err}");
    assert!(err.to_lowercase().contains("refused"), "{err}");
}

#[tokio::test]
async fn http_check_fails_when_server_closes_without_answer() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let (mut stream, _) = l.accept().await.unwrap();
        read_head(&mut stream).await;
        drop(stream);
    });
    let err = check_once(&spec(CheckKind::Http, addr)).await.unwrap_err();
    assert!(err.starts_with("request: "), "{err}");
    server.await.unwrap();
}

// ---- spawn_checker ----

/// Receives the next report, failing the test if none comes within 5 s.
async fn next_report(rx: &mut mpsc::Receiver<CheckReport>) -> CheckReport {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no report within 5 s")
        .expect("checker hung up")
}

#[tokio::test]
async fn checker_reports_up_then_down_and_stops_on_abort() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (l, addr) = listener().await;
        let server = serve_forever(l, OK_200);
        let (tx, mut rx) = mpsc::channel(16);
        let s = spec(CheckKind::Http, addr);
        let handle = spawn_checker(7, LOCALHOST, s, Health::Down, tx);

        // rise 2: first success no transition, second success -> Up.
        let r1 = next_report(&mut rx).await;
        assert_eq!(r1.probe, 7);
        assert_eq!(r1.backend, LOCALHOST);
        assert!(r1.ok, "{r1:?}");
        assert_eq!(r1.detail, "HTTP 200");
        assert_eq!(r1.transition, None);
        let r2 = next_report(&mut rx).await;
        assert!(r2.ok, "{r2:?}");
        assert_eq!(r2.transition, Some(Health::Up));
        assert!(r2.finished_at > r1.finished_at);
        // Interval 50 ms ± 10%, measured between the ends of two fast checks.
        let gap = r2.finished_at - r1.finished_at;
        assert!(gap >= Duration::from_millis(44), "{gap:?}");

        // Shut the server down: fall 2 -> Down on the second consecutive failure.
        server.abort();
        let _ = server.await;
        let mut failures = 0;
        let down = loop {
            let r = next_report(&mut rx).await;
            if r.ok {
                // A check that raced the shutdown; it must not transition.
                assert_eq!(r.transition, None, "{r:?}");
                failures = 0;
                continue;
            }
            failures += 1;
            // (A check racing the shutdown may see a reset instead; the later ones are
            // refused.)
            if r.transition.is_some() {
                assert!(r.detail.contains("refused"), "{r:?}");
                break (failures, r);
            }
        };
        assert_eq!(down.0, 2);
        assert_eq!(down.1.transition, Some(Health::Down));

        handle.abort();
        let end = tokio::time::timeout(Duration::from_secs(2), handle)
            .await
            .expect("checker did not stop on abort");
        assert!(end.is_err_and(|e| e.is_cancelled()));
        // The task dropped its sender: the channel drains and closes.
        while let Some(r) = rx.recv().await {
            assert_eq!(r.transition, None);
        }
    })
    .await
    .expect("test took more than 10 s");
}

/// Probes recorded by the process-wide lag histogram so far.
fn lag_count() -> u64 {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register("lag", "lag", schedule_lag());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("lag_count "))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn checker_records_schedule_lag_of_every_probe() {
    let (_l, addr) = listener().await;
    let (tx, mut rx) = mpsc::channel(16);
    let before = lag_count();
    let handle = spawn_checker(7, LOCALHOST, spec(CheckKind::Tcp, addr), Health::Up, tx);
    for _ in 0..3 {
        next_report(&mut rx).await;
    }
    handle.abort();
    // Other tests' checkers share the histogram: at least these three probes are in it.
    assert!(lag_count() >= before + 3);
}

#[tokio::test]
async fn checker_exits_when_receiver_is_gone() {
    let (_l, addr) = listener().await;
    let (tx, rx) = mpsc::channel(1);
    let mut s = spec(CheckKind::Tcp, addr);
    def(&mut s).interval = Duration::from_secs(3600);
    let handle = spawn_checker(7, LOCALHOST, s, Health::Up, tx);
    drop(rx);
    // Even while sleeping a long first delay, it notices the closed channel.
    tokio::time::timeout(Duration::from_secs(2), handle)
        .await
        .expect("checker did not stop without a receiver")
        .unwrap();
}

#[tokio::test]
async fn checker_exits_when_send_fails() {
    let (l, addr) = listener().await;
    let _server = serve_forever(l, OK_200);
    let (tx, mut rx) = mpsc::channel(1);
    let handle = spawn_checker(7, LOCALHOST, spec(CheckKind::Http, addr), Health::Up, tx);
    let r = next_report(&mut rx).await;
    assert!(r.ok, "{r:?}");
    drop(rx);
    tokio::time::timeout(Duration::from_secs(2), handle)
        .await
        .expect("checker did not stop without a receiver")
        .unwrap();
}

#[tokio::test]
async fn checker_with_kind_none_reports_nothing() {
    let addr = closed_port().await;
    let (tx, mut rx) = mpsc::channel(1);
    let handle = spawn_checker(7, LOCALHOST, spec(CheckKind::None, addr), Health::Up, tx);
    tokio::time::timeout(Duration::from_secs(2), handle)
        .await
        .expect("kind=none checker should end at once")
        .unwrap();
    assert!(rx.recv().await.is_none());
}

#[tokio::test]
async fn checker_stops_on_abort_during_first_delay() {
    let (_l, addr) = listener().await;
    let (tx, mut rx) = mpsc::channel(1);
    let mut s = spec(CheckKind::Tcp, addr);
    def(&mut s).interval = Duration::from_secs(3600);
    let handle = spawn_checker(7, LOCALHOST, s, Health::Up, tx);
    handle.abort();
    let end = tokio::time::timeout(Duration::from_secs(2), handle)
        .await
        .expect("checker did not stop on abort");
    assert!(end.is_err_and(|e| e.is_cancelled()));
    assert!(rx.recv().await.is_none());
}

#[test]
fn jitter_stays_within_ten_percent() {
    let interval = Duration::from_millis(1000);
    for _ in 0..1000 {
        let d = jittered_interval(interval);
        assert!(d >= Duration::from_millis(900) && d <= Duration::from_millis(1100));
        assert!(first_delay(interval) < interval);
    }
    assert_eq!(jittered_interval(Duration::ZERO), MIN_INTERVAL);
    assert_eq!(first_delay(Duration::ZERO), Duration::ZERO);
}

// ---- slow start ----

#[test]
fn slow_start_ramp() {
    let window = Duration::from_secs(60);
    // Start: a tenth of full.
    assert_eq!(slow_start_weight(100, Duration::ZERO, window), 10);
    // Middle: halfway between start and full.
    assert_eq!(slow_start_weight(100, Duration::from_secs(30), window), 55);
    // End and beyond.
    assert_eq!(slow_start_weight(100, window, window), 100);
    assert_eq!(
        slow_start_weight(100, Duration::from_secs(3600), window),
        100
    );
    // Just before the end, still below full.
    assert!(slow_start_weight(100, window - Duration::from_millis(1), window) < 100);
    // Small weights start at 1.
    assert_eq!(slow_start_weight(5, Duration::ZERO, window), 1);
    assert_eq!(slow_start_weight(1, Duration::ZERO, window), 1);
    // Huge weights do not overflow.
    assert_eq!(
        slow_start_weight(u32::MAX, Duration::ZERO, window),
        u32::MAX / 10
    );
    assert!(slow_start_weight(u32::MAX, Duration::from_secs(59), window) < u32::MAX);
}

#[test]
fn slow_start_zero_window_and_zero_weight() {
    assert_eq!(slow_start_weight(100, Duration::ZERO, Duration::ZERO), 100);
    assert_eq!(
        slow_start_weight(100, Duration::from_secs(5), Duration::ZERO),
        100
    );
    assert_eq!(
        slow_start_weight(0, Duration::ZERO, Duration::from_secs(60)),
        0
    );
    assert_eq!(
        slow_start_weight(0, Duration::from_secs(90), Duration::from_secs(60)),
        0
    );
    assert_eq!(slow_start_weight(0, Duration::ZERO, Duration::ZERO), 0);
}

#[test]
fn slow_start_is_monotonic() {
    let window = Duration::from_secs(10);
    for full in [1u32, 2, 7, 10, 100, 1000, 65535] {
        let mut prev = 0;
        for ms in (0..=11_000).step_by(50) {
            let w = slow_start_weight(full, Duration::from_millis(ms), window);
            assert!(w >= prev, "full={full} ms={ms}: {w} < {prev}");
            assert!(w >= 1 && w <= full, "full={full} ms={ms}: {w}");
            prev = w;
        }
        assert_eq!(prev, full);
    }
}

/// An idle checker is its task: at 10,000 probes each 128 bytes of it (tokio rounds a task up to
/// 128) cost 1.25 MiB. Under ~400 bytes its task takes 512.
#[test]
fn an_idle_checker_stays_small() {
    let (tx, _rx) = mpsc::channel::<CheckReport>(1);
    let s = spec(CheckKind::Tcp, "127.0.0.1:1".parse().unwrap());
    let checker = super::checker::run_checker_for_size(7, LOCALHOST, s, Health::Up, tx);
    let size = std::mem::size_of_val(&checker);
    assert!(size <= 400, "checker future {size} bytes");
}
