//! `[vip.health_check]` beyond numbers: the set of healthy statuses, the HTTP and TLS options
//! and their rules, and the CA file (read when the configuration is loaded, never by a probe).

use super::{locate::KeyPath, validate::Problems, CheckKind, HealthCheckConfig};
use rustls::pki_types::{pem::PemObject as _, CertificateDer, ServerName};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::{
    fmt,
    hash::{Hash, Hasher},
    io::Read as _,
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
    sync::Arc,
};

/// Statuses a health check may expect.
pub const STATUS_RANGE: std::ops::RangeInclusive<u16> = 100..=599;
/// Longest `expect_body` (the probe reads at most [`crate::health::MAX_BODY`] bytes).
pub const MAX_EXPECT_BODY: usize = 1024;
/// Longest `host` / `sni` (a DNS name is at most 253 bytes; a port adds 6).
const MAX_HOST: usize = 259;
/// Largest CA file read (a bundle of a few hundred certificates).
pub const MAX_CA_BYTES: u64 = 1 << 20;

/// One entry of [`StatusSet`]: a status or an inclusive range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusItem {
    One(u16),
    Range(u16, u16),
}

/// `expect_status`: `200`, `"200-399"` or `[200, 204, "300-302"]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StatusSet {
    items: Vec<StatusItem>,
    /// Written as a list (kept so `lb-agent check` prints what was written).
    list: bool,
}

impl StatusSet {
    pub fn one(status: u16) -> Self {
        Self {
            items: vec![StatusItem::One(status)],
            list: false,
        }
    }

    pub fn contains(&self, status: u16) -> bool {
        self.items.iter().any(|i| match *i {
            StatusItem::One(s) => s == status,
            StatusItem::Range(lo, hi) => (lo..=hi).contains(&status),
        })
    }

    /// Why the set cannot be used, one reason per bad entry.
    pub fn problems(&self) -> Vec<String> {
        if self.items.is_empty() {
            return vec!["must list at least one status, got an empty list".to_string()];
        }
        let (lo, hi) = (STATUS_RANGE.start(), STATUS_RANGE.end());
        let mut out = Vec::new();
        for item in &self.items {
            let bounds = match *item {
                StatusItem::One(s) => vec![s],
                StatusItem::Range(a, b) => {
                    if a > b {
                        out.push(format!("range \"{a}-{b}\" is reversed: write \"{b}-{a}\""));
                    }
                    vec![a, b]
                }
            };
            for s in bounds.into_iter().filter(|s| !STATUS_RANGE.contains(s)) {
                out.push(format!("statuses must be between {lo} and {hi}, got {s}"));
            }
        }
        out
    }
}

impl fmt::Display for StatusItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusItem::One(s) => write!(f, "{s}"),
            StatusItem::Range(a, b) => write!(f, "{a}-{b}"),
        }
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.items.iter().map(ToString::to_string).collect();
        if self.list {
            write!(f, "[{}]", items.join(", "))
        } else {
            f.write_str(&items.join(", "))
        }
    }
}

fn status_from_int<E: de::Error>(v: i64) -> Result<u16, E> {
    u16::try_from(v).map_err(|_| {
        E::custom(format!(
            "statuses must be between {} and {}, got {v}",
            STATUS_RANGE.start(),
            STATUS_RANGE.end()
        ))
    })
}

fn status_from_str<E: de::Error>(s: &str) -> Result<StatusItem, E> {
    let num = |t: &str| {
        t.trim().parse::<u16>().map_err(|_| {
            E::custom(format!(
                "invalid status {s:?}: expected a status like 200 or a range like \"200-399\""
            ))
        })
    };
    match s.split_once('-') {
        Some((a, b)) => Ok(StatusItem::Range(num(a)?, num(b)?)),
        None => Ok(StatusItem::One(num(s)?)),
    }
}

/// One list entry: an integer or a string.
struct ItemSeed;

impl<'de> de::DeserializeSeed<'de> for ItemSeed {
    type Value = StatusItem;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<StatusItem, D::Error> {
        d.deserialize_any(StatusVisitor)
            .and_then(|set| match set.items[..] {
                [item] if !set.list => Ok(item),
                _ => Err(de::Error::custom("a list of statuses cannot nest lists")),
            })
    }
}

struct StatusVisitor;

impl<'de> de::Visitor<'de> for StatusVisitor {
    type Value = StatusSet;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a status (200), a range (\"200-399\") or a list of them ([200, 204])")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusSet, E> {
        Ok(StatusSet::one(status_from_int(v)?))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusSet, E> {
        self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<StatusSet, E> {
        Ok(StatusSet {
            items: vec![status_from_str(s)?],
            list: false,
        })
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<StatusSet, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(ItemSeed)? {
            items.push(item);
        }
        Ok(StatusSet { items, list: true })
    }
}

impl<'de> Deserialize<'de> for StatusSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StatusVisitor)
    }
}

impl Serialize for StatusItem {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            StatusItem::One(v) => s.serialize_u16(*v),
            StatusItem::Range(..) => s.collect_str(self),
        }
    }
}

impl Serialize for StatusSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.items[..] {
            [one] if !self.list => one.serialize(s),
            items => items.serialize(s),
        }
    }
}

/// The certificates of `ca_file`, read when the configuration is loaded. Compared by content,
/// so a reload that changes the file restarts the checks using it.
#[derive(Clone, Default)]
pub struct CaCerts(Arc<Vec<CertificateDer<'static>>>);

impl CaCerts {
    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.0
    }
}

impl PartialEq for CaCerts {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for CaCerts {}
impl Hash for CaCerts {
    fn hash<H: Hasher>(&self, h: &mut H) {
        for c in self.0.iter() {
            c.as_ref().hash(h);
        }
    }
}
impl fmt::Debug for CaCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaCerts({} certificates)", self.0.len())
    }
}

/// The CA certificates in the PEM file at `path`: a regular file of at most
/// [`MAX_CA_BYTES`], opened non-blocking (a FIFO is refused, not waited on); each certificate
/// must parse as a trust anchor.
pub fn read_ca_file(path: &Path) -> Result<CaCerts, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CA_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_CA_BYTES {
        return Err(format!(
            "{} is larger than {MAX_CA_BYTES} bytes: is it a CA file?",
            path.display()
        ));
    }
    parse_ca_pem(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The certificates of a PEM text; at least one, each usable as a trust anchor.
pub fn parse_ca_pem(pem: &[u8]) -> Result<CaCerts, String> {
    let mut certs = Vec::new();
    for (i, cert) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let cert = cert.map_err(|e| format!("certificate {} is not valid PEM: {e}", i + 1))?;
        let mut store = rustls::RootCertStore::empty();
        store
            .add(cert.clone())
            .map_err(|e| format!("certificate {} is not a usable CA certificate: {e}", i + 1))?;
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".to_string());
    }
    Ok(CaCerts(Arc::new(certs)))
}

fn is_tls(kind: CheckKind) -> bool {
    matches!(kind, CheckKind::Tls | CheckKind::Https)
}
fn is_http(kind: CheckKind) -> bool {
    matches!(kind, CheckKind::Http | CheckKind::Https)
}

/// Why `host` cannot be a Host header (`name`, `name:port`, `[v6]:port`), if it cannot.
fn host_problem(host: &str) -> Option<String> {
    if host.is_empty() {
        return Some("must not be empty (omit it to send the backend's address)".to_string());
    }
    if host.len() > MAX_HOST {
        return Some(format!("is longer than {MAX_HOST} bytes"));
    }
    let bad = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ".-_:[]".contains(*c)));
    bad.map(|c| format!("{host:?} is not a host name (character {c:?})"))
}

/// The host part of a Host header value: `name` of `name:port`, `v6` of `[v6]:port`.
pub fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

impl HealthCheckConfig {
    /// The name the backend's certificate must carry and that is sent as SNI: `sni`, else the
    /// host part of `host`.
    pub fn server_name(&self) -> Option<String> {
        self.sni
            .clone()
            .or_else(|| self.host.as_deref().map(|h| host_name(h).to_string()))
    }
}

/// The rules of the HTTP and TLS options; `hp` is the health_check table's path.
pub(super) fn check_options(hc: &HealthCheckConfig, hp: &KeyPath, out: &mut Problems) {
    for problem in hc.expect_status.problems() {
        out.add(hp.key("expect_status"), problem);
    }
    let kind = hc.kind;
    let only = |key: &str, kinds: &str, out: &mut Problems| {
        out.add(
            hp.key(key),
            format!("only applies to kind = {kinds}, not {:?}", kind_name(kind)),
        );
    };
    if let Some(body) = &hc.expect_body {
        if !is_http(kind) {
            only("expect_body", "\"http\" or \"https\"", out);
        } else if body.is_empty() {
            out.add(
                hp.key("expect_body"),
                "must not be empty (omit it not to check the body)",
            );
        } else if body.len() > MAX_EXPECT_BODY {
            out.add(
                hp.key("expect_body"),
                format!(
                    "must be at most {MAX_EXPECT_BODY} bytes, got {}",
                    body.len()
                ),
            );
        }
    }
    if let Some(host) = &hc.host {
        if !is_http(kind) && !is_tls(kind) {
            only("host", "\"http\", \"https\" or \"tls\"", out);
        } else if let Some(p) = host_problem(host) {
            out.add(hp.key("host"), p);
        }
    }
    check_tls(hc, hp, out);
}

fn check_tls(hc: &HealthCheckConfig, hp: &KeyPath, out: &mut Problems) {
    if !is_tls(hc.kind) {
        let used = [
            ("sni", hc.sni.is_some()),
            ("verify", !hc.verify),
            ("ca_file", hc.ca_file.is_some()),
        ];
        for (key, _) in used.iter().filter(|(_, set)| *set) {
            out.add(
                hp.key(key),
                format!(
                    "only applies to kind = \"tls\" or \"https\", not {:?}",
                    kind_name(hc.kind)
                ),
            );
        }
        return;
    }
    if let Some(sni) = &hc.sni {
        if ServerName::try_from(sni.as_str()).is_err() || sni.len() > MAX_HOST {
            out.add(
                hp.key("sni"),
                format!("{sni:?} is not a DNS name or an IP address"),
            );
        }
    }
    match (&hc.ca_file, hc.verify) {
        (Some(_), false) => out.add(
            hp.key("ca_file"),
            "is unused with verify = false: remove it, or verify the certificates",
        ),
        (Some(path), true) if !path.is_absolute() => out.add(
            hp.key("ca_file"),
            format!(
                "must be an absolute path, got {:?}",
                path.display().to_string()
            ),
        ),
        (None, true) => out.add(
            hp.key("verify"),
            "verify = true (the default) needs ca_file, the PEM file of the CA that signed the \
             backends' certificates; or set verify = false to accept any certificate \
             (self-signed backends)",
        ),
        _ => {}
    }
    if hc.verify && hc.server_name().is_none() {
        out.add(
            hp.key("sni"),
            "verify = true needs the name the backends' certificates carry: set sni (or host)",
        );
    }
}

impl super::Config {
    /// Reads every health check's `ca_file` into its `ca_certs`; the problems of those that
    /// cannot be used.
    pub(super) fn read_ca_files(&mut self) -> Vec<super::validate::Problem> {
        let mut out = Problems::default();
        for (i, v) in self.vips.iter_mut().enumerate() {
            let hc = &mut v.health_check;
            let Some(path) = hc.ca_file.as_ref().filter(|_| hc.verify && is_tls(hc.kind)) else {
                continue;
            };
            match read_ca_file(path) {
                Ok(certs) => hc.ca_certs = certs,
                Err(e) => out.add(
                    super::validate::vip_path(i)
                        .key("health_check")
                        .key("ca_file"),
                    e,
                ),
            }
        }
        out.into_vec()
    }
}

fn kind_name(kind: CheckKind) -> &'static str {
    match kind {
        CheckKind::Tcp => "tcp",
        CheckKind::Http => "http",
        CheckKind::Tls => "tls",
        CheckKind::Https => "https",
        CheckKind::None => "none",
    }
}

#[cfg(test)]
mod tests;
