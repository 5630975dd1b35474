//! The forwarding benchmark's topology: two namespaces joined by one veth pair.
//!
//! ```text
//!  gen ──fwgen────fwlb── lb
//!        sink       program under test (xdp_lb or xdp_reflect, native, XDP_TX back)
//! ```
//! A live-frames generator run on fwgen transmits into fwlb; what the program on fwlb sends back with
//! XDP_TX arrives at fwgen, whose counting sink drops it. Both ends use threaded NAPI, so each
//! side's receive work runs in a kernel thread that can be pinned to a CPU. Names follow
//! `topo`'s prefix, so `topo::remove_stale` clears pairs of dead runs too; `Drop` tears down.

use crate::{
    netns::sh,
    topo::{remove_stale, PREFIX},
};
use anyhow::{bail, Context, Result};

/// Interfaces inside the two namespaces; names no other harness uses, because NAPI threads are
/// found by device name across all namespaces.
pub const GEN_IFACE: &str = "fwgen";
pub const LB_IFACE: &str = "fwlb";

pub struct Pair {
    pub gen: String,
    pub lb: String,
}

impl Pair {
    pub fn build(tag: &str) -> Result<Self> {
        remove_stale()?;
        let prefix = format!("{PREFIX}{}{tag}", std::process::id());
        let pair = Self {
            gen: format!("{prefix}-gen"),
            lb: format!("{prefix}-lb"),
        };
        for ns in [&pair.gen, &pair.lb] {
            sh(None, &format!("ip netns add {ns}"))?;
            // No IPv6 on the links: no router solicitations or MLD reports among the frames
            // the benchmark counts.
            for key in ["all", "default"] {
                sh(
                    Some(ns),
                    &format!("sysctl -qw net.ipv6.conf.{key}.disable_ipv6=1"),
                )?;
            }
        }
        sh(
            None,
            &format!(
                "ip link add {GEN_IFACE} netns {} type veth peer name {LB_IFACE} netns {}",
                pair.gen, pair.lb
            ),
        )?;
        for (ns, dev) in [(&pair.gen, GEN_IFACE), (&pair.lb, LB_IFACE)] {
            sh(Some(ns), &format!("ip link set {dev} up"))?;
            // GRO gives the veth its NAPI context before any XDP program is attached, which
            // threaded NAPI needs.
            sh(Some(ns), &format!("ethtool -K {dev} gro on"))?;
            set_threaded(ns, dev)?;
        }
        Ok(pair)
    }

    /// Index of `dev` inside `ns` (ifindexes are per namespace).
    pub fn ifindex(&self, ns: &str, dev: &str) -> Result<u32> {
        let link = sh(Some(ns), &format!("ip -o link show {dev}"))?;
        link.split(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .with_context(|| format!("no ifindex in {link:?}"))
    }
}

/// Turn on threaded NAPI for `dev` in `ns`. /sys shows the namespace's devices only when
/// mounted from inside it: a private mount namespace for this one command.
fn set_threaded(ns: &str, dev: &str) -> Result<()> {
    let out = crate::netns::command(ns, "unshare")
        .args(["-m", "sh", "-c"])
        .arg(format!(
            "mount -t sysfs sysfs /sys && echo 1 > /sys/class/net/{dev}/threaded"
        ))
        .output()
        .context("running nsenter")?;
    if !out.status.success() {
        bail!(
            "threaded NAPI on {dev}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Process ids of the NAPI kernel threads of `dev` (named `napi/<dev>-<id>`).
pub fn napi_threads(dev: &str) -> Result<Vec<i32>> {
    let want = format!("napi/{dev}-");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .context("reading /proc")?
        .flatten()
    {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(&want) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.gen, &self.lb] {
            let _ = sh(None, &format!("ip netns delete {ns}"));
        }
    }
}
