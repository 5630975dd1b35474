//! Deleting an interface under a running program and creating it again, as an operator (or a
//! container runtime) does: the balancer's `l0` (with its router end) and a backend's `b0`.
//! The new veths get the old MAC addresses, as a re-plugged NIC keeps its own and the router's.

use crate::{
    netns::{run_in, sh},
    topo::{
        addr, backend_v4, backend_v6, lb_v4, lb_v6, route, router_link, router_v4, router_v6,
        Topology, LB_IFACE,
    },
};
use anyhow::{Context, Result};
use lb_agent::dataplane::{Decap, PASS_PROGRAM};

/// The MAC addresses of both ends of a deleted veth.
#[derive(Clone, Debug)]
pub struct Macs {
    pub inner: String,
    pub outer: String,
}

/// (Not from /sys/class/net: sysfs shows the namespace that mounted it, not the entered one.)
fn mac(ns: &str, dev: &str) -> Result<String> {
    let text = sh(Some(ns), &format!("ip -br link show dev {dev}"))?;
    text.split_whitespace()
        .nth(2)
        .map(str::to_string)
        .with_context(|| format!("no MAC address of {dev} in {text:?}"))
}

impl Topology {
    /// Delete balancer `i`'s interface (its router end goes with it).
    pub fn delete_lb_link(&self, i: usize) -> Result<Macs> {
        let lb = &self.lbs[i];
        let macs = Macs {
            inner: mac(lb, LB_IFACE)?,
            outer: mac(&self.router, &router_link(i))?,
        };
        sh(Some(lb), &format!("ip link del {LB_IFACE}"))?;
        Ok(macs)
    }

    /// Create balancer `i`'s interface again, as `build` did: addresses, routes (with the
    /// static VIP routes for balancer 0) and `xdp_pass` on the router's end.
    pub fn create_lb_link(&mut self, i: usize, macs: &Macs) -> Result<()> {
        let (lb, rt, link) = (self.lbs[i].clone(), self.router.clone(), router_link(i));
        sh(
            None,
            &format!(
                "ip link add {LB_IFACE} address {} netns {lb} type veth peer name {link} \
                 address {} netns {rt}",
                macs.inner, macs.outer
            ),
        )?;
        let pass_link = link.clone();
        let pass = run_in(&rt, move || {
            let mut d = Decap::load()?;
            d.program(PASS_PROGRAM)?
                .attach(&pass_link, aya::programs::XdpMode::Driver)
                .with_context(|| format!("attaching xdp_pass to {pass_link}"))?;
            Ok(d)
        })?;
        self.hold(pass);
        addr(
            &rt,
            &link,
            &format!("{}/24", router_v4(i)),
            &format!("{}/64", router_v6(i)),
        )?;
        addr(
            &lb,
            LB_IFACE,
            &format!("{}/24", lb_v4(i)),
            &format!("{}/64", lb_v6(i)),
        )?;
        route(&lb, &router_v4(i).to_string(), &router_v6(i).to_string())?;
        if i == 0 {
            sh(
                Some(&rt),
                &format!("ip route replace 198.18.10.0/24 via {}", lb_v4(0)),
            )?;
            sh(
                Some(&rt),
                &format!("ip -6 route replace 2001:db8:10::/64 via {}", lb_v6(0)),
            )?;
        }
        Ok(())
    }

    /// Delete backend `i`'s interface `b0` (its bridge port goes with it).
    pub fn delete_backend_link(&self, i: usize) -> Result<Macs> {
        let ns = &self.backends[i];
        let macs = Macs {
            inner: mac(ns, "b0")?,
            outer: mac(&self.router, &format!("r-b{i}"))?,
        };
        sh(Some(ns), "ip link del b0")?;
        Ok(macs)
    }

    /// Create backend `i`'s `b0` again, as `build` did, without a decap program.
    pub fn create_backend_link(&self, i: usize, macs: &Macs) -> Result<()> {
        let (ns, rt) = (&self.backends[i], &self.router);
        sh(
            None,
            &format!(
                "ip link add b0 address {} netns {ns} type veth peer name r-b{i} address {} \
                 netns {rt}",
                macs.inner, macs.outer
            ),
        )?;
        sh(Some(rt), &format!("ip link set r-b{i} master br0"))?;
        sh(Some(rt), &format!("ip link set r-b{i} up"))?;
        addr(
            ns,
            "b0",
            &format!("{}/24", backend_v4(i)),
            &format!("{}/64", backend_v6(i)),
        )?;
        route(ns, "198.18.1.254", "2001:db8:1::fe")
    }
}
