//! The agent's controller against the real kernel: it programs the maps from a configuration,
//! and BPF_PROG_TEST_RUN shows where flows go as health, admin state and reloads change things,
//! and across an agent restart that adopts the pinned maps.

use anyhow::{Context, Result};
use lb_agent::{
    admin::{reply_channel, AdminRequest, BackendHealth, StatusReport},
    config::{self, AdminState},
    controller::{Controller, LoadedConfig, Setup},
    dataplane::{unpin_all, Balancer, LoadOptions, LB_PROGRAM},
    health::{CheckReport, Health},
};
use lb_common::{hash::table_slot, Stat, VipKey, IPPROTO_TCP};
use lb_tests::{
    frames::{self, Tcp, L3},
    run::{run_once, XDP_TX},
};
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};
use tokio::sync::mpsc;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 9);
const WEB: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const API: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 20);
const B1: &str = "198.18.1.1";
const B2: &str = "198.18.1.2";
const B3: &str = "198.18.1.3";
/// The backend `config_text(true, ..)` adds.
const B4: &str = "198.18.1.4";
/// How long a test waits for an answer the controller gives at once: generous, never reached.
const ANSWER_BOUND: Duration = Duration::from_secs(120);

fn config_text(extra_backend: bool, extra_vip: bool, all_down: &str, slow_start_ms: u64) -> String {
    let mut text = format!(
        r#"
[agent]
interface = "lo"
gateway_mac = "02:00:00:00:00:fe"
encap_source_v4 = "198.18.0.2"
table_size = 65537
max_vips = 8
conn_table_size = 4096
new_flows_per_sec = 0
slow_start_ms = {slow_start_ms}

[[vip]]
name = "web"
address = "{WEB}"
port = 80
protocol = "tcp"
all_down = "{all_down}"
[vip.health_check]
kind = "none"
[[vip.backend]]
address = "{B1}"
[[vip.backend]]
address = "{B2}"
[[vip.backend]]
address = "{B3}"
"#
    );
    if extra_backend {
        text.push_str(&format!("[[vip.backend]]\naddress = \"{B4}\"\n"));
    }
    if extra_vip {
        text.push_str(&format!(
            "\n[[vip]]\nname = \"api\"\naddress = \"{API}\"\nport = 443\nprotocol = \"tcp\"\n[vip.health_check]\nkind = \"none\"\n[[vip.backend]]\naddress = \"198.18.1.9\"\n"
        ));
    }
    text
}

/// A pin directory of this test's own, removed (with its pins) when dropped.
struct Pins(PathBuf);

impl Pins {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/lbtest-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = unpin_all(&dir);
        Self(dir)
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = unpin_all(&self.0);
        let _ = std::fs::remove_dir(&self.0);
    }
}

struct Agent {
    ctl: Controller,
    config_path: PathBuf,
    _reports: mpsc::Receiver<CheckReport>,
    /// Reloaded files, read off the controller as in the agent's event loop.
    loaded: mpsc::Receiver<LoadedConfig>,
    /// For the reads and answers of reloads and admin requests.
    rt: tokio::runtime::Runtime,
}

fn write_config(dir: &Path, text: &str) -> Result<PathBuf> {
    let path = dir.join("lb.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn start(pins: &Pins, config_dir: &Path, text: &str) -> Result<Agent> {
    lb_agent::bpffs::ensure()?;
    let config_path = write_config(config_dir, text)?;
    let config = config::load(&config_path)?;
    let dp = Balancer::load(LoadOptions {
        table_size: config.agent.table_size,
        max_vips: config.agent.max_vips,
        conn_table_entries: config.agent.conn_table_size,
        pin_dir: Some(pins.0.clone()),
        ebpf_log: false,
    })?;
    let (tx, rx) = mpsc::channel(16);
    let mut ctl = Controller::new(
        dp,
        Setup {
            config,
            config_path: config_path.clone(),
            interface_override: None,
            interface: "lo".into(),
            gateway_mac: [2, 0, 0, 0, 0, 0xfe],
            local_mac: lb_tests::frames::LB_MAC,
            flow_hash_key: lb_common::hash::NO_KEY,
        },
        tx,
    )?;
    let loaded = ctl.take_loaded().context("reload results")?;
    Ok(Agent {
        ctl,
        config_path,
        _reports: rx,
        loaded,
        // A worker thread: a read started by the controller runs while the test goes on.
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?,
    })
}

/// The standard configuration (three backends, fail-open, no slow start) in a fresh directory.
fn start_default(pins: &Pins) -> Result<Agent> {
    start(
        pins,
        &temp_dir()?,
        &config_text(false, false, "fail-open", 0),
    )
}

fn temp_dir() -> Result<PathBuf> {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "lbtest-agent-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

impl Agent {
    /// Send a TCP segment to `vip`:80 from `port`; the backend it was encapsulated to, if any.
    fn send(&mut self, vip: Ipv4Addr, dport: u16, port: u16, flags: Tcp) -> Result<Option<IpAddr>> {
        let frame = frames::tcp4(CLIENT, port, vip, dport, flags, &[]);
        let (verdict, out) = run_once(self.ctl.balancer().program(LB_PROGRAM)?, &frame)?;
        if verdict != XDP_TX {
            return Ok(None);
        }
        let dst: [u8; 4] = out[L3 + 16..L3 + 20].try_into()?;
        Ok(Some(IpAddr::from(dst)))
    }

    fn spread(
        &mut self,
        vip: Ipv4Addr,
        dport: u16,
        ports: std::ops::Range<u16>,
    ) -> Result<BTreeMap<IpAddr, u32>> {
        let mut seen = BTreeMap::new();
        for port in ports {
            let backend = self
                .send(vip, dport, port, Tcp::Syn)?
                .context("SYN not forwarded")?;
            *seen.entry(backend).or_insert(0) += 1;
        }
        Ok(seen)
    }

    fn status(&mut self) -> Result<StatusReport> {
        Ok(self.ctl.status())
    }

    fn set_state(&mut self, backend: &str, state: AdminState) -> Result<()> {
        let (reply, waiter) = reply_channel();
        self.ctl.on_admin(AdminRequest::SetBackendState {
            vip: "web".into(),
            backend: backend.parse()?,
            state,
            reply,
        });
        self.rt
            .block_on(waiter.wait(tokio::time::Instant::now() + ANSWER_BOUND))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .map_err(anyhow::Error::msg)
    }

    /// `lb-agent backend weight web BACKEND WEIGHT`: the controller's answer.
    fn set_weight(&mut self, backend: &str, weight: u32) -> Result<String> {
        let (reply, waiter) = reply_channel();
        self.ctl.on_admin(AdminRequest::SetBackendWeight {
            vip: "web".into(),
            backend: backend.parse()?,
            weight: config::Weight::new(weight).map_err(anyhow::Error::msg)?,
            reply,
        });
        self.rt
            .block_on(waiter.wait(tokio::time::Instant::now() + ANSWER_BOUND))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .map_err(anyhow::Error::msg)
    }

    /// A check result for `backend` of web (which has no probe: `kind = "none"`).
    fn health(&mut self, backend: &str, health: Health) -> Result<()> {
        let report = CheckReport {
            probe: 0,
            backend: backend.parse()?,
            ok: health == Health::Up,
            latency: Duration::from_millis(1),
            detail: "test".into(),
            transition: Some(health),
            finished_at: Instant::now(),
        };
        self.ctl.on_check_in("web", &report)
    }

    fn reload(&mut self, text: &str) -> Result<String> {
        std::fs::write(&self.config_path, text)?;
        self.reload_file()
    }

    /// `POST /reload` of whatever is at the configuration path, as the event loop runs it: the
    /// read off the controller, its result handed back to it.
    fn reload_file(&mut self) -> Result<String> {
        let (reply, waiter) = reply_channel();
        let (ctl, loaded) = (&mut self.ctl, &mut self.loaded);
        self.rt.block_on(async {
            ctl.on_admin(AdminRequest::Reload(reply));
            let done = loaded.recv().await.context("no reload result")?;
            // The outcome also reaches the waiter, which is what this checks.
            let _ = ctl.on_loaded(done);
            waiter
                .wait(tokio::time::Instant::now() + ANSWER_BOUND)
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
                .map_err(anyhow::Error::msg)
        })
    }

    /// Whether the flow from `port` to WEB:80 is in a moved slot of the live table.
    fn in_moved_slot(&mut self, port: u16) -> Result<bool> {
        let frame = frames::tcp4(CLIENT, port, WEB, 80, Tcp::Ack, &[]);
        let flow = lb_tests::lab::flow_of(&frame)?;
        let lb = self.ctl.balancer();
        let meta = lb.vip(&VipKey::new(WEB.into(), 80, IPPROTO_TCP))?;
        let live = lb.live_table(&meta)?;
        let slot = table_slot(
            &flow,
            meta.flags,
            live.len() as u32,
            &lb_common::hash::NO_KEY,
        );
        Ok(live[slot as usize].is_moved())
    }

    fn moved_slots(&mut self) -> Result<u64> {
        Ok(self.status()?.vips[0].moved_slots)
    }

    /// Where a SYN from each port of `ports` goes.
    fn syn_backends(&mut self, ports: std::ops::Range<u16>) -> Result<Vec<(u16, Option<IpAddr>)>> {
        ports
            .map(|p| Ok((p, self.send(WEB, 80, p, Tcp::Syn)?)))
            .collect()
    }

    /// A port whose SYN lands on `backend`.
    fn port_on(&mut self, backend: &str) -> Result<u16> {
        let want: IpAddr = backend.parse()?;
        for port in 20000..21000 {
            if self.send(WEB, 80, port, Tcp::Syn)? == Some(want) {
                return Ok(port);
            }
        }
        anyhow::bail!("no port reaches {backend}")
    }
}

#[test]
fn agent_programs_the_table_and_new_flows_spread_over_all_backends() -> Result<()> {
    let pins = Pins::new();
    let mut agent = start_default(&pins)?;
    let seen = agent.spread(WEB, 80, 1000..1600)?;
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (backend, n) in &seen {
        assert!((150..250).contains(n), "{backend}: {n} of 600");
    }
    let status = agent.status()?;
    let web = &status.vips[0];
    assert_eq!(web.table_generation, 1);
    assert_eq!(web.backends.iter().map(|b| b.slots).sum::<u32>(), 65537);
    assert!(web.serving);
    Ok(())
}

#[test]
fn backend_marked_down_vanishes_and_its_flows_move() -> Result<()> {
    let pins = Pins::new();
    let mut agent = start_default(&pins)?;
    let port = agent.port_on(B2)?;
    agent.health(B2, Health::Down)?;
    let seen = agent.spread(WEB, 80, 1000..1600)?;
    assert!(!seen.contains_key(&B2.parse::<IpAddr>()?), "{seen:?}");
    // The established flow of the dead backend moves at its next packet.
    let moved = agent.send(WEB, 80, port, Tcp::Ack)?;
    assert!(moved.is_some() && moved != Some(B2.parse()?));
    let status = agent.status()?;
    let b2 = status.vips[0]
        .backends
        .iter()
        .find(|b| b.address.to_string() == B2)
        .context("B2")?;
    assert_eq!((b2.health, b2.slots), (BackendHealth::Down, 0));
    assert!(b2.last_change.contains("down"), "{}", b2.last_change);
    Ok(())
}

#[test]
fn drained_backend_keeps_its_flows_and_takes_no_new_ones() -> Result<()> {
    let pins = Pins::new();
    let mut agent = start_default(&pins)?;
    let port = agent.port_on(B1)?;
    agent.set_state(B1, AdminState::Drain)?;
    assert_eq!(agent.send(WEB, 80, port, Tcp::Ack)?, Some(B1.parse()?));
    let seen = agent.spread(WEB, 80, 3000..3600)?;
    assert!(!seen.contains_key(&B1.parse::<IpAddr>()?), "{seen:?}");
    // Disabled: the flows move too.
    agent.set_state(B1, AdminState::Disabled)?;
    assert_ne!(agent.send(WEB, 80, port, Tcp::Ack)?, Some(B1.parse()?));
    assert!(agent.set_state("198.18.9.9", AdminState::Drain).is_err());
    Ok(())
}

#[test]
fn all_down_policy_is_observed() -> Result<()> {
    for (policy, expect_forward) in [("fail-open", true), ("drop", false)] {
        let pins = Pins::new();
        let mut agent = start(&pins, &temp_dir()?, &config_text(false, false, policy, 0))?;
        for b in [B1, B2, B3] {
            agent.health(b, Health::Down)?;
        }
        let forwarded = agent.send(WEB, 80, 5000, Tcp::Syn)?;
        assert_eq!(forwarded.is_some(), expect_forward, "{policy}");
        if !expect_forward {
            assert_eq!(agent.ctl.balancer().stat(Stat::DropNoBackend)?, 1);
            assert!(!agent.status()?.vips[0].serving);
        }
        // One backend back: traffic resumes, to it alone.
        agent.health(B3, Health::Up)?;
        let seen = agent.spread(WEB, 80, 6000..6100)?;
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            vec![&B3.parse::<IpAddr>()?],
            "{policy}"
        );
    }
    Ok(())
}

#[test]
fn slow_start_ramps_a_returning_backend() -> Result<()> {
    let pins = Pins::new();
    let mut agent = start(
        &pins,
        &temp_dir()?,
        &config_text(false, false, "fail-open", 1500),
    )?;
    agent.health(B3, Health::Down)?;
    agent.health(B3, Health::Up)?;
    let weight = |s: &StatusReport| {
        s.vips[0]
            .backends
            .iter()
            .find(|b| b.address.to_string() == B3)
            .map(|b| (b.effective_weight, b.slots))
    };
    let (w0, slots0) = weight(&agent.status()?).context("B3")?;
    assert!(
        w0 < 100 && slots0 < 65537 / 3 / 2,
        "starts small: weight {w0}, {slots0} slots"
    );
    std::thread::sleep(Duration::from_millis(800));
    agent.ctl.on_tick()?;
    let (w1, slots1) = weight(&agent.status()?).context("B3")?;
    assert!(
        w1 > w0 && slots1 > slots0,
        "ramps: {w0}->{w1}, {slots0}->{slots1}"
    );
    std::thread::sleep(Duration::from_millis(1000));
    agent.ctl.on_tick()?;
    let (w2, _) = weight(&agent.status()?).context("B3")?;
    assert_eq!(w2, 100, "full weight after the window");
    Ok(())
}

#[test]
fn reload_adds_without_disturbing_and_rejects_bad_files() -> Result<()> {
    let pins = Pins::new();
    let mut agent = start_default(&pins)?;
    let flows = agent.syn_backends(7000..7200)?;
    let digest = agent.status()?.vips[0].table_digest.clone();
    // A new VIP: the web VIP's table is untouched.
    let summary = agent.reload(&config_text(false, true, "fail-open", 0))?;
    assert!(summary.contains("added VIP api"), "{summary}");
    let last = agent
        .status()?
        .agent
        .last_reload
        .context("no last reload")?;
    assert!(last.applied && last.message == summary, "{last:?}");
    assert_eq!(
        agent
            .status()?
            .vips
            .iter()
            .find(|v| v.name == "web")
            .context("web")?
            .table_digest,
        digest
    );
    assert_eq!(
        agent.send(API, 443, 1, Tcp::Syn)?,
        Some("198.18.1.9".parse()?)
    );
    // A new backend: established flows stay where they were (connection table).
    agent.reload(&config_text(true, true, "fail-open", 0))?;
    for (port, backend) in &flows {
        assert_eq!(
            agent.send(WEB, 80, *port, Tcp::Ack)?,
            *backend,
            "port {port}"
        );
    }
    // An invalid file is rejected; the running configuration stays.
    let err = agent
        .reload("[agent]\ninterface = 7\n")
        .expect_err("invalid config must be rejected")
        .to_string();
    assert!(err.contains("interface"), "{err}");
    let status = agent.status()?;
    assert_eq!(status.vips.len(), 2);
    // Status and /metrics say the last reload was rejected, and why.
    let last = status.agent.last_reload.clone().context("no last reload")?;
    assert!(
        !last.applied && last.message.contains("interface"),
        "{last:?}"
    );
    let metrics = lb_agent::admin::render_metrics(&status);
    assert!(
        metrics.lines().any(|l| l == "lb_reload_success 0"),
        "{metrics}"
    );
    assert_eq!(
        agent.send(API, 443, 1, Tcp::Syn)?,
        Some("198.18.1.9".parse()?)
    );
    Ok(())
}

/// Makes the configuration path a FIFO (nobody ever writes to it).
fn make_fifo(path: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let _ = std::fs::remove_file(path);
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: a valid NUL-terminated path.
    anyhow::ensure!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) } == 0, "mkfifo");
    Ok(())
}

/// Issue 12, item 7: a reload of a FIFO, a device or an oversized file is refused with the
/// running configuration kept, and health decisions are taken while the file is being read
/// (the controller only starts the read, on another thread).
#[test]
fn reload_of_a_fifo_device_or_oversized_file_is_refused_and_checks_go_on() -> Result<()> {
    let pins = Pins::new();
    let mut agent = start_default(&pins)?;
    let before = agent.status()?.vips[0].table_digest.clone();
    let path = agent.config_path.clone();

    make_fifo(&path)?;
    // The read starts; before its result is handed back, a backend dies and is failed over.
    let (reply, waiter) = reply_channel();
    {
        let _runtime = agent.rt.enter();
        agent.ctl.on_admin(AdminRequest::Reload(reply));
    }
    agent.health(B2, Health::Down)?;
    let seen = agent.spread(WEB, 80, 1000..1300)?;
    assert!(!seen.contains_key(&B2.parse::<IpAddr>()?), "{seen:?}");
    let (ctl, loaded) = (&mut agent.ctl, &mut agent.loaded);
    let err = agent.rt.block_on(async {
        let _ = ctl.on_loaded(loaded.recv().await.context("no reload result")?);
        waiter
            .wait(tokio::time::Instant::now() + ANSWER_BOUND)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))
    })?;
    let err = err.expect_err("a FIFO must be refused");
    assert!(
        err.contains("FIFO") && err.contains("running configuration stays"),
        "{err}"
    );
    agent.health(B2, Health::Up)?;
    assert_eq!(
        agent.status()?.vips[0].table_digest,
        before,
        "B2 back, same table"
    );

    std::fs::remove_file(&path)?;
    std::os::unix::fs::symlink("/dev/zero", &path)?;
    let err = agent
        .reload_file()
        .expect_err("/dev/zero must be refused")
        .to_string();
    assert!(err.contains("character device"), "{err}");

    std::fs::remove_file(&path)?;
    std::fs::File::create(&path)?.set_len(config::MAX_BYTES + 1)?;
    let err = agent
        .reload_file()
        .expect_err("an oversized file must be refused")
        .to_string();
    assert!(err.contains("at most 16777216 bytes"), "{err}");

    let status = agent.status()?;
    assert_eq!(
        (status.vips.len(), &status.vips[0].table_digest),
        (1, &before)
    );
    assert_eq!(agent.spread(WEB, 80, 1000..1300)?.len(), 3);
    Ok(())
}

/// Issue 12, item 7: a reload whose requester gave up (the endpoint answered 503) before the
/// file was read is not applied when the read completes.
#[test]
fn reload_given_up_by_its_requester_is_not_applied() -> Result<()> {
    let pins = Pins::new();
    let mut agent = start_default(&pins)?;
    let (reply, waiter) = reply_channel::<Result<String, String>>();
    drop(waiter);
    let new = config::parse(&config_text(false, true, "fail-open", 0), "lb.toml")?;
    let outcome = agent.ctl.on_loaded(LoadedConfig {
        result: Ok(new),
        reply: Some(reply),
    });
    assert!(
        outcome.as_ref().is_err_and(|e| e.contains("given up")),
        "{outcome:?}"
    );
    assert_eq!(
        agent.status()?.vips.len(),
        1,
        "the abandoned reload was applied"
    );
    assert_eq!(agent.send(API, 443, 1, Tcp::Syn)?, None);
    // The same file, asked for by someone who waits, is applied.
    let summary = agent.reload(&config_text(false, true, "fail-open", 0))?;
    assert!(summary.contains("added VIP api"), "{summary}");
    Ok(())
}

#[test]
fn restarted_agent_adopts_the_pinned_maps_and_connection_table() -> Result<()> {
    let pins = Pins::new();
    let dir = temp_dir()?;
    let text = config_text(false, false, "fail-open", 0);
    let mut first = start(&pins, &dir, &text)?;
    let flows = first.syn_backends(9000..9100)?;
    let before = first.status()?;
    drop(first);
    // The restarted agent finds the maps pinned; even with a backend added to the file,
    // every established flow keeps its backend.
    let mut second = start(&pins, &dir, &config_text(true, false, "fail-open", 0))?;
    assert!(second.ctl.balancer().adopted());
    let counted = |a: &mut Agent| -> Result<[u64; 2]> {
        let lb = a.ctl.balancer();
        Ok([lb.stat(Stat::StableSlot)?, lb.stat(Stat::MovedToPrevious)?])
    };
    let [stable, previous] = counted(&mut second)?;
    for (port, backend) in &flows {
        assert_eq!(
            second.send(WEB, 80, *port, Tcp::Ack)?,
            *backend,
            "port {port}"
        );
    }
    // Flows whose slot went to the new backend reach their own through the moved slot.
    let [stable_now, previous_now] = counted(&mut second)?;
    assert!(previous_now > previous, "no flow was in a moved slot");
    assert_eq!(
        stable_now - stable + previous_now - previous,
        flows.len() as u64
    );
    let after = second.status()?;
    assert!(after.vips[0].moved_slots > 0);
    for b in &before.vips[0].backends {
        let same = after.vips[0]
            .backends
            .iter()
            .find(|x| x.address == b.address)
            .context("backend kept")?;
        assert_eq!(same.id, b.id, "backend ids are kept across restarts");
    }
    // Counters live in pinned maps too.
    assert!(after.counters["forwarded"] >= before.counters["forwarded"]);
    Ok(())
}

/// A drained backend that goes down takes its flows with it although the table's members stay
/// the same: the flows have no entries (non-SYN misses write none), so the moved slots must
/// stop naming it as their previous backend, which takes a publication.
#[test]
fn drained_backend_that_goes_down_loses_its_flows() -> Result<()> {
    let pins = Pins::new();
    let mut agent = start_default(&pins)?;
    let port = agent.port_on(B1)?;
    agent.set_state(B1, AdminState::Drain)?;
    assert_eq!(agent.send(WEB, 80, port, Tcp::Ack)?, Some(B1.parse()?));
    let generation = agent.status()?.vips[0].table_generation;
    agent.health(B1, Health::Down)?;
    let now = agent.send(WEB, 80, port, Tcp::Ack)?;
    assert!(now.is_some() && now != Some(B1.parse()?), "{now:?}");
    assert_eq!(
        agent.status()?.vips[0].table_generation,
        generation + 1,
        "republished for the slots, once"
    );
    Ok(())
}

#[test]
fn moved_slots_settle_once_no_live_flow_needs_its_old_backend() -> Result<()> {
    let pins = Pins::new();
    let dir = temp_dir()?;
    let short = |extra: bool| {
        config_text(extra, false, "fail-open", 0).replace(
            "slow_start_ms = 0",
            "slow_start_ms = 0\nflow_idle_timeout_ms = 1000",
        )
    };
    let mut agent = start(&pins, &dir, &short(false))?;
    let before = agent.syn_backends(7000..7400)?;
    // A fourth backend takes slots from the three, which stay up: those slots move.
    agent.reload(&short(true))?;
    let moved_at_reload = agent.moved_slots()?;
    assert!(moved_at_reload > 0);
    let mut in_moved = Vec::new();
    for (port, backend) in &before {
        if agent.in_moved_slot(*port)? {
            in_moved.push((*port, *backend));
        }
    }
    assert!(in_moved.len() >= 3, "too few sample flows in moved slots");
    let entry = |a: &mut Agent, port: u16| -> Result<Option<lb_common::FlowState>> {
        let frame = frames::tcp4(CLIENT, port, WEB, 80, Tcp::Ack, &[]);
        Ok(a.ctl.balancer().flow(&lb_tests::lab::flow_of(&frame)?))
    };
    // A flow from before the reload keeps its backend through the slot's previous backend; its
    // non-SYN miss writes no entry (a spoofer could write any), so it holds no slot.
    let (old, old_backend) = in_moved[0];
    assert_eq!(agent.send(WEB, 80, old, Tcp::Ack)?, old_backend);
    assert_eq!(entry(&mut agent, old)?, None);
    // Two connections opened since, in slots that moved to the new backend: their SYNs write
    // the entries.
    let b4: IpAddr = B4.parse()?;
    let mut opened = Vec::new();
    for (port, _) in &in_moved[1..] {
        if opened.len() < 2 && agent.send(WEB, 80, *port, Tcp::Syn)? == Some(b4) {
            assert!(
                entry(&mut agent, *port)?.is_some(),
                "the SYN wrote an entry"
            );
            opened.push(*port);
        }
    }
    let &[active, idle] = opened.as_slice() else {
        anyhow::bail!("too few sample flows in slots moved to {B4}: {opened:?}");
    };
    let active_backend = Some(b4);
    // The new backend drained: its slots return to their first backends, still moved, and only
    // the entries keep the two connections on it.
    agent.set_state(B4, AdminState::Drain)?;
    assert!(agent.in_moved_slot(active)? && agent.in_moved_slot(idle)?);
    assert_eq!(agent.send(WEB, 80, idle, Tcp::Ack)?, active_backend);
    // One flow stays active past the idle timeout (the entry's clock has one-second steps).
    let until = Instant::now() + Duration::from_millis(2600);
    while Instant::now() < until {
        assert_eq!(agent.send(WEB, 80, active, Tcp::Ack)?, active_backend);
        std::thread::sleep(Duration::from_millis(200));
    }
    agent.ctl.sweep_now()?;
    assert_eq!(entry(&mut agent, idle)?, None, "the idle entry expired");
    assert!(
        entry(&mut agent, active)?.is_some(),
        "the active entry stays"
    );
    // Every moved slot settled but the one the active flow still needs.
    assert_eq!(agent.moved_slots()?, 1);
    assert!(agent.in_moved_slot(active)?);
    assert_eq!(agent.send(WEB, 80, active, Tcp::Ack)?, active_backend);
    let status = agent.status()?;
    let sweep = status.conn_sweep.context("sweep summary in the status")?;
    assert_eq!(sweep.live_entries, 1);
    // Once that flow is idle too, its slot settles, and the table alone routes it.
    std::thread::sleep(Duration::from_millis(2600));
    agent.ctl.sweep_now()?;
    assert_eq!(agent.moved_slots()?, 0);
    let stable = agent.ctl.balancer().stat(Stat::StableSlot)?;
    let now = agent.send(WEB, 80, active, Tcp::Ack)?;
    assert_eq!(agent.ctl.balancer().stat(Stat::StableSlot)?, stable + 1);
    assert_ne!(now, active_backend, "a settled slot routes by the table");
    Ok(())
}

#[test]
fn balancer_recovering_from_seeing_every_backend_down_routes_unseen_flows_like_its_peers(
) -> Result<()> {
    // A balancer cut off from every backend (fail-open), then seeing them return one at a
    // time, must not send a flow it has never seen (one ECMP moves to it from a peer) anywhere
    // but where the full table, and so the peer, sends it.
    let pins = Pins::new();
    let mut agent = start_default(&pins)?;
    let full = agent.syn_backends(8000..8300)?;
    for b in [B1, B2, B3] {
        agent.health(b, Health::Down)?;
    }
    for b in [B2, B1, B3] {
        agent.health(b, Health::Up)?;
    }
    for (port, backend) in &full {
        assert_eq!(
            agent.send(WEB, 80, *port, Tcp::Ack)?,
            *backend,
            "port {port}"
        );
    }
    Ok(())
}

/// `count` VIPs 198.18.2.x:80 (those in `moved` on port 8080 instead), `max_vips = 64`.
fn many_vips(count: u8, moved: std::ops::Range<u8>) -> String {
    let mut text = String::from(
        "[agent]\ninterface = \"lo\"\ngateway_mac = \"02:00:00:00:00:fe\"\n\
         encap_source_v4 = \"198.18.0.2\"\ntable_size = 1021\nmax_vips = 64\n",
    );
    for i in 0..count {
        let port = if moved.contains(&i) { 8080 } else { 80 };
        text.push_str(&format!(
            "\n[[vip]]\nname = \"v{i}\"\naddress = \"198.18.2.{i}\"\nport = {port}\n\
             protocol = \"tcp\"\n[vip.health_check]\nkind = \"none\"\n\
             [[vip.backend]]\naddress = \"198.18.3.{i}\"\n"
        ));
    }
    text
}

/// Issue 12, item 6: 60 of 64 VIP ids in use, 5 VIPs change port. A reload of the running
/// agent accepts it, so a restart with the new file must too (it failed with "no free VIP
/// id"), and every VIP forwards on its new key afterwards.
#[test]
fn restart_accepts_what_a_reload_would() -> Result<()> {
    let pins = Pins::new();
    let dir = temp_dir()?;
    let before = many_vips(60, 0..0);
    let after = many_vips(60, 10..15);
    // A reload accepts the change...
    let mut reloaded = start(&pins, &dir, &before)?;
    let summary = reloaded.reload(&after)?;
    assert!(summary.contains("replaced VIP v10"), "{summary}");
    drop(reloaded);
    drop(pins);
    // ...and so does a restart over the first file's pins.
    let pins = Pins::new();
    drop(start(&pins, &dir, &before)?);
    let mut restarted = start(&pins, &dir, &after).context("restart with 5 VIPs moved")?;
    assert!(restarted.ctl.balancer().adopted());
    let status = restarted.status()?;
    assert_eq!(status.vips.len(), 60);
    assert!(status.vips.iter().all(|v| v.serving), "a VIP not serving");
    for i in [0u8, 9, 10, 14, 15, 59] {
        let vip = Ipv4Addr::new(198, 18, 2, i);
        let backend: IpAddr = Ipv4Addr::new(198, 18, 3, i).into();
        let (new, old) = if (10..15).contains(&i) {
            (8080, 80)
        } else {
            (80, 8080)
        };
        assert_eq!(
            restarted.send(vip, new, 5000, Tcp::Syn)?,
            Some(backend),
            "v{i}"
        );
        assert_eq!(
            restarted.send(vip, old, 5000, Tcp::Syn)?,
            None,
            "v{i} old port"
        );
    }
    Ok(())
}

/// Issue 12, item 10: a reload that changes only `new_flows_per_sec` names it in its summary
/// and the data path applies it (it said "no change" and kept the old budget).
#[test]
fn reload_of_new_flows_per_sec_is_named_and_applied() -> Result<()> {
    let pins = Pins::new();
    let mut agent = start_default(&pins)?;
    // A fourth backend moves slots: only SYNs in moved slots insert entries.
    agent.reload(&config_text(true, false, "fail-open", 0))?;
    let moved: Vec<u16> = (30000..40000)
        .filter(|&p| agent.in_moved_slot(p).unwrap_or(false))
        .take(80)
        .collect();
    assert_eq!(moved.len(), 80, "too few moved slots");
    let skipped = |a: &mut Agent| a.ctl.balancer().stat(Stat::ConnInsertSkipped);
    for &port in &moved[..40] {
        agent
            .send(WEB, 80, port, Tcp::Syn)?
            .context("SYN forwarded")?;
    }
    assert_eq!(skipped(&mut agent)?, 0, "no budget yet, nothing skipped");

    let limited = config_text(true, false, "fail-open", 0)
        .replace("new_flows_per_sec = 0", "new_flows_per_sec = 3");
    let summary = agent.reload(&limited)?;
    assert_eq!(summary, "configuration reloaded: agent.new_flows_per_sec");
    for &port in &moved[40..] {
        agent
            .send(WEB, 80, port, Tcp::Syn)?
            .context("SYN forwarded")?;
    }
    // Three inserts per CPU per second: 40 SYNs within a few ms skip most of theirs.
    let now = skipped(&mut agent)?;
    assert!(
        now >= 20,
        "only {now} of 40 inserts skipped under a budget of 3/s"
    );
    Ok(())
}

/// `lb-agent backend weight`: the backend's share of the table follows the new weight, flows
/// from before keep their backend (moved slots), and a reload brings the file's weight back.
#[test]
fn runtime_weight_moves_new_flows_keeps_old_ones_and_a_reload_clears_it() -> Result<()> {
    let pins = Pins::new();
    let mut agent = start_default(&pins)?;
    let before = agent.syn_backends(7000..7600)?;
    let b1 = |s: &StatusReport| {
        s.vips[0]
            .backends
            .iter()
            .find(|b| b.address.to_string() == B1)
            .map(|b| (b.weight, b.weight_override, b.effective_weight, b.slots))
    };
    let answer = agent.set_weight(B1, 300)?;
    assert_eq!(
        answer,
        "backend 198.18.1.1 of VIP web: weight 300 (override, config 100) until the next reload"
    );
    let status = agent.status()?;
    let (weight, weight_override, effective, slots) = b1(&status).context("B1")?;
    assert_eq!((weight, weight_override, effective), (100, Some(300), 300));
    // 300 of 500: 60% of the 65537 slots (Maglev's shares are within a percent or two).
    assert!((37_000..41_500).contains(&slots), "{slots} slots");
    assert_eq!(status.vips[0].table_generation, 2, "one publication");
    assert!(status.vips[0].moved_slots > 0);
    // Established flows stay where they were; new ones follow the table.
    for (port, backend) in &before {
        assert_eq!(
            agent.send(WEB, 80, *port, Tcp::Ack)?,
            *backend,
            "port {port}"
        );
    }
    let seen = agent.spread(WEB, 80, 10_000..11_000)?;
    let on_b1 = seen.get(&B1.parse::<IpAddr>()?).copied().unwrap_or(0);
    assert!(
        (500..700).contains(&on_b1),
        "{on_b1} of 1000 new flows: {seen:?}"
    );
    // The same weight again changes nothing; the file's weight removes the override.
    agent.set_weight(B1, 300)?;
    assert_eq!(agent.status()?.vips[0].table_generation, 2);
    assert!(agent
        .set_weight(B1, 100)?
        .contains("weight 100 (config, no override)"));
    assert_eq!(b1(&agent.status()?).context("B1")?.1, None);
    // Refusals change nothing.
    agent.set_weight(B1, 5)?;
    let generation = agent.status()?.vips[0].table_generation;
    let err = agent.set_weight("198.18.9.9", 7).unwrap_err().to_string();
    assert_eq!(err, "VIP web has no backend 198.18.9.9");
    let (reply, waiter) = reply_channel();
    agent.ctl.on_admin(AdminRequest::SetBackendWeight {
        vip: "nope".into(),
        backend: B1.parse()?,
        weight: config::Weight::new(7).map_err(anyhow::Error::msg)?,
        reply,
    });
    let err = agent
        .rt
        .block_on(waiter.wait(tokio::time::Instant::now() + ANSWER_BOUND))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(err, Err("no VIP named nope".to_string()));
    assert_eq!(agent.status()?.vips[0].table_generation, generation);
    // A drained backend keeps its override for when it comes back.
    agent.set_state(B1, AdminState::Drain)?;
    assert!(agent.set_weight(B1, 200)?.contains("it is drained"));
    assert_eq!(b1(&agent.status()?).context("B1")?.2, 0);
    agent.set_state(B1, AdminState::Active)?;
    assert_eq!(b1(&agent.status()?).context("B1")?.2, 200);
    // A reload of the unchanged file clears it and says so.
    let summary = agent.reload_file()?;
    assert_eq!(
        summary,
        "configuration reloaded: no change in the file; weight overrides cleared: web \
         198.18.1.1 200 -> 100"
    );
    let (_, weight_override, effective, slots) = b1(&agent.status()?).context("B1")?;
    assert_eq!((weight_override, effective), (None, 100));
    assert!((20_500..23_000).contains(&slots), "{slots} slots");
    assert_eq!(agent.reload_file()?, "configuration reloaded: no change");
    Ok(())
}
