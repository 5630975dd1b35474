//! Balancer-side checks: the gateway MAC the balancer sends to, and rp_filter.

use super::{rp_filter as rp_filter_of, rp_name, Finding};
use crate::{
    config::{Config, GatewayMac},
    netinfo,
};

pub(super) async fn gateway(iface: &str, cfg: Option<&Config>) -> Finding {
    const CHECK: &str = "gateway MAC";
    if let Some(GatewayMac::Fixed(mac)) = cfg.map(|c| c.agent.gateway_mac) {
        return Finding::ok(
            CHECK,
            format!("fixed to {} (agent.gateway_mac)", netinfo::format_mac(&mac)),
        );
    }
    match netinfo::gateway_mac(iface).await {
        Ok((mac, via)) => Finding::ok(
            CHECK,
            format!(
                "the default gateway {via} via {iface} is {}",
                netinfo::format_mac(&mac)
            ),
        ),
        Err(e) => Finding::fail(
            CHECK,
            format!("{e:#}"),
            format!(
                "add a default route via the router on {iface} (`ip route add default via \
                 GATEWAY dev {iface}`), or set agent.gateway_mac = \"aa:bb:cc:dd:ee:ff\" (the \
                 router's MAC)"
            ),
        ),
    }
}

/// Reported, never a problem: XDP sees packets before the kernel's reverse-path check.
pub(super) fn rp_filter(iface: &str) -> Finding {
    match (rp_filter_of("all"), rp_filter_of(iface)) {
        (Some(all), Some(dev)) => Finding::ok(
            "rp_filter",
            format!(
                "net.ipv4.conf.all.rp_filter = {all}, {iface} = {dev} (effective {}: {}); XDP \
                 sees packets before this check, so strict is fine on the balancer",
                all.max(dev),
                rp_name(all.max(dev))
            ),
        ),
        _ => Finding::warn(
            "rp_filter",
            format!("cannot read net.ipv4.conf.{{all,{iface}}}.rp_filter"),
            "check that /proc/sys is mounted",
        ),
    }
}
