//! What a `/metrics` scrape is written from. The agent's source fills it straight from the
//! controller's snapshot: each VIP's `Arc`'d status as shared, traffic counters by id beside it.
//! Building a [`StatusReport`] instead cloned 10,000 backends' status (and every probe's) per
//! scrape, only to read a few numbers from each.

use super::api::{AgentInfo, BackendStatus, StatusReport, VipStatus};
use crate::bgp::BgpStatus;
use lb_common::TrafficCounters;
use std::{collections::BTreeMap, sync::Arc};

/// Everything `/metrics` shows.
#[derive(Debug)]
pub struct Scrape {
    /// Each VIP's status and its traffic, in the report's order (by name).
    pub vips: Vec<(Arc<VipStatus>, TrafficCounters)>,
    pub backend_traffic: BackendTraffic,
    /// Data-path counters by name, summed over CPUs.
    pub counters: BTreeMap<String, u64>,
    pub uptime_secs: u64,
    /// Live connection-table entries at the last sweep; none before it.
    pub conn_live_entries: Option<u64>,
    pub agent: AgentInfo,
    pub bgp: Option<BgpStatus>,
}

/// Where a backend's packets and bytes are.
#[derive(Debug)]
pub enum BackendTraffic {
    /// In its status (a report's).
    InStatus,
    /// Indexed by backend id (the snapshot's statuses carry zeros).
    ById(Vec<TrafficCounters>),
}

impl Scrape {
    /// Backend `b`'s packets and bytes.
    pub fn traffic(&self, b: &BackendStatus) -> TrafficCounters {
        match &self.backend_traffic {
            BackendTraffic::InStatus => TrafficCounters {
                packets: b.packets,
                bytes: b.bytes,
            },
            BackendTraffic::ById(all) => all.get(b.id as usize).copied().unwrap_or_default(),
        }
    }
}

impl From<StatusReport> for Scrape {
    fn from(report: StatusReport) -> Self {
        let vips = report
            .vips
            .into_iter()
            .map(|v| {
                let traffic = TrafficCounters {
                    packets: v.packets,
                    bytes: v.bytes,
                };
                (Arc::new(v), traffic)
            })
            .collect();
        Scrape {
            vips,
            backend_traffic: BackendTraffic::InStatus,
            counters: report.counters,
            uptime_secs: report.uptime_secs,
            conn_live_entries: report.conn_sweep.map(|s| s.live_entries),
            agent: report.agent,
            bgp: report.bgp,
        }
    }
}
