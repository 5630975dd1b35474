//! Host checks: privileges, bpffs and the pin path, BTF, the kernel and its BPF features, and
//! whether this host's eBPF object passes the verifier.

use super::Finding;
use crate::{
    bpffs::{self, Mount, BPFFS},
    config::Config,
    dataplane::{self, Decap},
    netinfo,
};
use std::path::Path;

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// The effective capability set from /proc/self/status.
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

pub(super) fn privileges() -> Finding {
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

/// bpffs at its usual place and, with a config, whether agent.pin_path is on a bpffs.
pub(super) fn bpffs(cfg: Option<&Config>) -> Vec<Finding> {
    let mounts = match bpffs::mounts() {
        Ok(m) => m,
        Err(e) => {
            return vec![Finding::warn(
                "bpffs",
                format!("cannot read /proc/mounts: {e}"),
                "mount /proc (`mount -t proc proc /proc`)",
            )]
        }
    };
    let at_default = bpffs::is_mounted_at(&mounts, Path::new(BPFFS));
    let mut out = vec![bpffs_mounted(at_default)];
    if let Some(cfg) = cfg {
        out.push(pin_path(&cfg.agent.pin_path, &mounts, at_default));
    }
    out
}

fn bpffs_mounted(at_default: bool) -> Finding {
    if at_default {
        return Finding::ok("bpffs", format!("mounted at {BPFFS}"));
    }
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
}

fn pin_path(pin: &Path, mounts: &[Mount], bpffs_at_default: bool) -> Finding {
    const CHECK: &str = "pin_path";
    if !pin.is_absolute() {
        return Finding::fail(
            CHECK,
            format!("agent.pin_path {} is not an absolute path", pin.display()),
            format!("set agent.pin_path to a directory under {BPFFS}, e.g. {BPFFS}/lb"),
        );
    }
    match bpffs::mount_of(mounts, pin) {
        Some(m) if m.fstype == "bpf" => {
            let adopted = if pin.join("xdp_link").exists() {
                " (holds a pinned XDP link: a running or stopped agent's state, which \
                 the next start adopts)"
            } else {
                ""
            };
            Finding::ok(
                CHECK,
                format!(
                    "{} is on the bpffs mounted at {}{adopted}",
                    pin.display(),
                    m.point.display()
                ),
            )
        }
        // /sys/fs/bpf not mounted: the agent mounts it at start, the bpffs line says so.
        _ if !bpffs_at_default && pin.starts_with(BPFFS) => Finding::warn(
            CHECK,
            format!(
                "{} is under {BPFFS}, which is not a bpffs mount yet",
                pin.display()
            ),
            format!("mount -t bpf bpf {BPFFS}"),
        ),
        other => Finding::fail(
            CHECK,
            format!(
                "agent.pin_path {} is not on a bpf filesystem ({}): pinning fails",
                pin.display(),
                match other {
                    Some(m) => format!("it is on {} mounted at {}", m.fstype, m.point.display()),
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
}

pub(super) fn btf() -> Finding {
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

pub(super) fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The kernel's version, its memlock limit where it matters, the JIT and the BPF features.
pub(super) fn kernel() -> Vec<Finding> {
    let version = kernel_release();
    let mut out = vec![kernel_version(version.as_ref())];
    // Before 5.11, BPF memory is charged to RLIMIT_MEMLOCK instead of the memory cgroup.
    if let Some((_, v)) = &version {
        if *v < (5, 11) {
            out.extend(memlock());
        }
    }
    out.push(bpf_jit());
    out.push(map_support());
    out
}

fn kernel_version(version: Option<&(String, (u32, u32))>) -> Finding {
    match version {
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
    }
}

/// A WARN when RLIMIT_MEMLOCK is limited (it caps BPF maps before kernel 5.11).
fn memlock() -> Option<Finding> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills `lim`.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    (rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY).then(|| {
        Finding::warn(
            "memlock",
            format!(
                "RLIMIT_MEMLOCK is {} KiB: before kernel 5.11 BPF maps count against \
                 it, and map creation fails with EPERM once it is used up",
                lim.rlim_cur / 1024
            ),
            "raise it: `ulimit -l unlimited`, or LimitMEMLOCK=infinity in the systemd \
             unit",
        )
    })
}

fn bpf_jit() -> Finding {
    match netinfo::read_sysctl("net/core/bpf_jit_enable") {
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
    }
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
pub(super) fn program_load(cfg: Option<&Config>, backend: bool) -> Finding {
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
            let fix = program_load_fix(&detail);
            Finding::fail(CHECK, detail, fix)
        }
    }
}

/// The likely fix for a load error, recognised by its text.
fn program_load_fix(detail: &str) -> &'static str {
    if detail.contains("built without") {
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
    }
}
