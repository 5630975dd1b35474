//! The rules serde cannot express: ranges, uniqueness and cross-field requirements. Every
//! problem is collected (not just the first) with the key path it is about; `parse` adds lines.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use super::{locate::KeyPath, CheckKind, Config, Protocol, VipConfig};

mod admin;
mod values;

use values::{
    http_path_problem, non_unicast, FILE_ZERO_WEIGHT_HINT, INTERVAL_MS, MAX_TABLE_SIZE,
    MAX_TABLE_SLOTS,
};
pub use values::{
    interface_name_problem, parse_weight, weight_problem, Weight, RUNTIME_ZERO_WEIGHT_HINT,
    WEIGHT_RANGE,
};

impl Config {
    /// The semantic checks of [`parse`](super::parse) for a configuration built in code:
    /// errors are `key.path: problem`, one per line (no file, so no line numbers).
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

    pub(super) fn problems(&self) -> Vec<Problem> {
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
        if let Some(problem) = interface_name_problem(&a.interface) {
            out.add(agent.key("interface"), problem);
        }
        for (key, address) in [
            ("encap_source_v4", a.encap_source_v4.map(IpAddr::V4)),
            ("encap_source_v6", a.encap_source_v6.map(IpAddr::V6)),
        ] {
            let Some(address) = address else { continue };
            if let Some(what) = non_unicast(address) {
                out.add(
                    agent.key(key),
                    format!(
                        "{address} is {what}; the outer source must be a unicast address of \
                         this host"
                    ),
                );
            }
        }
        self.check_encap_sources(out);
        admin::check(a, &agent, out);
        self.check_agent_sizes(&agent, out);
        self.check_mtu(&agent, out);
        self.check_datapath(&agent, out);
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

    /// An encapsulation source is required for each family some backend has; the problem is
    /// reported at the first such backend, which is what makes it required.
    fn check_encap_sources(&self, out: &mut Problems) {
        let a = &self.agent;
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
    }

    /// Table and map sizes, and the flow timeout.
    fn check_agent_sizes(&self, agent: &KeyPath, out: &mut Problems) {
        let a = &self.agent;
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
        } else if a.table_size > MAX_TABLE_SIZE {
            out.add(
                agent.key("table_size"),
                format!("must be at most {MAX_TABLE_SIZE}, got {}", a.table_size),
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
        let slots = u64::from(a.max_vips) * 2 * u64::from(a.table_size);
        // Only for a table_size within its own bounds: otherwise that is the problem to fix.
        if a.table_size <= MAX_TABLE_SIZE && slots > MAX_TABLE_SLOTS {
            out.add(
                agent.key("max_vips"),
                format!(
                    "max_vips x 2 x table_size ({} x 2 x {}) must be at most {MAX_TABLE_SLOTS} \
                     slots (the size of the table maps): lower max_vips or table_size",
                    a.max_vips, a.table_size
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
    }

    /// IPv6 needs a larger minimum MTU than IPv4 (1280 against 576).
    fn check_mtu(&self, agent: &KeyPath, out: &mut Problems) {
        let mtu = self.agent.mtu;
        let any_v6 = self
            .vips
            .iter()
            .any(|v| v.address.is_ipv6() || v.backends.iter().any(|b| b.address.is_ipv6()));
        let (min_mtu, why) = if any_v6 {
            (1280, " (a VIP or backend is IPv6)")
        } else {
            (576, "")
        };
        if mtu < min_mtu {
            out.add(
                agent.key("mtu"),
                format!("must be at least {min_mtu}{why}, got {mtu}"),
            );
        } else if mtu > 9216 {
            out.add(agent.key("mtu"), format!("must be at most 9216, got {mtu}"));
        }
    }

    fn check_vips(&self, out: &mut Problems) {
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut endpoints: HashMap<(IpAddr, u16, Protocol), usize> = HashMap::new();
        // Counted across VIPs: the `BACKENDS` array is shared.
        let mut total_backends: u64 = 0;
        let vip_addresses: HashSet<IpAddr> = self.vips.iter().map(|v| v.address).collect();
        for (i, v) in self.vips.iter().enumerate() {
            let vp = vip_path(i);
            check_vip_name(v, i, &vp, &mut names, out);
            if let Some(what) = non_unicast(v.address) {
                out.add(
                    vp.key("address"),
                    format!("{} is {what}; a VIP must be a unicast address", v.address),
                );
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
            self.check_backends(i, v, &vip_addresses, &mut total_backends, out);
        }
    }

    /// The backends of `vips[i]`; `total_backends` counts those of every VIP so far.
    fn check_backends(
        &self,
        i: usize,
        v: &VipConfig,
        vip_addresses: &HashSet<IpAddr>,
        total_backends: &mut u64,
        out: &mut Problems,
    ) {
        let table_size = self.agent.table_size;
        let bp = vip_path(i).key("backend");
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
            check_backend_address(b.address, vip_addresses, &p, out);
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
            check_weight(b.weight, &p, out);
            *total_backends += 1;
            // Reported once, at the first backend past the limit.
            if *total_backends == u64::from(lb_common::MAX_BACKENDS) + 1 {
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

/// A VIP's name appears in admin API paths, logs and metric labels: non-empty, plain, unique.
fn check_vip_name<'a>(
    v: &'a VipConfig,
    i: usize,
    vp: &KeyPath,
    names: &mut HashMap<&'a str, usize>,
    out: &mut Problems,
) {
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
}

/// A backend must be another host: encapsulating to a VIP address would loop the packet
/// through the balancer again.
fn check_backend_address(
    address: IpAddr,
    vip_addresses: &HashSet<IpAddr>,
    p: &KeyPath,
    out: &mut Problems,
) {
    if let Some(what) = non_unicast(address) {
        out.add(
            p.key("address"),
            format!("{address} is {what}; a backend must be a unicast address of another host"),
        );
    } else if vip_addresses.contains(&address) {
        out.add(
            p.key("address"),
            format!("{address} is a VIP address; a backend must be another host"),
        );
    }
}

/// `p` is the backend's path.
fn check_weight(weight: u32, p: &KeyPath, out: &mut Problems) {
    if let Some(problem) = weight_problem(weight, FILE_ZERO_WEIGHT_HINT) {
        out.add(p.key("weight"), problem);
    }
}

fn check_health(v: &VipConfig, hp: &KeyPath, out: &mut Problems) {
    let hc = &v.health_check;
    if !INTERVAL_MS.contains(&hc.interval_ms) {
        out.add(
            hp.key("interval_ms"),
            format!(
                "must be between {} and {} (1 hour), got {}",
                INTERVAL_MS.start(),
                INTERVAL_MS.end(),
                hc.interval_ms
            ),
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
    if let Some(problem) = http_path_problem(&hc.path) {
        out.add(hp.key("path"), problem);
    }
    super::check::check_options(hc, hp, out);
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

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

pub(super) fn vip_path(i: usize) -> KeyPath {
    KeyPath::default().key("vip").index(i)
}

/// One broken rule and the key it is about.
pub(super) struct Problem {
    pub(super) path: KeyPath,
    pub(super) message: String,
}

/// Every broken rule, in the order the checks found them.
#[derive(Default)]
pub(super) struct Problems(Vec<Problem>);

impl Problems {
    pub(super) fn into_vec(self) -> Vec<Problem> {
        self.0
    }

    pub(super) fn add(&mut self, path: KeyPath, message: impl Into<String>) {
        self.0.push(Problem {
            path,
            message: message.into(),
        });
    }
}

#[cfg(test)]
mod tests;
