//! Follows the gateway's MAC when `gateway_mac = "auto"`: a task subscribed to the kernel's
//! neighbour and route events (rtnetlink multicast) re-resolves the default route's next hop
//! whenever one concerns the balancer's interface, and tells the controller when its MAC
//! changed (a replaced router, a VRRP failover), which rewrites the data path's CONFIG. A
//! periodic re-check covers events lost to a full netlink buffer.

use crate::netinfo;
use anyhow::{bail, Context, Result};
use futures::StreamExt;
use rtnetlink::{
    constants::{RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_ROUTE, RTMGRP_NEIGH},
    packet_core::NetlinkPayload,
    packet_route::RouteNetlinkMessage,
    sys::{AsyncSocket, SocketAddr},
};
use std::{net::IpAddr, time::Duration};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// A new MAC for the gateway, for the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatewayChange {
    pub from: [u8; 6],
    pub to: [u8; 6],
    pub via: IpAddr,
}

/// Re-check this often even without events.
const RECHECK: Duration = Duration::from_secs(5);
/// A resolution pokes the kernel and waits for ARP/ND: never longer than this.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Events closer together than this are handled by one resolution.
const COALESCE: Duration = Duration::from_millis(20);

/// Watch `iface`'s gateway until `shutdown`; `known` is the MAC in use now.
pub fn spawn(
    iface: String,
    known: [u8; 6],
    changes: mpsc::Sender<GatewayChange>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        if let Err(e) = watch(&iface, known, changes, shutdown).await {
            warn!("gateway MAC is no longer followed: {e:#} (restart the agent to resume)");
        }
    });
}

/// Whether a netlink event can change the gateway's MAC: a neighbour on `ifindex`, or any
/// route (the default route's next hop may have moved).
fn concerns(message: &RouteNetlinkMessage, ifindex: u32) -> bool {
    match message {
        RouteNetlinkMessage::NewNeighbour(n) | RouteNetlinkMessage::DelNeighbour(n) => {
            n.header.ifindex == ifindex
        }
        RouteNetlinkMessage::NewRoute(_) | RouteNetlinkMessage::DelRoute(_) => true,
        _ => false,
    }
}

async fn watch(
    iface: &str,
    mut known: [u8; 6],
    changes: mpsc::Sender<GatewayChange>,
    shutdown: CancellationToken,
) -> Result<()> {
    let ifindex = netinfo::interface(iface).await?.index;
    let (mut connection, _handle, mut events) =
        rtnetlink::new_connection().context("opening a netlink socket for neighbour events")?;
    let groups = RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE;
    connection
        .socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, groups))
        .context("subscribing to neighbour and route events")?;
    tokio::spawn(connection);
    let mut recheck = tokio::time::interval(RECHECK);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = recheck.tick() => {}
            event = events.next() => match event {
                Some((message, _)) => {
                    let NetlinkPayload::InnerMessage(inner) = message.payload else { continue };
                    if !concerns(&inner, ifindex) {
                        continue;
                    }
                    tokio::time::sleep(COALESCE).await;
                }
                None => bail!("the netlink event stream ended"),
            },
        }
        match tokio::time::timeout(RESOLVE_TIMEOUT, netinfo::gateway_mac(iface)).await {
            Ok(Ok((mac, via))) => {
                failing = false;
                if mac != known {
                    let change = GatewayChange {
                        from: known,
                        to: mac,
                        via,
                    };
                    known = mac;
                    if changes.send(change).await.is_err() {
                        return Ok(());
                    }
                }
            }
            // The old MAC stays in use: a router that is gone for good shows as dropped
            // packets at the router, not as a balancer that stopped forwarding.
            Ok(Err(e)) if !failing => {
                failing = true;
                warn!(
                    "resolving the gateway's MAC: {e:#}; keeping {}",
                    netinfo::format_mac(&known)
                );
            }
            Ok(Err(e)) => debug!("resolving the gateway's MAC: {e:#}"),
            Err(_) => debug!("resolving the gateway's MAC timed out"),
        }
    }
}
