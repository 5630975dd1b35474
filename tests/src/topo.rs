//! The end-to-end topology, as on a real edge:
//!
//! ```text
//!  client ──c0──r-c── router ──r-l──l0── lb (xdp_lb, one interface, XDP_TX back to the router)
//!  198.18.100.2       │ br0 198.18.1.254
//!                     ├──r-b0──b0── backend0 198.18.1.1  (xdp_decap, VIPs on lo)
//!                     ├──r-b1──b0── backend1 198.18.1.2
//!                     └── ...
//! ```
//! VIPs live in 198.18.10.0/24 and 2001:db8:10::/64; the router routes them to the balancer.
//! A fleet ([`Options::balancers`] > 1) has one link per balancer (`r-l<i>` ↔ `l0`, subnet
//! 198.18.<20 i>.0/24), and without static VIP routes the router learns them over BGP.
//! Everything is created under a unique prefix, stale namespaces of dead runs are removed first,
//! and `Drop` tears everything down, also when a test fails.
//!
//! Two veth facts this harness handles (real NICs need neither): frames sent with XDP_TX reach
//! the veth peer only if the peer runs an XDP program too (the router's `r-l` gets `xdp_pass`),
//! and a veth sender's TX checksum offload leaves checksums partial through XDP, so the backend
//! would drop the decapsulated segment (the client's `c0` has TX checksumming off).

use crate::netns::{run_in, sh};
use anyhow::{Context, Result};
use lb_agent::dataplane::{Decap, DECAP_PROGRAM, PASS_PROGRAM};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 2);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2);
pub const LB_V4: Ipv4Addr = lb_v4(0);
pub const LB_V6: Ipv6Addr = lb_v6(0);
/// The LB's interface inside its namespace.
pub const LB_IFACE: &str = "l0";
pub const VIP_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 1);
pub const VIP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 1);
pub const VIP_UDP: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);

/// Balancer `i`'s address on its link to the router (the first one is 198.18.0.2).
pub const fn lb_v4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 20 * i as u8, 2)
}

pub const fn lb_v6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, i as u16, 0, 0, 0, 2)
}

/// The router's address on its link to balancer `i`.
pub const fn router_v4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 20 * i as u8, 1)
}

pub const fn router_v6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, i as u16, 0, 0, 0, 1)
}

/// The router's end of its link to balancer `i`.
pub fn router_link(i: usize) -> String {
    format!("r-l{i}")
}

pub fn backend_v4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, i as u8 + 1)
}

pub fn backend_v6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i as u16 + 1)
}

/// What to build.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub backends: usize,
    pub balancers: usize,
    /// Route the VIPs to the first balancer statically; off when the router learns them over BGP.
    pub static_vip_routes: bool,
}

pub struct Topology {
    pub prefix: String,
    pub client: String,
    pub router: String,
    /// The first (or only) balancer's namespace: `lbs[0]`.
    pub lb: String,
    pub lbs: Vec<String>,
    pub backends: Vec<String>,
    /// XDP programs attached by the harness (backends' decap in backend order, then the
    /// router's pass): alive while held; a released one is None.
    programs: Vec<Option<Decap>>,
}

/// Namespace names start with this; the rest is the creating process id (`remove_stale` relies
/// on it, also for `pair::Pair`).
pub const PREFIX: &str = "lbe";

impl Topology {
    /// Build the topology with `backends` backend namespaces. `tag` keeps concurrent
    /// topologies of one process apart.
    pub fn build(tag: &str, backends: usize) -> Result<Self> {
        Self::build_with(
            tag,
            Options {
                backends,
                balancers: 1,
                static_vip_routes: true,
            },
        )
    }

    pub fn build_with(tag: &str, options: Options) -> Result<Self> {
        remove_stale()?;
        let prefix = format!("{PREFIX}{}{tag}", std::process::id());
        let lbs: Vec<String> = (0..options.balancers.max(1))
            .map(|i| match i {
                0 => format!("{prefix}-lb"),
                i => format!("{prefix}-lb{i}"),
            })
            .collect();
        let mut topo = Self {
            client: format!("{prefix}-cl"),
            router: format!("{prefix}-rt"),
            lb: lbs[0].clone(),
            lbs,
            backends: (0..options.backends)
                .map(|i| format!("{prefix}-b{i}"))
                .collect(),
            prefix,
            programs: Vec::new(),
        };
        // From here on, Drop cleans up whatever was created.
        topo.create(options.static_vip_routes)?;
        Ok(topo)
    }

    fn namespaces(&self) -> Vec<&String> {
        let mut all = vec![&self.client, &self.router];
        all.extend(self.lbs.iter());
        all.extend(self.backends.iter());
        all
    }

    fn create(&mut self, static_vip_routes: bool) -> Result<()> {
        for ns in self.namespaces() {
            sh(None, &format!("ip netns add {ns}"))?;
            // No duplicate address detection: addresses are usable at once.
            for key in ["all", "default"] {
                sh(
                    Some(ns),
                    &format!("sysctl -qw net.ipv6.conf.{key}.accept_dad=0"),
                )?;
                sh(
                    Some(ns),
                    &format!("sysctl -qw net.ipv4.conf.{key}.rp_filter=0"),
                )?;
            }
            sh(Some(ns), "ip link set lo up")?;
        }
        let (cl, rt) = (&self.client, &self.router);
        sh(
            None,
            &format!("ip link add c0 netns {cl} type veth peer name r-c netns {rt}"),
        )?;
        sh(Some(rt), "ip link add br0 type bridge")?;
        sh(Some(rt), "sysctl -qw net.ipv4.ip_forward=1")?;
        sh(Some(rt), "sysctl -qw net.ipv6.conf.all.forwarding=1")?;
        // ECMP over the balancers by the 5-tuple, as a fleet's routers must hash.
        sh(Some(rt), "sysctl -qw net.ipv4.fib_multipath_hash_policy=1")?;
        sh(Some(rt), "sysctl -qw net.ipv6.fib_multipath_hash_policy=1")?;

        addr(cl, "c0", "198.18.100.2/24", "2001:db8:100::2/64")?;
        addr(rt, "r-c", "198.18.100.1/24", "2001:db8:100::1/64")?;
        addr(rt, "br0", "198.18.1.254/24", "2001:db8:1::fe/64")?;
        route(cl, "198.18.100.1", "2001:db8:100::1")?;
        for (i, lb) in self.lbs.iter().enumerate() {
            let link = router_link(i);
            sh(
                None,
                &format!("ip link add {LB_IFACE} netns {lb} type veth peer name {link} netns {rt}"),
            )?;
            addr(
                rt,
                &link,
                &format!("{}/24", router_v4(i)),
                &format!("{}/64", router_v6(i)),
            )?;
            addr(
                lb,
                LB_IFACE,
                &format!("{}/24", lb_v4(i)),
                &format!("{}/64", lb_v6(i)),
            )?;
            route(lb, &router_v4(i).to_string(), &router_v6(i).to_string())?;
        }
        if static_vip_routes {
            sh(
                Some(rt),
                &format!("ip route add 198.18.10.0/24 via {}", lb_v4(0)),
            )?;
            sh(
                Some(rt),
                &format!("ip -6 route add 2001:db8:10::/64 via {}", lb_v6(0)),
            )?;
        }
        // See the module docs: partial checksums do not survive XDP on veth.
        sh(Some(cl), "ethtool -K c0 tx off")?;

        for (i, ns) in self.backends.clone().iter().enumerate() {
            sh(
                None,
                &format!("ip link add b0 netns {ns} type veth peer name r-b{i} netns {rt}"),
            )?;
            sh(Some(rt), &format!("ip link set r-b{i} master br0"))?;
            sh(Some(rt), &format!("ip link set r-b{i} up"))?;
            addr(
                ns,
                "b0",
                &format!("{}/24", backend_v4(i)),
                &format!("{}/64", backend_v6(i)),
            )?;
            route(ns, "198.18.1.254", "2001:db8:1::fe")?;
            for vip in [VIP_V4, VIP_UDP] {
                sh(Some(ns), &format!("ip addr add {vip}/32 dev lo"))?;
            }
            sh(Some(ns), &format!("ip -6 addr add {VIP_V6}/128 dev lo"))?;
            // The VIP is on lo: never answer ARP for it on b0.
            sh(Some(ns), "sysctl -qw net.ipv4.conf.all.arp_ignore=1")?;
            sh(Some(ns), "sysctl -qw net.ipv4.conf.all.arp_announce=2")?;
            let locals = [IpAddr::V4(backend_v4(i)), IpAddr::V6(backend_v6(i))];
            let decap = run_in(ns, move || {
                let mut decap = Decap::load()?;
                for a in locals {
                    decap.add_local(a)?;
                }
                decap
                    .program(DECAP_PROGRAM)?
                    .attach("b0", aya::programs::XdpMode::Driver)
                    .context("attaching xdp_decap")?;
                Ok(decap)
            })?;
            self.programs.push(Some(decap));
        }
        sh(Some(rt), "ip link set br0 up")?;
        // XDP_TX frames from a balancer reach the router only if its end runs XDP itself.
        let links: Vec<String> = (0..self.lbs.len()).map(router_link).collect();
        let pass = run_in(rt, move || {
            let mut d = Decap::load()?;
            let program = d.program(PASS_PROGRAM)?;
            for link in &links {
                program
                    .attach(link, aya::programs::XdpMode::Driver)
                    .with_context(|| format!("attaching xdp_pass to {link}"))?;
            }
            Ok(d)
        })?;
        self.programs.push(Some(pass));
        Ok(())
    }

    /// bpffs directory of the first balancer's pins in this topology.
    pub fn pin_dir(&self) -> std::path::PathBuf {
        self.pin_dir_of(0)
    }

    /// bpffs directory of balancer `i`'s pins.
    pub fn pin_dir_of(&self, i: usize) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("/sys/fs/bpf/{}", self.lbs[i]))
    }

    /// Detach the harness's decap program from backend `i` (a test attaches its own there).
    pub fn release_decap(&mut self, i: usize) {
        if let Some(slot) = self.programs.get_mut(i) {
            *slot = None;
        }
    }

    /// Keep `program` (attached by a test in this topology) alive until teardown.
    pub(crate) fn hold(&mut self, program: Decap) {
        self.programs.push(Some(program));
    }

    /// Drop every packet a backend receives (a blackholed, not refusing, backend).
    pub fn blackhole(&self, i: usize, on: bool) -> Result<()> {
        let ns = &self.backends[i];
        if on {
            sh(Some(ns), "nft add table inet lbe_blackhole")?;
            sh(
                Some(ns),
                "nft add chain inet lbe_blackhole input { type filter hook input priority 0 ; policy drop ; }",
            )?;
        } else {
            sh(Some(ns), "nft delete table inet lbe_blackhole")?;
        }
        Ok(())
    }
}

pub(crate) fn addr(ns: &str, dev: &str, v4: &str, v6: &str) -> Result<()> {
    sh(Some(ns), &format!("ip addr add {v4} dev {dev}"))?;
    sh(Some(ns), &format!("ip -6 addr add {v6} dev {dev} nodad"))?;
    sh(Some(ns), &format!("ip link set {dev} up"))?;
    Ok(())
}

pub(crate) fn route(ns: &str, v4: &str, v6: &str) -> Result<()> {
    sh(Some(ns), &format!("ip route add default via {v4}"))?;
    sh(Some(ns), &format!("ip -6 route add default via {v6}"))?;
    Ok(())
}

/// Remove namespaces (and balancer pins) left by earlier runs whose process is gone.
pub fn remove_stale() -> Result<()> {
    let list = sh(None, "ip netns list").unwrap_or_default();
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let alive = !pid.is_empty() && std::path::Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            let _ = sh(None, &format!("ip netns delete {name}"));
        }
    }
    if let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(PREFIX) else {
                continue;
            };
            let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = lb_agent::dataplane::unpin_all(&e.path());
                // Decap pins and namespace records too.
                crate::pins::remove_pins(&e.path());
            }
        }
    }
    Ok(())
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.programs.clear();
        for ns in self.namespaces() {
            let _ = sh(None, &format!("ip netns delete {ns}"));
        }
        for i in 0..self.lbs.len() {
            let pins = self.pin_dir_of(i);
            let _ = lb_agent::dataplane::unpin_all(&pins);
            let _ = std::fs::remove_dir(&pins);
        }
        // The scenario's configuration and agent log.
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(&self.prefix));
    }
}
