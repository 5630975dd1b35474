//! Interface checks: existence and state, MTU headroom for the encapsulation, bonding, and
//! whether the driver runs XDP natively.

use super::Finding;
use crate::{
    config::{Config, XdpMode},
    dataplane::{self, Decap, PASS_PROGRAM},
    netinfo::{self, AttachedXdp, LinkFacts, XdpAttachMode},
};

pub(super) async fn interface(name: &str) -> (Finding, Option<LinkFacts>) {
    let check = format!("interface {name}");
    match netinfo::link_facts(name).await {
        Err(e) => (
            Finding::fail(
                check,
                format!("cannot query it over netlink: {e:#}"),
                "run as root in the host's network namespace",
            ),
            None,
        ),
        Ok(None) => (missing_interface(check).await, None),
        Ok(Some(link)) => (link_state(check, name, &link), Some(link)),
    }
}

/// A FAIL naming the interfaces that do exist, since a typo is the usual cause.
async fn missing_interface(check: String) -> Finding {
    let names = netinfo::interfaces()
        .await
        .map(|all| {
            all.iter()
                .map(|i| i.name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    Finding::fail(
        check,
        format!(
            "no such interface (this namespace has: {names}); MTU, XDP and gateway \
             checks skipped"
        ),
        "set agent.interface or --iface to the interface facing the router",
    )
}

fn link_state(check: String, name: &str, link: &LinkFacts) -> Finding {
    let i = &link.iface;
    let driver = netinfo::driver(name)
        .or_else(|| link.kind.clone())
        .unwrap_or_else(|| "unknown".to_string());
    let addrs: Vec<String> = i.addrs.iter().map(|a| a.to_string()).collect();
    let facts = format!(
        "index {}, driver {driver}, MAC {}, MTU {}, addresses [{}]",
        i.index,
        netinfo::format_mac(&i.mac),
        i.mtu,
        addrs.join(", ")
    );
    if !link.admin_up {
        Finding::fail(
            check,
            format!("is down ({facts})"),
            format!("ip link set dev {name} up"),
        )
    } else if !link.carrier {
        Finding::fail(
            check,
            format!("is up but has no carrier ({facts})"),
            "check the cable, the switch port or the peer (for veth, the other end must \
             be up too)",
        )
    } else {
        Finding::ok(check, format!("up ({facts})"))
    }
}

/// Outer header sizes in use: (IPv4 outer, IPv6 outer).
fn outer_families(cfg: &Config) -> (bool, bool) {
    let backends = cfg.vips.iter().flat_map(|v| v.backends.iter());
    let v4 = backends.clone().any(|b| b.address.is_ipv4());
    let v6 = backends.clone().any(|b| b.address.is_ipv6());
    if !v4 && !v6 {
        // No backends yet: judge by the encapsulation sources configured.
        (
            cfg.agent.encap_source_v4.is_some() || cfg.agent.encap_source_v6.is_none(),
            cfg.agent.encap_source_v6.is_some(),
        )
    } else {
        (v4, v6)
    }
}

/// The usual path MTU of the Internet: clients send packets of this size.
const INTERNET_MTU: u32 = 1500;

pub(super) fn mtu(link: &LinkFacts, cfg: Option<&Config>, backend: bool) -> Finding {
    let name = &link.iface.name;
    let if_mtu = link.iface.mtu;
    let Some(cfg) = cfg else {
        return Finding::ok(
            "MTU",
            format!("{name} MTU {if_mtu} (no config: agent.mtu not compared)"),
        );
    };
    let mtu = u32::from(cfg.agent.mtu);
    if mtu > if_mtu {
        let what = if backend {
            "encapsulated packets of up to agent.mtu bytes from the balancer are dropped here"
        } else {
            "the balancer would build packets the interface cannot send"
        };
        return Finding::fail(
            "MTU",
            format!("agent.mtu {mtu} > {name} MTU {if_mtu}: {what}"),
            format!(
                "set agent.mtu = {if_mtu}, or raise the interface MTU: ip link set dev {name} mtu \
                 {mtu} (and on every hop between the balancer and the backends)"
            ),
        );
    }
    if backend {
        return Finding::ok(
            "MTU",
            format!("{name} MTU {if_mtu} >= agent.mtu {mtu}: the balancer's largest encapsulated packets fit"),
        );
    }
    client_headroom(name, if_mtu, mtu, outer_families(cfg))
}

/// Whether Internet-sized client packets still fit once the balancer adds its outer header.
fn client_headroom(
    name: &str,
    if_mtu: u32,
    mtu: u32,
    (v4_outer, v6_outer): (bool, bool),
) -> Finding {
    let overhead = if v6_outer { 40 } else { 20 };
    let mut limits = Vec::new();
    if v4_outer {
        limits.push(format!("{} bytes for IPv4-encapsulated backends", mtu - 20));
    }
    if v6_outer {
        limits.push(format!("{} bytes for IPv6-encapsulated backends", mtu - 40));
    }
    let limits = limits.join(", ");
    if mtu - overhead >= INTERNET_MTU {
        return Finding::ok(
            "MTU",
            format!(
                "agent.mtu {mtu} <= {name} MTU {if_mtu}; client packets of up to {limits} fit \
                 after encapsulation (>= {INTERNET_MTU})"
            ),
        );
    }
    Finding::warn(
        "MTU",
        format!(
            "agent.mtu {mtu} <= {name} MTU {if_mtu}, but the outer header takes 20 (IPv4) or \
             40 (IPv6) bytes: clients must see a path MTU of at most {limits}, or the \
             balancer answers their larger packets with ICMP fragmentation-needed / \
             packet-too-big (and clients behind broken PMTU discovery stall)"
        ),
        format!(
            "raise the MTU of the balancer-to-backend path (this interface, the switches, the \
             backends) to {} and set agent.mtu to it; or clamp the TCP MSS the backends \
             advertise to {} (IPv4 clients) / {} (IPv6 clients), e.g. on each backend \
             `iptables -t mangle -A OUTPUT -p tcp --tcp-flags SYN,ACK SYN,ACK -j TCPMSS \
             --set-mss {}`",
            if_mtu + 40,
            mtu - overhead - 40,
            mtu - overhead - 60,
            mtu - overhead - 40,
        ),
    )
}

pub(super) fn bonding(link: &LinkFacts) -> Option<Finding> {
    let name = &link.iface.name;
    match link.kind.as_deref() {
        Some("bond") => {
            return Some(Finding::warn(
                format!("bonding on {name}"),
                format!(
                    "{name} is a bond: XDP must run natively on the bond itself (kernel 5.15 or \
                     newer, bonding mode active-backup, balance-xor or 802.3ad, and every port's \
                     driver with native XDP); in generic mode XDP_TX on a bond is slow and \
                     bypasses the ports' drivers"
                ),
                "set xdp_mode = \"native\" so a missing native path fails loudly instead of \
                 falling back to generic mode",
            ))
        }
        Some("team") => {
            return Some(Finding::warn(
                format!("bonding on {name}"),
                format!("{name} is a team device: team has no native XDP, only generic mode"),
                "use a bond (mode 802.3ad or balance-xor) instead of team, with native XDP on \
                 the bond",
            ))
        }
        _ => {}
    }
    link.port_of.as_ref().map(|(kind, controller)| {
        Finding::warn(
            format!("bonding on {name}"),
            format!(
                "{name} is a port of a {kind} (interface #{controller}): its traffic belongs to \
                 the {kind}, and the kernel refuses XDP on a port whose {kind} has a program"
            ),
            format!("attach to the {kind} itself (--iface / agent.interface = its name), natively"),
        )
    })
}

/// The name of a loaded program by id.
pub(super) fn program_name(id: u32) -> Option<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_string))
}

/// The errno behind an attach failure.
fn attach_errno(e: &aya::programs::ProgramError) -> Option<i32> {
    use aya::programs::{ProgramError, XdpError};
    match e {
        ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        ProgramError::XdpError(XdpError::NetlinkError(n)) => n.raw_os_error(),
        _ => None,
    }
}

/// What the interface's XDP attachment says about native mode, or else a probe: attach
/// `xdp_pass` in driver mode and detach it at once.
pub(super) fn native_xdp(link: &LinkFacts, cfg: Option<&Config>, backend: bool) -> Finding {
    let name = &link.iface.name;
    let check = format!("native XDP on {name}");
    let mode = cfg.map_or(XdpMode::Auto, |c| c.agent.xdp_mode);
    if let Some(attached) = link.xdp {
        return already_attached(check, name, attached, backend);
    }
    let mut decap = match Decap::load() {
        Ok(d) => d,
        Err(e) => {
            return Finding::warn(
                check,
                format!("cannot probe: loading the probe program failed: {e:#}"),
                "fix the program-load check first",
            )
        }
    };
    let prog = match decap.program(PASS_PROGRAM) {
        Ok(p) => p,
        Err(e) => return Finding::warn(check, format!("cannot probe: {e:#}"), "rebuild the agent"),
    };
    match prog.attach(name, aya::programs::XdpMode::Driver) {
        Ok(id) => {
            let note = match prog.detach(id) {
                Ok(()) => String::new(),
                Err(e) => {
                    format!(" (detaching the probe failed: {e}; it goes when the doctor exits)")
                }
            };
            match mode {
                XdpMode::Skb => Finding::warn(
                    check,
                    format!("the driver supports native XDP, but agent.xdp_mode = \"skb\" uses generic mode{note}"),
                    "set xdp_mode = \"native\" (or \"auto\"): generic mode is several times slower",
                ),
                _ => Finding::ok(check, format!("the driver attaches XDP in native mode{note}")),
            }
        }
        Err(e) => attach_failed(check, name, &e, mode, backend),
    }
}

/// A program is attached already: no probe, judge what runs.
fn already_attached(check: String, name: &str, attached: AttachedXdp, backend: bool) -> Finding {
    let ours = if backend {
        dataplane::DECAP_PROGRAM
    } else {
        dataplane::LB_PROGRAM
    };
    let prog = program_name(attached.prog_id).unwrap_or_else(|| "?".to_string());
    let what = format!(
        "XDP program {prog} (id {}) is already attached in {} mode",
        attached.prog_id, attached.mode
    );
    if prog == ours && attached.mode == XdpAttachMode::Driver {
        Finding::ok(check, format!("{what}: our agent, running natively"))
    } else if prog == ours || prog == dataplane::DECAP_PROGRAM || prog == dataplane::LB_PROGRAM {
        Finding::warn(
            check,
            format!("{what}: our agent, but not in driver mode, which is several times slower"),
            "check the driver's native XDP support: stop the agent (with --detach-on-exit) \
             and run the doctor again",
        )
    } else {
        Finding::warn(
            check,
            format!("{what}: not ours, so the agent cannot attach here"),
            format!(
                "find its owner (`bpftool net show dev {name}`); detach it with `ip link set \
                 dev {name} xdp off` if it is stale"
            ),
        )
    }
}

/// The probe's driver-mode attach failed: say why, by errno. Generic mode is a FAIL only when
/// the balancer is configured to insist on native mode.
fn attach_failed(
    check: String,
    name: &str,
    e: &aya::programs::ProgramError,
    mode: XdpMode,
    backend: bool,
) -> Finding {
    let error = format!("{e}");
    let cause = std::error::Error::source(e)
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    let generic_verdict = |detail: String, fix: String| {
        if mode == XdpMode::Native && !backend {
            Finding::fail(check.clone(), detail, fix)
        } else {
            Finding::warn(check.clone(), detail, fix)
        }
    };
    match attach_errno(e) {
        Some(libc::EBUSY) | Some(libc::EEXIST) => Finding::warn(
            check.clone(),
            format!(
                "an XDP program is already attached to {name} (or to a device it belongs \
                 to): that is our agent if it runs ({error}{cause})"
            ),
            format!(
                "if no agent runs here, find it with `bpftool net show dev {name}` and \
                 detach it (`ip link set dev {name} xdp off`)"
            ),
        ),
        Some(libc::EOPNOTSUPP) => generic_verdict(
            format!(
                "the driver of {name} has no native XDP ({error}{cause}): only generic \
                 (skb) mode works, and generic mode is several times slower"
            ),
            match mode {
                XdpMode::Native if !backend => {
                    "use a NIC whose driver has native XDP (mlx5, ice, i40e, ixgbe, bnxt, \
                     ena, virtio_net, veth, ...), or set xdp_mode = \"auto\" to accept \
                     generic mode"
                        .to_string()
                }
                _ => "for full speed, use a NIC whose driver has native XDP (mlx5, ice, \
                      i40e, ixgbe, bnxt, ena, virtio_net, veth, ...)"
                    .to_string(),
            },
        ),
        _ => generic_verdict(
            format!(
                "native attach failed ({error}{cause}); the agent would fall back to \
                 generic mode"
            ),
            format!(
                "usual causes: an MTU too large for single-buffer XDP on this driver \
                 (lower it, e.g. `ip link set dev {name} mtu 1500`), LRO enabled \
                 (`ethtool -K {name} lro off`), or too few queues (virtio_net needs 2 x \
                 CPUs queue pairs: `ethtool -L {name} combined N`); `dmesg` often says \
                 which"
            ),
        ),
    }
}
