//! Backend: does each VIP's service listen where the decapsulated packets arrive (the VIP or a
//! wildcard address)? A service bound only to the backend's own address passes direct health
//! checks and refuses every client connection, which is addressed to the VIP.

use super::Finding;
use crate::config::{Config, Protocol};
use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

const CHECK: &str = "service on the VIPs";
/// `st` of a listening socket in /proc/net/tcp{,6} (TCP_LISTEN).
const TCP_LISTEN: &str = "0A";

/// The TCP (VIP, port) pairs clients and tunnel checks connect to: each VIP's port and its
/// check port, for the VIPs with a backend among `local` (all VIPs when none has one). A VIP on
/// every port (port 0) is left out: any port may be its service's.
pub(super) fn services(cfg: &Config, local: &BTreeSet<IpAddr>) -> Vec<SocketAddr> {
    let tcp = || cfg.vips.iter().filter(|v| v.protocol == Protocol::Tcp);
    let mine: Vec<_> = tcp()
        .filter(|v| v.backends.iter().any(|b| local.contains(&b.address)))
        .collect();
    let chosen = if mine.is_empty() {
        tcp().collect()
    } else {
        mine
    };
    let mut out = BTreeSet::new();
    for v in chosen.into_iter().filter(|v| v.port != 0) {
        out.insert(SocketAddr::new(v.address, v.port));
        out.insert(SocketAddr::new(v.address, v.check_port()));
    }
    out.into_iter().collect()
}

/// The listening sockets of this network namespace (this thread's: the doctor may run in
/// another namespace than the process).
pub(super) fn listeners() -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for (file, v6) in [("tcp", false), ("tcp6", true)] {
        let path = format!("/proc/thread-self/net/{file}");
        match std::fs::read_to_string(&path) {
            Ok(text) => out.extend(parse_listeners(&text, v6).map_err(|e| format!("{path}: {e}"))?),
            // No IPv6 in this kernel: no IPv6 listeners.
            Err(_) if v6 => {}
            Err(e) => return Err(format!("cannot read {path}: {e}")),
        }
    }
    Ok(out)
}

/// The listening addresses in the text of /proc/net/tcp (`v6` false) or tcp6: each line's
/// `local_address` (address words and port in hex) where `st` is LISTEN.
pub(super) fn parse_listeners(text: &str, v6: bool) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else {
            return Err(format!("line {}: too few fields in {line:?}", n + 1));
        };
        if *state != TCP_LISTEN {
            continue;
        }
        let addr = parse_local(local, v6).ok_or_else(|| {
            format!(
                "line {}: local address {local:?} is not ADDR:PORT in hex",
                n + 1
            )
        })?;
        out.push(addr);
    }
    Ok(out)
}

/// `0100007F:0050` = 127.0.0.1:80: the address as 32-bit words in the kernel's byte order.
fn parse_local(field: &str, v6: bool) -> Option<SocketAddr> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words = if v6 { 4 } else { 1 };
    if addr.len() != words * 8 {
        return None;
    }
    let mut bytes = Vec::with_capacity(words * 4);
    for i in 0..words {
        let word = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = if v6 {
        IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?))
    } else {
        IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?))
    };
    Some(SocketAddr::new(ip, port))
}

/// Whether a listener on `l` accepts connections to `service`: same port, and the VIP itself,
/// the wildcard of its family, or `::` for an IPv4 VIP (a dual-stack socket; Linux's default
/// bindv6only = 0), or the VIP as an IPv4-mapped address.
fn accepts(l: &SocketAddr, service: &SocketAddr) -> bool {
    if l.port() != service.port() {
        return false;
    }
    match (l.ip(), service.ip()) {
        (a, b) if a == b => true,
        (IpAddr::V4(a), IpAddr::V4(_)) => a.is_unspecified(),
        (IpAddr::V6(a), IpAddr::V6(_)) => a.is_unspecified(),
        (IpAddr::V6(a), IpAddr::V4(b)) => a.is_unspecified() || a.to_ipv4_mapped() == Some(b),
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

/// The finding for `services` given this namespace's `listeners`: FAIL for a port whose
/// listeners all sit on other addresses (the backend's own, typically), WARN for a port nothing
/// listens on (the service is down or runs in another namespace).
pub(super) fn finding(services: &[SocketAddr], listeners: &[SocketAddr]) -> Finding {
    if services.is_empty() {
        return Finding::ok(CHECK, "no TCP VIP with a fixed port to check");
    }
    let mut bound_elsewhere = Vec::new();
    let mut nothing = Vec::new();
    for s in services {
        if listeners.iter().any(|l| accepts(l, s)) {
            continue;
        }
        let others: Vec<String> = listeners
            .iter()
            .filter(|l| l.port() == s.port())
            .map(|l| l.ip().to_string())
            .collect();
        if others.is_empty() {
            nothing.push(s.to_string());
        } else {
            bound_elsewhere.push(format!("{s} (listening only on {})", others.join(", ")));
        }
    }
    if !bound_elsewhere.is_empty() {
        return Finding::fail(
            CHECK,
            format!(
                "{}: clients' decapsulated connections to the VIP are refused (checks with \
                 via = \"direct\" still pass)",
                bound_elsewhere.join("; ")
            ),
            "bind the service to the VIP or to a wildcard address (0.0.0.0 or [::]), e.g. \
             `listen 80;` rather than `listen 198.18.1.1:80;`",
        );
    }
    if !nothing.is_empty() {
        return Finding::warn(
            CHECK,
            format!(
                "nothing listens on {} in this network namespace",
                nothing.join(", ")
            ),
            "start the service, or run the doctor in the namespace (container) it runs in",
        );
    }
    let list: Vec<String> = services.iter().map(ToString::to_string).collect();
    Finding::ok(CHECK, format!("{} accepted", list.join(", ")))
}

#[cfg(test)]
#[path = "tests_listen.rs"]
mod tests;
