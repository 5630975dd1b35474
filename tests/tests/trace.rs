//! `lb-agent trace` against the running agent in the namespace topology: a known client flow
//! shows up with its 5-tuple, VIP, slot, backend, verdict and reason; the pcap holds the frame
//! as received and as sent (read back with tcpdump); filters select; bad arguments and a
//! second tracer are refused with messages that say why. The `ebpf-log` variant (`run
//! --ebpf-log`) logs an ICMP "too big" and a drop in the agent's log, with the flow.

use anyhow::{ensure, Context as _, Result};
use lb_agent::dataplane::TraceMaps;
use lb_tests::{
    agentproc::{agent_binary, Agent, ADMIN},
    frames, inject,
    netns::{command, sh},
    scenario::{backend_name, Options, Scenario},
    topo::{backend_v4, lb_v4, router_link, CLIENT_V4, VIP_V4},
};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Output, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bound on everything a test waits for; never reached when things work.
const BOUND: Duration = Duration::from_secs(20);

fn trace_args(sc: &Scenario) -> Vec<String> {
    let pin = sc.topo.pin_dir();
    vec![
        "trace".into(),
        "--admin".into(),
        ADMIN.into(),
        "--pin-path".into(),
        pin.display().to_string(),
    ]
}

/// `lb-agent trace ARGS` in the balancer's namespace, running.
fn start_trace(sc: &Scenario, args: &[&str]) -> Result<Child> {
    Ok(command(&sc.topo.lb, agent_binary()?)
        .args(trace_args(sc))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?)
}

/// `lb-agent trace ARGS` run to its end (for arguments it refuses).
fn trace_once(sc: &Scenario, args: &[&str]) -> Result<Output> {
    let mut child = start_trace(sc, args)?;
    wait_exit(&mut child)?;
    Ok(child.wait_with_output()?)
}

fn wait_exit(child: &mut Child) -> Result<()> {
    let deadline = Instant::now() + BOUND;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("lb-agent trace still running after {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Until the tracer has switched the trace on (its lease is in TRACE_CONTROL).
fn wait_tracing(pin: &Path, child: &mut Child) -> Result<()> {
    let deadline = Instant::now() + BOUND;
    loop {
        let maps = TraceMaps::open(pin)?;
        if maps.control.get(&0, 0)?.until_ns != 0 {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                std::io::Read::read_to_string(&mut stderr, &mut err)?;
            }
            anyhow::bail!("lb-agent trace exited early ({status}): {err}");
        }
        ensure!(Instant::now() < deadline, "the trace never switched on");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An HTTP GET from the client's source port `port`; the answering backend's name.
async fn get_from(port: u16, addr: SocketAddr) -> Result<String> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind((CLIENT_V4, port).into())?;
    let io = Duration::from_secs(3);
    let mut s = tokio::time::timeout(io, socket.connect(addr))
        .await
        .context("connect timeout")??;
    s.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
        .await?;
    let mut reply = Vec::new();
    tokio::time::timeout(io, s.read_to_end(&mut reply))
        .await
        .context("read timeout")??;
    let text = String::from_utf8_lossy(&reply).into_owned();
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.trim().to_string())
        .unwrap_or(text))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn pcap_path(sc: &Scenario, name: &str) -> PathBuf {
    std::env::temp_dir().join(&sc.topo.prefix).join(name)
}

#[test]
fn a_known_flow_is_traced_with_its_backend_and_its_frames_read_back_with_tcpdump() -> Result<()> {
    let _serial = serial();
    let sc = Scenario::start("tr", Options::default())?;
    let pcap = pcap_path(&sc, "flow.pcap");
    let pcap_arg = pcap.display().to_string();
    let port = 41_007u16;
    // SYN, ACK and request of the flow: the first three packets of VIP web that are forwarded.
    let mut tracer = start_trace(
        &sc,
        &[
            "--vip",
            "web",
            "--verdict",
            "tx",
            "--count",
            "3",
            "--pcap",
            &pcap_arg,
        ],
    )?;
    wait_tracing(&sc.topo.pin_dir(), &mut tracer)?;
    // A second tracer is refused while this one runs, naming it.
    let second = trace_once(&sc, &["--count", "1"])?;
    let err = text(&second.stderr);
    ensure!(
        second.status.code() == Some(1)
            && err.contains("Another `lb-agent trace` is running")
            && err.contains(&format!("pid {}", tracer.id())),
        "{second:?}"
    );
    let web: SocketAddr = (VIP_V4, 80).into();
    let answered = sc.client.run(get_from(port, web))??;
    wait_exit(&mut tracer)?;
    let out = tracer.wait_with_output()?;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    eprintln!("{stdout}{stderr}");
    ensure!(out.status.success(), "{stdout}{stderr}");
    let i = (0..3)
        .find(|i| backend_name(*i) == answered)
        .with_context(|| format!("answer {answered:?} is from no backend"))?;
    let lines: Vec<&str> = stdout.lines().collect();
    ensure!(lines.len() == 3, "three packets: {stdout}");
    let flow = format!("tcp {CLIENT_V4}:{port} > {VIP_V4}:80");
    let expected = format!(
        " tx forwarded vip=web slot=stable backend={} {flow} [",
        backend_v4(i)
    );
    for line in &lines {
        ensure!(line.contains(&expected), "{line:?} lacks {expected:?}");
    }
    ensure!(lines[0].contains("[S]"), "the SYN first: {stdout}");
    ensure!(stderr.contains("3 packets traced"), "{stderr}");
    // The tracer switched the trace off as it ended: the data path is back to one lookup.
    let control = TraceMaps::open(&sc.topo.pin_dir())?.control.get(&0, 0)?;
    ensure!(control.until_ns == 0, "trace still on: {control:?}");
    // tcpdump reads the frames as received and as sent: client frame, then the same segment
    // inside the outer header from the balancer to the backend.
    let dump = command(&sc.topo.lb, "tcpdump")
        .args(["-r", &pcap_arg, "-nn"])
        .output()?;
    let shown = text(&dump.stdout);
    eprintln!("{shown}{}", text(&dump.stderr));
    ensure!(dump.status.success(), "tcpdump -r: {dump:?}");
    let inner = format!("{CLIENT_V4}.{port} > {VIP_V4}.80: Flags [S]");
    let outer = format!("IP {} > {}: IP {inner}", lb_v4(0), backend_v4(i));
    let dumped: Vec<&str> = shown.lines().collect();
    ensure!(dumped.len() == 6, "two frames per packet: {shown}");
    ensure!(
        dumped[0].contains(&format!("IP {inner}")) && dumped[1].contains(&outer),
        "{shown}"
    );
    Ok(())
}

#[test]
fn filters_select_by_verdict_and_reason_and_bad_arguments_are_refused() -> Result<()> {
    let _serial = serial();
    let sc = Scenario::start("tf", Options::default())?;
    for (args, exit, says) in [
        (
            &["--reason", "dropped"][..],
            1,
            "--reason \"dropped\" is not a counter",
        ),
        (
            &["--vip", "nope"][..],
            1,
            "--vip \"nope\" is not a VIP of the running agent",
        ),
        (&["--sample", "0"][..], 2, "--sample"),
        (&["--verdict", "lost"][..], 2, "--verdict"),
        (
            &["--pcap", "/nonexistent/dir/x.pcap"][..],
            1,
            "--pcap: creating",
        ),
    ] {
        let out = trace_once(&sc, args)?;
        let err = text(&out.stderr);
        ensure!(
            out.status.code() == Some(exit) && err.contains(says),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
    // Pass verdicts of reason pass_not_vip only: a ping of the balancer's own address (among
    // the host's other traffic, BGP and ARP), while a forwarded HTTP request (tx, forwarded) is
    // not shown. SIGTERM ends the trace as Ctrl-C does, switching it off.
    let mut tracer = start_trace(&sc, &["--verdict", "pass", "--reason", "pass_not_vip"])?;
    wait_tracing(&sc.topo.pin_dir(), &mut tracer)?;
    sc.client.run(get_from(41_011, (VIP_V4, 80).into()))??;
    let ping = command(&sc.topo.client, "ping")
        .args(["-c", "2", "-i", "0.2", "-W", "2", &lb_v4(0).to_string()])
        .output()?;
    ensure!(ping.status.success(), "ping: {ping:?}");
    // SAFETY: kill(2) on the tracer this test started and has not reaped.
    ensure!(unsafe { libc::kill(tracer.id() as i32, libc::SIGTERM) } == 0);
    wait_exit(&mut tracer)?;
    let out = tracer.wait_with_output()?;
    let stdout = text(&out.stdout);
    ensure!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for line in stdout.lines() {
        ensure!(
            line.contains(" pass pass_not_vip vip=- slot=- backend=- "),
            "{line}"
        );
    }
    let echo = format!("icmp {CLIENT_V4} > {} type 8/0", lb_v4(0));
    let echoes = stdout.lines().filter(|l| l.contains(&echo)).count();
    ensure!(echoes == 2, "two echo requests: {stdout}");
    let control = TraceMaps::open(&sc.topo.pin_dir())?.control.get(&0, 0)?;
    ensure!(control.until_ns == 0, "trace still on: {control:?}");
    // One ICMP "too big" answer: the client's full-size frame (cut to 256 bytes in the file)
    // and the answer as sent, read back by tcpdump.
    let pcap = pcap_path(&sc, "too-big.pcap").display().to_string();
    let reason = [
        "--reason",
        "icmp_too_big_sent",
        "--count",
        "1",
        "--pcap",
        &pcap,
    ];
    let mut tracer = start_trace(&sc, &reason)?;
    wait_tracing(&sc.topo.pin_dir(), &mut tracer)?;
    sc.client
        .run(post_from(41_012, (VIP_V4, 80).into(), 4000))??;
    wait_exit(&mut tracer)?;
    let out = tracer.wait_with_output()?;
    let stdout = text(&out.stdout);
    ensure!(
        stdout.contains(" tx icmp_too_big_sent vip=web ") && stdout.contains(" len=1514>"),
        "{stdout}"
    );
    let dump = command(&sc.topo.lb, "tcpdump")
        .args(["-r", &pcap, "-nn"])
        .output()?;
    let shown = text(&dump.stdout);
    ensure!(dump.status.success(), "tcpdump -r: {dump:?}");
    let lines: Vec<&str> = shown.lines().collect();
    ensure!(
        lines.len() == 2
            && lines[0].contains(&format!("IP {CLIENT_V4}.41012 > {VIP_V4}.80: Flags [.]"))
            && lines[1].contains(&format!(
                "IP {VIP_V4} > {CLIENT_V4}: ICMP {VIP_V4} unreachable - need to frag (mtu 1480)"
            )),
        "{shown}"
    );
    Ok(())
}

/// An HTTP POST of `size` bytes from the client's source port `port` (its full-size segments
/// are too big for the tunnel); the reply's status line.
async fn post_from(port: u16, addr: SocketAddr, size: usize) -> Result<String> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind((CLIENT_V4, port).into())?;
    let io = Duration::from_secs(5);
    let mut s = tokio::time::timeout(io, socket.connect(addr))
        .await
        .context("connect timeout")??;
    let head = format!(
        "POST / HTTP/1.1\r\nHost: vip\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(&vec![b'x'; size]).await?;
    let mut reply = Vec::new();
    tokio::time::timeout(io, s.read_to_end(&mut reply))
        .await
        .context("read timeout")??;
    Ok(text(&reply).lines().next().unwrap_or_default().to_string())
}

#[test]
fn the_ebpf_log_variant_logs_a_too_big_packet_with_its_flow() -> Result<()> {
    let _serial = serial();
    let mut sc = Scenario::start("lg", Options::default())?;
    // The agent again, with the logging variant: it adopts the pins and swaps the program.
    sc.agent.stop()?;
    sc.agent = Agent::start_with(&sc.topo.lb, &sc.config_path, BOUND, |c| {
        c.arg("--ebpf-log");
    })?;
    let port = 41_021u16;
    // 4,000 bytes: the client's 1,500-byte packets do not fit the tunnel's 1,480.
    let status = sc
        .client
        .run(post_from(port, (VIP_V4, 80).into(), 4000))??;
    ensure!(status.starts_with("HTTP/1.1 "), "{status:?}");
    wait_logged(
        &sc,
        &format!("icmp too big sent to {CLIENT_V4}:{port} for {VIP_V4}:80"),
    )?;
    // A drop, with its reason named: an IPv4 fragment to the VIP, from the router.
    let mut frame = frames::tcp4(CLIENT_V4, port + 1, VIP_V4, 80, frames::Tcp::Ack, b"part");
    frame[..6].copy_from_slice(&lb_mac(&sc)?);
    frame[20] |= 0x20; // more fragments
    frames::fix_ipv4_checksum(&mut frame);
    inject::inject(&sc.topo.router, &router_link(0), vec![frame])?;
    wait_logged(
        &sc,
        &format!("drop drop_fragment: {CLIENT_V4} > {VIP_V4} proto 6"),
    )
}

fn wait_logged(sc: &Scenario, expected: &str) -> Result<()> {
    let deadline = Instant::now() + BOUND;
    while !sc.agent.log_text().contains(expected) {
        ensure!(
            Instant::now() < deadline,
            "no {expected:?} in the agent's log:\n{}",
            sc.agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = sc.agent.log_text();
    eprintln!(
        "{}",
        log.lines().find(|l| l.contains(expected)).unwrap_or("")
    );
    Ok(())
}

/// The balancer interface's MAC, which the router sends to.
fn lb_mac(sc: &Scenario) -> Result<[u8; 6]> {
    let line = sh(Some(&sc.topo.lb), "ip -o link show l0")?;
    let mac: Vec<u8> = line
        .split("link/ether ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("")
        .split(':')
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect();
    mac.try_into()
        .map_err(|_| anyhow::anyhow!("no MAC in {line}"))
}
