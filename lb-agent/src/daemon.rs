//! `lb-agent run`: load, program and attach the balancer, then serve health checks, the admin
//! endpoint, reloads and signals from one controller task until SIGINT or SIGTERM.

use crate::{
    admin::{self, AdminRequest},
    bgp::Speaker,
    config::{self, GatewayMac},
    controller::{Controller, Setup, TICK},
    dataplane::{self, Balancer, LoadOptions},
    gateway, limits, linkwatch, netinfo,
    notify::{Notifier, Watchdog},
    pinlock::PinLock,
};
use anyhow::{Context, Result};
use std::path::Path;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Longest a shutdown waits for BIRD to confirm the withdrawal.
const BGP_WITHDRAW_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

pub async fn run(config_path: &Path, iface: Option<String>, detach_on_exit: bool) -> Result<()> {
    limits::raise_nofile();
    let mut cfg = config::Reader::default()
        .load(config_path.to_path_buf(), config::READ_TIMEOUT)
        .await?;
    if let Some(iface) = &iface {
        cfg.agent.interface = iface.clone();
    }
    let agent = cfg.agent.clone();
    let bgp = cfg.bgp.clone();
    let vip_count = cfg.vips.len();
    crate::bpffs::ensure()?;
    // Before any map is touched, held until return: a second agent on this pin path fails here.
    let _pin_lock = PinLock::acquire(
        &agent.pin_path,
        "Stop that agent first (systemctl stop lb-agent), or give this one another \
         agent.pin_path (and admin_listen).",
    )?;
    let gateway_mac = match agent.gateway_mac {
        GatewayMac::Fixed(mac) => mac,
        GatewayMac::Auto => {
            let (mac, via) = netinfo::gateway_mac(&agent.interface).await?;
            info!(gateway = %via, mac = %netinfo::format_mac(&mac), "gateway MAC resolved");
            mac
        }
    };
    let dp = Balancer::load(LoadOptions {
        table_size: agent.table_size,
        max_vips: agent.max_vips,
        conn_table_entries: agent.conn_table_size,
        pin_dir: Some(agent.pin_path.clone()),
    })?;
    let (reports_tx, mut reports) = mpsc::channel(4096);
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

    let shutdown = CancellationToken::new();
    let (gateway_tx, mut gateway_rx) = mpsc::channel(8);
    if agent.gateway_mac == GatewayMac::Auto {
        gateway::spawn(
            agent.interface.clone(),
            gateway_mac,
            gateway_tx,
            shutdown.clone(),
        );
    }
    let (admin_tx, mut admin_rx) = mpsc::channel::<AdminRequest>(64);
    // Read-only listener, control socket, and the token-protected TCP control listener if set.
    let listeners = admin::Listeners::bind(&agent).await?;
    let source = ctl.status_source();
    let report: admin::Reporter = std::sync::Arc::new(move || source.report());
    let admin_task = tokio::spawn(admin::serve(listeners, admin_tx, report, shutdown.clone()));

    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut links = linkwatch::spawn(&agent.interface, ctl.attached_ifindex(), shutdown.clone())?;
    let mut tick = tokio::time::interval(TICK);
    let (swept_tx, mut swept) = mpsc::channel(1);
    let mut loaded = ctl
        .take_loaded()
        .context("the controller's reload results")?;
    let sd = Notifier;
    // Last step of the start: attached, tables published, BGP started, admin endpoint bound.
    sd.ready(&format!(
        "forwarding on {} ({attachment}), {vip_count} VIPs published",
        agent.interface
    ));
    let mut watchdog = Watchdog::from_env();
    loop {
        let step = tokio::select! {
            Some(report) = reports.recv() => ctl.on_check(report),
            Some(done) = swept.recv() => ctl.on_swept(done),
            Some(change) = gateway_rx.recv() => ctl.on_gateway(change),
            Some(event) = links.recv() => ctl.on_link(event),
            Some(request) = admin_rx.recv() => {
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
                if let Some(job) = ctl.sweep_due() {
                    let tx = swept_tx.clone();
                    // Seconds of syscalls at a million entries: off the controller's task.
                    tokio::task::spawn_blocking(move || {
                        // Refused only when the agent is stopping.
                        let _ = tx.blocking_send(job.run());
                    });
                }
                ctl.on_tick()
            }
            // Read off this task; applied when `loaded` delivers it.
            _ = sighup.recv() => {
                sd.reloading();
                ctl.start_reload(None);
                Ok(())
            }
            Some(done) = loaded.recv() => {
                sd.reloaded(&ctl.on_loaded(done));
                Ok(())
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        };
        // A failed map write is logged and retried by the next event; the agent keeps running.
        if let Err(e) = step {
            error!("{e:#}");
        }
        ctl.sync_announcements();
        ctl.share();
    }
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
