//! `lb-agent doctor`: checks a host for the setup mistakes that fill XDP balancers' issue
//! trackers, one finding per check (OK / WARN / FAIL and, when not OK, the fix).
//!
//! Every check stands alone: one that fails or cannot run does not stop the others. Checks
//! that need the interface are skipped (with a WARN) when none is given.
//!
//! The native-XDP check attaches the decap object's `xdp_pass` (which passes every packet) to
//! the interface in driver mode and detaches it at once; some drivers reset their rings when
//! a program is attached, so expect a blip of a few milliseconds on a busy NIC. It is not done
//! when a program is already attached.
//!
//! Checks by where they look: `host` (privileges, bpffs, BTF, kernel, program load), `iface`
//! (the interface, MTU, bonding, native XDP), `balancer` (gateway, rp_filter on the LB),
//! `backend` (VIPs on lo, decapsulation, the service's listening address, rp_filter,
//! ARP) and `bgp` (BIRD).

mod backend;
mod balancer;
mod bgp;
mod host;
mod iface;
mod listen;
mod report;
#[cfg(test)]
mod tests;

pub use report::{failed, render, Finding, Verdict};

use crate::{config::Config, netinfo};

pub struct DoctorOptions {
    /// The interface facing the router (LB) or carrying the tunnel traffic (backend);
    /// default: the config's agent.interface.
    pub iface: Option<String>,
    pub config: Option<Config>,
    /// run the backend-side checks
    pub backend: bool,
}

/// Run every check. Never fails: a check that cannot run reports why.
pub async fn run(opts: &DoctorOptions) -> Vec<Finding> {
    let cfg = opts.config.as_ref();
    let mut out = vec![host::privileges()];
    out.extend(host::bpffs(cfg));
    out.push(host::btf());
    out.extend(host::kernel());
    out.push(host::program_load(cfg, opts.backend));
    let iface = opts
        .iface
        .clone()
        .or_else(|| cfg.map(|c| c.agent.interface.clone()));
    let link = match &iface {
        None => {
            out.push(Finding::warn(
                "interface",
                "no interface given: interface, MTU, XDP, gateway and rp_filter checks skipped",
                "pass --iface IFACE, or --config with agent.interface",
            ));
            None
        }
        Some(name) => {
            let (finding, link) = iface::interface(name).await;
            out.push(finding);
            link
        }
    };
    if let Some(link) = &link {
        out.push(iface::mtu(link, cfg, opts.backend));
        out.extend(iface::bonding(link));
        out.push(iface::native_xdp(link, cfg, opts.backend));
    }
    if opts.backend {
        out.extend(backend::checks(link.as_ref(), cfg).await);
    } else if let Some(link) = &link {
        out.push(balancer::gateway(&link.iface.name, cfg).await);
        out.push(balancer::rp_filter(&link.iface.name));
    }
    if let (false, Some(bgp_cfg)) = (opts.backend, cfg.and_then(|c| c.bgp.as_ref())) {
        out.extend(bgp::checks(bgp_cfg).await);
    }
    out
}

/// net.ipv4.conf.DEV.rp_filter, read by both the balancer's and the backend's checks.
fn rp_filter(dev: &str) -> Option<u8> {
    netinfo::read_sysctl(&format!("net/ipv4/conf/{dev}/rp_filter"))
        .ok()?
        .parse()
        .ok()
}

fn rp_name(v: u8) -> &'static str {
    match v {
        0 => "off",
        1 => "strict",
        _ => "loose",
    }
}
