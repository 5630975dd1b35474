//! Backend-side checks: the VIPs on loopback, something to decapsulate the balancer's packets
//! (our XDP program or the kernel's tunnel devices), the service listening on the VIPs
//! (`listen`), rp_filter and ARP for the VIPs.

use super::{listen, rp_filter, rp_name, Finding};
use crate::{
    config::Config,
    dataplane,
    netinfo::{self, AttachedXdp, LinkFacts},
};
use std::{collections::BTreeSet, net::IpAddr};

/// The kernel's fallback tunnel devices and what they decapsulate.
const TUNL0: &str = "tunl0"; // IPv4 in IPv4 (ipip)
const SIT0: &str = "sit0"; // IPv6 in IPv4
const IP6TNL0: &str = "ip6tnl0"; // IPv4/IPv6 in IPv6

pub(super) async fn checks(link: Option<&LinkFacts>, cfg: Option<&Config>) -> Vec<Finding> {
    let mut out = Vec::new();
    let ifaces = match netinfo::interfaces().await {
        Ok(i) => i,
        Err(e) => {
            out.push(Finding::fail(
                "backend",
                format!("cannot list interfaces over netlink: {e:#}"),
                "run as root",
            ));
            Vec::new()
        }
    };
    let local: BTreeSet<IpAddr> = ifaces
        .iter()
        .flat_map(|i| i.addrs.iter().copied())
        .collect();
    let served = cfg.map(|c| Served::by(c, &local)).unwrap_or_default();
    out.push(vips_finding(cfg.is_some(), &served, &ifaces));

    // Decapsulation: our XDP program on the interface, or the kernel's tunnel devices.
    let needed = needed_tunnels(&served.pairs);
    let tunnels_up: Vec<&str> = [TUNL0, SIT0, IP6TNL0]
        .into_iter()
        .filter(|d| ifaces.iter().find(|i| i.name == *d).is_some_and(|i| i.up))
        .collect();
    let xdp = link.and_then(|l| l.xdp.map(|x| (l.iface.name.clone(), x)));
    let has_xdp = xdp.is_some();
    out.push(decapsulation(
        link,
        xdp,
        &needed,
        &tunnels_up,
        cfg.is_some(),
    ));

    // The service: on the VIP or a wildcard, not only on this host's own address.
    if let Some(cfg) = cfg {
        out.push(match listen::listeners() {
            Ok(l) => listen::finding(&listen::services(cfg, &local), &l),
            Err(e) => Finding::warn(
                "service on the VIPs",
                format!("cannot list listening sockets: {e}"),
                "check that /proc is mounted",
            ),
        });
    }

    // rp_filter for decapsulated packets.
    let kernel_tunnels = !has_xdp || !tunnels_up.is_empty();
    out.push(rp_filter_backend(
        link.map(|l| l.iface.name.as_str()),
        &tunnels_up,
        kernel_tunnels,
    ));

    // ARP for the VIPs.
    if cfg.is_none() || served.vips.iter().any(|v| v.is_ipv4()) {
        out.push(arp(link.map(|l| l.iface.name.as_str())));
    }
    out
}

/// Which VIPs this host serves, and which (VIP family, backend family) pairs reach it.
#[derive(Default)]
struct Served {
    vips: Vec<IpAddr>,
    /// (inner v4, outer v4)
    pairs: BTreeSet<(bool, bool)>,
    /// Appended to the VIP finding when every VIP is checked for want of a local backend.
    note: String,
}

impl Served {
    /// The VIPs with a backend among `local`; every VIP when none has one (the config may
    /// name this host by another address).
    fn by(cfg: &Config, local: &BTreeSet<IpAddr>) -> Self {
        let mut served = Self::default();
        let mine: Vec<_> = cfg
            .vips
            .iter()
            .filter(|v| v.backends.iter().any(|b| local.contains(&b.address)))
            .collect();
        let (chosen, only_local) = if mine.is_empty() {
            if !cfg.vips.is_empty() {
                served.note = " (no backend of the config is an address of this host: checking \
                               every VIP)"
                    .to_string();
            }
            (cfg.vips.iter().collect::<Vec<_>>(), false)
        } else {
            (mine, true)
        };
        for v in chosen {
            if !served.vips.contains(&v.address) {
                served.vips.push(v.address);
            }
            for b in &v.backends {
                if !only_local || local.contains(&b.address) {
                    served
                        .pairs
                        .insert((v.address.is_ipv4(), b.address.is_ipv4()));
                }
            }
        }
        served
    }
}

fn vips_finding(have_config: bool, served: &Served, ifaces: &[netinfo::Interface]) -> Finding {
    if !have_config {
        Finding::warn(
            "VIPs on lo",
            "no config: which VIPs this backend serves is unknown",
            "pass --config with the balancer's configuration",
        )
    } else if served.vips.is_empty() {
        Finding::ok("VIPs on lo", "the config has no VIPs")
    } else {
        vips_on_lo(&served.vips, ifaces, &served.note)
    }
}

/// The kernel tunnel devices that decapsulate the (inner, outer) family pairs; without any
/// pairs (no config) the IPv4 and IPv6 ones.
fn needed_tunnels(pairs: &BTreeSet<(bool, bool)>) -> Vec<&'static str> {
    if pairs.is_empty() {
        return vec![TUNL0, IP6TNL0];
    }
    let mut needed = Vec::new();
    for (inner_v4, outer_v4) in pairs {
        let dev = match (inner_v4, outer_v4) {
            (true, true) => TUNL0,
            (false, true) => SIT0,
            (_, false) => IP6TNL0,
        };
        if !needed.contains(&dev) {
            needed.push(dev);
        }
    }
    needed
}

fn vips_on_lo(vips: &[IpAddr], ifaces: &[netinfo::Interface], note: &str) -> Finding {
    let lo = ifaces.iter().find(|i| i.name == "lo");
    let mut on_lo = Vec::new();
    let mut elsewhere = Vec::new();
    let mut missing = Vec::new();
    for vip in vips {
        if lo.is_some_and(|l| l.addrs.contains(vip)) {
            on_lo.push(vip.to_string());
        } else if let Some(i) = ifaces.iter().find(|i| i.addrs.contains(vip)) {
            elsewhere.push((*vip, i.name.clone()));
        } else {
            missing.push(*vip);
        }
    }
    let add = |v: &IpAddr| {
        let prefix = if v.is_ipv4() { 32 } else { 128 };
        format!("ip addr add {v}/{prefix} dev lo")
    };
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|v| v.to_string()).collect();
        let fix: Vec<String> = missing.iter().map(add).collect();
        return Finding::fail(
            "VIPs on lo",
            format!(
                "{} not configured on this host{note}: the kernel drops decapsulated packets \
                 addressed to them",
                list.join(", ")
            ),
            fix.join("; "),
        );
    }
    if !elsewhere.is_empty() {
        let list: Vec<String> = elsewhere
            .iter()
            .map(|(v, dev)| format!("{v} on {dev}"))
            .collect();
        let fix: Vec<String> = elsewhere
            .iter()
            .map(|(v, dev)| {
                let prefix = if v.is_ipv4() { 32 } else { 128 };
                format!("ip addr del {v}/{prefix} dev {dev}; {}", add(v))
            })
            .collect();
        return Finding::warn(
            "VIPs on lo",
            format!(
                "{}{note}: a VIP on a network interface is announced by ARP/ND, so this backend \
                 competes with the balancer for the VIP's traffic",
                list.join(", ")
            ),
            format!("move them to lo: {}", fix.join("; ")),
        );
    }
    Finding::ok("VIPs on lo", format!("{} on lo{note}", on_lo.join(", ")))
}

const DECAP_CHECK: &str = "decapsulation";

fn decapsulation(
    link: Option<&LinkFacts>,
    xdp: Option<(String, AttachedXdp)>,
    needed: &[&str],
    tunnels_up: &[&str],
    have_config: bool,
) -> Finding {
    if let Some((dev, x)) = &xdp {
        return decap_with_xdp(dev, x, needed, tunnels_up);
    }
    let iface = link.map_or("IFACE", |l| l.iface.name.as_str());
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|d| !tunnels_up.contains(d))
        .collect();
    // Without a config any one tunnel device is taken as enough.
    let enough = if have_config {
        missing.is_empty()
    } else {
        !tunnels_up.is_empty()
    };
    if enough {
        return Finding::ok(
            DECAP_CHECK,
            format!("kernel tunnel devices up: {}", tunnels_up.join(", ")),
        );
    }
    let module = |d: &str| match d {
        TUNL0 => "ipip",
        SIT0 => "sit",
        _ => "ip6_tunnel",
    };
    let kernel_fix: Vec<String> = missing
        .iter()
        .map(|d| format!("modprobe {} && ip link set {d} up", module(d)))
        .collect();
    Finding::fail(
        DECAP_CHECK,
        format!(
            "no decapsulation: no XDP program on {iface} and {} not up, so encapsulated packets \
             from the balancer are dropped",
            missing.join(", ")
        ),
        format!(
            "lb-agent decap attach --iface {iface}; or kernel tunnels: {}",
            kernel_fix.join("; ")
        ),
    )
}

/// An XDP program is on the interface: ours decapsulates; another one is fine only when the
/// kernel's tunnels cover what is needed.
fn decap_with_xdp(dev: &str, x: &AttachedXdp, needed: &[&str], tunnels_up: &[&str]) -> Finding {
    let prog = super::iface::program_name(x.prog_id).unwrap_or_else(|| "?".to_string());
    if prog == dataplane::DECAP_PROGRAM {
        return Finding::ok(
            DECAP_CHECK,
            format!(
                "{prog} (id {}) attached to {dev} in {} mode",
                x.prog_id, x.mode
            ),
        );
    }
    if needed.iter().all(|d| tunnels_up.contains(d)) {
        return Finding::ok(
            DECAP_CHECK,
            format!(
                "kernel tunnel devices up: {} (XDP program {prog} on {dev} is not ours)",
                tunnels_up.join(", ")
            ),
        );
    }
    Finding::warn(
        DECAP_CHECK,
        format!(
            "the XDP program on {dev} is {prog} (id {}), not {}: is it decapsulating the \
             balancer's packets?",
            x.prog_id,
            dataplane::DECAP_PROGRAM
        ),
        format!("lb-agent decap attach --iface {dev}"),
    )
}

fn rp_filter_backend(iface: Option<&str>, tunnels_up: &[&str], kernel_tunnels: bool) -> Finding {
    const CHECK: &str = "rp_filter";
    let mut devs: Vec<&str> = vec!["all"];
    devs.extend(iface);
    // rp_filter is IPv4: it applies to IPv4 packets decapsulated by tunl0 and ip6tnl0.
    devs.extend(
        tunnels_up
            .iter()
            .copied()
            .filter(|d| *d == TUNL0 || *d == IP6TNL0),
    );
    let values: Vec<(&str, u8)> = devs
        .iter()
        .filter_map(|d| rp_filter(d).map(|v| (*d, v)))
        .collect();
    if values.is_empty() {
        return Finding::warn(
            CHECK,
            "cannot read net.ipv4.conf.*.rp_filter",
            "check that /proc/sys is mounted",
        );
    }
    let listed: Vec<String> = values.iter().map(|(d, v)| format!("{d}={v}")).collect();
    let effective = values.iter().map(|(_, v)| *v).max().unwrap_or(0);
    let detail = format!(
        "net.ipv4.conf.{{{}}}.rp_filter (effective {effective}: {})",
        listed.join(", "),
        rp_name(effective)
    );
    if effective != 1 {
        return Finding::ok(
            CHECK,
            format!("{detail}: decapsulated packets from any client pass"),
        );
    }
    let fix = loose_rp_filter_fix(&values);
    if kernel_tunnels {
        Finding::fail(
            CHECK,
            format!(
                "{detail}: strict reverse-path filtering drops the packets the kernel's tunnel \
                 decapsulates (their client source is not routed back through the tunnel \
                 device)"
            ),
            fix,
        )
    } else {
        Finding::warn(
            CHECK,
            format!(
                "{detail}: decapsulated packets are dropped whenever the route back to the \
                 client does not leave through {}",
                iface.unwrap_or("the interface")
            ),
            fix,
        )
    }
}

/// `sysctl -w` setting "all" and every strict device to loose mode.
fn loose_rp_filter_fix(values: &[(&str, u8)]) -> String {
    let strict = values
        .iter()
        .filter(|(_, v)| *v == 1)
        .map(|(d, _)| format!("net.ipv4.conf.{d}.rp_filter=2"));
    let mut keys = vec!["net.ipv4.conf.all.rp_filter=2".to_string()];
    keys.extend(strict.filter(|k| !k.contains(".all.")));
    format!(
        "sysctl -w {} (loose mode; persist it in /etc/sysctl.d/)",
        keys.join(" ")
    )
}

fn arp(iface: Option<&str>) -> Finding {
    const CHECK: &str = "ARP for VIPs";
    // The kernel uses the larger of the "all" and the device value.
    let read = |key: &str| -> Option<u8> {
        let mut v = netinfo::read_sysctl(&format!("net/ipv4/conf/all/{key}"))
            .ok()?
            .parse::<u8>()
            .ok()?;
        if let Some(dev) = iface {
            if let Some(d) = netinfo::read_sysctl(&format!("net/ipv4/conf/{dev}/{key}"))
                .ok()
                .and_then(|s| s.parse::<u8>().ok())
            {
                v = v.max(d);
            }
        }
        Some(v)
    };
    match (read("arp_ignore"), read("arp_announce")) {
        (Some(ignore), Some(announce)) if ignore >= 1 && announce >= 2 => Finding::ok(
            CHECK,
            format!(
                "arp_ignore = {ignore}, arp_announce = {announce}: this host does not answer ARP \
                 for the VIPs on lo"
            ),
        ),
        (Some(ignore), Some(announce)) => Finding::warn(
            CHECK,
            format!(
                "arp_ignore = {ignore}, arp_announce = {announce}: this backend answers ARP for \
                 the VIPs on its loopback (and uses them as ARP sources), stealing the VIPs' \
                 traffic from the balancer"
            ),
            "sysctl -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 (persist \
             them in /etc/sysctl.d/)",
        ),
        _ => Finding::warn(
            CHECK,
            "cannot read net.ipv4.conf.all.arp_ignore / arp_announce",
            "check that /proc/sys is mounted",
        ),
    }
}
