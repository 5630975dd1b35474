//! The admin endpoints against the real agent (issue 12, items 1 and 2): thousands of idle
//! connections to its listeners under a 1,024-descriptor limit do not change how fast a dead
//! backend is failed over; the read-only listener refuses changes; the control socket refuses
//! a non-root user; the TCP control listener wants its token; control actions are logged with
//! their peer.

use anyhow::{bail, ensure, Context, Result};
use lb_agent::admin::{BackendHealth, StatusReport};
use lb_tests::{
    agentproc::{agent_binary, Agent, ADMIN},
    client::http_burst,
    netns::{self, run_in, NsRuntime},
    scenario::{backend_name, config_text, Options},
    servers::{Backends, HTTP_PORT},
    topo::{backend_v4, Topology, VIP_V4},
};
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Output, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The TCP control listener of these tests (namespace loopback).
const CONTROL_TCP: &str = "127.0.0.1:9301";
const TOKEN: &str = "198f3c5e0b2a4d71a6e9c0d4b3f2e1a0";
/// Failover may take this much longer than the checker's own bound.
const MARGIN: Duration = Duration::from_secs(10);
/// Idle connections opened to each TCP listener.
const IDLE_CONNS: usize = 5000;

/// An agent with a TCP control listener, its topology, servers and a client runtime.
struct Setup {
    agent: Agent,
    client: NsRuntime,
    servers: Backends,
    dir: PathBuf,
    options: Options,
    topo: Topology,
}

/// Starts the agent in a fresh topology with `control_listen` and a token file; its
/// RLIMIT_NOFILE set to `nofile` (soft and hard) when given.
fn setup(tag: &str, nofile: Option<u64>) -> Result<Setup> {
    let topo = Topology::build(tag, 3)?;
    let servers = Backends::start(&topo.backends)?;
    let dir = std::env::temp_dir().join(&topo.prefix);
    std::fs::create_dir_all(&dir)?;
    let token = dir.join("control.token");
    std::fs::write(&token, format!("{TOKEN}\n"))?;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600))?;
    let options = Options::default();
    let text = config_text(&topo, &options, &options.weights).replacen(
        "[agent]\n",
        &format!(
            "[agent]\ncontrol_listen = \"{CONTROL_TCP}\"\ncontrol_token_file = \"{}\"\n",
            token.display()
        ),
        1,
    );
    let config = dir.join("lb.toml");
    std::fs::write(&config, text)?;
    let agent = Agent::start_with(&topo.lb, &config, Duration::from_secs(20), |cmd| {
        let Some(limit) = nofile else { return };
        // `ulimit -n LIMIT` for the agent only; soft = hard, so it cannot raise it either.
        // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    })?;
    let client = NsRuntime::new(&topo.client)?;
    Ok(Setup {
        agent,
        client,
        servers,
        dir,
        options,
        topo,
    })
}

fn backend_of(
    report: &StatusReport,
    vip: &str,
    i: usize,
) -> Result<lb_agent::admin::BackendStatus> {
    let addr: std::net::IpAddr = backend_v4(i).into();
    report
        .vips
        .iter()
        .find(|v| v.name == vip)
        .and_then(|v| v.backends.iter().find(|b| b.address == addr))
        .cloned()
        .with_context(|| format!("no backend {addr} in VIP {vip}"))
}

/// Polls the control socket (every 20 ms, at most `within`) until backend `i` of "web" has
/// `health`; the time it took.
fn wait_health(
    agent: &Agent,
    i: usize,
    health: BackendHealth,
    within: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let report = agent.control_status()?;
        if backend_of(&report, "web", i)?.health == health {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            bail!(
                "web/backend{i} not {health} after {within:?}:\n{}",
                agent.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops backend `i`'s servers; how long until the agent reports it down.
fn failover(s: &mut Setup, i: usize) -> Result<Duration> {
    s.servers.stop(i);
    wait_health(&s.agent, i, BackendHealth::Down, Duration::from_secs(30))
}

/// Opens up to `count` TCP connections to `addr` inside `ns` (2 s per connect, 60 s in all)
/// and returns them open, with the number of connects that failed.
fn idle_connections(ns: &str, addr: SocketAddr, count: usize) -> Result<(Vec<TcpStream>, usize)> {
    run_in(ns, move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut open, mut failed) = (Vec::with_capacity(count), 0);
        for _ in 0..count {
            if Instant::now() > deadline {
                failed += 1;
                continue;
            }
            match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(stream) => open.push(stream),
                Err(_) => failed += 1,
            }
        }
        Ok((open, failed))
    })
}

/// Lets this test process hold the idle connections' client ends: its soft limit up to its
/// hard one, which must leave room for `need` descriptors.
fn raise_own_nofile(need: u64) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    ensure!(
        lim.rlim_max >= need,
        "this test holds {need} descriptors, the hard limit is {}: raise it (ulimit -Hn)",
        lim.rlim_max
    );
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        bail!("setrlimit: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

#[test]
fn idle_admin_connections_do_not_delay_failover() -> Result<()> {
    let _serial = serial();
    raise_own_nofile(2 * IDLE_CONNS as u64 + 2048)?;
    let mut s = setup("ai", Some(1024))?;
    let pid = s.agent.pid().context("agent not running")?;
    let o = s.options.clone();
    // The checker's own bound: `fall` failed probes, each at most interval + timeout apart.
    let detect = Duration::from_millis(u64::from(o.fall) * (o.interval_ms + o.timeout_ms));

    let idle = failover(&mut s, 1)?;
    s.servers.start_again(1)?;
    wait_health(&s.agent, 1, BackendHealth::Up, Duration::from_secs(30))?;

    let read: SocketAddr = ADMIN.parse()?;
    let control: SocketAddr = CONTROL_TCP.parse()?;
    let (held_read, failed_read) = idle_connections(&s.topo.lb, read, IDLE_CONNS)?;
    let (held_control, failed_control) = idle_connections(&s.topo.lb, control, IDLE_CONNS)?;
    let fds_flooded = open_fds(pid)?;
    let ok_before = backend_of(&s.agent.control_status()?, "web", 0)?.checks_ok;
    let loaded = failover(&mut s, 2)?;
    // Checks of the healthy backends go on meanwhile.
    std::thread::sleep(Duration::from_millis(10 * o.interval_ms));
    let report = s.agent.control_status()?;
    let b0 = backend_of(&report, "web", 0)?;
    eprintln!(
        "failover: idle {} ms, with {} + {} idle admin connections {} ms (bound {} ms); \
         agent fds {fds_flooded}; connects failed {failed_read} + {failed_control}; checks_ok \
         of backend0 {ok_before} -> {}",
        idle.as_millis(),
        held_read.len(),
        held_control.len(),
        loaded.as_millis(),
        (detect + MARGIN).as_millis(),
        b0.checks_ok
    );
    ensure!(
        held_read.len() + held_control.len() >= IDLE_CONNS,
        "too few idle connections opened: {} + {}",
        held_read.len(),
        held_control.len()
    );
    // Generous: the broken agent never failed over (30 s and more).
    ensure!(
        loaded <= detect + Duration::from_secs(3),
        "failover took {loaded:?} under load"
    );
    ensure!(
        idle <= detect + Duration::from_secs(3),
        "idle failover took {idle:?}"
    );
    ensure!(
        b0.health == BackendHealth::Up && b0.checks_ok >= ok_before + 3,
        "backend0's checks stalled: {ok_before} -> {} ({:?})",
        b0.checks_ok,
        b0.health
    );
    ensure!(
        fds_flooded < 1024 - 64,
        "the agent holds {fds_flooded} descriptors"
    );
    let log = s.agent.log_text();
    ensure!(
        !log.contains("Too many open files"),
        "descriptors ran out:\n{log}"
    );
    ensure!(
        log.contains("admin connections at their cap"),
        "no cap warning:\n{log}"
    );
    // Traffic avoids the dead backend.
    let tally = s
        .client
        .run(http_burst((VIP_V4, HTTP_PORT).into(), 200, 8))?;
    ensure!(
        tally.errors.is_empty() && !tally.by_backend.contains_key(&backend_name(2)),
        "traffic after failover: {tally:?}"
    );
    drop((held_read, held_control));
    // With the idle clients gone, the read-only listener answers again (slots free up as the
    // agent sees each close).
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.agent.status().is_err() {
        ensure!(Instant::now() < deadline, "read-only listener still full");
        std::thread::sleep(Duration::from_millis(100));
    }
    s.agent.stop()?;
    Ok(())
}

/// `lb-agent ARGS` in `ns` (None: here), optionally as user nobody, to completion.
fn cli(ns: Option<&str>, bin: &Path, args: &[&str], as_nobody: bool) -> Result<Output> {
    let mut command = if as_nobody {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(bin);
        c
    } else if let Some(ns) = ns {
        netns::command(ns, bin)
    } else {
        std::process::Command::new(bin)
    };
    let out = command
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .context("running the CLI")?;
    Ok(out)
}

/// One raw HTTP/1 request to `addr` inside `ns`: the status code and the body.
fn raw(ns: &str, addr: &str, request: String) -> Result<(u16, String)> {
    let addr: SocketAddr = addr.parse()?;
    run_in(ns, move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(request.as_bytes())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        let code = answer
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("not HTTP: {answer:?}"))?;
        let body = answer
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        Ok((code, body))
    })
}

fn request(method: &str, path: &str, auth: Option<&str>) -> String {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")
}

fn admin_state(agent: &Agent, i: usize) -> Result<lb_agent::config::AdminState> {
    Ok(backend_of(&agent.control_status()?, "web", i)?.admin_state)
}

#[test]
fn only_root_and_the_token_holder_change_anything() -> Result<()> {
    use lb_agent::config::AdminState;
    let _serial = serial();
    let s = setup("an", None)?;
    let socket = s.agent.control.display().to_string();
    let b0 = backend_v4(0).to_string();
    let drain = format!("/vips/web/backends/{b0}/drain");
    let ns = s.topo.lb.as_str();
    // A copy of the CLI that user nobody may run.
    let bin = s.dir.join("lb-agent-cli");
    std::fs::copy(agent_binary()?, &bin)?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;

    // The socket is root's alone.
    let mode = std::fs::metadata(&s.agent.control)?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "control socket mode {mode:o}");
    let out = cli(
        None,
        &bin,
        &["backend", "drain", "web", &b0, "--socket", &socket],
        true,
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(1), "nobody's drain: {out:?}");
    ensure!(
        err.contains("Permission denied") && err.contains("root-only"),
        "{err}"
    );
    ensure!(
        admin_state(&s.agent, 0)? == AdminState::Active,
        "nobody drained backend0"
    );

    // The read-only listener: 405 for other methods on its paths, 404 elsewhere.
    for path in ["/metrics", "/status"] {
        let (code, _) = raw(ns, ADMIN, request("POST", path, None))?;
        ensure!(code == 405, "POST {path} on the read-only listener: {code}");
    }
    let (code, _) = raw(ns, ADMIN, request("POST", &drain, None))?;
    ensure!(code == 404, "POST drain on the read-only listener: {code}");
    ensure!(admin_state(&s.agent, 0)? == AdminState::Active);

    // The TCP control listener: 401 without or with a wrong token, 200 with the right one.
    let (code, body) = raw(ns, CONTROL_TCP, request("POST", &drain, None))?;
    ensure!(code == 401, "no token: {code} {body}");
    let wrong = format!("Bearer {}", TOKEN.replace('1', "2"));
    let (code, body) = raw(ns, CONTROL_TCP, request("POST", &drain, Some(&wrong)))?;
    ensure!(code == 401, "wrong token: {code} {body}");
    ensure!(
        admin_state(&s.agent, 0)? == AdminState::Active,
        "refused request applied"
    );
    let right = format!("Bearer {TOKEN}");
    let (code, body) = raw(ns, CONTROL_TCP, request("POST", &drain, Some(&right)))?;
    ensure!(code == 200, "right token: {code} {body}");
    ensure!(admin_state(&s.agent, 0)? == AdminState::Drain);

    // Root through the socket, with the CLI's defaults taken from the configuration.
    let config = s.agent.config.display().to_string();
    let out = cli(
        None,
        &bin,
        &["backend", "undrain", "web", &b0, "--config", &config],
        false,
    )?;
    ensure!(out.status.success(), "root's undrain: {out:?}");
    ensure!(admin_state(&s.agent, 0)? == AdminState::Active);
    let token = s.dir.join("control.token").display().to_string();
    let out = cli(
        Some(ns),
        &bin,
        &["reload", "--control", CONTROL_TCP, "--token-file", &token],
        false,
    )?;
    ensure!(out.status.success(), "reload over TCP: {out:?}");

    // Every action is in the log with its peer.
    let log = s.agent.log_text();
    let applied = |needle: &str| {
        log.lines()
            .any(|l| l.contains("control: backend action applied") && l.contains(needle))
    };
    ensure!(
        applied("peer=tcp 127.0.0.1:"),
        "TCP drain not logged with its peer:\n{log}"
    );
    ensure!(
        applied("peer=unix uid 0 pid "),
        "socket undrain not logged with its peer:\n{log}"
    );
    ensure!(
        log.lines()
            .any(|l| l.contains("control: reload applied") && l.contains("peer=tcp 127.0.0.1:")),
        "reload not logged with its peer:\n{log}"
    );
    ensure!(log.contains("admin request refused: wrong token"), "{log}");
    let mut agent = s.agent;
    agent.stop()?;
    ensure!(!agent.control.exists(), "control socket left after stop");
    Ok(())
}
