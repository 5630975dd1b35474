//! The default gateway's MAC: its next hop from the routes, then the neighbour table, poking
//! the kernel to resolve it when it has not yet.

use super::{
    netlink::{get_link, get_link_by_index, link_name, Netlink},
    route::{default_hops, DefaultHop},
};
use anyhow::{anyhow, bail, Context, Result};
use futures::TryStreamExt;
use rtnetlink::{
    packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState},
    IpVersion,
};
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

/// What the neighbour table says about `addr` on link `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Neighbour {
    Missing,
    /// Resolution under way or failed (the state's name).
    Unresolved(&'static str),
    Resolved([u8; 6]),
}

async fn neighbour(nl: &Netlink, index: u32, addr: IpAddr) -> Result<Neighbour> {
    let version = if addr.is_ipv4() {
        IpVersion::V4
    } else {
        IpVersion::V6
    };
    let neighbours: Vec<_> = nl
        .handle
        .neighbours()
        .get()
        .set_family(version)
        .execute()
        .try_collect()
        .await
        .context("dumping the neighbour table over netlink")?;
    for n in &neighbours {
        if n.header.ifindex != index {
            continue;
        }
        let dst = n.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
            _ => None,
        });
        if dst != Some(addr) {
            continue;
        }
        let state = match n.header.state {
            NeighbourState::Incomplete => Some("INCOMPLETE"),
            NeighbourState::Failed => Some("FAILED"),
            NeighbourState::None => Some("NONE"),
            _ => None,
        };
        if let Some(state) = state {
            return Ok(Neighbour::Unresolved(state));
        }
        let mac = n.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLocalAddress(l)
                if l.len() == 6 && l.iter().any(|b| *b != 0) =>
            {
                let mut mac = [0; 6];
                mac.copy_from_slice(l);
                Some(mac)
            }
            _ => None,
        });
        return Ok(match mac {
            Some(mac) => Neighbour::Resolved(mac),
            None => Neighbour::Unresolved("no link-layer address"),
        });
    }
    Ok(Neighbour::Missing)
}

/// Make the kernel resolve `gateway` on `iface`: one empty UDP datagram to its discard port
/// from a socket bound to the interface.
fn poke(iface: &str, index: u32, gateway: IpAddr) -> Result<()> {
    let (bind, to): (SocketAddr, SocketAddr) = match gateway {
        IpAddr::V4(ip) => ((Ipv4Addr::UNSPECIFIED, 0).into(), SocketAddr::from((ip, 9))),
        IpAddr::V6(ip) => {
            // A link-local gateway (the usual IPv6 default route) needs the link as scope.
            let scope = if (ip.segments()[0] & 0xffc0) == 0xfe80 {
                index
            } else {
                0
            };
            (
                (Ipv6Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(SocketAddrV6::new(ip, 9, 0, scope)),
            )
        }
    };
    let socket = UdpSocket::bind(bind).context("opening a UDP socket")?;
    let name = iface.as_bytes();
    // SAFETY: the option value is the interface name's bytes, valid for the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("binding a UDP socket to {iface} (SO_BINDTODEVICE)"));
    }
    socket
        .send_to(&[], to)
        .with_context(|| format!("sending a datagram to {gateway} through {iface}"))?;
    Ok(())
}

/// How long [`gateway_mac`] waits for the kernel to resolve the gateway.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
const RESOLVE_POLL: Duration = Duration::from_millis(50);

/// The MAC of the default route's next hop through `iface` (IPv4 default route first, else
/// IPv6). If the neighbour is not resolved yet, the kernel is made to resolve it (one empty
/// UDP datagram to the gateway's port 9 from a socket bound to the interface) and the
/// neighbour table is polled for up to 3 s. Returns (mac, gateway address).
pub async fn gateway_mac(iface: &str) -> Result<([u8; 6], IpAddr)> {
    let nl = Netlink::open()?;
    let link = get_link(&nl, iface).await?.ok_or_else(|| {
        anyhow!(
            "no interface named {iface:?}: check agent.interface or --iface (`ip -br link` lists \
             the interfaces)"
        )
    })?;
    let index = link.header.index;
    let gateway = match next_hop(&nl, index).await? {
        NextHop::Gateway(gateway) => gateway,
        NextHop::OnLink => bail!(
            "the default route via {iface} has no gateway (an on-link or point-to-point \
             route), so there is no next hop to resolve: set agent.gateway_mac to the MAC of \
             the router the balancer sends to"
        ),
        NextHop::Elsewhere(hops) => {
            let hint = elsewhere_hint(&nl, &hops).await;
            bail!(
                "no default route via {iface}{hint}: add one (`ip route add default via GATEWAY \
                 dev {iface}`), or set agent.gateway_mac"
            );
        }
    };
    resolve(&nl, iface, index, gateway).await
}

/// What the default routes say about link `index`.
enum NextHop {
    Gateway(IpAddr),
    /// A default route through the link, but without a gateway.
    OnLink,
    /// No default route through the link; these are the default routes through others.
    Elsewhere(Vec<DefaultHop>),
}

/// The first gateway (by metric, IPv4 before IPv6) of a default route through link `index`.
async fn next_hop(nl: &Netlink, index: u32) -> Result<NextHop> {
    let mut elsewhere = Vec::new();
    let mut onlink = false;
    for version in [IpVersion::V4, IpVersion::V6] {
        for hop in default_hops(nl, version).await? {
            match (hop.oif == Some(index), hop.gateway) {
                (true, Some(gw)) => return Ok(NextHop::Gateway(gw)),
                (true, None) => onlink = true,
                (false, _) => elsewhere.push(hop),
            }
        }
    }
    Ok(if onlink {
        NextHop::OnLink
    } else {
        NextHop::Elsewhere(elsewhere)
    })
}

/// " (the default route goes via eth1 (gateway 192.0.2.1): is agent.interface right?)", or
/// nothing when there is no default route at all: the likely mistake is the interface.
async fn elsewhere_hint(nl: &Netlink, hops: &[DefaultHop]) -> String {
    let mut others = Vec::new();
    for hop in hops {
        let name = match hop.oif {
            Some(i) => get_link_by_index(nl, i)
                .await
                .ok()
                .flatten()
                .and_then(|l| link_name(&l))
                .unwrap_or_else(|| format!("#{i}")),
            None => "?".to_string(),
        };
        let via = hop
            .gateway
            .map(|g| format!(" (gateway {g})"))
            .unwrap_or_default();
        let entry = format!("{name}{via}");
        if !others.contains(&entry) {
            others.push(entry);
        }
    }
    if others.is_empty() {
        String::new()
    } else {
        format!(
            " (the default route goes via {}: is agent.interface right?)",
            others.join(", ")
        )
    }
}

/// Poll the neighbour table for `gateway` on link `index`, poking the kernel once to resolve
/// it, until it resolves or [`RESOLVE_TIMEOUT`] passes.
async fn resolve(
    nl: &Netlink,
    iface: &str,
    index: u32,
    gateway: IpAddr,
) -> Result<([u8; 6], IpAddr)> {
    let start = Instant::now();
    let mut poked: Option<Result<()>> = None;
    loop {
        let state = neighbour(nl, index, gateway).await?;
        if let Neighbour::Resolved(mac) = state {
            return Ok((mac, gateway));
        }
        if poked.is_none() {
            poked = Some(poke(iface, index, gateway));
        }
        if start.elapsed() >= RESOLVE_TIMEOUT {
            let state = match state {
                Neighbour::Missing => "no neighbour entry".to_string(),
                Neighbour::Unresolved(s) => format!("neighbour state {s}"),
                Neighbour::Resolved(_) => "resolved".to_string(),
            };
            let proto = if gateway.is_ipv4() {
                "ARP"
            } else {
                "neighbour solicitation"
            };
            let poke_error = match poked {
                Some(Err(e)) => format!("; triggering resolution failed: {e:#}"),
                _ => String::new(),
            };
            bail!(
                "the gateway {gateway} did not answer {proto} on {iface} within {}s ({state}{poke_error}): \
                 check that the router is up and on that link, or set agent.gateway_mac",
                RESOLVE_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(RESOLVE_POLL).await;
    }
}

/// "aa:bb:cc:dd:ee:ff".
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
