//! The agent's configuration file (TOML). Unknown keys are rejected; every error names the key
//! and the line.

use anyhow::Context as _;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    ops::Range,
    path::{Path, PathBuf},
    str::FromStr,
};
use toml::de::{DeTable, DeValue};

mod bgp;
pub use bgp::{BgpConfig, Community, Neighbor};

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
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
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
    #[serde(default = "default_expect_status")]
    pub expect_status: u16,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_rise")]
    pub rise: u32,
    #[serde(default = "default_fall")]
    pub fall: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            kind: CheckKind::default(),
            port: None,
            path: default_path(),
            expect_status: default_expect_status(),
            interval_ms: default_interval_ms(),
            timeout_ms: default_timeout_ms(),
            rise: default_rise(),
            fall: default_fall(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Http,
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
fn default_expect_status() -> u16 {
    200
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

// ---------------------------------------------------------------------------------------------
// Loading.

/// Reads and validates the configuration file at `path`; errors are `path:LINE: key: problem`.
pub fn load(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration file {}", path.display()))?;
    parse(&text, &path.display().to_string())
}

/// Parses and validates a configuration; `origin` (usually the file name) prefixes every error
/// as `origin:LINE: key.path: problem`. With several semantic problems, all are reported, one
/// per line, in file order.
pub fn parse(text: &str, origin: &str) -> anyhow::Result<Config> {
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(err) => return Err(toml_error(text, origin, &err, true)),
    };
    let config: Config =
        toml::from_str(text).map_err(|err| toml_error(text, origin, &err, false))?;
    let problems = config.problems();
    if problems.is_empty() {
        return Ok(config);
    }
    let mut located: Vec<(usize, String)> = problems
        .iter()
        .map(|p| {
            let line = line_of(text, offset_of_path(doc.get_ref(), &p.path));
            (line, format!("{origin}:{line}: {}: {}", p.path, p.message))
        })
        .collect();
    located.sort_by_key(|(line, _)| *line);
    let lines: Vec<String> = located.into_iter().map(|(_, msg)| msg).collect();
    Err(anyhow::anyhow!(lines.join("\n")))
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

    /// The semantic checks of [`parse`] for a configuration built in code: errors are
    /// `key.path: problem`, one per line (no file, so no line numbers).
    pub fn validate(&self) -> anyhow::Result<()> {
        let problems = self.problems();
        if problems.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        Err(anyhow::anyhow!(lines.join("\n")))
    }

    fn problems(&self) -> Vec<Problem> {
        let mut out = Problems::default();
        self.check_agent(&mut out);
        self.check_vips(&mut out);
        if let Some(bgp) = &self.bgp {
            bgp.check(&self.vips, &mut out);
        }
        out.0
    }

    fn check_agent(&self, out: &mut Problems) {
        let a = &self.agent;
        let agent = KeyPath::default().key("agent");
        if a.interface.trim().is_empty() {
            out.add(agent.key("interface"), "must not be empty");
        }
        for (family, is_family, missing, key) in [
            (
                "IPv4",
                IpAddr::is_ipv4 as fn(&IpAddr) -> bool,
                a.encap_source_v4.is_none(),
                "encap_source_v4",
            ),
            (
                "IPv6",
                IpAddr::is_ipv6,
                a.encap_source_v6.is_none(),
                "encap_source_v6",
            ),
        ] {
            if !missing {
                continue;
            }
            let first = self.vips.iter().enumerate().find_map(|(i, v)| {
                v.backends
                    .iter()
                    .position(|b| is_family(&b.address))
                    .map(|j| (i, j, v.backends[j].address))
            });
            if let Some((i, j, address)) = first {
                out.add(
                    vip_path(i).key("backend").index(j).key("address"),
                    format!(
                        "backend {address} is {family}, so agent.{key} (the outer source \
                         address of {family} encapsulation) is required"
                    ),
                );
            }
        }
        if a.encap_source_hash_bits > 16 {
            out.add(
                agent.key("encap_source_hash_bits"),
                format!("must be between 0 and 16, got {}", a.encap_source_hash_bits),
            );
        }
        if a.table_size < 101 || !lb_common::is_prime(a.table_size) {
            out.add(
                agent.key("table_size"),
                format!("must be a prime number >= 101, got {}", a.table_size),
            );
        }
        if a.max_vips == 0 {
            out.add(agent.key("max_vips"), "must be at least 1, got 0");
        } else if u64::from(a.max_vips) < self.vips.len() as u64 {
            out.add(
                agent.key("max_vips"),
                format!(
                    "{} VIPs are configured but max_vips is {}",
                    self.vips.len(),
                    a.max_vips
                ),
            );
        }
        if a.flow_idle_timeout_ms < 1000 {
            out.add(
                agent.key("flow_idle_timeout_ms"),
                format!("must be at least 1000, got {}", a.flow_idle_timeout_ms),
            );
        }
        if a.conn_table_size < 1024 {
            out.add(
                agent.key("conn_table_size"),
                format!("must be at least 1024, got {}", a.conn_table_size),
            );
        }
        let any_v6 = self
            .vips
            .iter()
            .any(|v| v.address.is_ipv6() || v.backends.iter().any(|b| b.address.is_ipv6()));
        let (min_mtu, why) = if any_v6 {
            (1280, " (a VIP or backend is IPv6)")
        } else {
            (576, "")
        };
        if a.mtu < min_mtu {
            out.add(
                agent.key("mtu"),
                format!("must be at least {min_mtu}{why}, got {}", a.mtu),
            );
        } else if a.mtu > 9216 {
            out.add(
                agent.key("mtu"),
                format!("must be at most 9216, got {}", a.mtu),
            );
        }
        if a.outer_ttl == 0 {
            out.add(agent.key("outer_ttl"), "must be at least 1, got 0");
        }
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&a.log_level) {
            out.add(
                agent.key("log_level"),
                format!("invalid tracing filter {:?}: {err}", a.log_level),
            );
        }
    }

    fn check_vips(&self, out: &mut Problems) {
        let table_size = self.agent.table_size;
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut endpoints: HashMap<(IpAddr, u16, Protocol), usize> = HashMap::new();
        let mut total_backends: u64 = 0;
        for (i, v) in self.vips.iter().enumerate() {
            let vp = vip_path(i);
            if v.name.is_empty() {
                out.add(vp.key("name"), "must not be empty");
            } else if !v
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            {
                out.add(
                    vp.key("name"),
                    format!(
                        "{:?} may only contain letters, digits, '_', '.' and '-'",
                        v.name
                    ),
                );
            } else if let Some(first) = names.get(v.name.as_str()) {
                out.add(
                    vp.key("name"),
                    format!("duplicate VIP name {:?} (also vip[{first}].name)", v.name),
                );
            } else {
                names.insert(&v.name, i);
            }
            if let Some(first) = endpoints.get(&(v.address, v.port, v.protocol)) {
                out.add(
                    vp.clone(),
                    format!(
                        "address {} port {} protocol {} is already used by vip[{first}]",
                        v.address,
                        v.port,
                        protocol_name(v.protocol)
                    ),
                );
            } else {
                endpoints.insert((v.address, v.port, v.protocol), i);
            }
            check_health(v, &vp.key("health_check"), out);

            let bp = vp.key("backend");
            if v.backends.len() as u64 > u64::from(table_size) / 100 {
                out.add(
                    bp.clone(),
                    format!(
                        "agent.table_size {table_size} is too small for {} backends: keep it \
                         above 100 x the backend count",
                        v.backends.len()
                    ),
                );
            }
            let mut addresses: HashMap<IpAddr, usize> = HashMap::new();
            for (j, b) in v.backends.iter().enumerate() {
                let p = bp.index(j);
                if let Some(first) = addresses.get(&b.address) {
                    out.add(
                        p.key("address"),
                        format!(
                            "duplicate backend address {} (also vip[{i}].backend[{first}].address)",
                            b.address
                        ),
                    );
                } else {
                    addresses.insert(b.address, j);
                }
                if !(1..=10_000).contains(&b.weight) {
                    let hint = if b.weight == 0 {
                        " (to stop new flows to a backend, set state = \"drain\")"
                    } else {
                        ""
                    };
                    out.add(
                        p.key("weight"),
                        format!("must be between 1 and 10000, got {}{hint}", b.weight),
                    );
                }
                total_backends += 1;
                if total_backends == u64::from(lb_common::MAX_BACKENDS) + 1 {
                    out.add(
                        p,
                        format!(
                            "too many backends: at most {} across all VIPs, this is backend \
                             number {total_backends}",
                            lb_common::MAX_BACKENDS
                        ),
                    );
                }
            }
        }
    }
}

fn check_health(v: &VipConfig, hp: &KeyPath, out: &mut Problems) {
    let hc = &v.health_check;
    if hc.interval_ms < 10 {
        out.add(
            hp.key("interval_ms"),
            format!("must be at least 10, got {}", hc.interval_ms),
        );
    }
    if hc.timeout_ms == 0 {
        out.add(hp.key("timeout_ms"), "must be at least 1, got 0");
    } else if hc.timeout_ms > hc.interval_ms {
        out.add(
            hp.key("timeout_ms"),
            format!(
                "must not exceed interval_ms ({}), got {}",
                hc.interval_ms, hc.timeout_ms
            ),
        );
    }
    if hc.rise == 0 {
        out.add(hp.key("rise"), "must be at least 1, got 0");
    }
    if hc.fall == 0 {
        out.add(hp.key("fall"), "must be at least 1, got 0");
    }
    if !hc.path.starts_with('/') {
        out.add(
            hp.key("path"),
            format!("must start with '/', got {:?}", hc.path),
        );
    }
    if !(100..=599).contains(&hc.expect_status) {
        out.add(
            hp.key("expect_status"),
            format!("must be between 100 and 599, got {}", hc.expect_status),
        );
    }
    match hc.port {
        Some(0) => out.add(hp.key("port"), "must be between 1 and 65535, got 0"),
        None if v.port == 0 && hc.kind != CheckKind::None => out.add(
            hp.key("port"),
            "required: the VIP's port is 0 (any port), so the health check needs a port \
             (or set kind = \"none\")",
        ),
        _ => {}
    }
}

impl VipConfig {
    /// The port health checks probe: `health_check.port`, else the VIP's port.
    pub fn check_port(&self) -> u16 {
        self.health_check.port.unwrap_or(self.port)
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

fn vip_path(i: usize) -> KeyPath {
    KeyPath::default().key("vip").index(i)
}

// ---------------------------------------------------------------------------------------------
// Key paths and lines.

/// A key path as seen in the file: `vip[0].backend[1].weight`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct KeyPath(Vec<Segment>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl KeyPath {
    fn key(&self, key: &str) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Segment::Key(key.to_string()));
        p
    }

    fn index(&self, index: usize) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Segment::Index(index));
        p
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(k) if n == 0 => f.write_str(k)?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

struct Problem {
    path: KeyPath,
    message: String,
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: KeyPath, message: impl Into<String>) {
        self.0.push(Problem {
            path,
            message: message.into(),
        });
    }
}

/// 1-based line of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    1 + text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// Byte offset of the deepest existing key of `path` (its key, or its `[[header]]` for an
/// array element); a missing key falls back to its enclosing table.
fn offset_of_path(doc: &DeTable<'_>, path: &KeyPath) -> usize {
    let mut offset = 0;
    let mut current: Option<&DeValue<'_>> = None;
    for segment in &path.0 {
        match segment {
            Segment::Key(k) => {
                let table = match current {
                    None => doc,
                    Some(DeValue::Table(t)) => t,
                    Some(_) => break,
                };
                let Some((key, value)) = table.get_key_value(k.as_str()) else {
                    break;
                };
                offset = key.span().start;
                current = Some(value.get_ref());
            }
            Segment::Index(i) => {
                let Some(DeValue::Array(array)) = current else {
                    break;
                };
                let Some(element) = array.get(*i) else {
                    break;
                };
                offset = element.span().start;
                current = Some(element.get_ref());
            }
        }
    }
    offset
}

/// A key or value of the spanned document.
struct Node {
    path: KeyPath,
    key: Option<Range<usize>>,
    value: Range<usize>,
    /// A `[table]` / `[[array]]` header (its span covers the header only).
    header: bool,
}

fn collect_table(text: &str, table: &DeTable<'_>, path: &KeyPath, out: &mut Vec<Node>) {
    for (key, value) in table.iter() {
        collect_value(text, path.key(key.get_ref()), Some(key.span()), value, out);
    }
}

fn collect_value(
    text: &str,
    path: KeyPath,
    key: Option<Range<usize>>,
    value: &toml::Spanned<DeValue<'_>>,
    out: &mut Vec<Node>,
) {
    let span = value.span();
    let header = matches!(value.get_ref(), DeValue::Table(_))
        && text.get(span.clone()).is_some_and(|s| s.starts_with('['));
    out.push(Node {
        path: path.clone(),
        key,
        value: span,
        header,
    });
    match value.get_ref() {
        DeValue::Table(t) => collect_table(text, t, &path, out),
        DeValue::Array(a) => {
            for (i, element) in a.iter().enumerate() {
                collect_value(text, path.index(i), None, element, out);
            }
        }
        _ => {}
    }
}

/// The key path a toml error at `span` is about.
fn locate(text: &str, nodes: &[Node], span: &Range<usize>, syntax: bool) -> Option<KeyPath> {
    if span.is_empty() && !syntax {
        // The deserializer reports errors of the document itself (e.g. a missing top-level
        // key) at 0..0.
        return Some(KeyPath::default());
    }
    let contains = |r: &Range<usize>| {
        if span.is_empty() {
            r.start <= span.start && span.start < r.end
        } else {
            r.start <= span.start && span.end <= r.end
        }
    };
    // The smallest key or value holding the span; the deepest on a tie (`[[vip]]` is both
    // `vip` and `vip[0]`).
    let smallest = nodes
        .iter()
        .filter_map(|n| {
            let len = [n.key.as_ref(), Some(&n.value)]
                .into_iter()
                .flatten()
                .filter(|r| contains(r))
                .map(|r| r.len())
                .min()?;
            Some((len, std::cmp::Reverse(n.path.0.len()), n))
        })
        .min_by_key(|(len, depth, _)| (*len, *depth));
    if let Some((_, _, n)) = smallest {
        return Some(n.path.clone());
    }
    // A syntax error after a key on the same line (`weight = `).
    let line = line_of(text, span.start);
    let same_line = nodes
        .iter()
        .filter_map(|n| n.key.as_ref().map(|k| (k.start, n)))
        .filter(|(start, _)| *start <= span.start && line_of(text, *start) == line)
        .max_by_key(|(start, n)| (*start, n.path.0.len()));
    if let Some((_, n)) = same_line {
        return Some(n.path.clone());
    }
    // A bad key itself (duplicate, dotted into a value): the enclosing table's path + the key.
    let key = text.get(span.clone()).unwrap_or("").trim();
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'"'))
    {
        let table = nodes
            .iter()
            .filter(|n| n.header && n.value.start <= span.start)
            .max_by_key(|n| (n.value.start, n.path.0.len()))
            .map(|n| n.path.clone())
            .unwrap_or_default();
        return Some(table.key(key));
    }
    None
}

/// `origin:LINE: key.path: message` for an error of the toml parser or deserializer.
fn toml_error(text: &str, origin: &str, err: &toml::de::Error, syntax: bool) -> anyhow::Error {
    let message = err.message().trim_end();
    let Some(span) = err.span() else {
        return anyhow::anyhow!("{origin}: {message}");
    };
    let line = line_of(text, span.start);
    let (doc, _) = DeTable::parse_recoverable(text);
    let mut nodes = Vec::new();
    collect_table(text, doc.get_ref(), &KeyPath::default(), &mut nodes);
    let mut path = locate(text, &nodes, &span, syntax);
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        path = Some(path.unwrap_or_default().key(field));
    }
    match path {
        Some(path) if !path.0.is_empty() => {
            anyhow::anyhow!("{origin}:{line}: {path}: {message}")
        }
        _ => anyhow::anyhow!("{origin}:{line}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"[agent]
interface = "eth0"
xdp_mode = "native"          # native | skb | auto
pin_path = "/sys/fs/bpf/lb"
admin_listen = "127.0.0.1:9300"
gateway_mac = "auto"
encap_source_v4 = "198.18.0.2"
encap_source_v6 = "2001:db8::2"
table_size = 65537

[[vip]]
name = "web"
address = "198.18.0.10"
port = 80
protocol = "tcp"
hash = "five-tuple"
all_down = "fail-open"

[vip.health_check]
kind = "http"
port = 8080
path = "/healthz"
expect_status = 200
interval_ms = 1000
timeout_ms = 500
rise = 2
fall = 3

[[vip.backend]]
address = "198.18.1.1"
weight = 100
state = "active"
"#;

    /// A valid `[agent]` table (3 lines) for IPv4 backends.
    pub(super) const HEAD: &str = r#"[agent]
interface = "eth0"
encap_source_v4 = "198.18.0.2"
"#;

    /// 1-based line of the only line of `text` containing `marker`.
    pub(super) fn line(text: &str, marker: &str) -> usize {
        let hits: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains(marker))
            .map(|(i, _)| i + 1)
            .collect();
        assert_eq!(hits.len(), 1, "marker {marker:?} in:\n{text}");
        hits[0]
    }

    pub(super) fn rejected(text: &str) -> String {
        match parse(text, "lb.toml") {
            Ok(config) => panic!("accepted:\n{text}\n=> {config:?}"),
            Err(err) => format!("{err:#}"),
        }
    }

    /// `text` is rejected with a message `lb.toml:LINE: PATH: ...` that contains `what`.
    pub(super) fn assert_rejected(text: &str, path: &str, line: usize, what: &str) {
        let err = rejected(text);
        let prefix = format!("lb.toml:{line}: {path}: ");
        assert!(
            err.lines().any(|l| l.starts_with(&prefix) && l.contains(what)),
            "expected a line starting with {prefix:?} containing {what:?}, got:\n{err}\nfor:\n{text}"
        );
    }

    // ---- accepted -----------------------------------------------------------------------------

    #[test]
    fn example_parses_and_defaults_are_filled() {
        let c = parse(EXAMPLE, "lb.toml").unwrap();
        let a = &c.agent;
        assert_eq!(a.interface, "eth0");
        assert_eq!(a.xdp_mode, XdpMode::Native);
        assert_eq!(a.pin_path, PathBuf::from("/sys/fs/bpf/lb"));
        assert_eq!(
            a.admin_listen,
            "127.0.0.1:9300".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(a.gateway_mac, GatewayMac::Auto);
        assert_eq!(a.encap_source_v4, Some(Ipv4Addr::new(198, 18, 0, 2)));
        assert_eq!(a.encap_source_v6, Some("2001:db8::2".parse().unwrap()));
        assert_eq!(a.table_size, 65537);
        // Defaults.
        assert_eq!(a.encap_source_hash_bits, 0);
        assert_eq!(a.max_vips, lb_common::DEFAULT_MAX_VIPS);
        assert_eq!(a.conn_table_size, 1_000_000);
        assert_eq!(a.mtu, 1500);
        assert_eq!(a.outer_ttl, lb_common::DEFAULT_OUTER_TTL);
        assert_eq!(a.new_flows_per_sec, lb_common::DEFAULT_NEW_FLOWS_PER_SEC);
        assert_eq!(a.slow_start_ms, 10_000);
        assert_eq!(a.flow_idle_timeout_ms, 900_000);
        assert_eq!(a.log_level, "info");

        assert_eq!(c.vips.len(), 1);
        let v = &c.vips[0];
        assert_eq!(v.name, "web");
        assert_eq!(v.address, "198.18.0.10".parse::<IpAddr>().unwrap());
        assert_eq!(v.port, 80);
        assert_eq!(v.protocol, Protocol::Tcp);
        assert_eq!(v.hash, HashMode::FiveTuple);
        assert_eq!(v.all_down, AllDown::FailOpen);
        let hc = &v.health_check;
        assert_eq!(hc.kind, CheckKind::Http);
        assert_eq!(hc.port, Some(8080));
        assert_eq!(hc.path, "/healthz");
        assert_eq!(
            (
                hc.expect_status,
                hc.interval_ms,
                hc.timeout_ms,
                hc.rise,
                hc.fall
            ),
            (200, 1000, 500, 2, 3)
        );
        assert_eq!(
            v.backends,
            vec![BackendConfig {
                address: "198.18.1.1".parse().unwrap(),
                weight: 100,
                state: AdminState::Active,
            }]
        );
        assert_eq!(v.check_port(), 8080);
        assert!(c.vip("web").is_some());
        assert!(c.vip("nope").is_none());
    }

    #[test]
    fn minimal_config_fills_every_default() {
        let text = format!(
            "{HEAD}\n[[vip]]\nname = \"dns\"\naddress = \"198.18.0.53\"\nport = 53\n\
             protocol = \"udp\"\n[[vip.backend]]\naddress = \"198.18.1.1\"\n"
        );
        let c = parse(&text, "lb.toml").unwrap();
        assert_eq!(c.agent.xdp_mode, XdpMode::Auto);
        assert_eq!(c.agent.pin_path, PathBuf::from("/sys/fs/bpf/lb"));
        assert_eq!(
            c.agent.admin_listen,
            SocketAddr::from(([127, 0, 0, 1], 9300))
        );
        assert_eq!(c.agent.gateway_mac, GatewayMac::Auto);
        assert_eq!(c.agent.encap_source_v6, None);
        assert_eq!(c.agent.table_size, lb_common::DEFAULT_TABLE_SIZE);
        let v = c.vip("dns").unwrap();
        assert_eq!(v.hash, HashMode::FiveTuple);
        assert_eq!(v.all_down, AllDown::FailOpen);
        assert_eq!(v.health_check, HealthCheckConfig::default());
        assert_eq!(v.health_check.kind, CheckKind::Tcp);
        assert_eq!(v.health_check.path, "/");
        assert_eq!(v.check_port(), 53);
        assert_eq!(v.backends[0].weight, 100);
        assert_eq!(v.backends[0].state, AdminState::Active);
        c.validate().unwrap();
    }

    #[test]
    fn agent_only_config_is_valid() {
        let c = parse("[agent]\ninterface = \"eth0\"\n", "lb.toml").unwrap();
        assert!(c.vips.is_empty());
    }

    #[test]
    fn to_toml_reparses_to_an_equal_config() {
        let c = parse(EXAMPLE, "lb.toml").unwrap();
        let out = c.to_toml().unwrap();
        assert_eq!(parse(&out, "resolved").unwrap(), c, "{out}");
        // Defaults are written out.
        assert!(out.contains("conn_table_size = 1000000"), "{out}");

        let text = r#"[agent]
interface = "eth1"
xdp_mode = "skb"
gateway_mac = "02:AB:cd:00:00:01"
encap_source_v6 = "2001:db8::2"
encap_source_hash_bits = 8
log_level = "info,lb_agent=debug"

[[vip]]
name = "v6.dns"
address = "2001:db8::53"
port = 0
protocol = "udp"
hash = "source-ip"
all_down = "drop"
health_check = { kind = "none" }
backend = [
  { address = "2001:db8:1::1", weight = 5, state = "drain" },
  { address = "2001:db8:1::2", state = "disabled" },
]

[[vip]]
name = "v6-web"
address = "2001:db8::80"
port = 443
protocol = "tcp"
"#;
        let c = parse(text, "lb.toml").unwrap();
        assert_eq!(
            c.agent.gateway_mac,
            GatewayMac::Fixed([0x02, 0xab, 0xcd, 0, 0, 1])
        );
        assert_eq!(c.vips[0].check_port(), 0);
        let out = c.to_toml().unwrap();
        assert!(out.contains("gateway_mac = \"02:ab:cd:00:00:01\""), "{out}");
        assert_eq!(parse(&out, "resolved").unwrap(), c, "{out}");
    }

    #[test]
    fn gateway_mac_strings() {
        assert_eq!("auto".parse::<GatewayMac>().unwrap(), GatewayMac::Auto);
        let mac: GatewayMac = "AA:bb:0C:dd:EE:ff".parse().unwrap();
        assert_eq!(mac, GatewayMac::Fixed([0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0xff]));
        assert_eq!(mac.to_string(), "aa:bb:0c:dd:ee:ff");
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:f",
            "aa:bb:cc:dd:ee:fff",
            "aa-bb-cc-dd-ee-ff",
            "aa:bb:cc:dd:ee:gg",
            "+a:bb:cc:dd:ee:ff",
        ] {
            let err = bad.parse::<GatewayMac>().unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn load_reads_the_file_and_names_it_in_errors() {
        let dir = std::env::temp_dir().join(format!("lb-agent-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(&good, EXAMPLE).unwrap();
        assert_eq!(load(&good).unwrap(), parse(EXAMPLE, "x").unwrap());

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[agent]\ninterface = \"eth0\"\nmtu = 100\n").unwrap();
        let err = load(&bad).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}:3: agent.mtu: ", bad.display())),
            "{err}"
        );

        let missing = dir.join("missing.toml");
        let err = format!("{:#}", load(&missing).unwrap_err());
        assert!(err.contains(&missing.display().to_string()), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn validate_checks_configs_built_in_code() {
        let mut c = parse(EXAMPLE, "lb.toml").unwrap();
        c.validate().unwrap();
        c.vips[0].backends[0].weight = 0;
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("vip[0].backend[0].weight: must be between 1 and 10000, got 0"),
            "{err}"
        );
    }

    #[test]
    fn every_problem_is_reported_in_file_order() {
        let text = "[agent]\ninterface = \"\"\nouter_ttl = 0\nmtu = 100\n";
        let err = rejected(text);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 3, "{err}");
        assert!(
            lines[0].starts_with("lb.toml:2: agent.interface: "),
            "{err}"
        );
        assert!(
            lines[1].starts_with("lb.toml:3: agent.outer_ttl: "),
            "{err}"
        );
        assert!(lines[2].starts_with("lb.toml:4: agent.mtu: "), "{err}");
    }

    // ---- rejected: agent ----------------------------------------------------------------------

    #[test]
    fn rejects_empty_interface() {
        let text = "[agent]\ninterface = \"\"\n";
        assert_rejected(text, "agent.interface", 2, "must not be empty");
    }

    #[test]
    fn rejects_ipv4_backend_without_encap_source_v4() {
        let text = r#"[agent]
interface = "eth0"
encap_source_v6 = "2001:db8::2"

[[vip]]
name = "web"
address = "2001:db8::10"
port = 80
protocol = "tcp"
backend = [
  { address = "2001:db8:1::1" },
  { address = "2001:db8:1::2" },
  { address = "198.18.1.3" },   # v4
]
"#;
        assert_rejected(
            text,
            "vip[0].backend[2].address",
            line(text, "# v4"),
            "agent.encap_source_v4",
        );
    }

    #[test]
    fn rejects_ipv6_backend_without_encap_source_v6() {
        let text = format!(
            "{HEAD}[[vip]]\nname = \"web\"\naddress = \"198.18.0.10\"\nport = 80\n\
             protocol = \"tcp\"\n[[vip.backend]]\naddress = \"198.18.1.1\"\n\
             [[vip.backend]]\naddress = \"2001:db8:1::1\" # v6\n"
        );
        assert_rejected(
            &text,
            "vip[0].backend[1].address",
            line(&text, "# v6"),
            "agent.encap_source_v6",
        );
    }

    #[test]
    fn rejects_encap_source_hash_bits_above_16() {
        let text = format!("{HEAD}encap_source_hash_bits = 17\n");
        assert_rejected(&text, "agent.encap_source_hash_bits", 4, "got 17");
    }

    #[test]
    fn rejects_table_size_not_prime() {
        let text = format!("{HEAD}table_size = 65536\n");
        assert_rejected(&text, "agent.table_size", 4, "prime");
    }

    #[test]
    fn rejects_table_size_below_101() {
        let text = format!("{HEAD}table_size = 97\n");
        assert_rejected(&text, "agent.table_size", 4, ">= 101, got 97");
    }

    #[test]
    fn rejects_table_size_too_small_for_the_backends() {
        let text = format!(
            "{HEAD}table_size = 101\n\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.10\"\n\
             port = 80\nprotocol = \"tcp\"\n\n[[vip.backend]] # first\naddress = \"198.18.1.1\"\n\
             [[vip.backend]]\naddress = \"198.18.1.2\"\n"
        );
        assert_rejected(
            &text,
            "vip[0].backend",
            line(&text, "# first"),
            "table_size 101 is too small for 2 backends: keep it above 100 x the backend count",
        );
    }

    #[test]
    fn rejects_max_vips_zero() {
        let text = format!("{HEAD}max_vips = 0\n");
        assert_rejected(&text, "agent.max_vips", 4, "at least 1");
    }

    #[test]
    fn rejects_max_vips_below_the_vip_count() {
        let text = format!(
            "{HEAD}max_vips = 1\n[[vip]]\nname = \"a\"\naddress = \"198.18.0.10\"\nport = 80\n\
             protocol = \"tcp\"\n[[vip]]\nname = \"b\"\naddress = \"198.18.0.11\"\nport = 80\n\
             protocol = \"tcp\"\n"
        );
        assert_rejected(
            &text,
            "agent.max_vips",
            4,
            "2 VIPs are configured but max_vips is 1",
        );
    }

    #[test]
    fn rejects_too_many_vips_for_the_default_max_vips_at_the_agent_table() {
        // `max_vips` is absent: the error points at `[agent]`.
        let mut text = String::from("# comment\n[agent]\ninterface = \"eth0\"\n");
        for i in 0..=lb_common::DEFAULT_MAX_VIPS {
            text += &format!(
                "[[vip]]\nname = \"v{i}\"\naddress = \"198.18.0.10\"\nport = {}\nprotocol = \"tcp\"\n",
                i + 1
            );
        }
        assert_rejected(&text, "agent.max_vips", 2, "VIPs are configured");
    }

    #[test]
    fn rejects_short_flow_idle_timeout() {
        let text = format!("{HEAD}flow_idle_timeout_ms = 999\n");
        assert_rejected(&text, "agent.flow_idle_timeout_ms", 4, "at least 1000");
    }

    #[test]
    fn rejects_small_conn_table_size() {
        let text = format!("{HEAD}conn_table_size = 1023\n");
        assert_rejected(&text, "agent.conn_table_size", 4, "at least 1024");
    }

    #[test]
    fn rejects_mtu_below_576() {
        let text = format!("{HEAD}mtu = 575\n");
        assert_rejected(&text, "agent.mtu", 4, "at least 576, got 575");
        // 576 is fine without IPv6.
        parse(&format!("{HEAD}mtu = 576\n"), "lb.toml").unwrap();
    }

    #[test]
    fn rejects_mtu_below_1280_with_ipv6() {
        let text = format!(
            "{HEAD}mtu = 1279\n[[vip]]\nname = \"web\"\naddress = \"2001:db8::10\"\nport = 80\n\
             protocol = \"tcp\"\n"
        );
        assert_rejected(&text, "agent.mtu", 4, "at least 1280");
    }

    #[test]
    fn rejects_mtu_above_9216() {
        let text = format!("{HEAD}mtu = 9217\n");
        assert_rejected(&text, "agent.mtu", 4, "at most 9216");
    }

    #[test]
    fn rejects_outer_ttl_zero() {
        let text = format!("{HEAD}outer_ttl = 0\n");
        assert_rejected(&text, "agent.outer_ttl", 4, "at least 1");
    }

    #[test]
    fn rejects_bad_log_level() {
        let text = format!("{HEAD}log_level = \"lb_agent=loud\"\n");
        assert_rejected(&text, "agent.log_level", 4, "\"lb_agent=loud\"");
    }

    // ---- rejected: VIPs -----------------------------------------------------------------------

    pub(super) fn vip(name: &str, address: &str, port: u16) -> String {
        format!(
            "\n[[vip]]\nname = \"{name}\"\naddress = \"{address}\"\nport = {port}\nprotocol = \"tcp\"\n"
        )
    }

    #[test]
    fn rejects_empty_vip_name() {
        let text = format!("{HEAD}{}", vip("", "198.18.0.10", 80));
        assert_rejected(
            &text,
            "vip[0].name",
            line(&text, "name ="),
            "must not be empty",
        );
    }

    #[test]
    fn rejects_bad_characters_in_vip_name() {
        let text = format!(
            "{HEAD}{}{}",
            vip("ok", "198.18.0.9", 80),
            vip("web site", "198.18.0.10", 80)
        );
        assert_rejected(
            &text,
            "vip[1].name",
            line(&text, "web site"),
            "may only contain letters, digits",
        );
    }

    #[test]
    fn rejects_duplicate_vip_name() {
        let text = format!(
            "{HEAD}{}{}",
            vip("web", "198.18.0.10", 80),
            vip("web", "198.18.0.11", 80).replace("name", "name ") // marker: "name  ="
        );
        assert_rejected(
            &text,
            "vip[1].name",
            line(&text, "name  ="),
            "duplicate VIP name \"web\" (also vip[0].name)",
        );
    }

    #[test]
    fn rejects_duplicate_vip_address_port_protocol() {
        let text = format!(
            "{HEAD}{}{}{}",
            vip("a", "198.18.0.10", 80),
            vip("b", "198.18.0.10", 443),
            vip("c", "198.18.0.10", 80).replace("[[vip]]", "[[vip]] # c")
        );
        assert_rejected(
            &text,
            "vip[2]",
            line(&text, "# c"),
            "address 198.18.0.10 port 80 protocol tcp is already used by vip[0]",
        );
        // Same address and port, other protocol: fine.
        let text = format!(
            "{HEAD}{}{}",
            vip("a", "198.18.0.10", 80),
            vip("b", "198.18.0.10", 80).replace("tcp", "udp")
        );
        parse(&text, "lb.toml").unwrap();
    }

    // ---- rejected: backends -------------------------------------------------------------------

    #[test]
    fn rejects_duplicate_backend_address() {
        let text = format!(
            "{HEAD}{}[[vip.backend]]\naddress = \"198.18.1.1\"\n[[vip.backend]]\n\
             address = \"198.18.1.2\"\n[[vip.backend]]\naddress = \"198.18.1.1\" # again\n",
            vip("web", "198.18.0.10", 80)
        );
        assert_rejected(
            &text,
            "vip[0].backend[2].address",
            line(&text, "# again"),
            "duplicate backend address 198.18.1.1 (also vip[0].backend[0].address)",
        );
    }

    #[test]
    fn rejects_backend_weight_zero() {
        let text = format!(
            "{HEAD}{}[[vip.backend]]\naddress = \"198.18.1.1\"\n[[vip.backend]]\n\
             address = \"198.18.1.2\"\nweight = 0\n",
            vip("web", "198.18.0.10", 80)
        );
        assert_rejected(
            &text,
            "vip[0].backend[1].weight",
            line(&text, "weight = 0"),
            "must be between 1 and 10000, got 0",
        );
        assert!(rejected(&text).contains("drain"));
    }

    #[test]
    fn rejects_backend_weight_above_10000() {
        let text = format!(
            "{HEAD}{}backend = [{{ address = \"198.18.1.1\", weight = 10001 }}]\n",
            vip("web", "198.18.0.10", 80)
        );
        assert_rejected(
            &text,
            "vip[0].backend[0].weight",
            line(&text, "10001"),
            "must be between 1 and 10000, got 10001",
        );
    }

    #[test]
    fn rejects_more_than_max_backends_in_total() {
        // 28 VIPs x 600 backends: each VIP fits table_size 65537, the total does not.
        let per_vip = 600;
        let mut text = String::from(HEAD);
        let mut expected_line = 0;
        for i in 0..28 {
            text += &vip(&format!("v{i}"), &format!("198.18.0.{}", 10 + i), 80);
            for j in 0..per_vip {
                if i * per_vip + j == lb_common::MAX_BACKENDS as usize {
                    expected_line = text.lines().count() + 1;
                }
                text += &format!(
                    "[[vip.backend]]\naddress = \"10.{i}.{}.{}\"\n",
                    j / 256,
                    j % 256
                );
            }
        }
        let n = lb_common::MAX_BACKENDS as usize; // 0-based index of the first one too many
        let path = format!("vip[{}].backend[{}]", n / per_vip, n % per_vip);
        assert_eq!(path, "vip[27].backend[184]");
        assert_rejected(&text, &path, expected_line, "at most 16384 across all VIPs");
    }

    // ---- rejected: health checks --------------------------------------------------------------

    fn with_check(check: &str) -> String {
        format!(
            "{HEAD}{}\n[vip.health_check]\n{check}\n",
            vip("web", "198.18.0.10", 80)
        )
    }

    #[test]
    fn rejects_check_interval_below_10ms() {
        let text = with_check("interval_ms = 9\ntimeout_ms = 5");
        assert_rejected(
            &text,
            "vip[0].health_check.interval_ms",
            line(&text, "interval_ms"),
            "at least 10, got 9",
        );
    }

    #[test]
    fn rejects_check_timeout_zero() {
        let text = with_check("timeout_ms = 0");
        assert_rejected(
            &text,
            "vip[0].health_check.timeout_ms",
            line(&text, "timeout_ms"),
            "at least 1, got 0",
        );
    }

    #[test]
    fn rejects_check_timeout_above_interval() {
        let text = with_check("interval_ms = 100\ntimeout_ms = 101");
        assert_rejected(
            &text,
            "vip[0].health_check.timeout_ms",
            line(&text, "timeout_ms"),
            "must not exceed interval_ms (100), got 101",
        );
    }

    #[test]
    fn rejects_check_rise_zero() {
        let text = with_check("rise = 0");
        assert_rejected(
            &text,
            "vip[0].health_check.rise",
            line(&text, "rise"),
            "at least 1",
        );
    }

    #[test]
    fn rejects_check_fall_zero() {
        let text = with_check("fall = 0");
        assert_rejected(
            &text,
            "vip[0].health_check.fall",
            line(&text, "fall"),
            "at least 1",
        );
    }

    #[test]
    fn rejects_check_path_without_slash() {
        let text = with_check("kind = \"http\"\npath = \"healthz\"");
        assert_rejected(
            &text,
            "vip[0].health_check.path",
            line(&text, "healthz"),
            "must start with '/', got \"healthz\"",
        );
    }

    #[test]
    fn rejects_check_expect_status_out_of_range() {
        for status in [0, 99, 600] {
            let text = with_check(&format!("kind = \"http\"\nexpect_status = {status}"));
            assert_rejected(
                &text,
                "vip[0].health_check.expect_status",
                line(&text, "expect_status"),
                &format!("between 100 and 599, got {status}"),
            );
        }
    }

    #[test]
    fn rejects_any_port_vip_without_check_port_at_the_vip_table() {
        // No `[vip.health_check]` at all (default kind tcp): points at `[[vip]]`.
        let text = format!("{HEAD}{}", vip("any", "198.18.0.10", 0));
        assert_rejected(
            &text,
            "vip[0].health_check.port",
            line(&text, "[[vip]]"),
            "required",
        );
        // kind = "none" needs no port.
        parse(
            &with_check("kind = \"none\"").replace("port = 80", "port = 0"),
            "lb.toml",
        )
        .unwrap();
    }

    #[test]
    fn rejects_any_port_vip_without_check_port_at_the_check_table() {
        let text = with_check("kind = \"http\"").replace("port = 80", "port = 0");
        assert_rejected(
            &text,
            "vip[0].health_check.port",
            line(&text, "[vip.health_check]"),
            "required",
        );
        // With a check port it is fine.
        let ok = with_check("kind = \"http\"\nport = 8080").replace("port = 80\n", "port = 0\n");
        assert_eq!(parse(&ok, "lb.toml").unwrap().vips[0].check_port(), 8080);
    }

    #[test]
    fn rejects_check_port_zero() {
        let text = with_check("port = 0");
        assert_rejected(
            &text,
            "vip[0].health_check.port",
            line(&text, "port = 0"),
            "between 1 and 65535",
        );
    }

    // ---- rejected by toml: unknown keys, types, values, syntax --------------------------------

    #[test]
    fn rejects_unknown_top_level_key() {
        let text = format!("colour = \"blue\"\n{HEAD}");
        assert_rejected(&text, "colour", 1, "unknown field `colour`");
    }

    #[test]
    fn rejects_unknown_key_in_agent() {
        let text = format!("{HEAD}interfaces = \"eth1\"\n");
        assert_rejected(&text, "agent.interfaces", 4, "unknown field `interfaces`");
    }

    #[test]
    fn rejects_unknown_key_in_backend() {
        let text = format!(
            "{HEAD}{}[[vip.backend]]\naddress = \"198.18.1.1\"\n[[vip.backend]]\n\
             address = \"198.18.1.2\"\nwieght = 5\n",
            vip("web", "198.18.0.10", 80)
        );
        assert_rejected(
            &text,
            "vip[0].backend[1].wieght",
            line(&text, "wieght"),
            "unknown field `wieght`",
        );
    }

    #[test]
    fn rejects_unknown_key_in_health_check() {
        let text = with_check("retries = 3");
        assert_rejected(
            &text,
            "vip[0].health_check.retries",
            line(&text, "retries"),
            "unknown field `retries`",
        );
    }

    #[test]
    fn rejects_wrong_type() {
        let text = format!("{HEAD}{}", vip("web", "198.18.0.10", 80))
            .replace("port = 80", "port = \"80\"");
        assert_rejected(
            &text,
            "vip[0].port",
            line(&text, "port ="),
            "invalid type: string \"80\", expected u16",
        );
    }

    #[test]
    fn rejects_out_of_range_integer() {
        let text = format!("{HEAD}mtu = 70000\n");
        assert_rejected(&text, "agent.mtu", 4, "70000");
    }

    #[test]
    fn rejects_vip_as_a_table() {
        let text = format!("{HEAD}[vip]\nname = \"web\"\n");
        assert_rejected(&text, "vip", 4, "expected a sequence");
    }

    #[test]
    fn rejects_bad_xdp_mode() {
        let text = format!("{HEAD}xdp_mode = \"fast\"\n");
        assert_rejected(&text, "agent.xdp_mode", 4, "unknown variant `fast`");
    }

    #[test]
    fn rejects_bad_backend_state() {
        let text = format!(
            "{HEAD}{}backend = [{{ address = \"198.18.1.1\", state = \"off\" }}]\n",
            vip("web", "198.18.0.10", 80)
        );
        assert_rejected(
            &text,
            "vip[0].backend[0].state",
            line(&text, "\"off\""),
            "`off`",
        );
    }

    #[test]
    fn rejects_bad_gateway_mac() {
        let text = format!("{HEAD}gateway_mac = \"aa:bb:cc:dd:ee\"\n");
        assert_rejected(&text, "agent.gateway_mac", 4, "\"aa:bb:cc:dd:ee\"");
    }

    #[test]
    fn rejects_bad_ip_address() {
        let text = format!(
            "{HEAD}{}[[vip.backend]]\naddress = \"198.18.1.256\"\n",
            vip("web", "198.18.0.10", 80)
        );
        assert_rejected(
            &text,
            "vip[0].backend[0].address",
            line(&text, "198.18.1.256"),
            "invalid IP address",
        );
    }

    #[test]
    fn rejects_bad_encap_source() {
        let text = "[agent]\ninterface = \"eth0\"\nencap_source_v4 = \"2001:db8::2\"\n";
        assert_rejected(text, "agent.encap_source_v4", 3, "invalid IPv4 address");
    }

    #[test]
    fn rejects_missing_required_key() {
        let text =
            format!("{HEAD}{}", vip("web", "198.18.0.10", 80)).replace("protocol = \"tcp\"\n", "");
        assert_rejected(
            &text,
            "vip[0].protocol",
            line(&text, "[[vip]]"),
            "missing field `protocol`",
        );
        assert_rejected("# nothing\n", "agent", 1, "missing field `agent`");
    }

    #[test]
    fn rejects_syntax_error() {
        let text = format!("{HEAD}mtu = \n");
        assert_rejected(&text, "agent.mtu", 4, "");
        let text = format!("{HEAD}[[vip\n");
        let err = rejected(&text);
        assert!(err.starts_with("lb.toml:4: "), "{err}");
    }

    #[test]
    fn rejects_duplicate_key() {
        let text = format!("{HEAD}interface = \"eth1\"\n");
        assert_rejected(&text, "agent.interface", 4, "duplicate key");
    }
}
