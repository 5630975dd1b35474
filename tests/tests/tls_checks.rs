//! TLS and HTTPS checks through the tunnel: `openssl s_server -www` on a backend (port 8443,
//! a certificate for backend.test signed by a CA made here), checked at the VIP with four
//! definitions. A verified handshake with the right name and an HTTPS GET whose body holds the
//! expected text keep the backend up; a name the certificate lacks and a body without the text
//! take it down, each with its reason. Every probe went through `tc_probe_encap`.

use anyhow::{ensure, Context, Result};
use lb_agent::admin::{BackendHealth, StatusReport};
use lb_tests::{
    agentproc::{self, Agent},
    netns::command,
    topo::{backend_v4, Topology, VIP_V4},
};
use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const TLS_PORT: u16 = 8443;

/// The s_server process, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(dir: &Path, args: &str) -> Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args.split_whitespace())
        .output()
        .context("running openssl (apt-get install openssl)")?;
    ensure!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// ca.pem, and leaf.pem / leaf.key for backend.test signed by it.
fn make_pki(dir: &Path) -> Result<()> {
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    openssl(
        dir,
        &format!("req -x509 {ec} -subj /CN=lbe-test-ca -keyout ca.key -out ca.pem -days 2"),
    )?;
    openssl(
        dir,
        &format!("req {ec} -subj /CN=backend.test -keyout leaf.key -out leaf.csr"),
    )?;
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:backend.test\nbasicConstraints=CA:FALSE\n",
    )?;
    openssl(
        dir,
        "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
         -out leaf.pem -extfile leaf.ext",
    )
}

fn config(topo: &Topology, ca: &Path) -> String {
    let mut text = agentproc::agent_section(topo, 0, 8);
    let ca = ca.display();
    let checks = [
        (
            "tls-ok",
            format!("kind = \"tls\"\nsni = \"backend.test\"\nca_file = \"{ca}\""),
        ),
        (
            "tls-name",
            format!("kind = \"tls\"\nsni = \"other.test\"\nca_file = \"{ca}\""),
        ),
        (
            "https-ok",
            "kind = \"https\"\nverify = false\nexpect_status = \"200-299\"\n\
             expect_body = \"Ciphers supported\""
                .to_string(),
        ),
        (
            "https-body",
            "kind = \"https\"\nverify = false\nexpect_body = \"no such text\"".to_string(),
        ),
    ];
    for (i, (name, check)) in checks.iter().enumerate() {
        text.push_str(&format!(
            "\n[[vip]]\nname = \"{name}\"\naddress = \"{VIP_V4}\"\nport = {}\nprotocol = \"tcp\"\n\
             [vip.health_check]\n{check}\nport = {TLS_PORT}\ninterval_ms = 300\n\
             timeout_ms = 300\nrise = 1\nfall = 2\n[[vip.backend]]\naddress = \"{}\"\n",
            443 + i,
            backend_v4(0)
        ));
    }
    text
}

fn backend_of<'a>(s: &'a StatusReport, vip: &str) -> Result<&'a lb_agent::admin::BackendStatus> {
    s.vips
        .iter()
        .find(|v| v.name == vip)
        .and_then(|v| v.backends.first())
        .with_context(|| format!("{vip} missing"))
}

#[test]
fn tls_and_https_checks_go_through_the_tunnel_and_judge_name_and_body() -> Result<()> {
    let topo = Topology::build("tl", 1)?;
    let dir = std::env::temp_dir().join(&topo.prefix);
    std::fs::create_dir_all(&dir)?;
    make_pki(&dir)?;
    let _server = Server(
        command(&topo.backends[0], "openssl")
            .current_dir(&dir)
            .args(["s_server", "-accept", &TLS_PORT.to_string()])
            .args(["-cert", "leaf.pem", "-key", "leaf.key", "-www", "-quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("openssl s_server")?,
    );
    let path = dir.join("lb.toml");
    std::fs::write(&path, config(&topo, &dir.join("ca.pem")))?;
    let agent = Agent::start(&topo, &path)?;

    let expected = [
        ("tls-ok", BackendHealth::Up, "TLS"),
        ("tls-name", BackendHealth::Down, "invalid peer certificate"),
        ("https-ok", BackendHealth::Up, ""),
        ("https-body", BackendHealth::Down, "lacks \"no such text\""),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let s = loop {
        let s = agent.status()?;
        let mut pending = Vec::new();
        for (vip, health, reason) in expected {
            let b = backend_of(&s, vip)?;
            let done = match health {
                BackendHealth::Up => b.health == health && b.checks_ok >= 3,
                _ => b.health == health && b.last_change.contains(reason),
            };
            if !done {
                pending.push(format!("{vip}: {b:?}"));
            }
        }
        if pending.is_empty() {
            break s;
        }
        ensure!(
            Instant::now() < deadline,
            "checks did not settle: {pending:#?}\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Never down (a single failed check, e.g. while s_server, which serves one connection at a
    // time, is busy with another probe, is within fall).
    for vip in ["tls-ok", "https-ok"] {
        let b = backend_of(&s, vip)?;
        ensure!(b.last_change == "configured", "{vip}: {b:?}");
    }
    // Four definitions, four probes, each to the VIP at the check port, through the tunnel.
    ensure!(s.probes.len() == 4, "{:#?}", s.probes);
    for p in &s.probes {
        ensure!(
            p.target == SocketAddr::new(IpAddr::from(VIP_V4), TLS_PORT),
            "{p:?}"
        );
    }
    let encapsulated = s.counters.get("probe_encapsulated").copied().unwrap_or(0);
    let ok: u64 = ["tls-ok", "https-ok"]
        .iter()
        .map(|v| backend_of(&s, v).map(|b| b.checks_ok))
        .sum::<Result<u64>>()?;
    // Every passed check's handshake crossed tc_probe_encap (several packets each).
    ensure!(
        encapsulated >= 3 * ok,
        "{encapsulated} encapsulated, {ok} passed checks"
    );
    Ok(())
}
