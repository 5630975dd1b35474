//! Host network facts over rtnetlink (no shelling out to `ip`): interfaces, their addresses and
//! XDP attachments, the default gateway's MAC, and sysctls.
//!
//! Everything here works in the network namespace of the calling thread: the netlink and UDP
//! sockets are opened by the task that asks, so a thread that entered a namespace with
//! `setns` (and runs its own current-thread runtime) sees that namespace's links, routes and
//! `/proc/sys/net`.

use anyhow::{anyhow, bail, Context, Result};
use futures::TryStreamExt;
use rtnetlink::{
    packet_route::{
        address::{AddressAttribute, AddressMessage},
        link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, LinkXdp, XdpAttached},
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState},
        route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType, RouteVia},
    },
    Handle, IpVersion, RouteMessageBuilder,
};
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

/// A network interface as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    /// All zero when the link has no Ethernet address (loopback, IP tunnels).
    pub mac: [u8; 6],
    pub mtu: u32,
    pub addrs: Vec<IpAddr>,
    /// Administratively up and with carrier (IFF_UP and IFF_RUNNING): it can pass traffic.
    pub up: bool,
}

/// How an attached XDP program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAttachMode {
    /// Native, in the driver.
    Driver,
    /// Generic (skb) mode.
    Skb,
    /// Offloaded to the NIC.
    Hardware,
    /// Several programs in different modes.
    Multiple,
}

impl std::fmt::Display for XdpAttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            XdpAttachMode::Driver => "driver",
            XdpAttachMode::Skb => "skb",
            XdpAttachMode::Hardware => "hardware",
            XdpAttachMode::Multiple => "multiple",
        })
    }
}

/// The XDP program attached to a link (the IFLA_XDP attribute).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachedXdp {
    pub prog_id: u32,
    pub mode: XdpAttachMode,
}

/// An interface with what the doctor needs beyond [`Interface`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkFacts {
    pub iface: Interface,
    /// IFF_UP.
    pub admin_up: bool,
    /// IFF_RUNNING (operationally up, carrier present).
    pub carrier: bool,
    /// The link kind of a virtual device ("veth", "bond", "team", "ipip", ...); None for a
    /// physical NIC.
    pub kind: Option<String>,
    /// Set when the link is a port of another device: ("bond", controller index).
    pub port_of: Option<(String, u32)>,
    pub xdp: Option<AttachedXdp>,
}

/// A netlink connection whose driver task ends with it.
struct Netlink {
    handle: Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Netlink {
    fn open() -> Result<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .context("netinfo needs to run inside a tokio runtime")?;
        let (connection, handle, _unsolicited) =
            rtnetlink::new_connection().context("opening a NETLINK_ROUTE socket")?;
        let task = runtime.spawn(connection);
        Ok(Self { handle, task })
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// The link called `name`, or None if there is none.
async fn get_link(nl: &Netlink, name: &str) -> Result<Option<LinkMessage>> {
    let mut links = nl
        .handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if matches!(errno(&e), Some(libc::ENODEV) | Some(libc::EINVAL)) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("asking netlink for link {name}")),
    }
}

async fn get_link_by_index(nl: &Netlink, index: u32) -> Result<Option<LinkMessage>> {
    let mut links = nl.handle.link().get().match_index(index).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("asking netlink for link #{index}")),
    }
}

async fn dump_links(nl: &Netlink) -> Result<Vec<LinkMessage>> {
    nl.handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .context("dumping links over netlink")
}

/// Every address of every link: (link index, address).
async fn dump_addresses(nl: &Netlink, index: Option<u32>) -> Result<Vec<(u32, IpAddr)>> {
    let mut request = nl.handle.address().get();
    if let Some(index) = index {
        request = request.set_link_index_filter(index);
    }
    let messages: Vec<AddressMessage> = request
        .execute()
        .try_collect()
        .await
        .context("dumping addresses over netlink")?;
    Ok(messages
        .iter()
        .filter_map(|m| address_of(m).map(|a| (m.header.index, a)))
        .collect())
}

/// IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on point-to-point
/// links); IPv6 addresses carry only IFA_ADDRESS.
fn address_of(m: &AddressMessage) -> Option<IpAddr> {
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

fn link_name(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

fn to_interface(link: &LinkMessage, addrs: Vec<IpAddr>) -> Interface {
    let mut iface = Interface {
        name: link_name(link).unwrap_or_default(),
        index: link.header.index,
        mac: [0; 6],
        mtu: 0,
        addrs,
        up: link.header.flags.contains(LinkFlags::Up)
            && link.header.flags.contains(LinkFlags::Running),
    };
    for attr in &link.attributes {
        match attr {
            LinkAttribute::Address(a) if a.len() == 6 => iface.mac.copy_from_slice(a),
            LinkAttribute::Mtu(m) => iface.mtu = *m,
            _ => {}
        }
    }
    iface
}

fn to_facts(link: &LinkMessage, addrs: Vec<IpAddr>) -> LinkFacts {
    let mut kind = None;
    let mut port_kind = None;
    let mut controller = None;
    let mut xdp_id = 0;
    let mut xdp_mode = None;
    for attr in &link.attributes {
        match attr {
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(k) => kind = Some(kind_name(k)),
                        LinkInfo::PortKind(k) => port_kind = Some(k.to_string()),
                        _ => {}
                    }
                }
            }
            LinkAttribute::Controller(index) => controller = Some(*index),
            LinkAttribute::Xdp(xdp) => {
                for x in xdp {
                    match x {
                        LinkXdp::ProgId(id) => xdp_id = *id,
                        LinkXdp::Attached(mode) => {
                            xdp_mode = match mode {
                                XdpAttached::Driver => Some(XdpAttachMode::Driver),
                                XdpAttached::SocketBuffer => Some(XdpAttachMode::Skb),
                                XdpAttached::Hardware => Some(XdpAttachMode::Hardware),
                                XdpAttached::Multiple => Some(XdpAttachMode::Multiple),
                                _ => None,
                            }
                        }
                        // With several programs there is no IFLA_XDP_PROG_ID: take the
                        // driver-mode one.
                        LinkXdp::DrvProgId(id) if xdp_id == 0 => xdp_id = *id,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let flags = link.header.flags;
    LinkFacts {
        iface: to_interface(link, addrs),
        admin_up: flags.contains(LinkFlags::Up),
        carrier: flags.contains(LinkFlags::Running),
        kind,
        port_of: controller.map(|c| (port_kind.unwrap_or_else(|| "controller".into()), c)),
        xdp: match (xdp_mode, xdp_id) {
            (Some(mode), id) if id != 0 => Some(AttachedXdp { prog_id: id, mode }),
            _ => None,
        },
    }
}

fn kind_name(kind: &InfoKind) -> String {
    kind.to_string()
}

/// The interface called `name`, or None if this network namespace has none.
pub async fn find_interface(name: &str) -> Result<Option<Interface>> {
    Ok(link_facts(name).await?.map(|f| f.iface))
}

/// The interface called `name` with its kind, port relation and XDP attachment, or None.
pub async fn link_facts(name: &str) -> Result<Option<LinkFacts>> {
    let nl = Netlink::open()?;
    let Some(link) = get_link(&nl, name).await? else {
        return Ok(None);
    };
    let addrs = dump_addresses(&nl, Some(link.header.index))
        .await?
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    Ok(Some(to_facts(&link, addrs)))
}

/// The interface called `name`.
pub async fn interface(name: &str) -> Result<Interface> {
    find_interface(name).await?.ok_or_else(|| {
        anyhow!(
            "no interface named {name:?} in this network namespace: check agent.interface or \
             --iface (`ip -br link` lists the interfaces)"
        )
    })
}

/// `ip link set NAME up`.
pub async fn set_link_up(name: &str) -> Result<()> {
    let nl = Netlink::open()?;
    let link = get_link(&nl, name)
        .await?
        .ok_or_else(|| anyhow!("no interface named {name:?}"))?;
    nl.handle
        .link()
        .set(
            rtnetlink::LinkUnspec::new_with_index(link.header.index)
                .up()
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("setting {name} up"))
}

/// Every interface of this network namespace, with its addresses.
pub async fn interfaces() -> Result<Vec<Interface>> {
    let nl = Netlink::open()?;
    let links = dump_links(&nl).await?;
    let addrs = dump_addresses(&nl, None).await?;
    Ok(links
        .iter()
        .map(|l| {
            let mine = addrs
                .iter()
                .filter(|(i, _)| *i == l.header.index)
                .map(|(_, a)| *a)
                .collect();
            to_interface(l, mine)
        })
        .collect())
}

/// One default route's next hop.
#[derive(Clone, Debug)]
struct DefaultHop {
    gateway: Option<IpAddr>,
    oif: Option<u32>,
    metric: u32,
}

fn route_gateway(attrs: &[RouteAttribute]) -> Option<IpAddr> {
    attrs.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        // An IPv4 route through an IPv6 next hop (RFC 5549).
        RouteAttribute::Via(RouteVia::Inet(ip)) => Some(IpAddr::V4(*ip)),
        RouteAttribute::Via(RouteVia::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        _ => None,
    })
}

fn route_table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(route.header.table as u32)
}

/// The next hops of the main table's default routes of one family.
async fn default_hops(nl: &Netlink, version: IpVersion) -> Result<Vec<DefaultHop>> {
    let request = match version {
        IpVersion::V4 => RouteMessageBuilder::<Ipv4Addr>::new().build(),
        IpVersion::V6 => RouteMessageBuilder::<Ipv6Addr>::new().build(),
    };
    // The kernel ignores the request's header (a dump without NETLINK_GET_STRICT_CHK returns
    // every route of the family): filter here.
    let routes: Vec<RouteMessage> = nl
        .handle
        .route()
        .get(request)
        .execute()
        .try_collect()
        .await
        .context("dumping routes over netlink")?;
    let mut hops = Vec::new();
    for route in &routes {
        if route.header.destination_prefix_length != 0
            || route.header.kind != RouteType::Unicast
            || route_table(route) != RouteHeader::RT_TABLE_MAIN as u32
        {
            continue;
        }
        let metric = route
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Priority(p) => Some(*p),
                _ => None,
            })
            .unwrap_or(0);
        let multipath = route.attributes.iter().find_map(|a| match a {
            RouteAttribute::MultiPath(hops) => Some(hops),
            _ => None,
        });
        match multipath {
            Some(next_hops) => hops.extend(next_hops.iter().map(|nh| DefaultHop {
                gateway: route_gateway(&nh.attributes),
                oif: Some(nh.interface_index),
                metric,
            })),
            None => hops.push(DefaultHop {
                gateway: route_gateway(&route.attributes),
                oif: route.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                }),
                metric,
            }),
        }
    }
    hops.sort_by_key(|h| h.metric);
    Ok(hops)
}

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
    let mut elsewhere = Vec::new();
    let mut gateway = None;
    let mut onlink = false;
    for version in [IpVersion::V4, IpVersion::V6] {
        let hops = default_hops(&nl, version).await?;
        for hop in &hops {
            match (hop.oif == Some(index), hop.gateway) {
                (true, Some(gw)) => {
                    gateway = Some(gw);
                    break;
                }
                (true, None) => onlink = true,
                (false, _) => elsewhere.push(hop.clone()),
            }
        }
        if gateway.is_some() {
            break;
        }
    }
    let Some(gateway) = gateway else {
        if onlink {
            bail!(
                "the default route via {iface} has no gateway (an on-link or point-to-point \
                 route), so there is no next hop to resolve: set agent.gateway_mac to the MAC of \
                 the router the balancer sends to"
            );
        }
        let mut others = Vec::new();
        for hop in &elsewhere {
            let name = match hop.oif {
                Some(i) => get_link_by_index(&nl, i)
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
        let hint = if others.is_empty() {
            String::new()
        } else {
            format!(
                " (the default route goes via {}: is agent.interface right?)",
                others.join(", ")
            )
        };
        bail!(
            "no default route via {iface}{hint}: add one (`ip route add default via GATEWAY dev \
             {iface}`), or set agent.gateway_mac"
        );
    };
    let start = Instant::now();
    let mut poked: Option<Result<()>> = None;
    loop {
        let state = neighbour(&nl, index, gateway).await?;
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

/// A sysctl's value, trimmed: `path` is relative to /proc/sys ("net/ipv4/conf/all/rp_filter");
/// the dotted form ("net.ipv4.conf.all.rp_filter") works when no component holds a dot.
/// Reads the namespace of the calling thread (/proc/sys/net follows the reader's netns).
pub fn read_sysctl(path: &str) -> Result<String> {
    let relative = if path.contains('/') {
        path.trim_start_matches('/').to_string()
    } else {
        path.replace('.', "/")
    };
    let full = format!("/proc/sys/{relative}");
    let value = std::fs::read_to_string(&full)
        .with_context(|| format!("reading sysctl {} ({full})", relative.replace('/', ".")))?;
    Ok(value.trim().to_string())
}

/// The driver behind an interface (ethtool's GDRVINFO), if it reports one.
pub fn driver(iface: &str) -> Option<String> {
    const ETHTOOL_GDRVINFO: u32 = 3;
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    let name = iface.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: plain-old-data structs, zero is a valid value for all of them.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    // SAFETY: a datagram socket for the ioctl, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `req` names the interface and points at `info`, which outlives the call.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCETHTOOL as _, &mut req) };
    // SAFETY: `fd` is ours.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return None;
    }
    let len = info.driver.iter().position(|b| *b == 0).unwrap_or(32);
    let driver = String::from_utf8_lossy(&info.driver[..len]).into_owned();
    (!driver.is_empty()).then_some(driver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback() {
        let lo = interface("lo").await.expect("lo exists");
        assert_eq!(lo.name, "lo");
        assert_eq!(lo.mtu, 65536);
        assert_eq!(lo.mac, [0; 6]);
        assert!(lo.index > 0);
        assert!(lo.up, "lo is up");
        assert!(
            lo.addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "lo has 127.0.0.1: {:?}",
            lo.addrs
        );
        let all = interfaces().await.expect("interfaces");
        assert!(all.iter().any(|i| i.name == "lo" && i.index == lo.index));
        let facts = link_facts("lo").await.expect("netlink").expect("lo exists");
        assert!(facts.admin_up && facts.carrier);
        assert_eq!(facts.port_of, None);
    }

    #[tokio::test]
    async fn missing_interface() {
        assert_eq!(find_interface("lbdoc-nope0").await.expect("netlink"), None);
        let e = interface("lbdoc-nope0").await.unwrap_err().to_string();
        assert!(e.contains("no interface named \"lbdoc-nope0\""), "{e}");
        assert!(e.contains("agent.interface"), "{e}");
        let e = gateway_mac("lbdoc-nope0").await.unwrap_err().to_string();
        assert!(e.contains("no interface named"), "{e}");
    }

    /// The host's lo has no default route: the error says what to do (and nothing is sent).
    #[tokio::test]
    async fn no_default_route() {
        let e = format!("{:#}", gateway_mac("lo").await.unwrap_err());
        assert!(e.contains("no default route via lo"), "{e}");
        assert!(e.contains("agent.gateway_mac"), "{e}");
    }

    #[test]
    fn mac_format() {
        assert_eq!(
            format_mac(&[0xaa, 0xbb, 0xcc, 0x0d, 0xee, 0xff]),
            "aa:bb:cc:0d:ee:ff"
        );
        assert_eq!(format_mac(&[0; 6]), "00:00:00:00:00:00");
    }

    #[test]
    fn sysctl() {
        let slashed = read_sysctl("net/ipv4/conf/all/rp_filter").expect("readable");
        assert!(["0", "1", "2"].contains(&slashed.as_str()), "{slashed}");
        assert_eq!(read_sysctl("net.ipv4.conf.all.rp_filter").unwrap(), slashed);
        let e = format!(
            "{:#}",
            read_sysctl("net/ipv4/conf/lbdoc-nope0/rp_filter").unwrap_err()
        );
        assert!(e.contains("net.ipv4.conf.lbdoc-nope0.rp_filter"), "{e}");
    }

    #[test]
    fn driver_of_loopback() {
        // lo has no ethtool driver info; a missing interface has none either.
        assert_eq!(driver("lbdoc-nope0"), None);
        let _ = driver("lo");
    }
}
