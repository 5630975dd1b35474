//! The name of every map in the two objects: their one spelling.
//!
//! A `#[map]` static takes its object name from its identifier, so the eBPF side cannot use
//! these strings directly; instead `lb_ebpf::named_map!` declares each static and asserts at
//! compile time that its identifier is the name given here. The agent's map table
//! (`lb-agent/src/dataplane/maps.rs`) uses these names to load, pin, check and adopt the maps,
//! and a unit test there compares the table with the compiled objects.

// The balancer object (`lb`).
pub const CONFIG: &str = "CONFIG";
pub const ADDR_FILTER: &str = "ADDR_FILTER";
pub const VIP_ADDRS: &str = "VIP_ADDRS";
pub const VIPS: &str = "VIPS";
pub const VIP_INDEX: &str = "VIP_INDEX";
pub const MAGLEV: &str = "MAGLEV";
pub const MAGLEV_PREVIOUS: &str = "MAGLEV_PREVIOUS";
pub const BACKENDS: &str = "BACKENDS";
pub const CONN_TABLE: &str = "CONN_TABLE";
pub const FLOOD_GUARD: &str = "FLOOD_GUARD";
pub const STATS: &str = "STATS";
pub const VIP_STATS: &str = "VIP_STATS";
pub const BACKEND_STATS: &str = "BACKEND_STATS";
pub const PROBE_STATS: &str = "PROBE_STATS";
pub const BENCH_FRAME: &str = "BENCH_FRAME";
pub const BENCH_STATS: &str = "BENCH_STATS";
pub const TRACE_CONTROL: &str = "TRACE_CONTROL";
pub const TRACE_EVENTS: &str = "TRACE_EVENTS";
pub const TRACE_SCRATCH: &str = "TRACE_SCRATCH";

// The decap object (`decap`).
pub const DECAP_DSTS: &str = "DECAP_DSTS";
pub const DECAP_STATS: &str = "DECAP_STATS";

/// `a == b`, usable in a constant (`str` equality is not `const` yet).
pub const fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::same_name;

    #[test]
    fn same_name_compares_whole_strings() {
        assert!(same_name("VIPS", "VIPS"));
        assert!(!same_name("VIPS", "VIP"));
        assert!(!same_name("VIPS", "VIPZ"));
    }
}
