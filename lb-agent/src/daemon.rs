//! `lb-agent run`: load, program and attach the balancer, then serve health checks, the admin
//! endpoint, reloads and signals from one controller task until SIGINT or SIGTERM.
//!
//! `run` is three steps: `start` (configuration, lock, maps, attach, BGP), `Inputs::spawn` (the
//! tasks that feed the controller: checkers' reports, sweeps, the gateway and link watches,
//! the admin listeners, signals), and `serve` (the controller's loop), then the stop.

use crate::{
    admin::{self, AdminRequest},
    bgp::Speaker,
    config::{self, AgentConfig, GatewayMac},
    controller::{Controller, LoadedConfig, Setup, SweepDone, TICK},
    dataplane::{self, Attachment, Balancer, LoadOptions},
    gateway::{self, GatewayChange},
    health::CheckReport,
    limits,
    linkwatch::{self, LinkEvent},
    netinfo,
    notify::{Notifier, Watchdog},
    pinlock::PinLock,
};
use anyhow::{Context, Result};
use lb_common::hash::{FlowHashKey, NO_KEY};
use std::path::Path;
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    sync::mpsc,
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Longest a shutdown waits for BIRD to confirm the withdrawal.
const BGP_WITHDRAW_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

pub async fn run(
    config_path: &Path,
    iface: Option<String>,
    detach_on_exit: bool,
    ebpf_log: bool,
) -> Result<()> {
    limits::raise_nofile();
    let mut cfg = config::Reader::default()
        .load(config_path.to_path_buf(), config::READ_TIMEOUT)
        .await?;
    if let Some(iface) = &iface {
        cfg.agent.interface = iface.clone();
    }
    let agent = cfg.agent.clone();
    let vip_count = cfg.vips.len();
    crate::bpffs::ensure()?;
    // Before any map is touched, held until return: a second agent on this pin path fails here.
    let _pin_lock = PinLock::acquire(
        &agent.pin_path,
        "Stop that agent first (systemctl stop lb-agent), or give this one another \
         agent.pin_path (and admin_listen, control_socket).",
    )?;
    let (mut ctl, attachment, reports) = start(cfg, config_path, iface, ebpf_log).await?;
    let shutdown = CancellationToken::new();
    let (mut inputs, admin_task) = Inputs::spawn(&mut ctl, &agent, reports, &shutdown).await?;
    let sd = Notifier;
    // Last step of the start: attached, tables published, BGP started, admin endpoint bound.
    sd.ready(&format!(
        "forwarding on {} ({attachment}), {vip_count} VIPs published",
        agent.interface
    ));
    serve(&mut ctl, &mut inputs, &sd).await;
    info!("stopping");
    sd.stopping();
    // Withdraw first: routers move the traffic away while this host still forwards it.
    if let Some(speaker) = ctl.take_speaker() {
        speaker.withdraw_all(BGP_WITHDRAW_TIMEOUT).await;
    }
    ctl.stop_checkers();
    shutdown.cancel();
    if let Ok(Err(e)) = admin_task.await {
        warn!("admin endpoint: {e:#}");
    }
    drop(ctl);
    if detach_on_exit {
        dataplane::unpin_all(&agent.pin_path)?;
        info!("detached and removed the pinned maps");
    } else {
        info!("program left attached and maps pinned: forwarding continues");
    }
    Ok(())
}

/// Program the maps, attach, and announce: the controller, how it attached, and the receiver
/// of its checkers' reports.
async fn start(
    cfg: config::Config,
    config_path: &Path,
    iface: Option<String>,
    ebpf_log: bool,
) -> Result<(Controller, Attachment, mpsc::Receiver<CheckReport>)> {
    let agent = cfg.agent.clone();
    let bgp = cfg.bgp.clone();
    let gateway_mac = resolve_gateway(&agent).await?;
    let (local_mac, flow_hash_key) = identity(&agent).await?;
    let dp = Balancer::load(LoadOptions {
        table_size: agent.table_size,
        max_vips: agent.max_vips,
        conn_table_entries: agent.conn_table_size,
        pin_dir: Some(agent.pin_path.clone()),
        ebpf_log,
    })?;
    let (reports_tx, reports) = mpsc::channel(4096);
    // Maps are programmed before the program is attached (or swapped in), so no packet ever
    // meets a half-configured balancer.
    let mut ctl = Controller::new(
        dp,
        Setup {
            config: cfg,
            config_path: config_path.to_path_buf(),
            interface_override: iface,
            interface: agent.interface.clone(),
            gateway_mac,
            local_mac,
            flow_hash_key,
        },
        reports_tx,
    )?;
    let attachment = ctl.attach(&agent.interface, agent.xdp_mode)?;
    info!(iface = %agent.interface, mode = %attachment, pin_path = %agent.pin_path.display(), "balancer attached");
    // Announced only now: every table is published and the program attached.
    if let Some(bgp) = bgp {
        let speaker = Speaker::start(bgp, config_path.display().to_string())
            .await
            .context("starting BGP announcements")?;
        ctl.set_speaker(speaker);
    }
    Ok((ctl, attachment, reports))
}

async fn resolve_gateway(agent: &AgentConfig) -> Result<[u8; 6]> {
    Ok(match agent.gateway_mac {
        GatewayMac::Fixed(mac) => mac,
        GatewayMac::Auto => {
            let (mac, via) = netinfo::gateway_mac(&agent.interface).await?;
            info!(gateway = %via, mac = %netinfo::format_mac(&mac), "gateway MAC resolved");
            mac
        }
    })
}

/// The interface's MAC (frames to it are ours) and the flow hash key (`NO_KEY` without one).
async fn identity(agent: &AgentConfig) -> Result<([u8; 6], FlowHashKey)> {
    let mac = netinfo::interface(&agent.interface).await?.mac;
    let Some(path) = &agent.flow_hash_key_file else {
        return Ok((mac, NO_KEY));
    };
    let key = crate::hashkey::load(path)?;
    info!(digest = %crate::hashkey::digest(&key), "flow hash key loaded");
    Ok((mac, key))
}

/// Everything that feeds the controller's loop, each from a task of its own.
struct Inputs {
    reports: mpsc::Receiver<CheckReport>,
    swept_tx: mpsc::Sender<SweepDone>,
    swept: mpsc::Receiver<SweepDone>,
    gateway: mpsc::Receiver<GatewayChange>,
    links: mpsc::Receiver<LinkEvent>,
    admin: mpsc::Receiver<AdminRequest>,
    loaded: mpsc::Receiver<LoadedConfig>,
    sigterm: Signal,
    sigint: Signal,
    sighup: Signal,
}

impl Inputs {
    async fn spawn(
        ctl: &mut Controller,
        agent: &AgentConfig,
        reports: mpsc::Receiver<CheckReport>,
        shutdown: &CancellationToken,
    ) -> Result<(Self, JoinHandle<Result<()>>)> {
        let (gateway_tx, gateway) = mpsc::channel(8);
        if let GatewayMac::Auto = agent.gateway_mac {
            let known = ctl.gateway_mac();
            gateway::spawn(agent.interface.clone(), known, gateway_tx, shutdown.clone());
        }
        let (admin_tx, admin) = mpsc::channel::<AdminRequest>(64);
        // Read-only listener, control socket, and the token-protected TCP control listener.
        let source = ctl.status_source();
        let report: admin::Reporter = std::sync::Arc::new(source);
        let admin_task = admin::spawn_thread(agent, admin_tx, report, shutdown.clone()).await?;
        let links = linkwatch::spawn(&agent.interface, ctl.attached_ifindex(), shutdown.clone())?;
        let (swept_tx, swept) = mpsc::channel(1);
        let loaded = ctl
            .take_loaded()
            .context("the controller's reload results")?;
        let inputs = Self {
            reports,
            swept_tx,
            swept,
            gateway,
            links,
            admin,
            loaded,
            sigterm: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            sigint: signal(SignalKind::interrupt()).context("SIGINT handler")?,
            sighup: signal(SignalKind::hangup()).context("SIGHUP handler")?,
        };
        Ok((inputs, admin_task))
    }
}

/// The controller's loop, until SIGTERM or SIGINT.
async fn serve(ctl: &mut Controller, inputs: &mut Inputs, sd: &Notifier) {
    let mut tick = tokio::time::interval(TICK);
    let mut watchdog = Watchdog::from_env();
    loop {
        let step = tokio::select! {
            Some(report) = inputs.reports.recv() => ctl.on_check(report),
            Some(done) = inputs.swept.recv() => ctl.on_swept(done),
            Some(change) = inputs.gateway.recv() => ctl.on_gateway(change),
            Some(event) = inputs.links.recv() => ctl.on_link(event),
            Some(request) = inputs.admin.recv() => {
                // Reported to systemd like a SIGHUP reload; READY=1 follows in `loaded`.
                if matches!(request, AdminRequest::Reload(_)) {
                    sd.reloading();
                }
                ctl.on_admin(request);
                Ok(())
            }
            _ = watchdog.due() => {
                watchdog.feed();
                Ok(())
            }
            _ = tick.tick() => {
                start_sweep(ctl, &inputs.swept_tx);
                ctl.on_tick()
            }
            // Read off this task; applied when `loaded` delivers it.
            _ = inputs.sighup.recv() => {
                sd.reloading();
                ctl.start_reload(None);
                Ok(())
            }
            Some(done) = inputs.loaded.recv() => {
                sd.reloaded(&ctl.on_loaded(done));
                Ok(())
            }
            _ = inputs.sigterm.recv() => break,
            _ = inputs.sigint.recv() => break,
        };
        // A failed map write is logged and retried by the next event; the agent keeps running.
        if let Err(e) = step {
            error!("{e:#}");
        }
        ctl.sync_announcements();
        ctl.share();
    }
}

/// A due sweep, on a blocking thread: seconds of syscalls at a million entries must not hold
/// up the controller.
fn start_sweep(ctl: &mut Controller, done: &mpsc::Sender<SweepDone>) {
    if let Some(job) = ctl.sweep_due() {
        let tx = done.clone();
        tokio::task::spawn_blocking(move || {
            // Refused only when the agent is stopping.
            let _ = tx.blocking_send(job.run());
        });
    }
}
