//! Rules about one value each (an interface name, an address, an HTTP path, a duration), as
//! pure functions: `Some(reason)` when the value is unusable.

use std::net::IpAddr;

/// Linux's IFNAMSIZ (16) less the terminating NUL.
pub const MAX_IFNAME_BYTES: usize = 15;
/// Longest health-check path accepted.
pub const MAX_HTTP_PATH_BYTES: usize = 1024;
/// Health-check intervals (and so timeouts) are at most an hour: longer is a typo, and an
/// unbounded one overflows the checker's clock.
pub const INTERVAL_MS: std::ops::RangeInclusive<u64> = 10..=3_600_000;
/// Largest `table_size` (a prime): 15 times the default, far above 100 x the backends one
/// VIP can have.
pub const MAX_TABLE_SIZE: u32 = 1_000_003;
/// Most slots of the `MAGLEV` and `MAGLEV_PREVIOUS` maps together with `max_vips × 2 ×
/// table_size` each: 2^27 slots of 2 bytes, 256 MiB per map; the data path's slot index is
/// a u32, which this keeps far from overflowing.
pub const MAX_TABLE_SLOTS: u64 = 1 << 27;

/// A backend's weight, in the file and set at run time (`lb-agent backend weight`). 0 is not
/// a weight: a backend that should take no new flows is drained, which keeps its flows.
pub const WEIGHT_RANGE: std::ops::RangeInclusive<u32> = 1..=10_000;

/// What to do instead of weight 0 in the file.
pub const FILE_ZERO_WEIGHT_HINT: &str = " (to stop new flows to a backend, set state = \"drain\")";
/// What to do instead of weight 0 at run time.
pub const RUNTIME_ZERO_WEIGHT_HINT: &str =
    " (to stop new flows to a backend, drain it: lb-agent backend drain VIP ADDR)";

/// Why `weight` cannot be a backend's weight, if it cannot; `zero_hint` follows the message
/// when it is 0 (a drain is what the operator wants then).
pub fn weight_problem(weight: u32, zero_hint: &str) -> Option<String> {
    if WEIGHT_RANGE.contains(&weight) {
        return None;
    }
    let hint = if weight == 0 { zero_hint } else { "" };
    Some(format!(
        "must be between {} and {}, got {weight}{hint}",
        WEIGHT_RANGE.start(),
        WEIGHT_RANGE.end()
    ))
}

/// A backend weight within [`WEIGHT_RANGE`], made by [`Weight::new`] or [`parse_weight`]: a
/// weight set at run time is always one the file could hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weight(u32);

impl Weight {
    /// `weight`, if it is within [`WEIGHT_RANGE`]; else why not (with the run-time hint for 0).
    pub fn new(weight: u32) -> Result<Self, String> {
        match weight_problem(weight, RUNTIME_ZERO_WEIGHT_HINT) {
            Some(problem) => Err(problem),
            None => Ok(Self(weight)),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A weight an operator typed (the CLI's N, the control API's path segment): decimal digits
/// only, within [`WEIGHT_RANGE`]. The error says what is wrong without naming the value's
/// role, which the caller adds.
pub fn parse_weight(text: &str) -> Result<Weight, String> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "must be a whole number between {} and {}, got {text:?}",
            WEIGHT_RANGE.start(),
            WEIGHT_RANGE.end()
        ));
    }
    // Negative, or too many digits for a u32: out of range either way, said with the text.
    match text.parse::<u32>() {
        Ok(weight) => Weight::new(weight),
        Err(_) => Err(format!(
            "must be between {} and {}, got {text}",
            WEIGHT_RANGE.start(),
            WEIGHT_RANGE.end()
        )),
    }
}

/// Why `name` cannot name a network interface (the kernel's `dev_valid_name`), if it cannot.
/// It also ends up in paths and netlink requests, so nothing path-like gets through.
pub fn interface_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > MAX_IFNAME_BYTES {
        return Some(format!(
            "{name:?} is {} bytes; interface names are at most {MAX_IFNAME_BYTES}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Some(format!("{name:?} is not an interface name"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Some(format!(
            "{name:?} is not an interface name: '/', ':', whitespace and control characters \
             are not allowed"
        ));
    }
    None
}

/// Why `ip` cannot be a unicast address of a host (a VIP, a backend, an encapsulation
/// source), if it cannot: unspecified, loopback, multicast or broadcast.
pub fn non_unicast(ip: IpAddr) -> Option<&'static str> {
    let v4 = match ip {
        IpAddr::V4(v4) => Some(v4),
        // An IPv4-mapped address is the IPv4 address it maps.
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    if ip.is_unspecified() || v4.is_some_and(|a| a.is_unspecified()) {
        Some("the unspecified address")
    } else if ip.is_loopback() || v4.is_some_and(|a| a.is_loopback()) {
        Some("a loopback address")
    } else if ip.is_multicast() || v4.is_some_and(|a| a.is_multicast()) {
        Some("a multicast address")
    } else if v4.is_some_and(|a| a.is_broadcast()) {
        Some("the broadcast address")
    } else {
        None
    }
}

/// Why `path` cannot be the request target of a health check (origin-form: `/` then visible
/// ASCII, no fragment), if it cannot. A space or line break would corrupt the request line.
pub fn http_path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some(format!("must start with '/', got {path:?}"));
    }
    if path.len() > MAX_HTTP_PATH_BYTES {
        return Some(format!(
            "is {} bytes; at most {MAX_HTTP_PATH_BYTES}",
            path.len()
        ));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!(
            "{path:?} contains whitespace or a control character: percent-encode it (a space \
             is %20)"
        ));
    }
    if !path.is_ascii() {
        return Some(format!(
            "{path:?} contains non-ASCII characters: percent-encode them"
        ));
    }
    if path.contains('#') {
        return Some(format!(
            "{path:?} contains a fragment ('#'), which is never sent to a server"
        ));
    }
    None
}
