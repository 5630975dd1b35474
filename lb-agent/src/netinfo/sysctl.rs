//! Sysctl reads from /proc/sys.

use anyhow::{Context, Result};

/// A sysctl's value, trimmed: `path` is relative to /proc/sys ("net/ipv4/conf/all/rp_filter");
/// the dotted form ("net.ipv4.conf.all.rp_filter") works when no component holds a dot.
/// Reads the namespace of the calling thread (/proc/sys/net follows the reader's netns).
pub fn read_sysctl(path: &str) -> Result<String> {
    let relative = if path.contains('/') {
        path.trim_start_matches('/').to_string()
    } else {
        path.replace('.', "/")
    };
    let full = format!("/proc/sys/{relative}");
    let value = std::fs::read_to_string(&full)
        .with_context(|| format!("reading sysctl {} ({full})", relative.replace('/', ".")))?;
    Ok(value.trim().to_string())
}
