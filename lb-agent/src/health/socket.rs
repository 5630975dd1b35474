//! The probe's connection: straight to the backend, or through the tunnel to the VIP.
//!
//! A tunnel probe is an ordinary TCP socket to VIP:port that carries the probe mark
//! (`lb_common::probe_mark(backend id)`, SO_MARK) and is bound to the balancer's interface
//! (SO_BINDTODEVICE), so it leaves through the TC egress program `tc_probe_encap`, which
//! encapsulates it to the marked backend; the backend answers this host's own address directly.
//! Its MSS is clamped so that no probe segment outgrows `mtu` once encapsulated.

use crate::config::{AgentConfig, CheckVia};
use lb_common::{probe_mark, IPV4_HDR_LEN, IPV6_HDR_LEN, TCP_HDR_LEN};
use std::{io, net::SocketAddr, os::fd::AsRawFd};
use tokio::net::{TcpSocket, TcpStream};

/// How a probe reaches its backend.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// To the backend's own address (`via = "direct"`).
    Direct,
    /// To the VIP through the tunnel (`via = "tunnel"`).
    Tunnel(Tunnel),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tunnel {
    /// The backend id the data plane knows the backend by (`BACKENDS`).
    pub backend_id: u32,
    /// The balancer's interface, where `tc_probe_encap` runs.
    pub interface: String,
    /// Clamp on the probe's segment size.
    pub mss: u32,
}

impl Tunnel {
    /// `mtu` is the agent's (largest IP packet, outer header included); the outer header is
    /// taken as IPv6's, the larger, whatever the backend's family.
    pub fn new(backend_id: u32, interface: String, mtu: u16, target: SocketAddr) -> Self {
        let inner_ip = if target.is_ipv4() {
            IPV4_HDR_LEN
        } else {
            IPV6_HDR_LEN
        };
        let overhead = (IPV6_HDR_LEN + inner_ip + TCP_HDR_LEN) as u32;
        Self {
            backend_id,
            interface,
            mss: u32::from(mtu).saturating_sub(overhead).max(MIN_MSS),
        }
    }
}

/// Where a backend's probe connects and how: `vip` and `backend` are the check port on each.
pub fn probe_route(
    via: CheckVia,
    vip: SocketAddr,
    backend: SocketAddr,
    backend_id: u32,
    agent: &AgentConfig,
) -> (SocketAddr, Route) {
    match via {
        CheckVia::Direct => (backend, Route::Direct),
        CheckVia::Tunnel => (
            vip,
            Route::Tunnel(Tunnel::new(
                backend_id,
                agent.interface.clone(),
                agent.mtu,
                vip,
            )),
        ),
    }
}

/// The least MSS Linux accepts for TCP_MAXSEG (TCP_MIN_MSS).
const MIN_MSS: u32 = 88;

/// Connect to `target` the way `route` says. Errors carry the detail the check reports.
pub async fn connect(target: SocketAddr, route: &Route) -> Result<TcpStream, String> {
    let tunnel = match route {
        Route::Direct => {
            return TcpStream::connect(target)
                .await
                .map_err(|e| format!("connect: {}", super::probe::io_detail(&e)));
        }
        Route::Tunnel(tunnel) => tunnel,
    };
    let socket = tunnel_socket(target, tunnel).map_err(|e| {
        format!(
            "probe socket for the tunnel: {} (the agent needs CAP_NET_ADMIN and CAP_NET_RAW)",
            super::probe::io_detail(&e)
        )
    })?;
    let stream = socket
        .connect(target)
        .await
        .map_err(|e| connect_detail(&e, &tunnel.interface))?;
    // A VIP that is an address of this host is reached over loopback, never through the
    // tunnel: such a success says nothing about the backend.
    if stream.local_addr().is_ok_and(|a| a.ip() == target.ip()) {
        return Err(local_vip_detail(target));
    }
    Ok(stream)
}

fn tunnel_socket(target: SocketAddr, tunnel: &Tunnel) -> io::Result<TcpSocket> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    let fd = socket.as_raw_fd();
    setsockopt_u32(
        fd,
        libc::SOL_SOCKET,
        libc::SO_MARK,
        probe_mark(tunnel.backend_id),
    )?;
    setsockopt_u32(fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG, tunnel.mss)?;
    socket.bind_device(Some(tunnel.interface.as_bytes()))?;
    Ok(socket)
}

fn setsockopt_u32(fd: i32, level: i32, name: i32, value: u32) -> io::Result<()> {
    // SAFETY: `value` outlives the call and the length given is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// "connect: ..." with what an unreachable VIP means for a tunnel probe.
fn connect_detail(e: &io::Error, interface: &str) -> String {
    let detail = super::probe::io_detail(e);
    match e.raw_os_error() {
        Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH) => format!(
            "connect: {detail} (no route to the VIP through {interface}: tunnel probes leave \
             through the balancer's interface, as the clients' packets arrive)"
        ),
        _ => format!("connect: {detail}"),
    }
}

/// The failure a probe to a local VIP reports.
pub fn local_vip_detail(target: SocketAddr) -> String {
    format!(
        "the VIP {} is an address of this host, so the probe went over loopback instead of \
         through the tunnel: remove it from the balancer's interfaces (clients reach it \
         through XDP, not the host stack), or set via = \"direct\"",
        target.ip()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_probes_go_to_the_vip_direct_ones_to_the_backend() {
        let agent: AgentConfig =
            toml::from_str("interface = \"eth1\"\nmtu = 1500").expect("agent config");
        let vip: SocketAddr = "198.18.10.1:8080".parse().unwrap();
        let backend: SocketAddr = "[2001:db8:1::1]:8080".parse().unwrap();
        assert_eq!(
            probe_route(CheckVia::Direct, vip, backend, 7, &agent),
            (backend, Route::Direct)
        );
        let (target, route) = probe_route(CheckVia::Tunnel, vip, backend, 7, &agent);
        assert_eq!(target, vip);
        assert_eq!(
            route,
            Route::Tunnel(Tunnel {
                backend_id: 7,
                interface: "eth1".into(),
                mss: 1420,
            })
        );
    }

    #[test]
    fn mss_leaves_room_for_the_largest_outer_header() {
        let v4: SocketAddr = "198.18.10.1:80".parse().unwrap();
        let v6: SocketAddr = "[2001:db8:10::1]:80".parse().unwrap();
        assert_eq!(
            Tunnel::new(1, "eth0".into(), 1500, v4).mss,
            1500 - 40 - 20 - 20
        );
        assert_eq!(
            Tunnel::new(1, "eth0".into(), 1500, v6).mss,
            1500 - 40 - 40 - 20
        );
        // A tiny mtu never asks for less than the kernel accepts.
        assert_eq!(Tunnel::new(1, "eth0".into(), 100, v6).mss, MIN_MSS);
    }

    #[test]
    fn unreachable_vip_names_the_interface() {
        let e = io::Error::from_raw_os_error(libc::ENETUNREACH);
        let d = connect_detail(&e, "eth1");
        assert!(d.starts_with("connect: Network is unreachable"), "{d}");
        assert!(d.contains("through eth1"), "{d}");
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(
            connect_detail(&refused, "eth1"),
            "connect: Connection refused"
        );
    }

    #[test]
    fn local_vip_detail_says_what_to_do() {
        let d = local_vip_detail("198.18.10.1:80".parse().unwrap());
        assert!(d.contains("198.18.10.1 is an address of this host"), "{d}");
        assert!(d.contains("via = \"direct\""), "{d}");
    }

    /// Without privileges or a real interface the socket cannot be made; with a bogus
    /// interface name the failure says so (SO_BINDTODEVICE: "No such device").
    #[tokio::test]
    async fn unknown_interface_fails_the_probe_with_a_reason() {
        let route = Route::Tunnel(Tunnel {
            backend_id: 3,
            interface: "lbe-no-such0".into(),
            mss: 1400,
        });
        let err = connect("198.18.10.1:80".parse().unwrap(), &route)
            .await
            .unwrap_err();
        assert!(err.starts_with("probe socket for the tunnel: "), "{err}");
    }
}
