//! The file's shape: serde types and their defaults. What serde cannot express (ranges,
//! uniqueness, cross-field rules) is in `validate`.

use anyhow::Context as _;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    str::FromStr,
};

use super::{BgpConfig, CaCerts, StatusSet};

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub agent: AgentConfig,
    #[serde(default, rename = "vip")]
    pub vips: Vec<VipConfig>,
    /// Announce VIPs over BGP through BIRD; absent: no announcements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<BgpConfig>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Interface facing the router; `--iface` overrides it.
    pub interface: String,
    #[serde(default)]
    pub xdp_mode: XdpMode,
    #[serde(default = "default_pin_path")]
    pub pin_path: PathBuf,
    /// The read-only listener: GET /metrics and /status.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// The control API (drain, reload, ...): a Unix socket, mode 0600.
    #[serde(default = "default_control_socket")]
    pub control_socket: PathBuf,
    /// A TCP control listener as well; only with `control_token_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_listen: Option<SocketAddr>,
    /// The bearer token of `control_listen` (mode 0600 or stricter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_token_file: Option<PathBuf>,
    #[serde(default)]
    pub gateway_mac: GatewayMac,
    /// Outer source of IPv4 encapsulation; required when any backend is IPv4.
    pub encap_source_v4: Option<Ipv4Addr>,
    /// Outer source of IPv6 encapsulation; required when any backend is IPv6.
    pub encap_source_v6: Option<Ipv6Addr>,
    /// Low bits of the outer source varied per flow (0..=16) so backends' NICs spread flows.
    #[serde(default)]
    pub encap_source_hash_bits: u8,
    /// Maglev table size per VIP (prime, > 100 x the largest backend count).
    #[serde(default = "default_table_size")]
    pub table_size: u32,
    /// Capacity of the VIP maps.
    #[serde(default = "default_max_vips")]
    pub max_vips: u32,
    /// Connection-table capacity (flows).
    #[serde(default = "default_conn_table_size")]
    pub conn_table_size: u32,
    /// Largest IP packet, outer header included, the interface may send.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    #[serde(default = "default_outer_ttl")]
    pub outer_ttl: u8,
    /// SYN-flood guard: new connection-table entries per CPU per second (0 = unlimited).
    #[serde(default = "default_new_flows_per_sec")]
    pub new_flows_per_sec: u32,
    /// A backend that comes back is ramped from a small weight to its full weight over this
    /// window (0 = at once).
    #[serde(default = "default_slow_start_ms")]
    pub slow_start_ms: u64,
    /// A flow idle this long is gone: its connection-table entry is removed, and a table
    /// change older than this no longer keeps flows from before it on their old backend.
    #[serde(default = "default_flow_idle_timeout_ms")]
    pub flow_idle_timeout_ms: u64,
    /// Destination MACs forwarded besides the interface's own (at most 3), e.g. a VRRP virtual
    /// MAC the router sends to. Frames to any other MAC are left to the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accept_macs: Vec<Mac>,
    /// File with the fleet-wide secret key of the flow hash (16 raw bytes or 32 hex digits,
    /// mode 0600); absent: the unkeyed hash. Every balancer of a fleet needs the same key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_hash_key_file: Option<PathBuf>,
    /// tracing filter, e.g. "info" or "lb_agent=debug".
    #[serde(default = "default_log_level")]
    pub log_level: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Driver mode; fails if the driver has no XDP support.
    Native,
    /// Generic (skb) mode: works everywhere, slower.
    Skb,
    /// Native, falling back to skb with a warning.
    #[default]
    Auto,
}

/// `"auto"` (the default route's neighbour, resolved over netlink) or `"aa:bb:cc:dd:ee:ff"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GatewayMac {
    #[default]
    Auto,
    Fixed([u8; 6]),
}

/// A MAC address, `"aa:bb:cc:dd:ee:ff"` in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VipConfig {
    pub name: String,
    pub address: IpAddr,
    /// 0 = any port.
    pub port: u16,
    pub protocol: Protocol,
    #[serde(default)]
    pub hash: HashMode,
    #[serde(default)]
    pub all_down: AllDown,
    #[serde(default)]
    pub health_check: HealthCheckConfig,
    #[serde(default, rename = "backend")]
    pub backends: Vec<BackendConfig>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HashMode {
    #[default]
    FiveTuple,
    SourceIp,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllDown {
    /// Keep sending to every active backend (not drained or disabled) whatever its health: a
    /// health-check outage does not take the service down.
    #[default]
    FailOpen,
    Drop,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    #[serde(default)]
    pub kind: CheckKind,
    /// Default: the VIP's port.
    pub port: Option<u16>,
    #[serde(default = "default_path")]
    pub path: String,
    /// HTTP(S): the statuses that count as healthy: `200`, `"200-399"`, `[200, 204]`.
    #[serde(default = "default_expect_status")]
    pub expect_status: StatusSet,
    /// HTTP(S): a substring the first 64 KiB of the body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_body: Option<String>,
    /// HTTP(S): the Host header (default: the backend's address and port); TLS: the default
    /// of `sni`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// TLS: the server name sent and verified (default: the host part of `host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// TLS: check the backend's certificate against `ca_file` and `sni`.
    #[serde(default = "default_verify")]
    pub verify: bool,
    /// TLS: PEM file of the CA(s) that signed the backends' certificates (absolute path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// `ca_file`'s certificates, read when the file is loaded.
    #[serde(skip)]
    pub ca_certs: CaCerts,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_rise")]
    pub rise: u32,
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// The path probes take: through the tunnel to the VIP, as clients' packets (the default),
    /// or straight to the backend's own address.
    #[serde(default)]
    pub via: CheckVia,
}

/// `"tunnel"`: a probe is a connection to VIP:port, encapsulated to the backend by the TC
/// program `tc_probe_encap` exactly as `xdp_lb` encapsulates client packets, so a backend that
/// cannot serve clients (VIP missing from loopback, decapsulation detached, service or
/// firewall bound to its own address) fails its checks. `"direct"`: a connection to the
/// backend's own address (blind to all of those).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckVia {
    #[default]
    Tunnel,
    Direct,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            kind: CheckKind::default(),
            port: None,
            path: default_path(),
            expect_status: default_expect_status(),
            expect_body: None,
            host: None,
            sni: None,
            verify: default_verify(),
            ca_file: None,
            ca_certs: CaCerts::default(),
            interval_ms: default_interval_ms(),
            timeout_ms: default_timeout_ms(),
            rise: default_rise(),
            fall: default_fall(),
            via: CheckVia::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Http,
    /// HTTP over TLS.
    Https,
    /// A TLS handshake (certificate verified unless `verify = false`).
    Tls,
    #[default]
    Tcp,
    None,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub address: IpAddr,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub state: AdminState,
}

/// What the operator wants of a backend, whatever its health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    #[default]
    Active,
    /// Keeps its established flows, takes no new ones.
    Drain,
    /// Out: its flows move at their next packet.
    Disabled,
}

fn default_pin_path() -> PathBuf {
    PathBuf::from("/sys/fs/bpf/lb")
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9300))
}
fn default_control_socket() -> PathBuf {
    PathBuf::from("/run/lb-agent/admin.sock")
}
fn default_table_size() -> u32 {
    lb_common::DEFAULT_TABLE_SIZE
}
fn default_max_vips() -> u32 {
    lb_common::DEFAULT_MAX_VIPS
}
fn default_conn_table_size() -> u32 {
    1_000_000
}
fn default_mtu() -> u16 {
    1500
}
fn default_outer_ttl() -> u8 {
    lb_common::DEFAULT_OUTER_TTL
}
fn default_new_flows_per_sec() -> u32 {
    lb_common::DEFAULT_NEW_FLOWS_PER_SEC
}
fn default_slow_start_ms() -> u64 {
    10_000
}
/// IPVS's TCP established timeout.
fn default_flow_idle_timeout_ms() -> u64 {
    900_000
}
fn default_log_level() -> String {
    "info".to_string()
}
fn default_path() -> String {
    "/".to_string()
}
fn default_expect_status() -> StatusSet {
    StatusSet::one(200)
}
fn default_verify() -> bool {
    true
}
fn default_interval_ms() -> u64 {
    1000
}
fn default_timeout_ms() -> u64 {
    500
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}
fn default_weight() -> u32 {
    100
}

// ---------------------------------------------------------------------------------------------
// Gateway MAC: a string in the file.

impl fmt::Display for GatewayMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayMac::Auto => f.write_str("auto"),
            GatewayMac::Fixed(m) => write!(
                f,
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            ),
        }
    }
}

impl FromStr for GatewayMac {
    type Err = anyhow::Error;

    /// `"auto"` or six colon-separated hex octets (either case).
    fn from_str(s: &str) -> anyhow::Result<Self> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(GatewayMac::Auto);
        }
        let bad = || {
            anyhow::anyhow!(
                "invalid gateway MAC {s:?}: expected \"auto\" or six hex octets like \"aa:bb:cc:dd:ee:ff\""
            )
        };
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for octet in &mut mac {
            let part = parts
                .next()
                .filter(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(bad)?;
            *octet = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(GatewayMac::Fixed(mac))
    }
}

impl Serialize for GatewayMac {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GatewayMac {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl FromStr for Mac {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.parse::<GatewayMac>() {
            Ok(GatewayMac::Fixed(mac)) => Ok(Mac(mac)),
            _ => anyhow::bail!(
                "invalid MAC {s:?}: expected six hex octets like \"00:00:5e:00:01:07\""
            ),
        }
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&GatewayMac::Fixed(self.0))
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl Config {
    /// The VIP called `name`.
    pub fn vip(&self, name: &str) -> Option<&VipConfig> {
        self.vips.iter().find(|v| v.name == name)
    }

    /// The resolved configuration (defaults filled in) as TOML, for `lb-agent check`.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string_pretty(self).context("serializing the configuration as TOML")
    }
}

impl VipConfig {
    /// The port health checks probe: `health_check.port`, else the VIP's port.
    pub fn check_port(&self) -> u16 {
        self.health_check.port.unwrap_or(self.port)
    }
}
