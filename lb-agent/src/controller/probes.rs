//! Which probes run: one per (backend, check definition), shared by every VIP that has that
//! backend with that check, so VIPs over one pool do not multiply the probes a backend gets.
//! Pure: the configuration in, the probes and the VIPs each serves out; on reload, which
//! probes to start, stop and keep (a kept probe keeps its hysteresis state).

use crate::{
    config::{CheckKind, VipConfig},
    health::{CheckSpec, TlsSpec},
};
use std::{
    collections::{BTreeSet, HashMap},
    hash::Hash,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

/// What makes two probes the same: the backend they judge and everything about the check,
/// its destination included (`spec.target`: the backend's address and check port today).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProbeKey {
    pub backend: IpAddr,
    pub spec: CheckSpec,
}

/// The VIPs (by name) a probe's results apply to.
pub type Served = BTreeSet<String>;

/// The check of `backend` for `vip`; `None` when the VIP checks nothing (`kind = "none"`).
pub fn spec_of(vip: &VipConfig, backend: IpAddr) -> Option<CheckSpec> {
    let hc = &vip.health_check;
    if hc.kind == CheckKind::None {
        return None;
    }
    let tls = matches!(hc.kind, CheckKind::Tls | CheckKind::Https).then(|| TlsSpec {
        server_name: hc.server_name(),
        verify: hc.verify,
        ca: hc.ca_certs.clone(),
    });
    let http = matches!(hc.kind, CheckKind::Http | CheckKind::Https);
    Some(CheckSpec {
        kind: hc.kind,
        target: SocketAddr::new(backend, vip.check_port()),
        // Fields a kind does not use are left out, so they cannot split one probe into two.
        path: if http { hc.path.clone() } else { String::new() },
        expect_status: hc.expect_status.clone(),
        expect_body: hc.expect_body.clone().filter(|_| http),
        host: hc.host.clone().filter(|_| http),
        tls,
        interval: Duration::from_millis(hc.interval_ms),
        timeout: Duration::from_millis(hc.timeout_ms),
        rise: hc.rise,
        fall: hc.fall,
    })
}

/// Every probe `vips` need and the VIPs each serves.
pub fn wanted<'a>(vips: impl IntoIterator<Item = &'a VipConfig>) -> HashMap<ProbeKey, Served> {
    let mut out: HashMap<ProbeKey, Served> = HashMap::new();
    for vip in vips {
        for b in &vip.backends {
            if let Some(spec) = spec_of(vip, b.address) {
                let key = ProbeKey {
                    backend: b.address,
                    spec,
                };
                out.entry(key).or_default().insert(vip.name.clone());
            }
        }
    }
    out
}

/// What a new configuration does to the running probes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProbePlan {
    pub stop: Vec<ProbeKey>,
    pub start: Vec<(ProbeKey, Served)>,
    /// Running probes still wanted, with the VIPs they serve from now on.
    pub keep: Vec<(ProbeKey, Served)>,
}

impl ProbePlan {
    pub fn is_quiet(&self) -> bool {
        self.stop.is_empty() && self.start.is_empty()
    }
}

/// Compares the running probes with the wanted ones (`running`'s values are whatever the
/// caller keeps per probe).
pub fn plan<V>(running: &HashMap<ProbeKey, V>, wanted: HashMap<ProbeKey, Served>) -> ProbePlan {
    let mut out = ProbePlan {
        stop: running
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .cloned()
            .collect(),
        ..ProbePlan::default()
    };
    for (key, served) in wanted {
        if running.contains_key(&key) {
            out.keep.push((key, served));
        } else {
            out.start.push((key, served));
        }
    }
    out
}

#[cfg(test)]
#[path = "tests/probes.rs"]
mod tests;
