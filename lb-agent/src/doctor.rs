//! `lb-agent doctor`: checks a host for the setup mistakes that fill XDP balancers' issue
//! trackers, one finding per check (OK / WARN / FAIL and, when not OK, the fix).
//!
//! Every check stands alone: one that fails or cannot run does not stop the others. Checks
//! that need the interface are skipped (with a WARN) when none is given.
//!
//! The native-XDP check attaches the decap object's `xdp_pass` (which passes every packet) to
//! the interface in driver mode and detaches it at once; some drivers reset their rings when
//! a program is attached, so expect a blip of a few milliseconds on a busy NIC. It is not done
//! when a program is already attached.

mod bgp;

use crate::{
    config::{Config, GatewayMac, XdpMode},
    dataplane::{self, Decap, PASS_PROGRAM},
    netinfo::{self, LinkFacts, XdpAttachMode},
};
use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

#[derive(Clone, Debug)]
pub struct Finding {
    pub verdict: Verdict,
    /// What was checked ("bpffs", "native XDP on eth0", ...).
    pub check: String,
    pub detail: String,
    /// What to do about it (None when OK).
    pub fix: Option<String>,
}

impl Finding {
    fn ok(check: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Ok,
            check: check.into(),
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Warn,
            check: check.into(),
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Fail,
            check: check.into(),
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

pub struct DoctorOptions {
    /// The interface facing the router (LB) or carrying the tunnel traffic (backend);
    /// default: the config's agent.interface.
    pub iface: Option<String>,
    pub config: Option<Config>,
    /// run the backend-side checks
    pub backend: bool,
}

/// Run every check. Never fails: a check that cannot run reports why.
pub async fn run(opts: &DoctorOptions) -> Vec<Finding> {
    let cfg = opts.config.as_ref();
    let mut out = vec![privileges()];
    out.extend(bpffs(cfg));
    out.push(btf());
    out.extend(kernel());
    out.push(program_load(cfg, opts.backend));
    let iface = opts
        .iface
        .clone()
        .or_else(|| cfg.map(|c| c.agent.interface.clone()));
    let link = match &iface {
        None => {
            out.push(Finding::warn(
                "interface",
                "no interface given: interface, MTU, XDP, gateway and rp_filter checks skipped",
                "pass --iface IFACE, or --config with agent.interface",
            ));
            None
        }
        Some(name) => {
            let (finding, link) = interface(name).await;
            out.push(finding);
            link
        }
    };
    if let Some(link) = &link {
        out.push(mtu(link, cfg, opts.backend));
        out.extend(bonding(link));
        out.push(native_xdp(link, cfg, opts.backend));
    }
    if opts.backend {
        out.extend(backend(link.as_ref(), cfg).await);
    } else if let Some(link) = &link {
        out.push(gateway(&link.iface.name, cfg).await);
        out.push(rp_filter_lb(&link.iface.name));
    }
    if let (false, Some(bgp_cfg)) = (opts.backend, cfg.and_then(|c| c.bgp.as_ref())) {
        out.extend(bgp::checks(bgp_cfg).await);
    }
    out
}

/// One line per finding: `OK   check: detail`, and under a finding that is not OK,
/// `     fix: ...`.
pub fn render(findings: &[Finding]) -> String {
    const INDENT: &str = "     ";
    let mut s = String::new();
    for f in findings {
        let detail = f.detail.replace('\n', &format!("\n{INDENT}"));
        s.push_str(&format!(
            "{:<4} {}: {}\n",
            f.verdict.label(),
            f.check,
            detail
        ));
        if f.verdict != Verdict::Ok {
            if let Some(fix) = &f.fix {
                let fix = fix.replace('\n', &format!("\n{INDENT}     "));
                s.push_str(&format!("{INDENT}fix: {fix}\n"));
            }
        }
    }
    s
}

/// Whether any check FAILed.
pub fn failed(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.verdict == Verdict::Fail)
}

// ---------------------------------------------------------------------------------------------
// Host: privileges, bpffs, BTF, kernel.

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// The effective capability set from /proc/self/status.
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn privileges() -> Finding {
    const CHECK: &str = "privileges";
    const FIX: &str = "run as root (sudo lb-agent ...), or grant CAP_BPF, CAP_NET_ADMIN and \
                       CAP_SYS_ADMIN (systemd: AmbientCapabilities=CAP_BPF CAP_NET_ADMIN \
                       CAP_SYS_ADMIN; a container needs --privileged or these capabilities)";
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let has = |caps: u64, cap: u32| caps & (1u64 << cap) != 0;
    match effective_caps() {
        Some(caps) => {
            let bpf = has(caps, CAP_SYS_ADMIN) || has(caps, CAP_BPF);
            let net = has(caps, CAP_NET_ADMIN);
            match (euid == 0, bpf && net) {
                (true, true) => Finding::ok(CHECK, "running as root with CAP_SYS_ADMIN/CAP_BPF"),
                (false, true) => Finding::ok(
                    CHECK,
                    format!("uid {euid}, with the BPF and network admin capabilities"),
                ),
                (true, false) => Finding::fail(
                    CHECK,
                    format!(
                        "root, but without {} (a restricted container?): programs cannot be \
                         loaded or attached",
                        if bpf {
                            "CAP_NET_ADMIN"
                        } else {
                            "CAP_SYS_ADMIN or CAP_BPF"
                        }
                    ),
                    FIX,
                ),
                (false, false) => Finding::fail(
                    CHECK,
                    format!(
                        "running as uid {euid} without CAP_BPF/CAP_SYS_ADMIN and CAP_NET_ADMIN"
                    ),
                    FIX,
                ),
            }
        }
        None if euid == 0 => Finding::ok(CHECK, "running as root"),
        None => Finding::fail(CHECK, format!("running as uid {euid}, not root"), FIX),
    }
}

/// A mount: (mount point, filesystem type).
fn mounts() -> std::io::Result<Vec<(PathBuf, String)>> {
    let text = std::fs::read_to_string("/proc/mounts")?;
    Ok(parse_mounts(&text))
}

fn parse_mounts(text: &str) -> Vec<(PathBuf, String)> {
    text.lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let _source = fields.next()?;
            let point = fields.next()?;
            let fstype = fields.next()?;
            Some((PathBuf::from(unescape_mount(point)), fstype.to_string()))
        })
        .collect()
}

/// /proc/mounts writes space, tab, newline and backslash as octal escapes (`\040`).
fn unescape_mount(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let v = oct.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount holding `path`: the longest mount point that is a prefix of it (after resolving
/// the longest existing ancestor's symlinks).
fn mount_of<'a>(mounts: &'a [(PathBuf, String)], path: &Path) -> Option<&'a (PathBuf, String)> {
    let resolved = path
        .ancestors()
        .find_map(|a| {
            let canon = a.canonicalize().ok()?;
            Some(canon.join(path.strip_prefix(a).ok()?))
        })
        .unwrap_or_else(|| path.to_path_buf());
    mounts
        .iter()
        .filter(|(point, _)| resolved.starts_with(point))
        .max_by_key(|(point, _)| point.as_os_str().len())
}

const BPFFS: &str = "/sys/fs/bpf";

fn bpffs(cfg: Option<&Config>) -> Vec<Finding> {
    let mounts = match mounts() {
        Ok(m) => m,
        Err(e) => {
            return vec![Finding::warn(
                "bpffs",
                format!("cannot read /proc/mounts: {e}"),
                "mount /proc (`mount -t proc proc /proc`)",
            )]
        }
    };
    let mut out = Vec::new();
    let bpffs_at_default = mounts
        .iter()
        .any(|(p, t)| p == Path::new(BPFFS) && t == "bpf");
    out.push(if bpffs_at_default {
        Finding::ok("bpffs", format!("mounted at {BPFFS}"))
    } else {
        Finding::warn(
            "bpffs",
            format!(
                "no bpf filesystem at {BPFFS}: nothing can be pinned, so maps, the connection \
                 table and the XDP link would not survive an agent restart (`lb-agent run` \
                 tries to mount it itself)"
            ),
            format!(
                "mount -t bpf bpf {BPFFS} (and add `bpf {BPFFS} bpf defaults 0 0` to /etc/fstab; \
                 in a container, bind-mount the host's {BPFFS})"
            ),
        )
    });
    if let Some(cfg) = cfg {
        let pin = &cfg.agent.pin_path;
        let check = "pin_path";
        out.push(if !pin.is_absolute() {
            Finding::fail(
                check,
                format!("agent.pin_path {} is not an absolute path", pin.display()),
                format!("set agent.pin_path to a directory under {BPFFS}, e.g. {BPFFS}/lb"),
            )
        } else {
            match mount_of(&mounts, pin) {
                Some((point, fstype)) if fstype == "bpf" => {
                    let adopted = if pin.join("xdp_link").exists() {
                        " (holds a pinned XDP link: a running or stopped agent's state, which \
                         the next start adopts)"
                    } else {
                        ""
                    };
                    Finding::ok(
                        check,
                        format!(
                            "{} is on the bpffs mounted at {}{adopted}",
                            pin.display(),
                            point.display()
                        ),
                    )
                }
                // /sys/fs/bpf not mounted: the agent mounts it at start, the bpffs line says so.
                _ if !bpffs_at_default && pin.starts_with(BPFFS) => Finding::warn(
                    check,
                    format!(
                        "{} is under {BPFFS}, which is not a bpffs mount yet",
                        pin.display()
                    ),
                    format!("mount -t bpf bpf {BPFFS}"),
                ),
                other => Finding::fail(
                    check,
                    format!(
                        "agent.pin_path {} is not on a bpf filesystem ({}): pinning fails",
                        pin.display(),
                        match other {
                            Some((point, fstype)) => {
                                format!("it is on {fstype} mounted at {}", point.display())
                            }
                            None => "no mount holds it".to_string(),
                        }
                    ),
                    format!(
                        "set agent.pin_path under {BPFFS} (e.g. {BPFFS}/lb), or mount a bpffs \
                         there: mount -t bpf bpf {}",
                        pin.display()
                    ),
                ),
            }
        });
    }
    out
}

fn btf() -> Finding {
    const VMLINUX: &str = "/sys/kernel/btf/vmlinux";
    if Path::new(VMLINUX).exists() {
        Finding::ok("BTF", format!("kernel BTF at {VMLINUX}"))
    } else {
        Finding::warn(
            "BTF",
            format!(
                "no {VMLINUX}: the kernel was built without CONFIG_DEBUG_INFO_BTF; BTF-based \
                 relocations, bpftool's program dumps and readable verifier errors are \
                 unavailable"
            ),
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (every major distribution's since \
             2020-2021)",
        )
    }
}

/// The kernel release (`uname -r`) and its (major, minor).
fn kernel_release() -> Option<(String, (u32, u32))> {
    // SAFETY: uname fills the zeroed struct.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    let release = String::from_utf8_lossy(&bytes).into_owned();
    let version = parse_release(&release)?;
    Some((release, version))
}

fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn kernel() -> Vec<Finding> {
    let mut out = Vec::new();
    let version = kernel_release();
    out.push(match &version {
        Some((release, v)) if *v >= (5, 9) => Finding::ok(
            "kernel",
            format!("{release} (>= 5.9: bpf_link for XDP, so the attachment is pinned and survives agent restarts)"),
        ),
        Some((release, _)) => Finding::fail(
            "kernel",
            format!(
                "{release} is older than 5.9: no bpf_link for XDP, so the attachment cannot be \
                 pinned and a restarted agent cannot take over without a forwarding gap"
            ),
            "upgrade the kernel to 5.9 or newer (5.15 or newer recommended)",
        ),
        None => Finding::warn(
            "kernel",
            "cannot tell the kernel release (uname)",
            "make sure the kernel is 5.9 or newer",
        ),
    });
    // Before 5.11, BPF memory is charged to RLIMIT_MEMLOCK instead of the memory cgroup.
    if let Some((_, v)) = &version {
        if *v < (5, 11) {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit fills `lim`.
            let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
            if rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY {
                out.push(Finding::warn(
                    "memlock",
                    format!(
                        "RLIMIT_MEMLOCK is {} KiB: before kernel 5.11 BPF maps count against \
                         it, and map creation fails with EPERM once it is used up",
                        lim.rlim_cur / 1024
                    ),
                    "raise it: `ulimit -l unlimited`, or LimitMEMLOCK=infinity in the systemd \
                     unit",
                ));
            }
        }
    }
    out.push(match netinfo::read_sysctl("net/core/bpf_jit_enable") {
        Ok(v) if v == "1" => Finding::ok("BPF JIT", "enabled (net.core.bpf_jit_enable = 1)"),
        Ok(v) if v == "2" => Finding::warn(
            "BPF JIT",
            "enabled in debug mode (net.core.bpf_jit_enable = 2): every JIT image is dumped to \
             the kernel log",
            "sysctl -w net.core.bpf_jit_enable=1",
        ),
        Ok(v) => Finding::warn(
            "BPF JIT",
            format!(
                "disabled (net.core.bpf_jit_enable = {v}): programs run in the interpreter, \
                 several times slower"
            ),
            "sysctl -w net.core.bpf_jit_enable=1 (persist it in /etc/sysctl.d/)",
        ),
        // net.core.bpf_jit_enable exists only in the initial network namespace.
        Err(_) => Finding::warn(
            "BPF JIT",
            "cannot read net.core.bpf_jit_enable: the doctor runs in a network namespace other \
             than the host's (the sysctl is only visible there), or the kernel has no BPF JIT",
            "run the doctor in the host's network namespace to check; the kernel needs \
             CONFIG_BPF_JIT=y",
        ),
    });
    out.push(map_support());
    out
}

/// The map types and program type the balancer needs.
fn map_support() -> Finding {
    use aya::{
        maps::MapType,
        programs::ProgramType,
        sys::{is_map_supported, is_program_supported},
    };
    const CHECK: &str = "BPF features";
    let mut missing = Vec::new();
    let mut errors = Vec::new();
    for (name, ty) in [
        ("LRU hash map", MapType::LruHash),
        ("per-CPU array", MapType::PerCpuArray),
        ("hash map", MapType::Hash),
        ("array", MapType::Array),
    ] {
        match is_map_supported(ty) {
            Ok(true) => {}
            Ok(false) => missing.push(name),
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    match is_program_supported(ProgramType::Xdp) {
        Ok(true) => {}
        Ok(false) => missing.push("XDP programs"),
        Err(e) => errors.push(format!("XDP programs: {e}")),
    }
    if !missing.is_empty() {
        Finding::fail(
            CHECK,
            format!("the kernel lacks {}", missing.join(", ")),
            "use a kernel built with CONFIG_BPF_SYSCALL=y (4.18 or newer; 5.9 or newer for the \
             rest of the agent)",
        )
    } else if !errors.is_empty() {
        Finding::warn(
            CHECK,
            format!("cannot probe: {}", errors.join("; ")),
            "run the doctor as root",
        )
    } else {
        Finding::ok(
            CHECK,
            "XDP programs, LRU hash and per-CPU array maps supported",
        )
    }
}

/// Load the object this host runs through the verifier: the balancer on the LB, the decap
/// program on a backend.
fn program_load(cfg: Option<&Config>, backend: bool) -> Finding {
    const CHECK: &str = "program load";
    let result = if backend {
        Decap::load().map(|_| "the decap object loads and passes the verifier".to_string())
    } else {
        let table_size = cfg.map_or(lb_common::DEFAULT_TABLE_SIZE, |c| c.agent.table_size);
        dataplane::Balancer::load(dataplane::LoadOptions {
            table_size,
            max_vips: 1,
            conn_table_entries: 1024,
            ..Default::default()
        })
        .map(|_| format!("the balancer (table_size {table_size}) loads and passes the verifier"))
    };
    match result {
        Ok(detail) => Finding::ok(CHECK, detail),
        Err(e) => {
            let detail = format!("{e:#}");
            let fix = if detail.contains("built without") {
                "build the agent with its eBPF objects: `cargo xtask build`"
            } else if detail.contains("unexpected type") || detail.contains("invalid value size") {
                "the embedded eBPF object and the agent disagree on a map layout (an object built \
                 from other sources): rebuild both with `cargo xtask build`"
            } else if detail.contains("Operation not permitted") {
                "run as root (or with CAP_BPF and CAP_SYS_ADMIN); before kernel 5.11 also \
                 `ulimit -l unlimited`"
            } else {
                "the kernel refused the program: see the verifier's message above \
                 (LB_VERIFIER_LOG=1 lb-agent doctor prints the full log); a kernel of 5.15 or \
                 newer is the tested minimum"
            };
            Finding::fail(CHECK, detail, fix)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The interface: existence, state, MTU, XDP.

async fn interface(name: &str) -> (Finding, Option<LinkFacts>) {
    let check = format!("interface {name}");
    match netinfo::link_facts(name).await {
        Err(e) => (
            Finding::fail(
                check,
                format!("cannot query it over netlink: {e:#}"),
                "run as root in the host's network namespace",
            ),
            None,
        ),
        Ok(None) => {
            let names = netinfo::interfaces()
                .await
                .map(|all| {
                    all.iter()
                        .map(|i| i.name.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            (
                Finding::fail(
                    check,
                    format!(
                        "no such interface (this namespace has: {names}); MTU, XDP and gateway \
                         checks skipped"
                    ),
                    "set agent.interface or --iface to the interface facing the router",
                ),
                None,
            )
        }
        Ok(Some(link)) => {
            let i = &link.iface;
            let driver = netinfo::driver(name)
                .or_else(|| link.kind.clone())
                .unwrap_or_else(|| "unknown".to_string());
            let addrs: Vec<String> = i.addrs.iter().map(|a| a.to_string()).collect();
            let facts = format!(
                "index {}, driver {driver}, MAC {}, MTU {}, addresses [{}]",
                i.index,
                netinfo::format_mac(&i.mac),
                i.mtu,
                addrs.join(", ")
            );
            let finding = if !link.admin_up {
                Finding::fail(
                    check,
                    format!("is down ({facts})"),
                    format!("ip link set dev {name} up"),
                )
            } else if !link.carrier {
                Finding::fail(
                    check,
                    format!("is up but has no carrier ({facts})"),
                    "check the cable, the switch port or the peer (for veth, the other end must \
                     be up too)",
                )
            } else {
                Finding::ok(check, format!("up ({facts})"))
            };
            (finding, Some(link))
        }
    }
}

/// Outer header sizes in use: (IPv4 outer, IPv6 outer).
fn outer_families(cfg: &Config) -> (bool, bool) {
    let backends = cfg.vips.iter().flat_map(|v| v.backends.iter());
    let v4 = backends.clone().any(|b| b.address.is_ipv4());
    let v6 = backends.clone().any(|b| b.address.is_ipv6());
    if !v4 && !v6 {
        // No backends yet: judge by the encapsulation sources configured.
        (
            cfg.agent.encap_source_v4.is_some() || cfg.agent.encap_source_v6.is_none(),
            cfg.agent.encap_source_v6.is_some(),
        )
    } else {
        (v4, v6)
    }
}

/// The usual path MTU of the Internet: clients send packets of this size.
const INTERNET_MTU: u32 = 1500;

fn mtu(link: &LinkFacts, cfg: Option<&Config>, backend: bool) -> Finding {
    let name = &link.iface.name;
    let if_mtu = link.iface.mtu;
    let Some(cfg) = cfg else {
        return Finding::ok(
            "MTU",
            format!("{name} MTU {if_mtu} (no config: agent.mtu not compared)"),
        );
    };
    let mtu = u32::from(cfg.agent.mtu);
    if mtu > if_mtu {
        let what = if backend {
            "encapsulated packets of up to agent.mtu bytes from the balancer are dropped here"
        } else {
            "the balancer would build packets the interface cannot send"
        };
        return Finding::fail(
            "MTU",
            format!("agent.mtu {mtu} > {name} MTU {if_mtu}: {what}"),
            format!(
                "set agent.mtu = {if_mtu}, or raise the interface MTU: ip link set dev {name} mtu \
                 {mtu} (and on every hop between the balancer and the backends)"
            ),
        );
    }
    if backend {
        return Finding::ok(
            "MTU",
            format!("{name} MTU {if_mtu} >= agent.mtu {mtu}: the balancer's largest encapsulated packets fit"),
        );
    }
    let (v4_outer, v6_outer) = outer_families(cfg);
    let overhead = if v6_outer { 40 } else { 20 };
    let mut limits = Vec::new();
    if v4_outer {
        limits.push(format!("{} bytes for IPv4-encapsulated backends", mtu - 20));
    }
    if v6_outer {
        limits.push(format!("{} bytes for IPv6-encapsulated backends", mtu - 40));
    }
    let limits = limits.join(", ");
    if mtu - overhead >= INTERNET_MTU {
        Finding::ok(
            "MTU",
            format!(
                "agent.mtu {mtu} <= {name} MTU {if_mtu}; client packets of up to {limits} fit \
                 after encapsulation (>= {INTERNET_MTU})"
            ),
        )
    } else {
        Finding::warn(
            "MTU",
            format!(
                "agent.mtu {mtu} <= {name} MTU {if_mtu}, but the outer header takes 20 (IPv4) or \
                 40 (IPv6) bytes: clients must see a path MTU of at most {limits}, or the \
                 balancer answers their larger packets with ICMP fragmentation-needed / \
                 packet-too-big (and clients behind broken PMTU discovery stall)"
            ),
            format!(
                "raise the MTU of the balancer-to-backend path (this interface, the switches, the \
                 backends) to {} and set agent.mtu to it; or clamp the TCP MSS the backends \
                 advertise to {} (IPv4 clients) / {} (IPv6 clients), e.g. on each backend \
                 `iptables -t mangle -A OUTPUT -p tcp --tcp-flags SYN,ACK SYN,ACK -j TCPMSS \
                 --set-mss {}`",
                if_mtu + 40,
                mtu - overhead - 40,
                mtu - overhead - 60,
                mtu - overhead - 40,
            ),
        )
    }
}

fn bonding(link: &LinkFacts) -> Option<Finding> {
    let name = &link.iface.name;
    match link.kind.as_deref() {
        Some("bond") => {
            return Some(Finding::warn(
                format!("bonding on {name}"),
                format!(
                    "{name} is a bond: XDP must run natively on the bond itself (kernel 5.15 or \
                     newer, bonding mode active-backup, balance-xor or 802.3ad, and every port's \
                     driver with native XDP); in generic mode XDP_TX on a bond is slow and \
                     bypasses the ports' drivers"
                ),
                "set xdp_mode = \"native\" so a missing native path fails loudly instead of \
                 falling back to generic mode",
            ))
        }
        Some("team") => {
            return Some(Finding::warn(
                format!("bonding on {name}"),
                format!("{name} is a team device: team has no native XDP, only generic mode"),
                "use a bond (mode 802.3ad or balance-xor) instead of team, with native XDP on \
                 the bond",
            ))
        }
        _ => {}
    }
    link.port_of.as_ref().map(|(kind, controller)| {
        Finding::warn(
            format!("bonding on {name}"),
            format!(
                "{name} is a port of a {kind} (interface #{controller}): its traffic belongs to \
                 the {kind}, and the kernel refuses XDP on a port whose {kind} has a program"
            ),
            format!("attach to the {kind} itself (--iface / agent.interface = its name), natively"),
        )
    })
}

/// The name of a loaded program by id.
fn program_name(id: u32) -> Option<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_string))
}

/// The errno behind an attach failure.
fn attach_errno(e: &aya::programs::ProgramError) -> Option<i32> {
    use aya::programs::{ProgramError, XdpError};
    match e {
        ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        ProgramError::XdpError(XdpError::NetlinkError(n)) => n.raw_os_error(),
        _ => None,
    }
}

fn native_xdp(link: &LinkFacts, cfg: Option<&Config>, backend: bool) -> Finding {
    let name = &link.iface.name;
    let check = format!("native XDP on {name}");
    let mode = cfg.map_or(XdpMode::Auto, |c| c.agent.xdp_mode);
    let ours = if backend {
        dataplane::DECAP_PROGRAM
    } else {
        dataplane::LB_PROGRAM
    };
    if let Some(attached) = link.xdp {
        let prog = program_name(attached.prog_id).unwrap_or_else(|| "?".to_string());
        let what = format!(
            "XDP program {prog} (id {}) is already attached in {} mode",
            attached.prog_id, attached.mode
        );
        return if prog == ours && attached.mode == XdpAttachMode::Driver {
            Finding::ok(check, format!("{what}: our agent, running natively"))
        } else if prog == ours || prog == dataplane::DECAP_PROGRAM || prog == dataplane::LB_PROGRAM
        {
            Finding::warn(
                check,
                format!("{what}: our agent, but not in driver mode, which is several times slower"),
                "check the driver's native XDP support: stop the agent (with --detach-on-exit) \
                 and run the doctor again",
            )
        } else {
            Finding::warn(
                check,
                format!("{what}: not ours, so the agent cannot attach here"),
                format!(
                    "find its owner (`bpftool net show dev {name}`); detach it with `ip link set \
                     dev {name} xdp off` if it is stale"
                ),
            )
        };
    }
    let mut decap = match Decap::load() {
        Ok(d) => d,
        Err(e) => {
            return Finding::warn(
                check,
                format!("cannot probe: loading the probe program failed: {e:#}"),
                "fix the program-load check first",
            )
        }
    };
    let prog = match decap.program(PASS_PROGRAM) {
        Ok(p) => p,
        Err(e) => return Finding::warn(check, format!("cannot probe: {e:#}"), "rebuild the agent"),
    };
    match prog.attach(name, aya::programs::XdpMode::Driver) {
        Ok(id) => {
            let detached = prog.detach(id);
            let note = match detached {
                Ok(()) => String::new(),
                Err(e) => {
                    format!(" (detaching the probe failed: {e}; it goes when the doctor exits)")
                }
            };
            match mode {
                XdpMode::Skb => Finding::warn(
                    check,
                    format!("the driver supports native XDP, but agent.xdp_mode = \"skb\" uses generic mode{note}"),
                    "set xdp_mode = \"native\" (or \"auto\"): generic mode is several times slower",
                ),
                _ => Finding::ok(check, format!("the driver attaches XDP in native mode{note}")),
            }
        }
        Err(e) => {
            let errno = attach_errno(&e);
            let error = format!("{e}");
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            let generic_verdict = |detail: String, fix: String| {
                if mode == XdpMode::Native && !backend {
                    Finding::fail(check.clone(), detail, fix)
                } else {
                    Finding::warn(check.clone(), detail, fix)
                }
            };
            match errno {
                Some(libc::EBUSY) | Some(libc::EEXIST) => Finding::warn(
                    check.clone(),
                    format!(
                        "an XDP program is already attached to {name} (or to a device it belongs \
                         to): that is our agent if it runs ({error}{cause})"
                    ),
                    format!(
                        "if no agent runs here, find it with `bpftool net show dev {name}` and \
                         detach it (`ip link set dev {name} xdp off`)"
                    ),
                ),
                Some(libc::EOPNOTSUPP) => generic_verdict(
                    format!(
                        "the driver of {name} has no native XDP ({error}{cause}): only generic \
                         (skb) mode works, and generic mode is several times slower"
                    ),
                    match mode {
                        XdpMode::Native if !backend => {
                            "use a NIC whose driver has native XDP (mlx5, ice, i40e, ixgbe, bnxt, \
                             ena, virtio_net, veth, ...), or set xdp_mode = \"auto\" to accept \
                             generic mode"
                                .to_string()
                        }
                        _ => "for full speed, use a NIC whose driver has native XDP (mlx5, ice, \
                              i40e, ixgbe, bnxt, ena, virtio_net, veth, ...)"
                            .to_string(),
                    },
                ),
                _ => generic_verdict(
                    format!(
                        "native attach failed ({error}{cause}); the agent would fall back to \
                         generic mode"
                    ),
                    format!(
                        "usual causes: an MTU too large for single-buffer XDP on this driver \
                         (lower it, e.g. `ip link set dev {name} mtu 1500`), LRO enabled \
                         (`ethtool -K {name} lro off`), or too few queues (virtio_net needs 2 x \
                         CPUs queue pairs: `ethtool -L {name} combined N`); `dmesg` often says \
                         which"
                    ),
                ),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// LB side: gateway, rp_filter.

async fn gateway(iface: &str, cfg: Option<&Config>) -> Finding {
    const CHECK: &str = "gateway MAC";
    if let Some(GatewayMac::Fixed(mac)) = cfg.map(|c| c.agent.gateway_mac) {
        return Finding::ok(
            CHECK,
            format!("fixed to {} (agent.gateway_mac)", netinfo::format_mac(&mac)),
        );
    }
    match netinfo::gateway_mac(iface).await {
        Ok((mac, via)) => Finding::ok(
            CHECK,
            format!(
                "the default gateway {via} via {iface} is {}",
                netinfo::format_mac(&mac)
            ),
        ),
        Err(e) => Finding::fail(
            CHECK,
            format!("{e:#}"),
            format!(
                "add a default route via the router on {iface} (`ip route add default via \
                 GATEWAY dev {iface}`), or set agent.gateway_mac = \"aa:bb:cc:dd:ee:ff\" (the \
                 router's MAC)"
            ),
        ),
    }
}

fn rp_filter(dev: &str) -> Option<u8> {
    netinfo::read_sysctl(&format!("net/ipv4/conf/{dev}/rp_filter"))
        .ok()?
        .parse()
        .ok()
}

fn rp_filter_lb(iface: &str) -> Finding {
    match (rp_filter("all"), rp_filter(iface)) {
        (Some(all), Some(dev)) => Finding::ok(
            "rp_filter",
            format!(
                "net.ipv4.conf.all.rp_filter = {all}, {iface} = {dev} (effective {}: {}); XDP \
                 sees packets before this check, so strict is fine on the balancer",
                all.max(dev),
                rp_name(all.max(dev))
            ),
        ),
        _ => Finding::warn(
            "rp_filter",
            format!("cannot read net.ipv4.conf.{{all,{iface}}}.rp_filter"),
            "check that /proc/sys is mounted",
        ),
    }
}

fn rp_name(v: u8) -> &'static str {
    match v {
        0 => "off",
        1 => "strict",
        _ => "loose",
    }
}

// ---------------------------------------------------------------------------------------------
// Backend side.

/// The kernel's fallback tunnel devices and what they decapsulate.
const TUNL0: &str = "tunl0"; // IPv4 in IPv4 (ipip)
const SIT0: &str = "sit0"; // IPv6 in IPv4
const IP6TNL0: &str = "ip6tnl0"; // IPv4/IPv6 in IPv6

async fn backend(link: Option<&LinkFacts>, cfg: Option<&Config>) -> Vec<Finding> {
    let mut out = Vec::new();
    let ifaces = netinfo::interfaces().await;
    let ifaces = match ifaces {
        Ok(i) => i,
        Err(e) => {
            out.push(Finding::fail(
                "backend",
                format!("cannot list interfaces over netlink: {e:#}"),
                "run as root",
            ));
            Vec::new()
        }
    };
    let find = |name: &str| ifaces.iter().find(|i| i.name == name);
    let local: BTreeSet<IpAddr> = ifaces
        .iter()
        .flat_map(|i| i.addrs.iter().copied())
        .collect();

    // Which VIPs this host serves, and which (VIP family, backend family) pairs reach it.
    let mut served_note = String::new();
    let mut vips: Vec<IpAddr> = Vec::new();
    let mut pairs: BTreeSet<(bool, bool)> = BTreeSet::new(); // (inner v4, outer v4)
    if let Some(cfg) = cfg {
        let mine: Vec<_> = cfg
            .vips
            .iter()
            .filter(|v| v.backends.iter().any(|b| local.contains(&b.address)))
            .collect();
        let (chosen, only_local) = if mine.is_empty() {
            if !cfg.vips.is_empty() {
                served_note = " (no backend of the config is an address of this host: checking \
                               every VIP)"
                    .to_string();
            }
            (cfg.vips.iter().collect::<Vec<_>>(), false)
        } else {
            (mine, true)
        };
        for v in chosen {
            if !vips.contains(&v.address) {
                vips.push(v.address);
            }
            for b in &v.backends {
                if !only_local || local.contains(&b.address) {
                    pairs.insert((v.address.is_ipv4(), b.address.is_ipv4()));
                }
            }
        }
    }

    // VIPs on loopback.
    match cfg {
        None => out.push(Finding::warn(
            "VIPs on lo",
            "no config: which VIPs this backend serves is unknown",
            "pass --config with the balancer's configuration",
        )),
        Some(_) if vips.is_empty() => {
            out.push(Finding::ok("VIPs on lo", "the config has no VIPs"));
        }
        Some(_) => out.push(vips_on_lo(&vips, &ifaces, &served_note)),
    }

    // Decapsulation: our XDP program on the interface, or the kernel's tunnel devices.
    let needed: Vec<&str> = if cfg.is_some() && !pairs.is_empty() {
        let mut n = Vec::new();
        for (inner_v4, outer_v4) in &pairs {
            let dev = match (inner_v4, outer_v4) {
                (true, true) => TUNL0,
                (false, true) => SIT0,
                (_, false) => IP6TNL0,
            };
            if !n.contains(&dev) {
                n.push(dev);
            }
        }
        n
    } else {
        vec![TUNL0, IP6TNL0]
    };
    let tunnels_up: Vec<&str> = [TUNL0, SIT0, IP6TNL0]
        .into_iter()
        .filter(|d| find(d).is_some_and(|i| i.up))
        .collect();
    let xdp = link.and_then(|l| l.xdp.map(|x| (l.iface.name.clone(), x)));
    let has_xdp = xdp.is_some();
    out.push(decapsulation(
        link,
        xdp,
        &needed,
        &tunnels_up,
        cfg.is_some(),
    ));

    // rp_filter for decapsulated packets.
    let kernel_tunnels = !has_xdp || !tunnels_up.is_empty();
    out.push(rp_filter_backend(
        link.map(|l| l.iface.name.as_str()),
        &tunnels_up,
        kernel_tunnels,
    ));

    // ARP for the VIPs.
    if cfg.is_none() || vips.iter().any(|v| v.is_ipv4()) {
        out.push(arp(link.map(|l| l.iface.name.as_str())));
    }
    out
}

fn vips_on_lo(vips: &[IpAddr], ifaces: &[netinfo::Interface], note: &str) -> Finding {
    let lo = ifaces.iter().find(|i| i.name == "lo");
    let mut on_lo = Vec::new();
    let mut elsewhere = Vec::new();
    let mut missing = Vec::new();
    for vip in vips {
        if lo.is_some_and(|l| l.addrs.contains(vip)) {
            on_lo.push(vip.to_string());
        } else if let Some(i) = ifaces.iter().find(|i| i.addrs.contains(vip)) {
            elsewhere.push((*vip, i.name.clone()));
        } else {
            missing.push(*vip);
        }
    }
    let add = |v: &IpAddr| {
        let prefix = if v.is_ipv4() { 32 } else { 128 };
        format!("ip addr add {v}/{prefix} dev lo")
    };
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|v| v.to_string()).collect();
        let fix: Vec<String> = missing.iter().map(add).collect();
        return Finding::fail(
            "VIPs on lo",
            format!(
                "{} not configured on this host{note}: the kernel drops decapsulated packets \
                 addressed to them",
                list.join(", ")
            ),
            fix.join("; "),
        );
    }
    if !elsewhere.is_empty() {
        let list: Vec<String> = elsewhere
            .iter()
            .map(|(v, dev)| format!("{v} on {dev}"))
            .collect();
        let fix: Vec<String> = elsewhere
            .iter()
            .map(|(v, dev)| {
                let prefix = if v.is_ipv4() { 32 } else { 128 };
                format!("ip addr del {v}/{prefix} dev {dev}; {}", add(v))
            })
            .collect();
        return Finding::warn(
            "VIPs on lo",
            format!(
                "{}{note}: a VIP on a network interface is announced by ARP/ND, so this backend \
                 competes with the balancer for the VIP's traffic",
                list.join(", ")
            ),
            format!("move them to lo: {}", fix.join("; ")),
        );
    }
    Finding::ok("VIPs on lo", format!("{} on lo{note}", on_lo.join(", ")))
}

fn decapsulation(
    link: Option<&LinkFacts>,
    xdp: Option<(String, netinfo::AttachedXdp)>,
    needed: &[&str],
    tunnels_up: &[&str],
    have_config: bool,
) -> Finding {
    const CHECK: &str = "decapsulation";
    let iface = link.map_or("IFACE", |l| l.iface.name.as_str());
    if let Some((dev, x)) = &xdp {
        let prog = program_name(x.prog_id).unwrap_or_else(|| "?".to_string());
        if prog == dataplane::DECAP_PROGRAM {
            return Finding::ok(
                CHECK,
                format!(
                    "{prog} (id {}) attached to {dev} in {} mode",
                    x.prog_id, x.mode
                ),
            );
        }
        if needed.iter().all(|d| tunnels_up.contains(d)) {
            return Finding::ok(
                CHECK,
                format!(
                    "kernel tunnel devices up: {} (XDP program {prog} on {dev} is not ours)",
                    tunnels_up.join(", ")
                ),
            );
        }
        return Finding::warn(
            CHECK,
            format!(
                "the XDP program on {dev} is {prog} (id {}), not {}: is it decapsulating the \
                 balancer's packets?",
                x.prog_id,
                dataplane::DECAP_PROGRAM
            ),
            format!("lb-agent decap attach --iface {dev}"),
        );
    }
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|d| !tunnels_up.contains(d))
        .collect();
    // Without a config any one tunnel device is taken as enough.
    let enough = if have_config {
        missing.is_empty()
    } else {
        !tunnels_up.is_empty()
    };
    if enough {
        return Finding::ok(
            CHECK,
            format!("kernel tunnel devices up: {}", tunnels_up.join(", ")),
        );
    }
    let module = |d: &str| match d {
        TUNL0 => "ipip",
        SIT0 => "sit",
        _ => "ip6_tunnel",
    };
    let kernel_fix: Vec<String> = missing
        .iter()
        .map(|d| format!("modprobe {} && ip link set {d} up", module(d)))
        .collect();
    Finding::fail(
        CHECK,
        format!(
            "no decapsulation: no XDP program on {iface} and {} not up, so encapsulated packets \
             from the balancer are dropped",
            missing.join(", ")
        ),
        format!(
            "lb-agent decap attach --iface {iface}; or kernel tunnels: {}",
            kernel_fix.join("; ")
        ),
    )
}

fn rp_filter_backend(iface: Option<&str>, tunnels_up: &[&str], kernel_tunnels: bool) -> Finding {
    const CHECK: &str = "rp_filter";
    let mut devs: Vec<&str> = vec!["all"];
    devs.extend(iface);
    // rp_filter is IPv4: it applies to IPv4 packets decapsulated by tunl0 and ip6tnl0.
    devs.extend(
        tunnels_up
            .iter()
            .copied()
            .filter(|d| *d == TUNL0 || *d == IP6TNL0),
    );
    let mut values = Vec::new();
    let mut unreadable = Vec::new();
    for d in &devs {
        match rp_filter(d) {
            Some(v) => values.push((*d, v)),
            None => unreadable.push(*d),
        }
    }
    if values.is_empty() {
        return Finding::warn(
            CHECK,
            "cannot read net.ipv4.conf.*.rp_filter",
            "check that /proc/sys is mounted",
        );
    }
    let listed: Vec<String> = values.iter().map(|(d, v)| format!("{d}={v}")).collect();
    let effective = values.iter().map(|(_, v)| *v).max().unwrap_or(0);
    let detail = format!(
        "net.ipv4.conf.{{{}}}.rp_filter (effective {effective}: {})",
        listed.join(", "),
        rp_name(effective)
    );
    if effective != 1 {
        return Finding::ok(
            CHECK,
            format!("{detail}: decapsulated packets from any client pass"),
        );
    }
    let strict: Vec<String> = values
        .iter()
        .filter(|(_, v)| *v == 1)
        .map(|(d, _)| format!("net.ipv4.conf.{d}.rp_filter=2"))
        .collect();
    let mut keys = vec!["net.ipv4.conf.all.rp_filter=2".to_string()];
    keys.extend(strict.into_iter().filter(|k| !k.contains(".all.")));
    let fix = format!(
        "sysctl -w {} (loose mode; persist it in /etc/sysctl.d/)",
        keys.join(" ")
    );
    if kernel_tunnels {
        Finding::fail(
            CHECK,
            format!(
                "{detail}: strict reverse-path filtering drops the packets the kernel's tunnel \
                 decapsulates (their client source is not routed back through the tunnel \
                 device)"
            ),
            fix,
        )
    } else {
        Finding::warn(
            CHECK,
            format!(
                "{detail}: decapsulated packets are dropped whenever the route back to the \
                 client does not leave through {}",
                iface.unwrap_or("the interface")
            ),
            fix,
        )
    }
}

fn arp(iface: Option<&str>) -> Finding {
    const CHECK: &str = "ARP for VIPs";
    let read = |key: &str| -> Option<u8> {
        let mut v = netinfo::read_sysctl(&format!("net/ipv4/conf/all/{key}"))
            .ok()?
            .parse::<u8>()
            .ok()?;
        if let Some(dev) = iface {
            if let Some(d) = netinfo::read_sysctl(&format!("net/ipv4/conf/{dev}/{key}"))
                .ok()
                .and_then(|s| s.parse::<u8>().ok())
            {
                v = v.max(d);
            }
        }
        Some(v)
    };
    match (read("arp_ignore"), read("arp_announce")) {
        (Some(ignore), Some(announce)) if ignore >= 1 && announce >= 2 => Finding::ok(
            CHECK,
            format!(
                "arp_ignore = {ignore}, arp_announce = {announce}: this host does not answer ARP \
                 for the VIPs on lo"
            ),
        ),
        (Some(ignore), Some(announce)) => Finding::warn(
            CHECK,
            format!(
                "arp_ignore = {ignore}, arp_announce = {announce}: this backend answers ARP for \
                 the VIPs on its loopback (and uses them as ARP sources), stealing the VIPs' \
                 traffic from the balancer"
            ),
            "sysctl -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 (persist \
             them in /etc/sysctl.d/)",
        ),
        _ => Finding::warn(
            CHECK,
            "cannot read net.ipv4.conf.all.arp_ignore / arp_announce",
            "check that /proc/sys is mounted",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(verdict: Verdict, check: &str, fix: Option<&str>) -> Finding {
        Finding {
            verdict,
            check: check.to_string(),
            detail: "detail".to_string(),
            fix: fix.map(str::to_string),
        }
    }

    #[test]
    fn render_format() {
        let findings = vec![
            Finding::ok("bpffs", "mounted at /sys/fs/bpf"),
            Finding::warn("BPF JIT", "disabled", "sysctl -w net.core.bpf_jit_enable=1"),
            Finding::fail("native XDP on eth0", "no driver support", "use another NIC"),
            finding(Verdict::Ok, "ok with fix", Some("not shown")),
        ];
        let text = render(&findings);
        assert_eq!(
            text,
            "OK   bpffs: mounted at /sys/fs/bpf\n\
             WARN BPF JIT: disabled\n\
             \x20    fix: sysctl -w net.core.bpf_jit_enable=1\n\
             FAIL native XDP on eth0: no driver support\n\
             \x20    fix: use another NIC\n\
             OK   ok with fix: detail\n"
        );
        let multi = render(&[Finding::fail("x", "a\nb", "c")]);
        assert_eq!(multi, "FAIL x: a\n     b\n     fix: c\n");
    }

    #[test]
    fn failed_only_on_fail() {
        assert!(!failed(&[]));
        assert!(!failed(&[
            finding(Verdict::Ok, "a", None),
            finding(Verdict::Warn, "b", Some("f"))
        ]));
        assert!(failed(&[
            finding(Verdict::Ok, "a", None),
            finding(Verdict::Fail, "b", Some("f"))
        ]));
    }

    #[test]
    fn mounts_and_releases() {
        let m = parse_mounts(
            "sysfs /sys sysfs rw 0 0\nbpf /sys/fs/bpf bpf rw 0 0\n/dev/sda1 / ext4 rw 0 0\n\
             tmp /mnt/with\\040space tmpfs rw 0 0\n",
        );
        assert_eq!(m.len(), 4);
        assert_eq!(m[3].0, PathBuf::from("/mnt/with space"));
        let at = |p: &str| mount_of(&m, Path::new(p)).map(|(_, t)| t.as_str());
        assert_eq!(at("/sys/fs/bpf/lb/not-yet-there"), Some("bpf"));
        assert_eq!(at("/srv/lb"), Some("ext4"));
        assert_eq!(parse_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_release("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(parse_release("garbage"), None);
        assert!((5, 10) >= (5, 9) && (5, 4) < (5, 9) && (6, 0) > (5, 9));
    }

    /// On the host, without an interface: the host checks run, the interface checks are
    /// skipped with a WARN, and nothing is sent anywhere.
    #[tokio::test]
    async fn host_checks_without_interface() {
        let findings = run(&DoctorOptions {
            iface: None,
            config: None,
            backend: false,
        })
        .await;
        let by = |name: &str| {
            findings
                .iter()
                .find(|f| f.check == name)
                .unwrap_or_else(|| panic!("no {name} finding in\n{}", render(&findings)))
        };
        assert_eq!(by("privileges").verdict, Verdict::Ok);
        assert_eq!(by("interface").verdict, Verdict::Warn);
        assert_eq!(by("kernel").verdict, Verdict::Ok, "{}", render(&findings));
        assert_eq!(
            by("BPF features").verdict,
            Verdict::Ok,
            "{}",
            render(&findings)
        );
        assert!(findings.iter().all(|f| f.check != "gateway MAC"));
        // A bad pin path is reported.
        let cfg = config_for("lbdoc-none0", 1500, "pin_path = \"/tmp/lbdoc-pins\"\n");
        let bad = bpffs(Some(&cfg));
        let pin = bad
            .iter()
            .find(|f| f.check == "pin_path")
            .expect("pin_path");
        assert_eq!(pin.verdict, Verdict::Fail, "{}", render(&bad));
    }

    fn config_for(iface: &str, mtu: u16, extra_agent: &str) -> Config {
        let text = format!(
            "[agent]\ninterface = \"{iface}\"\nmtu = {mtu}\nencap_source_v4 = \"198.18.250.1\"\n\
             {extra_agent}\n\
             [[vip]]\nname = \"web\"\naddress = \"198.18.251.10\"\nport = 80\nprotocol = \"tcp\"\n\
             [[vip.backend]]\naddress = \"198.18.250.1\"\n"
        );
        crate::config::parse(&text, "doctor-test").expect("valid test config")
    }

    // ---- end to end inside network namespaces ----------------------------------------------

    const NS_PREFIX: &str = "lbdoc-";
    const LB_MAC: [u8; 6] = [0x02, 0x1b, 0xdc, 0x00, 0x00, 0x01];
    const GW_MAC: [u8; 6] = [0x02, 0x1b, 0xdc, 0x00, 0x00, 0x02];

    fn ip(args: &[&str]) {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .expect("running ip");
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Deletes the test's namespaces, also when the test panics.
    struct Namespaces(Vec<String>);

    impl Drop for Namespaces {
        fn drop(&mut self) {
            for ns in &self.0 {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", ns])
                    .output();
            }
        }
    }

    /// Remove `lbdoc-PID*` namespaces left by test processes that no longer run.
    fn remove_stale_namespaces() {
        let Ok(dir) = std::fs::read_dir("/run/netns") else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(NS_PREFIX) else {
                continue;
            };
            let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            let alive = !pid.is_empty() && Path::new(&format!("/proc/{pid}")).exists();
            if !alive || pid == std::process::id().to_string() {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", &name])
                    .output();
            }
        }
    }

    /// Run `f` on a thread inside network namespace `ns`, with its own current-thread runtime.
    fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open the netns");
            use std::os::fd::AsRawFd;
            // SAFETY: setns on this thread only; the fd is valid.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    fn write_sysctl(path: &str, value: &str) {
        std::fs::write(format!("/proc/sys/{path}"), value)
            .unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }

    fn get<'a>(findings: &'a [Finding], check: &str) -> &'a Finding {
        findings
            .iter()
            .find(|f| f.check == check)
            .unwrap_or_else(|| panic!("no {check:?} finding in\n{}", render(findings)))
    }

    /// Nothing FAILs, except possibly the program load: while lb-common's layouts change, the
    /// embedded eBPF object can be older than the agent (`cargo xtask build` refreshes it).
    fn assert_no_fail_but_program_load(findings: &[Finding]) {
        let text = render(findings);
        for f in findings {
            assert!(
                f.verdict != Verdict::Fail || f.check == "program load",
                "{}: {text}",
                f.check
            );
        }
    }

    #[test]
    fn end_to_end_in_netns() {
        remove_stale_namespaces();
        let ns = format!("{NS_PREFIX}{}", std::process::id());
        let gw_ns = format!("{ns}-gw");
        let _guard = Namespaces(vec![ns.clone(), gw_ns.clone()]);
        ip(&["netns", "add", &ns]);
        ip(&["netns", "add", &gw_ns]);
        let lb_mac = netinfo::format_mac(&LB_MAC);
        let gw_mac = netinfo::format_mac(&GW_MAC);
        ip(&[
            "-n", &ns, "link", "add", "lbdoc0", "address", &lb_mac, "type", "veth", "peer", "name",
            "lbdoc1", "address", &gw_mac, "netns", &gw_ns,
        ]);
        ip(&["-n", &ns, "addr", "add", "198.18.250.1/30", "dev", "lbdoc0"]);
        ip(&[
            "-n",
            &gw_ns,
            "addr",
            "add",
            "198.18.250.2/30",
            "dev",
            "lbdoc1",
        ]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &gw_ns, "link", "set", "lo", "up"]);
        ip(&["-n", &ns, "link", "set", "lbdoc0", "up"]);
        ip(&["-n", &gw_ns, "link", "set", "lbdoc1", "up"]);
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            "198.18.250.2",
            "dev",
            "lbdoc0",
        ]);

        // Netinfo facts, and the gateway resolved through ARP (one datagram to 198.18.250.2).
        let (lbdoc0, gw) = in_netns(&ns, || {
            block_on(async {
                let i = netinfo::interface("lbdoc0").await.expect("lbdoc0");
                let gw = netinfo::gateway_mac("lbdoc0").await.expect("gateway MAC");
                (i, gw)
            })
        });
        assert_eq!(lbdoc0.name, "lbdoc0");
        assert_eq!(lbdoc0.mac, LB_MAC);
        assert_eq!(lbdoc0.mtu, 1500);
        assert!(lbdoc0.up);
        assert!(
            lbdoc0
                .addrs
                .contains(&"198.18.250.1".parse::<IpAddr>().unwrap()),
            "{:?}",
            lbdoc0.addrs
        );
        assert_eq!(gw, (GW_MAC, "198.18.250.2".parse().unwrap()));

        // LB side: agent.mtu above the interface's fails; native XDP on veth works; rp_filter
        // strict is reported and fine.
        let lb = in_netns(&ns, || {
            write_sysctl("net/ipv4/conf/all/rp_filter", "0");
            write_sysctl("net/ipv4/conf/lbdoc0/rp_filter", "1");
            block_on(run(&DoctorOptions {
                iface: None,
                config: Some(config_for("lbdoc0", 9000, "")),
                backend: false,
            }))
        });
        let text = render(&lb);
        assert_eq!(get(&lb, "interface lbdoc0").verdict, Verdict::Ok, "{text}");
        let mtu = get(&lb, "MTU");
        assert_eq!(mtu.verdict, Verdict::Fail, "{text}");
        assert!(
            mtu.detail.contains("agent.mtu 9000 > lbdoc0 MTU 1500"),
            "{text}"
        );
        assert_eq!(
            get(&lb, "native XDP on lbdoc0").verdict,
            Verdict::Ok,
            "{text}"
        );
        let gateway = get(&lb, "gateway MAC");
        assert_eq!(gateway.verdict, Verdict::Ok, "{text}");
        assert!(gateway.detail.contains(&gw_mac), "{text}");
        let rp = get(&lb, "rp_filter");
        assert_eq!(rp.verdict, Verdict::Ok, "{text}");
        assert!(
            rp.detail.contains("all.rp_filter = 0, lbdoc0 = 1"),
            "{text}"
        );
        assert!(failed(&lb));

        // A fitting MTU warns about the clients' headroom and prints the numbers.
        let lb = in_netns(&ns, || {
            block_on(run(&DoctorOptions {
                iface: Some("lbdoc0".into()),
                config: Some(config_for(
                    "elsewhere0",
                    1500,
                    "gateway_mac = \"02:00:00:00:00:09\"",
                )),
                backend: false,
            }))
        });
        let text = render(&lb);
        let mtu = get(&lb, "MTU");
        assert_eq!(mtu.verdict, Verdict::Warn, "{text}");
        assert!(mtu.detail.contains("1480"), "{text}");
        assert!(mtu.fix.as_deref().unwrap_or("").contains("1540"), "{text}");
        let gateway = get(&lb, "gateway MAC");
        assert_eq!(gateway.verdict, Verdict::Ok, "{text}");
        assert!(gateway.detail.contains("fixed"), "{text}");
        assert_no_fail_but_program_load(&lb);

        // lo has no native XDP: FAIL with xdp_mode = native.
        let lo = in_netns(&ns, || {
            block_on(run(&DoctorOptions {
                iface: Some("lo".into()),
                config: Some(config_for("lo", 1500, "xdp_mode = \"native\"")),
                backend: false,
            }))
        });
        let text = render(&lo);
        let native = get(&lo, "native XDP on lo");
        assert_eq!(native.verdict, Verdict::Fail, "{text}");
        assert!(native.detail.contains("no native XDP"), "{text}");
        assert!(
            get(&lo, "gateway MAC")
                .detail
                .contains("no default route via lo"),
            "{text}"
        );

        // Backend side, unprepared: VIP missing from lo, strict rp_filter, ARP answered.
        let backend_opts = || DoctorOptions {
            iface: Some("lbdoc0".into()),
            config: Some(config_for("lbdoc0", 1500, "")),
            backend: true,
        };
        let be = in_netns(&ns, move || {
            write_sysctl("net/ipv4/conf/all/arp_ignore", "0");
            write_sysctl("net/ipv4/conf/all/arp_announce", "0");
            block_on(run(&backend_opts()))
        });
        let text = render(&be);
        assert_eq!(get(&be, "VIPs on lo").verdict, Verdict::Fail, "{text}");
        assert!(
            get(&be, "VIPs on lo")
                .fix
                .as_deref()
                .unwrap_or("")
                .contains("ip addr add 198.18.251.10/32 dev lo"),
            "{text}"
        );
        assert_ne!(get(&be, "rp_filter").verdict, Verdict::Ok, "{text}");
        assert!(
            get(&be, "rp_filter")
                .fix
                .as_deref()
                .unwrap_or("")
                .contains("net.ipv4.conf.all.rp_filter=2"),
            "{text}"
        );
        assert_eq!(get(&be, "ARP for VIPs").verdict, Verdict::Warn, "{text}");
        assert!(be.iter().all(|f| f.check != "gateway MAC"), "{text}");

        // Backend side, prepared: VIP on lo, loose rp_filter, ARP sysctls, xdp_decap attached.
        ip(&["-n", &ns, "addr", "add", "198.18.251.10/32", "dev", "lo"]);
        let be = in_netns(&ns, move || {
            write_sysctl("net/ipv4/conf/all/rp_filter", "2");
            write_sysctl("net/ipv4/conf/all/arp_ignore", "1");
            write_sysctl("net/ipv4/conf/all/arp_announce", "2");
            let mut decap = Decap::load().expect("decap loads");
            let prog = decap.program(dataplane::DECAP_PROGRAM).expect("xdp_decap");
            let _id = prog
                .attach("lbdoc0", aya::programs::XdpMode::Driver)
                .expect("native XDP on veth");
            let findings = block_on(run(&backend_opts()));
            drop(decap);
            findings
        });
        let text = render(&be);
        for check in [
            "VIPs on lo",
            "rp_filter",
            "ARP for VIPs",
            "decapsulation",
            "native XDP on lbdoc0",
            "MTU",
        ] {
            assert_eq!(get(&be, check).verdict, Verdict::Ok, "{check}:\n{text}");
        }
        assert!(
            get(&be, "decapsulation").detail.contains("xdp_decap"),
            "{text}"
        );
        assert_no_fail_but_program_load(&be);
    }
}
