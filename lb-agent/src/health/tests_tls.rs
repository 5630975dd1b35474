//! TLS and HTTPS checks against real rustls servers on loopback, and the HTTP options (status
//! sets, body substring, Host header) they share with plain HTTP.

use super::tests::def;
use super::*;
use crate::{
    config::parse_ca_pem,
    testpki::{self_signed, Leaf, Pki},
};
use std::{net::Ipv4Addr, sync::Arc};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    task::JoinHandle,
};
use tokio_rustls::TlsAcceptor;

const NAME: &str = "backend.test";

fn spec(kind: CheckKind, target: SocketAddr) -> CheckSpec {
    let mut s = super::tests::spec(kind, target);
    let d = def(&mut s);
    // Generous: a TLS handshake on a loaded 2-core box; no test waits for it to expire.
    d.timeout = Duration::from_secs(5);
    d.rise = 1;
    d.fall = 1;
    s
}

fn tls_spec(kind: CheckKind, target: SocketAddr, pki: &Pki, name: &str) -> CheckSpec {
    let mut s = spec(kind, target);
    def(&mut s).tls = Some(TlsSpec {
        server_name: Some(name.to_owned()),
        verify: true,
        ca: parse_ca_pem(pki.ca_pem().as_bytes()).unwrap(),
    });
    s
}

fn acceptor(leaf: Leaf) -> TlsAcceptor {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(leaf.chain, leaf.key)
    .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// Reads a request head, answers `response`, returns the head (empty when nothing came).
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, response: Vec<u8>) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&head).into_owned(),
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let _ = s.write_all(&response).await;
    let _ = s.shutdown().await;
    String::from_utf8_lossy(&head).into_owned()
}

/// Serves one connection: over TLS with `leaf` when given, else plain. Returns the request
/// head, or the server-side handshake error as `Err`.
async fn serve_one(
    leaf: Option<Leaf>,
    response: Vec<u8>,
) -> (SocketAddr, JoinHandle<Result<String, String>>) {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    let acceptor = leaf.map(acceptor);
    let task = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        match acceptor {
            Some(a) => match a.accept(tcp).await {
                Ok(tls) => Ok(answer(tls, response).await),
                Err(e) => Err(e.to_string()),
            },
            None => Ok(answer(tcp, response).await),
        }
    });
    (addr, task)
}

fn http(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn tls_handshake_with_the_ca_and_the_name_passes() {
    let pki = Pki::new();
    let (addr, server) = serve_one(Some(pki.leaf(&[NAME])), Vec::new()).await;
    let prober = Prober::new(tls_spec(CheckKind::Tls, addr, &pki, NAME));
    let passed = prober.check().await.unwrap();
    assert!(passed.detail.ends_with("handshake done"), "{passed:?}");
    // The server saw the handshake and no request. (Its last read may meet the probe's reset
    // before the client's Finished: either way no request head.)
    let seen = server.await.unwrap();
    assert!(
        matches!(&seen, Ok(h) if h.is_empty()) || seen.as_ref().is_err_and(|e| e.contains("reset")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_fails_with_verify_and_passes_without() {
    let pki = Pki::new();
    let (addr, _server) = serve_one(Some(pki.leaf(&["other.test"])), Vec::new()).await;
    let err = check_once(&tls_spec(CheckKind::Tls, addr, &pki, NAME))
        .await
        .unwrap_err();
    assert!(err.starts_with("TLS handshake: "), "{err}");
    assert!(err.contains("not valid for name"), "{err}");

    let (addr, server) = serve_one(Some(pki.leaf(&["other.test"])), Vec::new()).await;
    let mut s = tls_spec(CheckKind::Tls, addr, &pki, NAME);
    def(&mut s).tls.as_mut().unwrap().verify = false;
    assert_eq!(check_once(&s).await.map(|_| ()), Ok(()));
    drop(server);
}

#[tokio::test]
async fn an_untrusted_or_self_signed_certificate_fails_with_verify_and_passes_without() {
    let trusted = Pki::new();
    for leaf in [Pki::new().leaf(&[NAME]), self_signed(&[NAME])] {
        let (addr, _server) = serve_one(Some(leaf), Vec::new()).await;
        let err = check_once(&tls_spec(CheckKind::Tls, addr, &trusted, NAME))
            .await
            .unwrap_err();
        assert!(err.contains("invalid peer certificate"), "{err}");
        assert!(err.contains("UnknownIssuer"), "{err}");
    }
    let (addr, server) = serve_one(Some(self_signed(&[NAME])), http("200 OK", "")).await;
    let mut s = tls_spec(CheckKind::Https, addr, &trusted, NAME);
    def(&mut s).tls = Some(TlsSpec {
        server_name: None,
        verify: false,
        ca: Default::default(),
    });
    assert_eq!(check_once(&s).await.map(|_| ()), Ok(()));
    assert!(server
        .await
        .unwrap()
        .unwrap()
        .starts_with("GET /healthz HTTP/1.1\r\n"));
}

#[tokio::test]
async fn a_plain_server_fails_the_tls_handshake() {
    // A plain HTTP server answers the ClientHello with an error page.
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    let _server = tokio::spawn(async move {
        let (mut tcp, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 512];
        let _ = tcp.read(&mut buf).await;
        let _ = tcp.write_all(&http("400 Bad Request", "")).await;
        let _ = tcp.shutdown().await;
    });
    let pki = Pki::new();
    let err = check_once(&tls_spec(CheckKind::Https, addr, &pki, NAME))
        .await
        .unwrap_err();
    assert!(err.starts_with("TLS handshake: "), "{err}");
}

#[tokio::test]
async fn https_matches_status_ranges_and_lists() {
    let pki = Pki::new();
    for (status, set, ok) in [
        ("302 Found", "200-399", true),
        ("399 Odd", "200-399", true),
        ("404 Not Found", "200-399", false),
        ("204 No Content", "[200, 204]", true),
        ("302 Found", "[200, 204]", false),
    ] {
        let (addr, server) = serve_one(Some(pki.leaf(&[NAME])), http(status, "")).await;
        let mut s = tls_spec(CheckKind::Https, addr, &pki, NAME);
        def(&mut s).expect_status = toml::from_str::<toml::Table>(&format!("s = {}", quote(set)))
            .map(|t| t["s"].clone().try_into().unwrap())
            .unwrap();
        let result = Prober::new(s).check().await;
        let code = &status[..3];
        if ok {
            assert_eq!(
                result.map(|p| p.detail),
                Ok(format!("HTTP {code}")),
                "{status} in {set}"
            );
        } else {
            assert_eq!(result, Err(format!("HTTP {code}")), "{status} in {set}");
        }
        assert!(server.await.unwrap().is_ok());
    }
}

fn quote(set: &str) -> String {
    if set.starts_with('[') {
        set.to_owned()
    } else {
        format!("\"{set}\"")
    }
}

#[tokio::test]
async fn https_body_substring_present_and_absent() {
    let pki = Pki::new();
    let (addr, _s) = serve_one(Some(pki.leaf(&[NAME])), http("200 OK", "status: ready\n")).await;
    let mut s = tls_spec(CheckKind::Https, addr, &pki, NAME);
    def(&mut s).expect_body = Some("ready".to_owned());
    let passed = Prober::new(s.clone()).check().await.unwrap();
    assert_eq!(passed.detail, "HTTP 200, body has \"ready\"");

    let (addr, _s) = serve_one(
        Some(pki.leaf(&[NAME])),
        http("200 OK", "status: draining\n"),
    )
    .await;
    s.target = addr;
    assert_eq!(
        Prober::new(s).check().await,
        Err("HTTP 200 but the body (17 bytes) lacks \"ready\"".to_owned())
    );
}

#[tokio::test]
async fn the_body_is_searched_in_its_first_64_kib_only() {
    // Over plain HTTP: the same code path as HTTPS after the handshake.
    let mut body = "x".repeat(MAX_BODY - 2);
    body.push_str("ready"); // straddles the limit: not found
    let (addr, _s) = serve_one(None, http("200 OK", &body)).await;
    let mut s = spec(CheckKind::Http, addr);
    def(&mut s).expect_body = Some("ready".to_owned());
    assert_eq!(
        Prober::new(s.clone()).check().await,
        Err(format!(
            "HTTP 200 but the body's first {MAX_BODY} bytes lack \"ready\""
        ))
    );
    let mut body = "x".repeat(MAX_BODY - 5);
    body.push_str("ready");
    let (addr, _s) = serve_one(None, http("200 OK", &body)).await;
    s.target = addr;
    assert!(Prober::new(s).check().await.is_ok());
}

#[tokio::test]
async fn the_host_header_is_sent_and_is_the_default_sni() {
    let pki = Pki::new();
    let (addr, server) = serve_one(Some(pki.leaf(&["api.test"])), http("200 OK", "")).await;
    let mut s = tls_spec(CheckKind::Https, addr, &pki, "api.test");
    def(&mut s).host = Some("api.test:8443".to_owned());
    assert!(check_once(&s).await.is_ok());
    let head = server.await.unwrap().unwrap().to_lowercase();
    assert!(head.contains("\r\nhost: api.test:8443\r\n"), "{head}");

    // Without `host`, the backend's address and port, as before.
    let (addr, server) = serve_one(None, http("200 OK", "")).await;
    assert!(check_once(&spec(CheckKind::Http, addr)).await.is_ok());
    let head = server.await.unwrap().unwrap().to_lowercase();
    assert!(head.contains(&format!("\r\nhost: {addr}\r\n")), "{head}");
}

#[tokio::test]
async fn verify_without_ca_certificates_fails_every_probe_with_the_reason() {
    let (addr, _s) = serve_one(Some(self_signed(&[NAME])), Vec::new()).await;
    let mut s = spec(CheckKind::Tls, addr);
    def(&mut s).tls = Some(TlsSpec {
        server_name: Some(NAME.to_owned()),
        verify: true,
        ca: Default::default(),
    });
    assert_eq!(
        check_once(&s).await,
        Err("TLS setup: no CA certificate loaded (ca_file)".to_owned())
    );
}
