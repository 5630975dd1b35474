//! Which probes run: one per (backend, check definition), shared by every VIP that has that
//! backend with that check, so VIPs over one pool do not multiply the probes a backend gets.
//! Pure: the configuration in, the probes and the VIPs each serves out; on reload, which
//! probes to start, stop and keep (a kept probe keeps its hysteresis state).
//!
//! A probe's destination is part of its definition: a direct probe goes to the backend's own
//! address, so every VIP over that backend with the same check shares it; a tunnel probe goes
//! to the VIP's address, so the VIPs sharing it are those with the same address and check port
//! (a probe through VIP A says nothing about VIP B's address on the backend's loopback).

use crate::{
    config::{AgentConfig, CheckKind, VipConfig},
    health::{self, CheckDef, CheckSpec, Route, TlsSpec},
};
use std::{
    borrow::Borrow,
    collections::HashMap,
    hash::Hash,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

/// What makes two probes the same: the backend they judge and everything about the check,
/// its destination (`spec.target`) and route included. A tunnel route's backend id is
/// [`KEY_ID`] in a key: every id of one backend address encapsulates alike, and the id a
/// running probe marks its packets with is picked by [`mark_id`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProbeKey {
    pub backend: IpAddr,
    /// Shared with the probe's checker (the same spec unless a tunnel mark changes it).
    pub spec: Arc<CheckSpec>,
}

/// The VIPs (by name) a probe's results apply to: sorted, without repeats. A sorted list
/// rather than a set: most probes serve one VIP, and a `BTreeSet`'s first node alone is ~280
/// bytes (at 10,000 probes, 2.8 MB). Names are shared with every probe of the VIP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Served(Vec<Arc<str>>);

impl Served {
    pub fn insert(&mut self, vip: Arc<str>) {
        if let Err(at) = self.0.binary_search(&vip) {
            self.0.insert(at, vip);
        }
    }

    #[cfg(test)]
    pub fn contains(&self, vip: &str) -> bool {
        self.0.binary_search_by(|v| (**v).cmp(vip)).is_ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// In name order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.iter().map(|v| &**v)
    }
}

impl<S: AsRef<str>, const N: usize> From<[S; N]> for Served {
    fn from(names: [S; N]) -> Self {
        let mut out = Served::default();
        for n in names {
            out.insert(n.as_ref().into());
        }
        out
    }
}

/// The backend id a key's tunnel route carries (see [`ProbeKey`]).
pub const KEY_ID: u32 = 0;

/// The check definition of `vip`'s backends; `None` when the VIP checks nothing
/// (`kind = "none"`).
pub fn check_def(vip: &VipConfig) -> Option<Arc<CheckDef>> {
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
    Some(Arc::new(CheckDef {
        kind: hc.kind,
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
    }))
}

/// The check of `backend` for `vip` with definition `check` (the VIP's [`check_def`]), its
/// tunnel route with [`KEY_ID`].
pub fn spec_with(
    vip: &VipConfig,
    check: Arc<CheckDef>,
    backend: IpAddr,
    agent: &AgentConfig,
) -> CheckSpec {
    let (target, route) = health::probe_route(
        vip.health_check.via,
        SocketAddr::new(vip.address, vip.check_port()),
        SocketAddr::new(backend, vip.check_port()),
        KEY_ID,
        agent,
    );
    CheckSpec {
        target,
        route,
        check,
    }
}

/// The check of `backend` for `vip`, its tunnel route with [`KEY_ID`]; `None` when the VIP
/// checks nothing (`kind = "none"`).
#[cfg(test)]
pub fn spec_of(vip: &VipConfig, backend: IpAddr, agent: &AgentConfig) -> Option<CheckSpec> {
    check_def(vip).map(|check| spec_with(vip, check, backend, agent))
}

/// Every probe `vips` need and the VIPs each serves.
pub fn wanted<'a>(
    vips: impl IntoIterator<Item = &'a VipConfig>,
    agent: &AgentConfig,
) -> HashMap<ProbeKey, Served> {
    let mut out: HashMap<ProbeKey, Served> = HashMap::new();
    for vip in vips {
        // One definition and one name per VIP, shared by its probes (equal definitions of
        // other VIPs still make equal keys: they compare by value).
        let Some(check) = check_def(vip) else {
            continue;
        };
        let name: Arc<str> = vip.name.as_str().into();
        for b in &vip.backends {
            let key = ProbeKey {
                backend: b.address,
                spec: Arc::new(spec_with(vip, check.clone(), b.address, agent)),
            };
            out.entry(key).or_default().insert(name.clone());
        }
    }
    for served in out.values_mut() {
        served.0.shrink_to_fit();
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

/// Compares the running probes with the wanted ones (`running`'s keys are a `ProbeKey` or a
/// handle of one, its values whatever the caller keeps per probe).
pub fn plan<K: Borrow<ProbeKey> + Eq + Hash, V>(
    running: &HashMap<K, V>,
    wanted: HashMap<ProbeKey, Served>,
) -> ProbePlan {
    let mut out = ProbePlan {
        stop: running
            .keys()
            .map(Borrow::borrow)
            .filter(|k| !wanted.contains_key(*k))
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

/// The data-plane id a tunnel probe of `backend` marks its packets with: the backend's id in
/// the first (by name) of the VIPs it serves that has one (`id_of(vip, backend)`). `None`:
/// no served VIP has the backend (a probe that cannot run).
pub fn mark_id(
    backend: IpAddr,
    served: &Served,
    id_of: impl Fn(&str, IpAddr) -> Option<u32>,
) -> Option<u32> {
    served.iter().find_map(|vip| id_of(vip, backend))
}

/// Whether a running probe's mark still names this backend in one of the VIPs it serves (a
/// freed id may be given to another backend, so a probe must never outlive its id).
pub fn mark_still_valid(
    mark: u32,
    backend: IpAddr,
    served: &Served,
    id_of: impl Fn(&str, IpAddr) -> Option<u32>,
) -> bool {
    served.iter().any(|vip| id_of(vip, backend) == Some(mark))
}

/// `spec` with the id its tunnel probes are marked with (direct specs are returned as given).
pub fn with_mark(spec: &Arc<CheckSpec>, id: u32) -> Arc<CheckSpec> {
    match &spec.route {
        Route::Tunnel(t) if t.backend_id != id => {
            let mut marked = CheckSpec::clone(spec);
            if let Route::Tunnel(t) = &mut marked.route {
                t.backend_id = id;
            }
            Arc::new(marked)
        }
        _ => spec.clone(),
    }
}

#[cfg(test)]
#[path = "tests/probes.rs"]
mod tests;
