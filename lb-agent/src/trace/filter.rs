//! What a trace selects, checked before anything is written to the data path: the VIP by name,
//! the verdicts, the reason by counter name, the sampling rate.

use anyhow::{bail, Result};
use lb_common::{Stat, TraceControl, VipKey, VipMeta, TRACE_ANY, TRACE_SNAP_LEN};

/// XDP actions as the data path returns them.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// The verdict names of `--verdict` and of trace lines.
pub fn action_name(action: u32) -> &'static str {
    match action {
        XDP_DROP => "drop",
        XDP_PASS => "pass",
        XDP_TX => "tx",
        _ => "aborted",
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub vip_id: Option<u32>,
    /// XDP actions traced; empty: all three.
    pub actions: Vec<u32>,
    pub reason: Option<Stat>,
    /// 1: every matching packet.
    pub sample: u32,
}

impl Filter {
    /// The control block that runs this trace until `until_ns` (CLOCK_MONOTONIC).
    pub fn control(&self, until_ns: u64, pid: u32) -> TraceControl {
        let actions = if self.actions.is_empty() {
            vec![XDP_DROP, XDP_PASS, XDP_TX]
        } else {
            self.actions.clone()
        };
        TraceControl {
            until_ns,
            vip_id: self.vip_id.unwrap_or(TRACE_ANY),
            reason: self.reason.map_or(TRACE_ANY, |s| s as u32),
            actions: actions.iter().fold(0, |m, a| m | (1 << a)),
            sample: self.sample,
            snap_len: TRACE_SNAP_LEN as u32,
            tracer_pid: pid,
        }
    }
}

/// `--reason`: a counter of the balancer, by its `lb-agent stats` name.
pub fn reason(name: &str) -> Result<Stat> {
    if let Some(stat) = Stat::ALL.iter().find(|s| s.name() == name) {
        return Ok(*stat);
    }
    let names: Vec<&str> = Stat::ALL.iter().map(|s| s.name()).collect();
    bail!(
        "--reason {name:?} is not a counter of the balancer; valid: {}",
        names.join(", ")
    )
}

/// `--vip NAME`: its id in the data path, from the agent's VIPs (name and key, from /status)
/// and the pinned `VIPS` map (key and id).
pub fn vip_id(name: &str, named: &[(String, VipKey)], map: &[(VipKey, VipMeta)]) -> Result<u32> {
    let Some((_, key)) = named.iter().find(|(n, _)| n == name) else {
        let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
        bail!(
            "--vip {name:?} is not a VIP of the running agent; its VIPs: {}",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
    };
    match map.iter().find(|(k, _)| k == key) {
        Some((_, meta)) => Ok(meta.id),
        None => bail!(
            "VIP {name:?} is in the agent's status but not in its pinned VIPS map: is --pin-path \
             the running agent's pin_path?"
        ),
    }
}

/// Which VIP name an id has, for trace lines.
pub fn vip_names(named: &[(String, VipKey)], map: &[(VipKey, VipMeta)]) -> Vec<(u32, String)> {
    named
        .iter()
        .filter_map(|(name, key)| {
            let (_, meta) = map.iter().find(|(k, _)| k == key)?;
            Some((meta.id, name.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::IPPROTO_TCP;

    type Named = Vec<(String, VipKey)>;

    fn vips() -> (Named, Vec<(VipKey, VipMeta)>) {
        let web = VipKey::new("198.18.10.1".parse().unwrap(), 80, IPPROTO_TCP);
        let api = VipKey::new("198.18.10.2".parse().unwrap(), 443, IPPROTO_TCP);
        let meta = |id| VipMeta {
            id,
            ..Default::default()
        };
        (
            vec![("web".into(), web), ("api".into(), api)],
            vec![(api, meta(1)), (web, meta(0))],
        )
    }

    #[test]
    fn vip_names_resolve_to_ids_and_unknown_ones_list_the_vips() {
        let (named, map) = vips();
        assert_eq!(vip_id("api", &named, &map).unwrap(), 1);
        assert_eq!(vip_id("web", &named, &map).unwrap(), 0);
        let err = vip_id("nope", &named, &map).unwrap_err().to_string();
        assert!(
            err.contains("\"nope\"") && err.contains("web, api"),
            "{err}"
        );
        let err = vip_id("web", &named, &[]).unwrap_err().to_string();
        assert!(err.contains("pinned VIPS map"), "{err}");
        assert!(vip_id("web", &[], &map)
            .unwrap_err()
            .to_string()
            .contains("VIPs: none"));
        assert_eq!(
            vip_names(&named, &map),
            vec![(0, "web".to_string()), (1, "api".to_string())]
        );
    }

    #[test]
    fn reasons_are_counter_names_and_a_wrong_one_lists_them_all() {
        assert_eq!(reason("forwarded").unwrap(), Stat::Forwarded);
        assert_eq!(reason("drop_malformed").unwrap(), Stat::DropMalformed);
        let err = reason("dropped").unwrap_err().to_string();
        assert!(err.contains("\"dropped\""), "{err}");
        for stat in Stat::ALL {
            assert!(err.contains(stat.name()), "{err}");
        }
        assert!(reason("").is_err());
    }

    #[test]
    fn the_control_block_carries_the_filter() {
        let all = Filter {
            vip_id: None,
            actions: vec![],
            reason: None,
            sample: 1,
        };
        let c = all.control(42, 7);
        assert_eq!((c.until_ns, c.tracer_pid, c.sample), (42, 7, 1));
        assert_eq!((c.vip_id, c.reason), (TRACE_ANY, TRACE_ANY));
        assert_eq!(c.actions, (1 << 1) | (1 << 2) | (1 << 3));
        assert_eq!(c.snap_len, TRACE_SNAP_LEN as u32);
        let some = Filter {
            vip_id: Some(3),
            actions: vec![XDP_DROP],
            reason: Some(Stat::DropFragment),
            sample: 10,
        };
        let c = some.control(1, 1);
        assert_eq!(
            (c.vip_id, c.reason, c.actions, c.sample),
            (3, Stat::DropFragment as u32, 1 << 1, 10)
        );
        assert_eq!(
            [
                action_name(1),
                action_name(2),
                action_name(3),
                action_name(0)
            ],
            ["drop", "pass", "tx", "aborted"]
        );
    }
}
