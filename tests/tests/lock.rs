//! What a second `lb-agent run` on a live pin path does (issue 12, item 3): it must exit
//! non-zero naming the running agent's pid and the pin path, and leave the first agent's maps
//! and state exactly as they were, whether it has the same configuration (it would bring a dead
//! backend back) or another one (it would delete the first agent's VIPs). And the agent's
//! open-file limit (item 1): the soft limit is raised to the hard one at start.

use anyhow::{bail, ensure, Context, Result};
use aya::maps::{Array, HashMap, Map, MapData};
use lb_agent::admin::BackendHealth;
use lb_common::{Backend, VipKey, VipMeta};
use lb_tests::{
    agentproc::{agent_binary, Agent},
    client::http_burst,
    scenario::{backend_name, config_text, Options, Scenario},
    servers::Backends,
    topo::Topology,
};
use std::{
    os::unix::process::CommandExt,
    path::Path,
    process::Stdio,
    sync::Mutex,
    time::{Duration, Instant},
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Everything the first agent owns that a second one could change: what it reports (tables,
/// generations, health) and what the data path reads (the VIPS and BACKENDS maps).
#[derive(Debug, PartialEq)]
struct Snapshot {
    reported: Vec<String>,
    vips: Vec<(VipKey, VipMeta)>,
    backends: Vec<Backend>,
}

fn snapshot(sc: &Scenario) -> Result<Snapshot> {
    let status = sc.agent.status()?;
    let reported = status
        .vips
        .iter()
        .map(|v| {
            let backends: Vec<String> = v
                .backends
                .iter()
                .map(|b| {
                    format!(
                        "{} {} {:?} w{} slots{}",
                        b.address, b.health, b.admin_state, b.effective_weight, b.slots
                    )
                })
                .collect();
            format!(
                "{} {}:{} gen{} {} [{}]",
                v.name,
                v.address,
                v.port,
                v.table_generation,
                v.table_digest,
                backends.join(", ")
            )
        })
        .collect();
    let pins = sc.topo.pin_dir();
    let open = |name: &str| {
        MapData::from_pin(pins.join(name)).with_context(|| format!("opening pinned map {name}"))
    };
    let vips: HashMap<MapData, VipKey, VipMeta> = HashMap::try_from(Map::HashMap(open("VIPS")?))?;
    let mut vips = vips
        .iter()
        .collect::<Result<Vec<_>, _>>()
        .context("reading VIPS")?;
    vips.sort_by_key(|(k, _)| (k.addr, k.port, k.proto, k.family));
    let backends: Array<MapData, Backend> = Array::try_from(Map::Array(open("BACKENDS")?))?;
    let backends = backends
        .iter()
        .collect::<Result<Vec<_>, _>>()
        .context("reading BACKENDS")?;
    Ok(Snapshot {
        reported,
        vips,
        backends,
    })
}

/// Start a second agent with `config` against the scenario's running one and check it refused
/// and changed nothing.
fn second_agent_is_refused(sc: &Scenario, config: &Path) -> Result<()> {
    let before = snapshot(sc)?;
    let (code, output) = lb_tests::pins::run_to_end(&sc.topo.lb, config)?;
    let pid = sc.agent.pid().context("first agent not running")?;
    ensure!(
        code.is_some_and(|c| c != 0),
        "the second agent exited with {code:?}:\n{output}"
    );
    let pins = sc.topo.pin_dir().display().to_string();
    ensure!(
        output.contains(&format!("pid {pid}")) && output.contains(&pins),
        "the error names neither pid {pid} nor {pins}:\n{output}"
    );
    ensure!(
        !output.contains("balancer attached"),
        "the second agent got as far as attaching:\n{output}"
    );
    let after = snapshot(sc)?;
    ensure!(
        before == after,
        "the second agent changed the first one's state:\nbefore {before:#?}\nafter {after:#?}"
    );
    Ok(())
}

fn wait_down(sc: &Scenario, i: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    for vip in ["web", "web6", "dns", "long"] {
        while sc.health(vip, i)? != Some(BackendHealth::Down) {
            if Instant::now() > deadline {
                bail!("{vip}/backend{i} not down:\n{}", sc.agent.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // One more check interval, so nothing is in flight when the snapshot is taken.
    std::thread::sleep(Duration::from_millis(400));
    Ok(())
}

#[test]
fn second_agent_with_the_same_config_exits_and_the_dead_backend_stays_out() -> Result<()> {
    let _serial = serial();
    let mut sc = Scenario::start("ka", Options::default())?;
    sc.stop_server(2);
    wait_down(&sc, 2)?;
    second_agent_is_refused(&sc, &sc.config_path)?;
    // The data path agrees: no new connection is sent to the dead backend.
    let tally = sc.client.run(http_burst(sc.web(), 300, 8))?;
    ensure!(
        tally.errors.is_empty() && tally.total() == 300,
        "errors after the second agent: {:?} ({tally:?})",
        &tally.errors[..tally.errors.len().min(5)]
    );
    ensure!(
        !tally.by_backend.contains_key(&backend_name(2)),
        "{tally:?}"
    );
    sc.agent.stop()?;
    Ok(())
}

#[test]
fn second_agent_with_another_vip_set_exits_and_every_vip_stays() -> Result<()> {
    let _serial = serial();
    let sc = Scenario::start("kb", Options::default())?;
    // Same [agent] section (pin path, interface, admin address), one VIP the first agent
    // does not have and none of its own.
    let first = std::fs::read_to_string(&sc.config_path)?;
    let agent_section = first
        .split("\n[[vip]]")
        .next()
        .context("configuration without [agent]")?;
    let other = format!(
        "{agent_section}\n[[vip]]\nname = \"other\"\naddress = \"198.18.10.9\"\nport = 80\n\
         protocol = \"tcp\"\n[vip.health_check]\nkind = \"none\"\n[[vip.backend]]\n\
         address = \"198.18.1.1\"\n"
    );
    let other_path = sc.config_path.with_file_name("other.toml");
    std::fs::write(&other_path, other)?;
    second_agent_is_refused(&sc, &other_path)?;
    let tally = sc.client.run(http_burst(sc.web(), 300, 8))?;
    ensure!(
        tally.errors.is_empty() && tally.total() == 300 && tally.by_backend.len() == 3,
        "traffic after the second agent: {:?} ({tally:?})",
        &tally.errors[..tally.errors.len().min(5)]
    );
    Ok(())
}

/// Under systemd's default soft limit of 1,024 the agent would run out of descriptors long
/// before its hard limit: it raises the soft limit itself.
#[test]
fn agent_raises_its_soft_open_file_limit_to_the_hard_one() -> Result<()> {
    let _serial = serial();
    const SOFT: u64 = 1024;
    const HARD: u64 = 4096;
    let topo = Topology::build("kf", 3)?;
    let _servers = Backends::start(&topo.backends)?;
    let dir = std::env::temp_dir().join(&topo.prefix);
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("lb.toml");
    let options = Options::default();
    std::fs::write(&config, config_text(&topo, &options, &options.weights))?;
    let mut agent = Agent::start_with(&topo.lb, &config, Duration::from_secs(20), |cmd| {
        // `ulimit -n 1024` with a higher hard limit, for the agent only.
        // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: SOFT,
                    rlim_max: HARD,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    })?;
    let pid = agent.pid().context("agent not running")?;
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .with_context(|| format!("no open-file limit in {limits}"))?;
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    ensure!(numbers == [HARD, HARD], "{line}");
    let log = agent.log_text();
    ensure!(
        log.lines()
            .any(|l| l.contains("raised the open-file soft limit")
                && l.contains(&format!("old={SOFT}"))
                && l.contains(&format!("new={HARD}"))),
        "no log line with the old and new limit:\n{log}"
    );
    agent.stop()?;
    Ok(())
}

/// `decap attach` takes the same lock on its --pin-dir: with it held, the command stops before
/// looking at the interface (which does not exist, so nothing could be attached by mistake).
#[test]
fn decap_attach_stops_while_its_pin_dir_is_locked() -> Result<()> {
    lb_agent::bpffs::ensure()?;
    let dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/{}{}-decaplock",
        lb_tests::topo::PREFIX,
        std::process::id()
    ));
    let lock = lb_agent::pinlock::PinLock::acquire(&dir, "test")?;
    let out = std::process::Command::new(agent_binary()?)
        .args(["decap", "attach", "--iface", "lbe-nonexist0", "--pin-dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .output()?;
    drop(lock);
    let _ = std::fs::remove_dir(&dir);
    let text = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "decap attach succeeded: {text}");
    ensure!(
        text.contains(&format!("pid {}", std::process::id()))
            && text.contains(&dir.display().to_string()),
        "the error names neither this process nor {}: {text}",
        dir.display()
    );
    Ok(())
}
