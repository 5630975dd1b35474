//! The real `lb-agent` binary running in the balancer's namespace (entered with nsenter, so it
//! shares bpffs and its pins with everyone else).

use crate::{
    netns::block_in,
    topo::{lb_v4, lb_v6, Topology, LB_IFACE},
};
use anyhow::{bail, Context, Result};
use lb_agent::admin::{self, StatusReport};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

/// The read-only listener (GET /metrics, /status), on the namespace's loopback.
pub const ADMIN: &str = "127.0.0.1:9300";

/// The `[agent]` section for balancer `lb` of `topo` (interface, pins, admin listener, control
/// socket, encap sources, `max_vips`); callers append their own keys and VIPs.
pub fn agent_section(topo: &Topology, lb: usize, max_vips: u32) -> String {
    format!(
        "[agent]\ninterface = \"{LB_IFACE}\"\nxdp_mode = \"native\"\npin_path = \"{}\"\n\
         admin_listen = \"{ADMIN}\"\ncontrol_socket = \"{}\"\ngateway_mac = \"auto\"\n\
         encap_source_v4 = \"{}\"\nencap_source_v6 = \"{}\"\nmax_vips = {max_vips}\n",
        topo.pin_dir_of(lb).display(),
        control_socket(&std::env::temp_dir().join(&topo.prefix), lb).display(),
        lb_v4(lb),
        lb_v6(lb),
    )
}

/// The control socket of the agent whose files live in `dir` (bpffs and the filesystem are
/// shared by every namespace, so each agent needs its own path; `lb` tells balancers apart).
pub fn control_socket(dir: &Path, lb: usize) -> PathBuf {
    dir.join(format!("control{lb}.sock"))
}

/// The agent binary built next to the test executable (target/<profile>/lb-agent), or
/// LB_AGENT_BIN.
pub fn agent_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("LB_AGENT_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("test executable has no directory")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("deps has no parent")?;
    }
    let bin = dir.join("lb-agent");
    if !bin.exists() {
        bail!(
            "{} not found: build it (cargo build -p lb-agent) or set LB_AGENT_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

pub struct Agent {
    pub child: Option<Child>,
    pub config: PathBuf,
    pub log: PathBuf,
    /// Its control socket (`agent.control_socket` of the configuration it started with).
    pub control: PathBuf,
    ns: String,
}

impl Agent {
    /// Start `lb-agent run` in the topology's LB namespace and wait until its admin endpoint
    /// answers with every VIP published.
    pub fn start(topo: &Topology, config: &Path) -> Result<Self> {
        Self::start_in(&topo.lb, config, Duration::from_secs(20))
    }

    /// Start `lb-agent run` in namespace `ns` and wait up to `ready_within` for every VIP to be
    /// published (large configurations take longer than the scenarios' 20 s).
    pub fn start_in(ns: &str, config: &Path, ready_within: Duration) -> Result<Self> {
        Self::start_with(ns, config, ready_within, |_| {})
    }

    /// [`Agent::start_in`], with `adjust` applied to the command first (limits, environment).
    pub fn start_with(
        ns: &str,
        config: &Path,
        ready_within: Duration,
        adjust: impl FnOnce(&mut std::process::Command),
    ) -> Result<Self> {
        let log = config.with_extension("log");
        let control = lb_agent::config::load(config)
            .context("the agent's configuration")?
            .agent
            .control_socket;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut command = crate::netns::command(ns, agent_binary()?);
        command
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info,netlink_packet_route=error")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        adjust(&mut command);
        let child = command.spawn().context("starting lb-agent")?;
        let mut agent = Self {
            child: Some(child),
            config: config.to_path_buf(),
            log,
            control,
            ns: ns.to_string(),
        };
        agent.wait_ready(ready_within)?;
        Ok(agent)
    }

    fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("lb-agent exited ({status}):\n{}", self.log_text());
                }
            }
            if let Ok(s) = self.status() {
                if s.vips.iter().all(|v| v.table_generation > 0) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("lb-agent not ready after {within:?}:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The failover times (µs, deciding check to published table) the agent logged.
    pub fn logged_failovers(&self) -> Vec<u64> {
        self.failovers_where(|_| true)
    }

    /// Those of VIP `vip`'s publications, in order.
    pub fn logged_failovers_of(&self, vip: &str) -> Vec<u64> {
        let span = format!("publish{{vip={vip}}}");
        self.failovers_where(|line| line.contains(&span))
    }

    fn failovers_where(&self, keep: impl Fn(&str) -> bool) -> Vec<u64> {
        self.log_text()
            .lines()
            .filter(|l| keep(l))
            .filter_map(|l| l.split("failover_us=").nth(1))
            .filter_map(|rest| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    }

    pub fn status(&self) -> Result<StatusReport> {
        let addr: SocketAddr = ADMIN.parse()?;
        block_in(
            &self.ns,
            move || async move { admin::fetch_status(addr).await },
        )
    }

    /// `GET /metrics`: the OpenMetrics text.
    pub fn metrics(&self) -> Result<String> {
        let addr: SocketAddr = ADMIN.parse()?;
        block_in(
            &self.ns,
            move || async move { admin::fetch_metrics(addr).await },
        )
    }

    /// The agent's process id (nsenter execs it, so it is the child's).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `POST path` on the control socket (as the CLI does).
    pub fn post(&self, path: &str) -> Result<String> {
        let control = admin::Control::Socket(self.control.clone());
        let path = path.to_string();
        block_in(&self.ns, move || async move {
            admin::post(&control, &path).await
        })
    }

    /// `GET /status` on the control socket: answers while the read-only listener is busy.
    pub fn control_status(&self) -> Result<StatusReport> {
        let control = admin::Control::Socket(self.control.clone());
        block_in(&self.ns, move || async move {
            admin::fetch_status_control(&control).await
        })
    }

    /// SIGKILL: no cleanup at all, as in a crash.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGHUP: reload the configuration file.
    pub fn hup(&self) -> Result<()> {
        self.signal(libc::SIGHUP)
    }

    fn signal(&self, sig: i32) -> Result<()> {
        let Some(child) = self.child.as_ref() else {
            bail!("agent not running");
        };
        // The child is nsenter, which execs the agent: same pid.
        // SAFETY: sending a signal to our own child.
        if unsafe { libc::kill(child.id() as i32, sig) } != 0 {
            bail!("kill: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.signal(libc::SIGTERM)?;
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    child.kill()?;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}
