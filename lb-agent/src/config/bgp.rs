//! The `[bgp]` section: how the agent announces its VIPs through the BIRD daemon beside it.
//! Without the section nothing is announced and nothing else changes.

use super::{
    locate::KeyPath,
    validate::{vip_path, Problems},
    VipConfig,
};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    str::FromStr,
};

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BgpConfig {
    pub local_as: u32,
    /// BIRD's router id; when absent, BIRD's own configuration (or its default) decides.
    #[serde(default)]
    pub router_id: Option<Ipv4Addr>,
    /// Next hop announced for IPv4 VIPs; default: the session's own address (`next hop self`).
    #[serde(default)]
    pub next_hop: Option<Ipv4Addr>,
    /// Next hop announced for IPv6 VIPs; required when IPv6 VIPs go over IPv4 sessions.
    #[serde(default)]
    pub next_hop_v6: Option<Ipv6Addr>,
    /// Added to every announcement: "ASN:VALUE" (standard) or "ASN:X:Y" (large).
    #[serde(default)]
    pub communities: Vec<Community>,
    /// Seconds; a dead balancer's routes are withdrawn at the latest this long after it died.
    #[serde(default = "default_hold_time")]
    pub hold_time: u16,
    /// BIRD's control socket (`birdc -s`).
    #[serde(default = "default_bird_socket")]
    pub bird_socket: PathBuf,
    /// The `birdc` binary.
    #[serde(default = "default_birdc")]
    pub birdc: PathBuf,
    /// The file the agent writes; BIRD's configuration must `include` it (a glob over its
    /// directory works before the agent first ran).
    #[serde(default = "default_include_file")]
    pub include_file: PathBuf,
    /// The tun device the agent holds open and its routes point at: when the agent dies the
    /// kernel removes the device, and BIRD withdraws every route through it.
    #[serde(default = "default_announce_interface")]
    pub announce_interface: String,
    /// `lb-agent maintenance on`: how long the routes stay announced with the graceful-shutdown
    /// community (routers move new flows to the other balancers) before they are withdrawn.
    #[serde(default = "default_maintenance_drain_ms")]
    pub maintenance_drain_ms: u64,
    /// BFD transmit and receive interval of the sessions with `bfd = true`.
    #[serde(default = "default_bfd_interval_ms")]
    pub bfd_interval_ms: u32,
    /// Missed BFD packets after which the session (and its routes) goes down.
    #[serde(default = "default_bfd_multiplier")]
    pub bfd_multiplier: u8,
    #[serde(rename = "neighbor")]
    pub neighbors: Vec<Neighbor>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Neighbor {
    pub address: IpAddr,
    pub remote_as: u32,
    /// Source address of the session; default: chosen by the kernel's routing.
    #[serde(default)]
    pub local_address: Option<IpAddr>,
    #[serde(default)]
    pub port: Option<u16>,
    /// TCP MD5 password (RFC 2385).
    #[serde(default)]
    pub password: Option<String>,
    /// Allow a peer this many hops away (for example a route reflector on a loopback).
    #[serde(default)]
    pub multihop: Option<u8>,
    /// Watch the path with BFD: a silent peer is noticed after `bfd_interval_ms` ×
    /// `bfd_multiplier` instead of the hold time. The router must run BFD for this session too.
    #[serde(default)]
    pub bfd: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Community {
    Standard(u16, u16),
    Large(u32, u32, u32),
}

fn default_hold_time() -> u16 {
    9
}
fn default_bird_socket() -> PathBuf {
    PathBuf::from("/run/bird/bird.ctl")
}
fn default_birdc() -> PathBuf {
    PathBuf::from("birdc")
}
fn default_include_file() -> PathBuf {
    PathBuf::from("/etc/bird/lb-agent/vips.conf")
}
fn default_announce_interface() -> String {
    "lb-announce".to_string()
}
fn default_maintenance_drain_ms() -> u64 {
    30_000
}
fn default_bfd_interval_ms() -> u32 {
    100
}
fn default_bfd_multiplier() -> u8 {
    3
}

/// Longest accepted drain: beyond an hour it is a typo, and the balancer would sit half-out.
const MAX_DRAIN_MS: u64 = 3_600_000;
/// BIRD's bounds for BFD intervals are wider; below 10 ms packets get lost under load, above
/// 10 s the hold timer is as good.
const BFD_INTERVAL_MS: std::ops::RangeInclusive<u32> = 10..=10_000;

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Community::Standard(a, b) => write!(f, "{a}:{b}"),
            Community::Large(a, b, c) => write!(f, "{a}:{b}:{c}"),
        }
    }
}

impl FromStr for Community {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = || format!("{s:?} is not a community: use \"ASN:VALUE\" or \"ASN:X:Y\" (large)");
        match parts.as_slice() {
            [a, b] => Ok(Community::Standard(
                a.parse().map_err(|_| bad())?,
                b.parse().map_err(|_| bad())?,
            )),
            [a, b, c] => Ok(Community::Large(
                a.parse().map_err(|_| bad())?,
                b.parse().map_err(|_| bad())?,
                c.parse().map_err(|_| bad())?,
            )),
            _ => Err(bad()),
        }
    }
}

impl Serialize for Community {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Community {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl BgpConfig {
    /// Whether a session to `n` carries IPv4 / IPv6 routes: its own family, plus the other one
    /// when a next hop of that family is configured (BGP needs one to announce it).
    pub fn carries(&self, n: &Neighbor) -> (bool, bool) {
        (
            n.address.is_ipv4() || self.next_hop.is_some(),
            n.address.is_ipv6() || self.next_hop_v6.is_some(),
        )
    }

    pub(super) fn check(&self, vips: &[VipConfig], out: &mut Problems) {
        let p = KeyPath::default().key("bgp");
        self.check_settings(&p, out);
        self.check_neighbors(&p, out);
        self.check_vip_families(vips, out);
    }

    /// The section's own keys.
    fn check_settings(&self, p: &KeyPath, out: &mut Problems) {
        if self.local_as == 0 {
            out.add(p.key("local_as"), "must not be 0");
        }
        if self.hold_time < 3 {
            out.add(
                p.key("hold_time"),
                format!(
                    "must be at least 3 seconds (BGP's minimum), got {}",
                    self.hold_time
                ),
            );
        }
        self.check_maintenance_and_bfd(p, out);
        let iface = &self.announce_interface;
        if iface.is_empty()
            || iface.len() > 15
            || !iface
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            out.add(
                p.key("announce_interface"),
                format!("{iface:?} is not an interface name (1-15 letters, digits, '-', '_', '.')"),
            );
        }
        if self.include_file.file_name().is_none() || !self.include_file.is_absolute() {
            out.add(
                p.key("include_file"),
                format!(
                    "must be an absolute file path, got {:?}",
                    self.include_file.display()
                ),
            );
        }
    }

    fn check_maintenance_and_bfd(&self, p: &KeyPath, out: &mut Problems) {
        if self.maintenance_drain_ms > MAX_DRAIN_MS {
            out.add(
                p.key("maintenance_drain_ms"),
                format!(
                    "must be at most {MAX_DRAIN_MS} (an hour), got {}",
                    self.maintenance_drain_ms
                ),
            );
        }
        if !BFD_INTERVAL_MS.contains(&self.bfd_interval_ms) {
            out.add(
                p.key("bfd_interval_ms"),
                format!(
                    "must be {} to {} milliseconds, got {}",
                    BFD_INTERVAL_MS.start(),
                    BFD_INTERVAL_MS.end(),
                    self.bfd_interval_ms
                ),
            );
        } else if self.bfd_multiplier == 0 {
            out.add(p.key("bfd_multiplier"), "must be at least 1 (3 is usual)");
        } else if self.neighbors.iter().any(|n| n.bfd) {
            // BFD that notices no sooner than the hold timer only adds packets.
            let detect = u64::from(self.bfd_interval_ms) * u64::from(self.bfd_multiplier);
            if detect >= u64::from(self.hold_time) * 1000 {
                out.add(
                    p.key("bfd_multiplier"),
                    format!(
                        "bfd_interval_ms × bfd_multiplier = {detect} ms is not shorter than \
                         hold_time ({} s): lower them, or turn bfd off",
                        self.hold_time
                    ),
                );
            }
        }
    }

    fn check_neighbors(&self, p: &KeyPath, out: &mut Problems) {
        if self.neighbors.is_empty() {
            out.add(
                p.key("neighbor"),
                "at least one [[bgp.neighbor]] is needed to announce anything",
            );
        }
        for (i, n) in self.neighbors.iter().enumerate() {
            let np = p.key("neighbor").index(i);
            if n.remote_as == 0 {
                out.add(np.key("remote_as"), "must not be 0");
            }
            if self.neighbors[..i].iter().any(|m| m.address == n.address) {
                out.add(
                    np.key("address"),
                    format!("duplicate neighbor {}", n.address),
                );
            }
            if let Some(local) = n.local_address {
                if local.is_ipv4() != n.address.is_ipv4() {
                    out.add(
                        np.key("local_address"),
                        format!("{local} and the neighbor {} differ in family", n.address),
                    );
                }
            }
            if let Some(pw) = &n.password {
                if pw.is_empty() || pw.contains(['"', '\\', '\n']) {
                    out.add(
                        np.key("password"),
                        "must be non-empty, without quotes, backslashes or newlines",
                    );
                }
            }
            if n.multihop == Some(0) {
                out.add(np.key("multihop"), "must be at least 1");
            }
        }
    }

    /// Each VIP family needs a session that can announce it.
    fn check_vip_families(&self, vips: &[VipConfig], out: &mut Problems) {
        let families: [(&str, bool, &str); 2] =
            [("IPv4", false, "next_hop"), ("IPv6", true, "next_hop_v6")];
        for (family, v6, key) in families {
            let Some(i) = vips.iter().position(|v| v.address.is_ipv6() == v6) else {
                continue;
            };
            let carried = self.neighbors.iter().any(|n| {
                let (v4_routes, v6_routes) = self.carries(n);
                if v6 {
                    v6_routes
                } else {
                    v4_routes
                }
            });
            if !self.neighbors.is_empty() && !carried {
                out.add(
                    vip_path(i).key("address"),
                    format!(
                        "{family} VIP, but no BGP session can announce it: add an {family} \
                         [[bgp.neighbor]] or set bgp.{key}"
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
