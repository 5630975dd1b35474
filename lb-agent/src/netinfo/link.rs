//! Interfaces: their facts (addresses, MAC, MTU, state, kind, XDP attachment), the driver
//! behind one, and setting a link up.

use super::netlink::{dump_addresses, dump_links, get_link, link_name, Netlink};
use anyhow::{anyhow, Context, Result};
use rtnetlink::packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, LinkXdp, XdpAttached,
};
use std::net::IpAddr;

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

/// The Ethernet address of `name` in this network namespace, from one ioctl (SIOCGIFHWADDR):
/// for the controller's task, which must not wait on a netlink round trip. None when there is
/// no such interface.
pub fn hw_addr(name: &str) -> Option<[u8; 6]> {
    // SAFETY: ifreq is plain data; all zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // One byte stays zero: the name is NUL-terminated.
    if name.len() >= req.ifr_name.len() {
        return None;
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: plain socket(2); the descriptor is owned (and closed) below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a descriptor just returned by socket(2) and owned by nobody else.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: SIOCGIFHWADDR reads ifr_name and writes ifr_hwaddr of the ifreq it is given.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::SIOCGIFHWADDR,
            &mut req,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: filled by the successful SIOCGIFHWADDR above.
    let addr = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(addr.sa_data) {
        *d = s as u8;
    }
    Some(mac)
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
