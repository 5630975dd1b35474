//! The listeners' rules: read-only routes, the token and owner checks, the connection cap,
//! the header/idle timeout, the control socket file, and token files.

use super::{
    client::{request, Target},
    listen::{bearer, check_access, Access, Limits, Peer},
    tests::{start, start_with, TempDir, TOKEN},
    *,
};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use std::{
    io::{Read as _, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::Path,
    time::Duration,
};
use tokio::sync::mpsc;

const OK: &str = "reloaded";

fn tcp(addr: std::net::SocketAddr, token: &str) -> Control {
    Control::Tcp {
        addr,
        token: Token::parse(token).unwrap(),
    }
}

#[tokio::test]
async fn read_only_listener_answers_get_only_and_changes_nothing() {
    let h = start(Ok(OK.to_owned())).await;
    for path in ["/metrics", "/status"] {
        for method in [
            hyper::Method::POST,
            hyper::Method::PUT,
            hyper::Method::DELETE,
        ] {
            let (status, _) = request(Target::Read(h.addr), method.clone(), path)
                .await
                .unwrap();
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        }
    }
    for (method, path) in [
        (hyper::Method::POST, "/reload"),
        (hyper::Method::POST, "/vips/web/backends/198.18.1.1/drain"),
        (hyper::Method::GET, "/reload"),
        (hyper::Method::GET, "/"),
    ] {
        let (status, _) = request(Target::Read(h.addr), method.clone(), path)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
    }
    assert!(h.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn tcp_control_needs_the_token() {
    let h = start(Ok(OK.to_owned())).await;
    let drain = "/vips/web/backends/198.18.1.1/drain";
    // No Authorization header: a plain request to the control port.
    let (status, body) = request(Target::Read(h.control_tcp), hyper::Method::POST, drain)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("Bearer"), "{body}");
    for wrong in [
        "0123456789abcdef0123456789abcdee",
        "0123456789abcdef",
        "0123456789abcdef0123456789abcdef0",
    ] {
        let e = post(&tcp(h.control_tcp, wrong), drain).await.unwrap_err();
        assert!(format!("{e:#}").contains("401"), "{e:#}");
    }
    assert!(
        h.calls.lock().unwrap().is_empty(),
        "a refused request was applied"
    );
    let answer = post(&tcp(h.control_tcp, TOKEN), drain).await.unwrap();
    assert!(answer.contains("drain"), "{answer}");
    assert_eq!(
        post(&tcp(h.control_tcp, TOKEN), "/reload").await.unwrap(),
        OK
    );
    assert_eq!(h.calls.lock().unwrap().len(), 1);
}

#[test]
fn access_rules() {
    let token = Token::parse(TOKEN).unwrap();
    let with = |value: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    };
    let tcp_peer = Peer::Tcp("198.18.0.1:4000".parse().unwrap());
    let access = Access::Token(token);
    assert_eq!(
        check_access(&access, &tcp_peer, &with(&format!("Bearer {TOKEN}"))),
        None
    );
    assert_eq!(
        check_access(&access, &tcp_peer, &with(&format!("bearer  {TOKEN} "))),
        None
    );
    for bad in [
        format!("Basic {TOKEN}"),
        format!("Bearer{TOKEN}"),
        "Bearer ".to_owned(),
        format!("Bearer {TOKEN}x"),
    ] {
        let refused = check_access(&access, &tcp_peer, &with(&bad));
        assert_eq!(
            refused.map(|r| r.0),
            Some(StatusCode::UNAUTHORIZED),
            "{bad}"
        );
    }
    assert_eq!(
        check_access(&access, &tcp_peer, &HeaderMap::new()).map(|r| r.0),
        Some(StatusCode::UNAUTHORIZED)
    );
    let owner = Access::Owner { uid: 1000 };
    let unix = |uid| Peer::Unix { uid, pid: Some(42) };
    assert_eq!(check_access(&owner, &unix(0), &HeaderMap::new()), None);
    assert_eq!(check_access(&owner, &unix(1000), &HeaderMap::new()), None);
    for peer in [unix(65534), tcp_peer] {
        let refused = check_access(&owner, &peer, &HeaderMap::new());
        assert_eq!(refused.map(|r| r.0), Some(StatusCode::FORBIDDEN), "{peer}");
    }
    assert_eq!(unix(7).to_string(), "unix uid 7 pid 42");
    assert_eq!(bearer(b"BEARER abc"), Some(&b"abc"[..]));
    assert_eq!(bearer(b"Bear"), None);
}

/// Reads from `stream` until EOF or error (the server closed it); false if it is still open
/// after `within`.
fn closed_within(stream: &mut std::net::TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

async fn quiet_harness(limits: Limits) -> tests::Harness {
    let (tx, rx) = mpsc::channel(8);
    drop(rx);
    start_with(tx, Duration::from_secs(5), limits).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let limits = Limits {
        max_conns: 4,
        header_timeout: Duration::from_secs(600),
        max_age: Duration::from_secs(600),
    };
    let h = quiet_harness(limits).await;
    let addr = h.addr;
    tokio::task::spawn_blocking(move || {
        let mut idle: Vec<_> = (0..4)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        // Each of these is accepted and closed: the cap holds the fifth and later ones off.
        for _ in 0..3 {
            let mut extra = std::net::TcpStream::connect(addr).unwrap();
            assert!(closed_within(&mut extra, Duration::from_secs(10)));
        }
        // The idle ones are still served.
        idle[0]
            .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        idle[0].read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        drop(idle);
    })
    .await
    .unwrap();
    // Once they are gone, new clients get in again (slots are freed as the server notices).
    let mut last = None;
    for _ in 0..100 {
        match fetch_status(addr).await {
            Ok(_) => {
                last = None;
                break;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(last.is_none(), "no slot came free: {last:?}");
    h.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed_after_the_header_timeout() {
    let limits = Limits {
        max_conns: 8,
        header_timeout: Duration::from_millis(300),
        max_age: Duration::from_secs(600),
    };
    let h = quiet_harness(limits).await;
    let addr = h.addr;
    tokio::task::spawn_blocking(move || {
        // Silent from the start.
        let mut silent = std::net::TcpStream::connect(addr).unwrap();
        assert!(closed_within(&mut silent, Duration::from_secs(10)));
        // Half a request line, then nothing.
        let mut slow = std::net::TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET /sta").unwrap();
        assert!(closed_within(&mut slow, Duration::from_secs(10)));
        // Idle after a keep-alive exchange: the answer, then the close.
        let mut kept = std::net::TcpStream::connect(addr).unwrap();
        kept.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert!(closed_within(&mut kept, Duration::from_secs(10)));
    })
    .await
    .unwrap();
    h.shutdown.cancel();
}

#[tokio::test]
async fn control_socket_is_0600_and_only_a_stale_one_is_replaced() {
    let dir = TempDir::new("socket");
    // A parent that does not exist yet is created 0755.
    let path = dir.0.join("run").join("admin.sock");
    let socket = ControlSocket::bind(&path).await.unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o755);
    // Someone answers on it: a second bind is refused and the file stays.
    let e = format!("{:#}", ControlSocket::bind(&path).await.unwrap_err());
    assert!(e.contains("another process answers"), "{e}");
    assert!(e.contains("agent.control_socket"), "{e}");
    assert!(path.exists());
    // A crashed agent's socket (nobody listening) is replaced.
    drop(socket);
    assert!(path.exists(), "the test needs the stale file");
    let again = ControlSocket::bind(&path).await.unwrap();
    assert_eq!(mode(&path), 0o600);
    drop(again);
    // Anything that is not a socket is left alone.
    let file = dir.0.join("config.toml");
    std::fs::write(&file, "keep me").unwrap();
    let e = format!("{:#}", ControlSocket::bind(&file).await.unwrap_err());
    assert!(e.contains("is not a socket"), "{e}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

fn token_file(dir: &TempDir, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
    let path = dir.0.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn token_files_are_checked() {
    let dir = TempDir::new("tokens");
    let good = token_file(&dir, "good", &format!("{TOKEN}\n"), 0o600);
    check_token_file(&good).unwrap();
    let token = Token::from_file(&good).unwrap();
    assert!(token.matches(TOKEN.as_bytes()));
    assert!(!token.matches(b"0123456789abcdef0123456789abcdeF"));
    assert_eq!(format!("{token:?}"), "Token(***)");
    let read_only = token_file(&dir, "ro", TOKEN, 0o400);
    Token::from_file(&read_only).unwrap();
    for (name, mode, shown) in [
        ("world", 0o644, "mode 0644"),
        ("group", 0o640, "mode 0640"),
        ("gwrite", 0o620, "mode 0620"),
        ("other", 0o604, "mode 0604"),
    ] {
        let path = token_file(&dir, name, TOKEN, mode);
        for e in [
            check_token_file(&path).unwrap_err(),
            Token::from_file(&path).unwrap_err(),
        ] {
            let e = format!("{e:#}");
            assert!(e.contains(shown) && e.contains("chmod 600"), "{e}");
            assert!(e.contains(&path.display().to_string()), "{e}");
        }
    }
    for (name, text, why) in [
        ("empty", "\n", "empty"),
        ("short", "abc", "fewer than 16"),
        (
            "spaces",
            "0123456789 abcdef0123",
            "printable ASCII without spaces",
        ),
        (
            "lines",
            "0123456789abcdef\n0123456789abcdef",
            "printable ASCII",
        ),
    ] {
        let path = token_file(&dir, name, text, 0o600);
        let e = format!("{:#}", Token::from_file(&path).unwrap_err());
        assert!(e.contains(why) && e.contains(name), "{e}");
    }
    let big = token_file(&dir, "big", &"a".repeat(5000), 0o600);
    assert!(format!("{:#}", check_token_file(&big).unwrap_err()).contains("5000 bytes"));
    let missing = dir.0.join("missing");
    let e = format!("{:#}", check_token_file(&missing).unwrap_err());
    assert!(e.contains("openssl rand") && e.contains("missing"), "{e}");
    let e = format!("{:#}", check_token_file(&dir.0).unwrap_err());
    assert!(e.contains("not a regular file"), "{e}");
}
