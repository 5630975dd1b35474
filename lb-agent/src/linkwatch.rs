//! Watching the balancer's interface come and go. Deleting an interface severs its XDP link
//! without a word to the agent, and a re-created interface of the same name starts without a
//! program; this task tells the controller, in typed events, so it reports the loss and attaches
//! again. It also reports a new MAC on the interface, since the data path forwards only frames
//! sent to it. Events come from rtnetlink's link group; a poll of the name every few seconds
//! catches what a full socket buffer (ENOBUFS) would drop.

use anyhow::{Context, Result};
use futures::StreamExt;
use rtnetlink::{
    packet_core::NetlinkPayload,
    packet_route::{
        link::{LinkAttribute, LinkMessage},
        RouteNetlinkMessage,
    },
    sys::{AsyncSocket, SocketAddr},
};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What happened to the watched interface. Only changes are sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// An interface of the watched name exists (again), with this index.
    Present { ifindex: u32 },
    /// The interface is gone (deleted, renamed away or moved to another namespace).
    Gone { ifindex: u32 },
    /// The interface (same index) has another Ethernet address now.
    Address { mac: [u8; 6] },
}

/// Longest a missed netlink message can hide a change.
const POLL: Duration = Duration::from_secs(2);

/// Multicast group of link changes (RTNLGRP_LINK as a bind mask).
const RTMGRP_LINK: u32 = 1;

/// Watch `iface` in this process's network namespace until `shutdown`; `initial` is the index
/// the agent attached to. The task ends with `shutdown` or when the receiver is dropped.
pub fn spawn(
    iface: &str,
    initial: Option<u32>,
    shutdown: CancellationToken,
) -> Result<mpsc::Receiver<LinkEvent>> {
    let (events, receiver) = mpsc::channel(16);
    let iface = iface.to_string();
    let (mut connection, _handle, mut messages) =
        rtnetlink::new_connection().context("opening a NETLINK_ROUTE socket for link events")?;
    connection
        .socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, RTMGRP_LINK))
        .context("subscribing to link events (RTNLGRP_LINK)")?;
    let driver = tokio::spawn(connection);
    tokio::spawn(async move {
        let mac = crate::netinfo::hw_addr(&iface);
        let mut watch = Watch {
            iface,
            current: initial,
            mac,
        };
        let mut poll = tokio::time::interval(POLL);
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                Some((message, _)) = messages.next() => match message.payload {
                    NetlinkPayload::InnerMessage(m) => watch.on_message(&m),
                    _ => None,
                },
                _ = poll.tick() => watch
                    .on_poll(crate::dataplane::pinned::ifindex(&watch.iface))
                    .or_else(|| watch.on_address(crate::netinfo::hw_addr(&watch.iface))),
            };
            if let Some(event) = event {
                tracing::debug!(?event, iface = %watch.iface, "link event");
                if events.send(event).await.is_err() {
                    break;
                }
            }
        }
        driver.abort();
    });
    Ok(receiver)
}

/// The watched name and the index it has now: turns messages into changes.
#[derive(Debug)]
pub struct Watch {
    pub iface: String,
    pub current: Option<u32>,
    /// The interface's MAC as last seen; None while unknown.
    pub mac: Option<[u8; 6]>,
}

impl Watch {
    pub fn on_message(&mut self, message: &RouteNetlinkMessage) -> Option<LinkEvent> {
        match message {
            RouteNetlinkMessage::NewLink(link) => {
                let index = link.header.index;
                if name_of(link).as_deref() == Some(self.iface.as_str()) {
                    let mac = address_of(link);
                    match self.set(Some(index)) {
                        // Attaching again reads the new interface's MAC itself.
                        Some(event) => {
                            self.mac = mac.or(self.mac);
                            Some(event)
                        }
                        None => self.on_address(mac),
                    }
                } else if self.current == Some(index) {
                    // Renamed away: our name no longer has an interface.
                    self.set(None)
                } else {
                    None
                }
            }
            RouteNetlinkMessage::DelLink(link) if self.current == Some(link.header.index) => {
                self.set(None)
            }
            _ => None,
        }
    }

    pub fn on_poll(&mut self, index: Option<u32>) -> Option<LinkEvent> {
        self.set(index)
    }

    /// The interface's MAC, from a message or a poll: an event when it changed.
    pub fn on_address(&mut self, mac: Option<[u8; 6]>) -> Option<LinkEvent> {
        let mac = mac.filter(|m| self.mac != Some(*m))?;
        self.mac = Some(mac);
        Some(LinkEvent::Address { mac })
    }

    fn set(&mut self, index: Option<u32>) -> Option<LinkEvent> {
        if index == self.current {
            return None;
        }
        let before = std::mem::replace(&mut self.current, index);
        Some(match (index, before) {
            (Some(ifindex), _) => LinkEvent::Present { ifindex },
            (None, Some(ifindex)) => LinkEvent::Gone { ifindex },
            (None, None) => return None,
        })
    }
}

fn address_of(link: &LinkMessage) -> Option<[u8; 6]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(a) => a.as_slice().try_into().ok(),
        _ => None,
    })
}

fn name_of(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

#[cfg(test)]
mod tests;
