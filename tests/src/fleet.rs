//! A fleet: N balancers behind one router that spreads the VIPs over them with ECMP.
//!
//! ```text
//!  client ── router (BIRD, AS 65000, ECMP by 5-tuple) ──r-l0── lb  (agent + BIRD, AS 65010)
//!                 │                                    ──r-l1── lb1 (agent + BIRD)
//!                 │                                    ──r-l2── ...
//!                 └── br0 ── backends (xdp_decap)
//! ```
//! Each balancer runs the real agent with a `[bgp]` section and its own BIRD, whose
//! configuration only includes the file the agent writes. The router's BIRD learns the VIPs
//! from every balancer and installs one multipath route per VIP (`merge paths`).

use crate::{
    agentproc::Agent,
    netns::{sh, NsRuntime},
    scenario::{balancer_config, Options},
    servers::Backends,
    topo::{self, lb_v4, lb_v6, router_link, router_v4, Topology},
};
use anyhow::{bail, Context, Result};
use lb_agent::admin::StatusReport;
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub const ROUTER_AS: u32 = 65000;
pub const FLEET_AS: u32 = 65010;
/// BGP hold time of every session: a balancer that vanishes silently is withdrawn after it.
pub const HOLD_TIME_S: u64 = 3;

/// How the fleet's BGP sessions are set up.
#[derive(Clone, Debug)]
pub struct FleetBgp {
    /// Hold time of every session, both sides.
    pub hold_time_s: u64,
    /// BFD on every session, both sides (`bfd = true` on the balancers), 100 ms × 3.
    pub bfd: bool,
    /// More keys of each balancer's `[bgp]` section (e.g. `maintenance_drain_ms = 6000`).
    pub extra_keys: String,
}

impl Default for FleetBgp {
    fn default() -> Self {
        Self {
            hold_time_s: HOLD_TIME_S,
            bfd: false,
            extra_keys: String::new(),
        }
    }
}

/// One BIRD process in a namespace (network only, so it shares the file system).
pub struct Bird {
    child: Option<Child>,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Bird {
    pub fn start(ns: &str, dir: &Path, name: &str, config: &str) -> Result<Self> {
        let conf = dir.join(format!("{name}.conf"));
        let socket = dir.join(format!("{name}.ctl"));
        let log = dir.join(format!("{name}.log"));
        let _ = std::fs::remove_file(&socket);
        std::fs::write(&conf, format!("log \"{}\" all;\n{config}", log.display()))?;
        // Errors before the log is open (configuration) go to stderr.
        let stderr = std::fs::File::create(dir.join(format!("{name}.stderr")))?;
        let child = crate::netns::command(ns, "bird")
            .args(["-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("starting bird (installed by `cargo xtask setup`)")?;
        let mut bird = Self {
            child: Some(child),
            socket,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while bird.birdc(&["show", "status"]).is_err() {
            if let Some(status) = bird
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "bird {name} exited ({status}): {}{}",
                    std::fs::read_to_string(dir.join(format!("{name}.stderr"))).unwrap_or_default(),
                    std::fs::read_to_string(&bird.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("bird {name} did not open its control socket in 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(bird)
    }

    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .context("running birdc")?;
        if !out.status.success() {
            bail!(
                "birdc {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// SIGKILL: the kernel closes its BGP sessions' sockets.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One balancer: its namespace, configuration, agent and BIRD.
pub struct Member {
    pub ns: String,
    pub config: PathBuf,
    pub agent: Option<Agent>,
    pub bird: Option<Bird>,
    dir: PathBuf,
}

pub struct Fleet {
    pub options: Options,
    pub client: NsRuntime,
    pub members: Vec<Member>,
    pub router_bird: Bird,
    pub servers: Backends,
    pub dir: PathBuf,
    // Dropped last: everything above lives in its namespaces.
    pub topo: Topology,
}

impl Fleet {
    /// Build the topology with `balancers` balancers, start every server, BIRD and agent, and
    /// wait until the router routes each VIP over all of them.
    pub fn start(tag: &str, balancers: usize, options: Options) -> Result<Self> {
        Self::start_with(tag, balancers, options, &FleetBgp::default())
    }

    /// [`Fleet::start`] with sessions set up as `bgp` says.
    pub fn start_with(
        tag: &str,
        balancers: usize,
        options: Options,
        bgp: &FleetBgp,
    ) -> Result<Self> {
        let topo = Topology::build_with(
            tag,
            topo::Options {
                backends: options.backends,
                balancers,
                static_vip_routes: false,
            },
        )?;
        let servers = Backends::start(&topo.backends)?;
        let dir = std::env::temp_dir().join(&topo.prefix);
        std::fs::create_dir_all(&dir)?;
        let router_bird = Bird::start(
            &topo.router,
            &dir,
            "router",
            &router_bird_config(balancers, bgp),
        )?;
        let members = (0..balancers)
            .map(|i| {
                let mdir = dir.join(format!("lb{i}"));
                std::fs::create_dir_all(&mdir)?;
                let config = mdir.join("lb.toml");
                std::fs::write(
                    &config,
                    format!(
                        "{}{}",
                        balancer_config(&topo, i, &options, &options.weights),
                        bgp_section(i, &mdir, bgp)
                    ),
                )?;
                Ok(Member {
                    ns: topo.lbs[i].clone(),
                    config,
                    agent: None,
                    bird: None,
                    dir: mdir,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let client = NsRuntime::new(&topo.client)?;
        let mut fleet = Self {
            options,
            client,
            members,
            router_bird,
            servers,
            dir,
            topo,
        };
        for i in 0..balancers {
            fleet.start_member(i)?;
        }
        fleet.wait_for_nexthops(topo::VIP_V4.into(), balancers, Duration::from_secs(30))?;
        fleet.wait_for_nexthops(topo::VIP_V6.into(), balancers, Duration::from_secs(10))?;
        Ok(fleet)
    }

    /// Start balancer `i`'s BIRD, then its agent (which announces once its tables are up).
    pub fn start_member(&mut self, i: usize) -> Result<()> {
        let m = &mut self.members[i];
        // The agent writes its file here; BIRD's include pattern needs the directory.
        let include_dir = m.dir.join("bird");
        std::fs::create_dir_all(&include_dir)?;
        let include = include_dir.join("*.conf");
        m.bird = Some(Bird::start(
            &m.ns,
            &m.dir,
            "bird",
            &format!("protocol device {{}}\ninclude \"{}\";\n", include.display()),
        )?);
        m.agent = Some(Agent::start_in(&m.ns, &m.config, Duration::from_secs(20))?);
        Ok(())
    }

    /// A balancer dies: agent and BIRD killed with SIGKILL (no withdrawal sent; the kernel
    /// closes the BGP session).
    pub fn kill_member(&mut self, i: usize) -> Result<()> {
        let m = &mut self.members[i];
        if let Some(mut a) = m.agent.take() {
            a.kill9()?;
        }
        if let Some(mut b) = m.bird.take() {
            b.kill9();
        }
        Ok(())
    }

    /// Cut (or restore) balancer `i`'s link at the router without a change of link state:
    /// everything to and from it is dropped, so it vanishes without a word, like a hung host,
    /// and only the BGP hold timer tells the router.
    pub fn cut_link(&self, i: usize, cut: bool) -> Result<()> {
        let rt = Some(self.topo.router.as_str());
        let table = format!("lbe_cut{i}");
        if !cut {
            sh(rt, &format!("nft delete table inet {table}"))?;
            return Ok(());
        }
        let link = router_link(i);
        sh(rt, &format!("nft add table inet {table}"))?;
        // Not the output hook: a local drop would fail the router's own sends at once, which a
        // silent peer never causes.
        for hook in ["input", "forward"] {
            sh(
                rt,
                &format!(
                    "nft add chain inet {table} {hook} {{ type filter hook {hook} priority 0 ; }}"
                ),
            )?;
            for dir in ["iifname", "oifname"] {
                if (hook, dir) == ("input", "oifname") {
                    continue;
                }
                sh(
                    rt,
                    &format!("nft add rule inet {table} {hook} {dir} {link} drop"),
                )?;
            }
        }
        Ok(())
    }

    /// `lb-agent ARGS` (the CLI) in balancer `i`'s namespace: its output, or an error with it.
    /// Run the CLI in balancer `i`'s namespace, pointed at its agent by `--config` (its
    /// admin address and control socket are the agent's own, not the defaults).
    pub fn cli(&self, i: usize, args: &[&str]) -> Result<String> {
        let config = &self.agent(i)?.config;
        let out = crate::netns::command(&self.members[i].ns, crate::agentproc::agent_binary()?)
            .args(args)
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .output()
            .context("running the lb-agent CLI")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "lb-agent {}: {}{text}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(text)
    }

    pub fn agent(&self, i: usize) -> Result<&Agent> {
        self.members[i]
            .agent
            .as_ref()
            .with_context(|| format!("balancer {i} has no agent running"))
    }

    /// The router's next hops for `vip` (empty when no balancer announces it).
    pub fn nexthops(&self, vip: IpAddr) -> Result<Vec<IpAddr>> {
        let family = if vip.is_ipv6() { "-6" } else { "-4" };
        let text = sh(
            Some(&self.topo.router),
            &format!("ip {family} route show {vip}"),
        )?;
        let words: Vec<&str> = text.split_whitespace().collect();
        Ok(words
            .windows(2)
            .filter(|w| w[0] == "via")
            .filter_map(|w| w[1].parse().ok())
            .collect())
    }

    /// Wait until the router routes `vip` over exactly `count` balancers; returns how long it
    /// took.
    pub fn wait_for_nexthops(
        &self,
        vip: IpAddr,
        count: usize,
        limit: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let hops = self.nexthops(vip)?;
            if hops.len() == count {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                bail!(
                    "the router routes {vip} via {hops:?}, not over {count} balancers, after \
                     {limit:?}\nrouter BIRD:\n{}",
                    self.router_bird
                        .birdc(&["show", "protocols"])
                        .unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The status of each of `members` (their agents must run).
    pub fn statuses(&self, members: &[usize]) -> Result<Vec<StatusReport>> {
        members.iter().map(|&i| self.agent(i)?.status()).collect()
    }
}

/// The router: one eBGP session per balancer, every learnt route into the kernel, equal routes
/// merged into one multipath route. It honours the graceful-shutdown community as RFC 8326
/// asks (local preference 0), so a balancer in maintenance drops out of the multipath route
/// while it still announces.
fn router_bird_config(balancers: usize, bgp: &FleetBgp) -> String {
    let mut c = String::from(
        "router id 198.18.100.1;\nprotocol device {}\n\
         protocol kernel { ipv4 { import none; export all; }; merge paths on; }\n\
         protocol kernel { ipv6 { import none; export all; }; merge paths on; }\n\
         filter honour_gshut {\n  if (65535, 0) ~ bgp_community then bgp_local_pref = 0;\n  accept;\n}\n",
    );
    let bfd = if bgp.bfd {
        c.push_str("protocol bfd {\n}\n");
        "  bfd { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; };\n"
    } else {
        ""
    };
    let hold = bgp.hold_time_s;
    for i in 0..balancers {
        c.push_str(&format!(
            "protocol bgp lb{i} {{\n  local {} as {ROUTER_AS};\n  neighbor {} as {FLEET_AS};\n  \
             hold time {hold};\n  connect retry time 1;\n  error wait time 1, 2;\n{bfd}  \
             ipv4 {{ import filter honour_gshut; export none; }};\n  \
             ipv6 {{ import filter honour_gshut; export none; }};\n}}\n",
            router_v4(i),
            lb_v4(i),
        ));
    }
    c
}

/// Balancer `i`'s `[bgp]` section: one session to the router, IPv6 VIPs carried on it with
/// the balancer's IPv6 address as next hop.
fn bgp_section(i: usize, dir: &Path, bgp: &FleetBgp) -> String {
    format!(
        "\n[bgp]\nlocal_as = {FLEET_AS}\nrouter_id = \"{}\"\nnext_hop_v6 = \"{}\"\nhold_time = {}\n\
         communities = [\"{FLEET_AS}:100\"]\nbird_socket = \"{}\"\ninclude_file = \"{}\"\n\
         announce_interface = \"lb-announce\"\n{}\n\n[[bgp.neighbor]]\naddress = \"{}\"\nremote_as = {ROUTER_AS}\nbfd = {}\n",
        lb_v4(i),
        lb_v6(i),
        bgp.hold_time_s,
        dir.join("bird.ctl").display(),
        dir.join("bird").join("vips.conf").display(),
        bgp.extra_keys,
        router_v4(i),
        bgp.bfd,
    )
}
