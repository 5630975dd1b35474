//! `lb-agent trace`: its arguments, checked, and the run.

use super::{admin_addr, AdminArgs};
use crate::{admin, config, trace};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use lb_common::{VipKey, IPPROTO_TCP, IPPROTO_UDP};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VerdictArg {
    /// Forwarded to a backend, or answered (ICMP "too big")
    Tx,
    /// Handed to the host's stack
    Pass,
    Drop,
}

#[derive(Args, Debug)]
pub struct TraceArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Pin directory of the running agent (default: agent.pin_path of --config, else
    /// /sys/fs/bpf/lb)
    #[arg(long)]
    pub pin_path: Option<PathBuf>,
    /// Only packets of this VIP (its name in the configuration)
    #[arg(long)]
    pub vip: Option<String>,
    /// Only these verdicts (repeat for several; default: all)
    #[arg(long, value_enum)]
    pub verdict: Vec<VerdictArg>,
    /// Only verdicts with this reason: a counter name of `lb-agent stats` (e.g. forwarded,
    /// drop_malformed, icmp_too_big_sent)
    #[arg(long)]
    pub reason: Option<String>,
    /// Show one matching packet in N per CPU
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub sample: u32,
    /// Stop after N packets
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Also write the frames, as received and as sent, to FILE (pcap, Ethernet)
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
}

/// The agent's VIPs by name, from its /status.
async fn agent_vips(args: &AdminArgs) -> Result<Vec<(String, VipKey)>> {
    let report = admin::fetch_status(admin_addr(args)?)
        .await
        .context("asking the running agent for its VIPs (--admin, --config)")?;
    Ok(report
        .vips
        .iter()
        .map(|v| {
            let proto = match v.protocol {
                config::Protocol::Tcp => IPPROTO_TCP,
                config::Protocol::Udp => IPPROTO_UDP,
            };
            (v.name.clone(), VipKey::new(v.address, v.port, proto))
        })
        .collect())
}

pub async fn run(args: TraceArgs) -> Result<i32> {
    let reason = args
        .reason
        .as_deref()
        .map(trace::filter::reason)
        .transpose()?;
    let config_pin = match &args.admin.config {
        Some(path) => Some(config::load(path)?.agent.pin_path),
        None => None,
    };
    // Names make the lines readable; without the admin endpoint only --vip needs them.
    let vips = match agent_vips(&args.admin).await {
        Ok(vips) => vips,
        Err(e) if args.vip.is_some() => return Err(e),
        Err(e) => {
            eprintln!("warning: {e:#}; VIPs are shown by id");
            Vec::new()
        }
    };
    let actions = args
        .verdict
        .iter()
        .map(|v| match v {
            VerdictArg::Drop => trace::filter::XDP_DROP,
            VerdictArg::Pass => trace::filter::XDP_PASS,
            VerdictArg::Tx => trace::filter::XDP_TX,
        })
        .collect();
    let shown = trace::run(trace::TraceOptions {
        pin_dir: trace::pin_dir(args.pin_path.as_deref(), config_pin),
        vip: args.vip,
        filter: trace::filter::Filter {
            vip_id: None,
            actions,
            reason,
            sample: args.sample,
        },
        vips,
        count: args.count,
        pcap: args.pcap,
    })
    .await?;
    let plural = if shown == 1 { "" } else { "s" };
    eprintln!("{shown} packet{plural} traced");
    Ok(0)
}
