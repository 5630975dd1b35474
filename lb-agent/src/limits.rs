//! Process limits the agent sets for itself at start.
//!
//! Health checks, admin connections and BIRD calls all need file descriptors. Under systemd's
//! default soft limit of 1,024 a flood of idle admin connections made every probe fail with
//! "Too many open files", so the agent raises its soft limit to the hard one: the hard limit is
//! the operator's (or the unit's `LimitNOFILE=`) decision, the soft one only a default.

use tracing::{info, warn};

/// Used when the hard limit is unlimited and fs.nr_open cannot be read: the kernel's default
/// fs.nr_open, which the soft limit of RLIMIT_NOFILE may not exceed.
const NR_OPEN_DEFAULT: u64 = 1 << 20;

/// The soft RLIMIT_NOFILE to set, or `None` to keep `soft`. `nr_open` is fs.nr_open: the
/// kernel refuses a limit above it, and an unlimited hard limit means "up to nr_open".
pub fn raised_nofile(soft: u64, hard: u64, nr_open: Option<u64>) -> Option<u64> {
    let ceiling = nr_open.unwrap_or(NR_OPEN_DEFAULT);
    let target = if hard == libc::RLIM_INFINITY {
        ceiling
    } else {
        hard.min(ceiling)
    };
    (soft != libc::RLIM_INFINITY && target > soft).then_some(target)
}

/// Raise the soft RLIMIT_NOFILE to the hard limit, logging the old and the new value. A
/// failure is logged and the agent goes on with the limit it has.
pub fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        warn!(
            "cannot read the open-file limit (getrlimit): {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let Some(new) = raised_nofile(lim.rlim_cur, lim.rlim_max, nr_open) else {
        info!(
            soft = lim.rlim_cur,
            hard = lim.rlim_max,
            "open-file limit already at its hard limit"
        );
        return;
    };
    let old = lim.rlim_cur;
    lim.rlim_cur = new;
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        warn!(
            old,
            wanted = new,
            "cannot raise the open-file limit (setrlimit): {}; set LimitNOFILE= in the unit",
            std::io::Error::last_os_error()
        );
        return;
    }
    info!(
        old,
        new, "raised the open-file soft limit to the hard limit"
    );
}

/// glibc arenas the allocator may create. Its default, 8 per CPU, gives every thread that
/// ever allocated (runtime workers, blocking threads, the admin thread) a heap of its own, and
/// each keeps what it freed: with 10,000 backends that left the agent's RSS megabytes above
/// what it uses after a scrape or a reload. Two arenas are enough for two runtime workers.
const MALLOC_ARENAS: libc::c_int = 2;

/// Allocations from this size up get pages of their own, returned when freed; and free memory
/// at the top of a heap beyond it is given back. glibc's default threshold rises to the
/// largest block freed so far (up to 32 MiB): after the agent built and freed its first Maglev
/// tables (256 KiB each) at start, every later table and scrape chunk came from the heap and
/// stayed there. Fixed, the agent's RSS at 100 VIPs × 100 backends went from 41.4 to 28.7 MiB
/// at ready (`cargo xtask bench control`, same host and run conditions).
const MALLOC_MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Tunes glibc's malloc for a long-running daemon: arenas capped at [`MALLOC_ARENAS`], a fixed
/// [`MALLOC_MMAP_THRESHOLD`] and trim threshold. Call before any thread starts. What the
/// environment sets (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`,
/// `GLIBC_TUNABLES`) is the operator's choice and is kept.
pub fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let unset = |name: &str| std::env::var_os(name).is_none();
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        let tuned = |name: &str| tunables.contains(&format!("glibc.malloc.{name}="));
        // SAFETY: mallopt only sets an allocator parameter; no thread allocates concurrently
        // this early.
        unsafe {
            if unset("MALLOC_ARENA_MAX") && !tuned("arena_max") {
                libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
            }
            if unset("MALLOC_MMAP_THRESHOLD_") && !tuned("mmap_threshold") {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD);
            }
            if unset("MALLOC_TRIM_THRESHOLD_") && !tuned("trim_threshold") {
                libc::mallopt(libc::M_TRIM_THRESHOLD, MALLOC_MMAP_THRESHOLD);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const INF: u64 = libc::RLIM_INFINITY;

    #[test]
    fn soft_goes_up_to_hard() {
        assert_eq!(raised_nofile(1024, 524_288, Some(1 << 20)), Some(524_288));
        assert_eq!(raised_nofile(1024, 4096, None), Some(4096));
    }

    #[test]
    fn nothing_to_do_at_or_above_hard() {
        assert_eq!(raised_nofile(4096, 4096, Some(1 << 20)), None);
        assert_eq!(raised_nofile(INF, INF, Some(1 << 20)), None);
    }

    #[test]
    fn unlimited_hard_means_nr_open() {
        assert_eq!(raised_nofile(1024, INF, Some(2_000_000)), Some(2_000_000));
        assert_eq!(raised_nofile(1024, INF, None), Some(NR_OPEN_DEFAULT));
    }

    #[test]
    fn never_above_nr_open_and_never_down() {
        assert_eq!(raised_nofile(1024, 4_000_000, Some(1 << 20)), Some(1 << 20));
        assert_eq!(raised_nofile(2_000_000, INF, Some(1 << 20)), None);
    }
}
