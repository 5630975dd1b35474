//! One end-to-end setup: the topology, real servers on every backend, the agent running with a
//! generated configuration, and a client runtime inside the client namespace.

use crate::{
    agentproc::Agent,
    netns::NsRuntime,
    servers::{Backends, HTTP_PORT, LONG_PORT, UDP_PORT},
    topo::{backend_v4, backend_v6, Topology, VIP_UDP, VIP_V4, VIP_V6},
};
use anyhow::Result;
use lb_agent::admin::BackendHealth;
use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

/// Knobs of the generated agent configuration.
#[derive(Clone, Debug)]
pub struct Options {
    pub backends: usize,
    /// Weight of each backend (same length as `backends`).
    pub weights: Vec<u32>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub rise: u32,
    pub fall: u32,
    pub slow_start_ms: u64,
    pub all_down: &'static str,
    /// `agent.conn_table_size`.
    pub conn_table_size: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            backends: 3,
            weights: vec![100; 3],
            interval_ms: 200,
            timeout_ms: 150,
            rise: 2,
            fall: 3,
            slow_start_ms: 0,
            all_down: "fail-open",
            conn_table_size: 65536,
        }
    }
}

pub struct Scenario {
    pub options: Options,
    pub client: NsRuntime,
    pub agent: Agent,
    pub servers: Backends,
    pub config_path: PathBuf,
    // Dropped last: everything above lives in its namespaces.
    pub topo: Topology,
}

pub use crate::servers::backend_name;

impl Scenario {
    pub fn start(tag: &str, options: Options) -> Result<Self> {
        let topo = Topology::build(tag, options.backends)?;
        let servers = Backends::start(&topo.backends)?;
        let dir = std::env::temp_dir().join(&topo.prefix);
        std::fs::create_dir_all(&dir)?;
        let config_path = dir.join("lb.toml");
        std::fs::write(&config_path, config_text(&topo, &options, &options.weights))?;
        let agent = Agent::start(&topo, &config_path)?;
        let client = NsRuntime::new(&topo.client)?;
        Ok(Self {
            options,
            client,
            agent,
            servers,
            config_path,
            topo,
        })
    }

    pub fn web(&self) -> SocketAddr {
        (VIP_V4, HTTP_PORT).into()
    }

    pub fn web6(&self) -> SocketAddr {
        (VIP_V6, HTTP_PORT).into()
    }

    pub fn udp(&self) -> SocketAddr {
        (VIP_UDP, UDP_PORT).into()
    }

    pub fn long(&self) -> SocketAddr {
        (VIP_V4, LONG_PORT).into()
    }

    pub fn stop_server(&mut self, i: usize) {
        self.servers.stop(i);
    }

    pub fn start_server(&mut self, i: usize) -> Result<()> {
        self.servers.start_again(i)
    }

    /// Rewrite the configuration (e.g. other weights or backends) without reloading it.
    pub fn write_config(&self, weights: &[u32]) -> Result<()> {
        std::fs::write(
            &self.config_path,
            config_text(&self.topo, &self.options, weights),
        )?;
        Ok(())
    }

    /// Health of backend `i` of VIP `vip` as the agent reports it; `None` if it is not in the
    /// report.
    pub fn health(&self, vip: &str, i: usize) -> Result<Option<BackendHealth>> {
        let status = self.agent.status()?;
        let addr = backend_v4(i).to_string();
        Ok(status
            .vips
            .iter()
            .find(|v| v.name == vip)
            .and_then(|v| {
                v.backends.iter().find(|b| {
                    b.address.to_string() == addr
                        || b.address.to_string() == backend_v6(i).to_string()
                })
            })
            .map(|b| b.health))
    }

    /// Polls `/status` every 10 ms until backend `i` of `vip` is `health`; how long that took.
    /// The error carries the agent's log.
    pub fn wait_health(
        &self,
        vip: &str,
        i: usize,
        health: BackendHealth,
        limit: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.health(vip, i)? == Some(health) {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        anyhow::bail!(
            "{vip}/backend{i} not {health} after {limit:?}:\n{}",
            self.agent.log_text()
        )
    }
}

/// The agent configuration for a topology. A weight of 0 leaves the backend out.
pub fn config_text(topo: &Topology, o: &Options, weights: &[u32]) -> String {
    balancer_config(topo, 0, o, weights)
}

/// The configuration of balancer `lb` of the topology (they differ in addresses and pins only).
pub fn balancer_config(topo: &Topology, lb: usize, o: &Options, weights: &[u32]) -> String {
    let check = |vip: &str, kind: &str, port: u16| {
        format!(
            "[vip.health_check]\nkind = \"{kind}\"\nport = {port}\npath = \"/healthz?vip={vip}\"\ninterval_ms = {}\ntimeout_ms = {}\nrise = {}\nfall = {}\n",
            o.interval_ms, o.timeout_ms, o.rise, o.fall
        )
    };
    let backends = |v6: bool| {
        let mut s = String::new();
        for (i, w) in weights.iter().enumerate() {
            if *w == 0 {
                continue;
            }
            let addr = if v6 {
                backend_v6(i).to_string()
            } else {
                backend_v4(i).to_string()
            };
            s.push_str(&format!(
                "[[vip.backend]]\naddress = \"{addr}\"\nweight = {w}\n"
            ));
        }
        s
    };
    let mut text = crate::agentproc::agent_section(topo, lb, 8);
    text.push_str(&format!(
        "conn_table_size = {}\nslow_start_ms = {}\n",
        o.conn_table_size, o.slow_start_ms
    ));
    for (name, addr, port, proto, kind, v6) in [
        ("web", VIP_V4.to_string(), HTTP_PORT, "tcp", "http", false),
        ("web6", VIP_V6.to_string(), HTTP_PORT, "tcp", "http", true),
        ("dns", VIP_UDP.to_string(), UDP_PORT, "udp", "http", false),
        ("long", VIP_V4.to_string(), LONG_PORT, "tcp", "tcp", false),
    ] {
        text.push_str(&format!(
            "\n[[vip]]\nname = \"{name}\"\naddress = \"{addr}\"\nport = {port}\nprotocol = \"{proto}\"\nall_down = \"{}\"\n",
            o.all_down
        ));
        let check_port = if kind == "tcp" { LONG_PORT } else { HTTP_PORT };
        text.push_str(&check(name, kind, check_port));
        text.push_str(&backends(v6));
    }
    text
}
