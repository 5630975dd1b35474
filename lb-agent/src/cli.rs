//! The command line: `lb-agent run | check | decap | status | stats | top | trace | backend |
//! reload | maintenance | doctor`.

use crate::{admin, config, daemon, dataplane, docgen, doctor, netinfo, pinlock::PinLock, secrets};
mod backend;
mod trace;
use anyhow::{bail, Context, Result};
pub use backend::BackendAction;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

#[derive(Parser, Debug)]
#[command(
    name = "lb-agent",
    version,
    about = "XDP layer-4 load balancer: Maglev hashing, IPIP/IPv6 direct server return, health-checked failover",
    long_about = "XDP layer-4 load balancer agent.\n\n\
        `run` loads the XDP program onto the interface facing the router, programs its maps \
        from the configuration, health-checks the backends and rewrites a VIP's Maglev table \
        atomically when one fails or returns. The program and its maps stay pinned under \
        bpffs when the agent stops, so forwarding and the connection table survive restarts.\n\n\
        Backends run `lb-agent decap attach` (or kernel ipip/ip6tnl tunnels) and carry the VIP \
        on their loopback. `lb-agent doctor` checks a host for the usual setup mistakes."
)]
pub struct Cli {
    /// Log format of the agent's own messages.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Load and attach the balancer, program it, health-check backends, serve the admin API
    #[command(
        long_about = "Load and attach the balancer and run until SIGINT or SIGTERM.\n\n\
        The XDP program is attached to the interface (agent.interface or --iface) in \
        agent.xdp_mode (native, skb, or auto: native with a loud fallback to skb). Maps and \
        the XDP link are pinned under agent.pin_path; a later `run` adopts them instead of \
        resetting them, so the connection table survives an upgrade or a crash. Stopping \
        leaves the program attached and forwarding unless --detach-on-exit.\n\n\
        SIGHUP (or POST /reload) re-reads the configuration file and applies the difference; \
        an invalid file is rejected and the running configuration stays."
    )]
    Run {
        /// Configuration file (TOML)
        #[arg(long, short)]
        config: PathBuf,
        /// Interface to attach to (overrides agent.interface)
        #[arg(long, value_parser = interface_name)]
        iface: Option<String>,
        /// On exit, detach the program and remove the pinned maps (drops the connection table)
        #[arg(long)]
        detach_on_exit: bool,
        /// Load the data path's logging variant: ICMP sent, moved-slot decisions and drops in
        /// this log, with their flow (slower; for debugging, see docs/design.md)
        #[arg(long)]
        ebpf_log: bool,
    },
    /// Validate a configuration file and print it with every default filled in
    Check {
        /// Configuration file (TOML)
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Backend side: strip the balancer's IPIP / IPv6-in-IPv6 encapsulation in XDP
    Decap(DecapArgs),
    /// Show VIPs, backends, health, weights and table generations of the running agent
    Status(ClientArgs),
    /// Show the data path's counters, per VIP and per backend
    Stats(ClientArgs),
    /// Drain, undrain, disable, enable or set the weight of a backend in the running agent
    #[command(
        long_about = "Drain, undrain, disable or enable a backend of a VIP, or set its weight, \
        in the running agent.\n\n\
        `weight VIP BACKEND WEIGHT` sets the backend's weight (1..=10000, as in the file) until \
        the next reload of the configuration file, which clears every such override; the \
        file's own weight removes the override at once. New flows follow the new table, \
        established ones stay where they are. `lb-agent status` shows the override."
    )]
    Backend {
        #[arg(value_enum)]
        action: BackendAction,
        /// VIP name
        vip: String,
        /// Backend address
        backend: IpAddr,
        /// The new weight, for `weight` only (1..=10000)
        #[arg(
            required_if_eq("action", "weight"),
            allow_negative_numbers = true,
            value_parser = backend::weight_arg
        )]
        weight: Option<config::Weight>,
        #[command(flatten)]
        client: ControlArgs,
    },
    /// Make the running agent re-read its configuration file
    Reload(ControlArgs),
    /// Live view: per VIP and backend packets/s, bits/s, health, weight; drops by reason
    #[command(
        long_about = "Live view of the running agent, redrawn every interval: per VIP \
        and per backend packets and bits per second, health, admin state, published weight \
        and slow-start progress, and data-path drops per second by reason. Fits 80 columns; \
        Ctrl-C quits. --once prints one frame (after one interval); --json prints the view as \
        one JSON object per frame, for scripts."
    )]
    Top(TopArgs),
    /// Show the data path's verdict on each packet, live (and write the frames to a pcap file)
    #[command(long_about = TRACE_ABOUT)]
    Trace(trace::TraceArgs),
    /// Take this balancer out of the BGP fleet gracefully (on) or put it back (off)
    #[command(
        long_about = "Maintenance mode of the running agent's BGP announcements.\n\n\
        `on`: the VIPs stay announced, with the graceful-shutdown community 65535:0 (RFC 8326), \
        for bgp.maintenance_drain_ms; routers that honour it (local preference 0) send new \
        flows to the other balancers. Then the routes are withdrawn; the agent keeps \
        forwarding whatever still arrives. `off`: announced normally again at once.\n\n\
        The mode lasts until `off` or until the agent restarts. `lb-agent status` shows the \
        phase (draining, withdrawn); the metric lb_maintenance{phase} too."
    )]
    Maintenance {
        #[arg(value_enum)]
        action: MaintenanceAction,
        #[command(flatten)]
        client: ControlArgs,
    },
    /// Check this host for the setup mistakes that break XDP balancers (one line each)
    #[command(
        long_about = "Check this host, one line per check with OK, WARN or FAIL and \
        the fix: root, bpffs, BTF, kernel features, interface and MTU headroom for the \
        encapsulation, native XDP support of the driver, gateway MAC, rp_filter; with \
        --backend, the backend side: VIPs on loopback, decapsulation in place, ARP \
        settings. Exits non-zero if any check FAILs."
    )]
    Doctor {
        /// Interface to check (default: agent.interface of --config)
        #[arg(long, value_parser = interface_name)]
        iface: Option<String>,
        /// Configuration to check against (MTU, gateway MAC, VIPs, pin path)
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Run the backend-side checks
        #[arg(long)]
        backend: bool,
    },
    /// Print the completion script for SHELL (packaging)
    #[command(hide = true)]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write a man page for every command into DIR (packaging)
    #[command(hide = true)]
    Man { dir: PathBuf },
}

const TRACE_ABOUT: &str = "Show what the running agent's data path does with each packet, one \
    line each: time, CPU, verdict (tx, pass, drop) and its reason (the counter it moved), VIP, \
    Maglev slot (stable or moved), backend, the flow, and frame lengths (received>sent).\n\n\
    Packets are traced only while this command runs (a lease it renews every second; the \
    data path ignores a lapsed one). Filters: --vip, --verdict, --reason, --sample; --count \
    stops after N packets. --pcap FILE also writes each frame as received and, when \
    forwarded, as sent (with its outer header, which tcpdump on the interface cannot see), \
    at most 256 bytes of each. Run as root in the agent's network namespace; one trace at a \
    time.";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MaintenanceAction {
    /// Announce with the graceful-shutdown community, then withdraw after the drain time
    On,
    /// Announce normally again
    Off,
}

/// Where the running agent's admin endpoint is.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Admin address of the running agent (default: admin_listen of --config, else 127.0.0.1:9300)
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Configuration file to take admin_listen from
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// Where the running agent's control API is: its control socket (root only) by default.
#[derive(Args, Debug)]
pub struct ControlArgs {
    /// Control socket of the running agent (default: control_socket of --config, else
    /// /run/lb-agent/admin.sock)
    #[arg(long, conflicts_with = "control")]
    pub socket: Option<PathBuf>,
    /// Use the agent's TCP control listener (its control_listen) instead of the socket
    #[arg(long, requires = "token_file")]
    pub control: Option<SocketAddr>,
    /// File holding the bearer token of --control (mode 0600)
    #[arg(long, requires = "control")]
    pub token_file: Option<PathBuf>,
    /// Configuration file to take control_socket from
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ClientArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Refresh interval in milliseconds (100..=60000)
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub interval_ms: u64,
    /// Print one frame and exit
    #[arg(long)]
    pub once: bool,
    /// Print JSON instead of the screen
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DecapArgs {
    #[command(subcommand)]
    pub action: DecapAction,
}

#[derive(Subcommand, Debug)]
pub enum DecapAction {
    /// Attach the decap program to IFACE through a pinned link (stays after this command exits)
    Attach {
        /// Backend interface that receives the encapsulated packets
        #[arg(long, value_parser = interface_name)]
        iface: String,
        /// Extra local addresses to decapsulate for (default: every address on IFACE)
        #[arg(long)]
        address: Vec<IpAddr>,
        /// XDP mode: native (driver), skb (generic), or auto (native, else skb)
        #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
        mode: ModeArg,
        /// bpffs directory for the pinned link
        #[arg(long, default_value = "/sys/fs/bpf/lb-decap")]
        pin_dir: PathBuf,
    },
    /// Detach the decap program from IFACE
    Detach {
        /// Interface to detach from
        #[arg(long, value_parser = interface_name)]
        iface: String,
        /// bpffs directory of the pinned link
        #[arg(long, default_value = "/sys/fs/bpf/lb-decap")]
        pin_dir: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Native,
    Skb,
    Auto,
}

impl From<ModeArg> for config::XdpMode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Native => config::XdpMode::Native,
            ModeArg::Skb => config::XdpMode::Skb,
            ModeArg::Auto => config::XdpMode::Auto,
        }
    }
}

impl Cli {
    /// The command line, or exit with clap's usage error (status 2), also for the combinations
    /// clap cannot check itself.
    pub fn parse_checked() -> Cli {
        let cli = Cli::parse();
        if let Command::Backend { action, weight, .. } = &cli.command {
            if let Err(e) = backend::check(*action, *weight) {
                e.exit();
            }
        }
        cli
    }
}

/// Run one command; the returned code is the process exit status.
pub async fn execute(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Run {
            config,
            iface,
            detach_on_exit,
            ebpf_log,
        } => daemon::run(&config, iface, detach_on_exit, ebpf_log)
            .await
            .map(|()| 0),
        Command::Check { config } => {
            let cfg = config::load(&config)?;
            println!("# {}: valid", config.display());
            // The output lands in tickets and chat: secrets stay in the file.
            print!("{}", secrets::masked(&cfg).to_toml()?);
            Ok(0)
        }
        Command::Decap(args) => decap(args.action).await.map(|()| 0),
        Command::Top(args) => top(args).await,
        Command::Trace(args) => trace::run(args).await,
        Command::Status(args) => show(&args, false).await,
        Command::Stats(args) => show(&args, true).await,
        Command::Backend {
            action,
            vip,
            backend,
            weight,
            client,
        } => control(&client, &backend::path(action, &vip, backend, weight)).await,
        Command::Reload(client) => control(&client, "/reload").await,
        Command::Maintenance { action, client } => {
            let path = match action {
                MaintenanceAction::On => "/maintenance/on",
                MaintenanceAction::Off => "/maintenance/off",
            };
            control(&client, path).await
        }
        Command::Doctor {
            iface,
            config,
            backend,
        } => run_doctor(iface, config, backend).await,
        Command::Completions { shell } => {
            docgen::completions(shell, &mut std::io::stdout().lock()).map(|()| 0)
        }
        Command::Man { dir } => {
            for page in docgen::man_pages(&dir)? {
                println!("{}", page.display());
            }
            Ok(0)
        }
    }
}

/// `lb-agent status` / `stats` (`--json`: the report, or its traffic counters).
async fn show(args: &ClientArgs, stats: bool) -> Result<i32> {
    let report = admin::fetch_status(admin_addr(&args.admin)?).await?;
    match (stats, args.json) {
        (false, true) => println!("{}", serde_json::to_string_pretty(&report)?),
        (false, false) => print!("{}", admin::render_status(&report)),
        (true, true) => {
            let stats = admin::StatsReport::from(&report);
            println!("{}", serde_json::to_string_pretty(&stats)?);
        }
        (true, false) => print!("{}", admin::render_stats(&report)),
    }
    Ok(0)
}

/// A POST to the control API; prints the agent's one-line answer.
async fn control(client: &ControlArgs, path: &str) -> Result<i32> {
    println!("{}", admin::post(&control_target(client)?, path).await?);
    Ok(0)
}

async fn top(args: TopArgs) -> Result<i32> {
    let options = crate::top::TopOptions {
        interval: std::time::Duration::from_millis(args.interval_ms),
        count: args.once.then_some(1),
        json: args.json,
    };
    crate::top::run(admin_addr(&args.admin)?, options)
        .await
        .map(|()| 0)
}

/// Exit status 1 when a check failed, so scripts can gate on the doctor.
async fn run_doctor(iface: Option<String>, config: Option<PathBuf>, backend: bool) -> Result<i32> {
    let config = config.as_deref().map(config::load).transpose()?;
    let findings = doctor::run(&doctor::DoctorOptions {
        iface,
        config,
        backend,
    })
    .await;
    print!("{}", doctor::render(&findings));
    Ok(if doctor::failed(&findings) { 1 } else { 0 })
}

/// `--iface`: a name the kernel could give an interface (it also names pin files).
fn interface_name(name: &str) -> std::result::Result<String, String> {
    match config::interface_name_problem(name) {
        Some(problem) => Err(problem),
        None => Ok(name.to_string()),
    }
}

fn admin_addr(args: &AdminArgs) -> Result<SocketAddr> {
    if let Some(addr) = args.admin {
        return Ok(addr);
    }
    match &args.config {
        Some(path) => Ok(config::load(path)?.agent.admin_listen),
        None => Ok(SocketAddr::from(([127, 0, 0, 1], 9300))),
    }
}

fn control_target(args: &ControlArgs) -> Result<admin::Control> {
    if let (Some(addr), Some(file)) = (args.control, &args.token_file) {
        let token = admin::Token::from_file(file).context("--token-file")?;
        return Ok(admin::Control::Tcp { addr, token });
    }
    if let Some(path) = &args.socket {
        return Ok(admin::Control::Socket(path.clone()));
    }
    Ok(admin::Control::Socket(match &args.config {
        Some(path) => config::load(path)?.agent.control_socket,
        None => PathBuf::from("/run/lb-agent/admin.sock"),
    }))
}

const DECAP_LOCK_HINT: &str =
    "Another `lb-agent decap` is attaching or detaching there: run this again when it is done, \
     or use another --pin-dir.";

fn decap_link_pin(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("{iface}_link"))
}

fn has_decap_links(pin_dir: &Path) -> bool {
    std::fs::read_dir(pin_dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with("_link"))
    })
}

async fn decap(action: DecapAction) -> Result<()> {
    match action {
        DecapAction::Attach {
            iface,
            address,
            mode,
            pin_dir,
        } => {
            crate::bpffs::ensure()?;
            // Two attaches at once would race for the pinned link: the second one stops here.
            let _lock = PinLock::acquire(&pin_dir, DECAP_LOCK_HINT)?;
            // Before anything is adopted: another namespace's link would get this one's program.
            dataplane::pinned::claim(&pin_dir, |other| format!("--pin-dir {}", other.display()))?;
            let mut addrs = netinfo::interface(&iface).await?.addrs;
            addrs.extend(address);
            if addrs.is_empty() {
                bail!("{iface} has no address and none was given with --address");
            }
            let mut decap = dataplane::Decap::load()?;
            for a in &addrs {
                decap.add_local(*a)?;
            }
            let how = decap
                .attach(&iface, mode.into(), &decap_link_pin(&pin_dir, &iface))
                .with_context(|| format!("attaching the decap program to {iface}"))?;
            let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
            println!(
                "decap attached to {iface} ({how}), decapsulating for {}",
                list.join(", ")
            );
            Ok(())
        }
        DecapAction::Detach { iface, pin_dir } => {
            let _lock = PinLock::acquire(&pin_dir, DECAP_LOCK_HINT)?;
            let pin = decap_link_pin(&pin_dir, &iface);
            if !pin.exists() {
                bail!("no decap program pinned for {iface} at {}", pin.display());
            }
            dataplane::detach_pinned(&pin)?;
            if !has_decap_links(&pin_dir) {
                dataplane::pinned::release(&pin_dir)?;
            }
            println!("decap detached from {iface}");
            Ok(())
        }
    }
}
