//! The rtnetlink connection and the raw link and address queries the other modules build on.

use anyhow::{Context, Result};
use futures::TryStreamExt;
use rtnetlink::{
    packet_route::{
        address::{AddressAttribute, AddressMessage},
        link::{LinkAttribute, LinkMessage},
    },
    Handle,
};
use std::net::IpAddr;

/// A netlink connection whose driver task ends with it.
pub(super) struct Netlink {
    pub(super) handle: Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Netlink {
    pub(super) fn open() -> Result<Self> {
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
pub(super) async fn get_link(nl: &Netlink, name: &str) -> Result<Option<LinkMessage>> {
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

pub(super) async fn get_link_by_index(nl: &Netlink, index: u32) -> Result<Option<LinkMessage>> {
    let mut links = nl.handle.link().get().match_index(index).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("asking netlink for link #{index}")),
    }
}

pub(super) async fn dump_links(nl: &Netlink) -> Result<Vec<LinkMessage>> {
    nl.handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .context("dumping links over netlink")
}

/// Every address of every link: (link index, address).
pub(super) async fn dump_addresses(nl: &Netlink, index: Option<u32>) -> Result<Vec<(u32, IpAddr)>> {
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

pub(super) fn link_name(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}
