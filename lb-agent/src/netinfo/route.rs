//! Default routes of the main table, read over netlink.

use super::netlink::Netlink;
use anyhow::{Context, Result};
use futures::TryStreamExt;
use rtnetlink::{
    packet_route::route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType, RouteVia,
    },
    IpVersion, RouteMessageBuilder,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One default route's next hop.
#[derive(Clone, Debug)]
pub(super) struct DefaultHop {
    pub(super) gateway: Option<IpAddr>,
    pub(super) oif: Option<u32>,
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
pub(super) async fn default_hops(nl: &Netlink, version: IpVersion) -> Result<Vec<DefaultHop>> {
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
