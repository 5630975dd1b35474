//! The BPF filesystem: where it is mounted (from /proc/mounts) and mounting it when it is not.
//! The daemon mounts it before pinning; the doctor only reports on it.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use tracing::info;

/// Where bpffs is mounted by convention, and where the agent mounts it.
pub const BPFFS: &str = "/sys/fs/bpf";

const PROC_MOUNTS: &str = "/proc/mounts";

/// One line of /proc/mounts, reduced to what the agent looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub point: PathBuf,
    pub fstype: String,
}

/// The mounts of this mount namespace.
pub fn mounts() -> std::io::Result<Vec<Mount>> {
    Ok(parse_mounts(&std::fs::read_to_string(PROC_MOUNTS)?))
}

/// Parse /proc/mounts text. Lines with fewer than three fields are skipped rather than failing
/// the whole read: one odd line must not hide every other mount.
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let _source = fields.next()?;
            let point = fields.next()?;
            let fstype = fields.next()?;
            Some(Mount {
                point: PathBuf::from(unescape_mount(point)),
                fstype: fstype.to_string(),
            })
        })
        .collect()
}

/// /proc/mounts writes space, tab, newline and backslash as octal escapes (`\040`); anything
/// else after a backslash is kept as it is.
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

/// Whether a bpf filesystem is mounted exactly at `point`.
pub fn is_mounted_at(mounts: &[Mount], point: &Path) -> bool {
    mounts.iter().any(|m| m.point == point && m.fstype == "bpf")
}

/// The mount holding `path`: the longest mount point that is a prefix of it (after resolving
/// the longest existing ancestor's symlinks, since pin paths often do not exist yet).
pub fn mount_of<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    let resolved = path
        .ancestors()
        .find_map(|a| {
            let canon = a.canonicalize().ok()?;
            Some(canon.join(path.strip_prefix(a).ok()?))
        })
        .unwrap_or_else(|| path.to_path_buf());
    mounts
        .iter()
        .filter(|m| resolved.starts_with(&m.point))
        .max_by_key(|m| m.point.as_os_str().len())
}

/// Mount bpffs at /sys/fs/bpf when it is not (pins need it).
pub fn ensure() -> Result<()> {
    let mounts = mounts().with_context(|| format!("reading {PROC_MOUNTS}"))?;
    if is_mounted_at(&mounts, Path::new(BPFFS)) {
        return Ok(());
    }
    std::fs::create_dir_all(BPFFS).with_context(|| format!("creating {BPFFS}"))?;
    let c = |s: &str| std::ffi::CString::new(s).context("mount argument");
    let (src, target, fstype) = (c("bpf")?, c(BPFFS)?, c("bpf")?);
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!(
            "mounting bpffs at {BPFFS} failed: {} (run as root, or `mount -t bpf bpf {BPFFS}`)",
            std::io::Error::last_os_error()
        );
    }
    info!("mounted bpffs at {BPFFS}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(m: &[Mount]) -> Vec<&str> {
        m.iter().filter_map(|m| m.point.to_str()).collect()
    }

    #[test]
    fn parses_mounts_and_escapes() {
        let m = parse_mounts(
            "sysfs /sys sysfs rw 0 0\nbpf /sys/fs/bpf bpf rw 0 0\n/dev/sda1 / ext4 rw 0 0\n\
             tmp /mnt/with\\040space tmpfs rw 0 0\n",
        );
        assert_eq!(m.len(), 4);
        assert_eq!(m[3].point, PathBuf::from("/mnt/with space"));
        assert_eq!(m[3].fstype, "tmpfs");
        assert!(is_mounted_at(&m, Path::new(BPFFS)));
        assert!(!is_mounted_at(&m, Path::new("/sys")));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let m = parse_mounts(
            "\n   \nonly-source\nsource /point\nbpf /sys/fs/bpf bpf rw 0 0\n\
             \tbpf\t/tabbed\tbpf\n",
        );
        assert_eq!(points(&m), ["/sys/fs/bpf", "/tabbed"]);
        assert!(parse_mounts("").is_empty());
    }

    #[test]
    fn bad_escapes_stay_literal() {
        // Not octal, too short, and above 255: kept as written.
        let m = parse_mounts(
            "a /x\\09y t\nb /end\\04 t\nc /big\\400 t\nd /back\\134slash t\ne /tab\\011 t\n",
        );
        assert_eq!(
            points(&m),
            ["/x\\09y", "/end\\04", "/big\\400", "/back\\slash", "/tab\t"]
        );
    }

    #[test]
    fn bpffs_only_counts_with_its_type() {
        let m = parse_mounts("tmpfs /sys/fs/bpf tmpfs rw 0 0\n");
        assert!(!is_mounted_at(&m, Path::new(BPFFS)));
    }

    #[test]
    fn mount_of_takes_the_longest_prefix() {
        let m = parse_mounts("/dev/sda1 / ext4 rw 0 0\nbpf /sys/fs/bpf bpf rw 0 0\n");
        let at = |p: &str| mount_of(&m, Path::new(p)).map(|m| m.fstype.as_str());
        assert_eq!(at("/sys/fs/bpf/lb/not-yet-there"), Some("bpf"));
        assert_eq!(at("/srv/lb"), Some("ext4"));
        // A sibling whose name merely starts the same is not under the mount.
        assert_eq!(at("/sys/fs/bpfx"), Some("ext4"));
        assert_eq!(mount_of(&[], Path::new("/srv")), None);
    }
}
