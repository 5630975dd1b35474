//! Backend selection: the connection table first (except for SYNs), then the Maglev table.

use crate::{conntrack, counters::count, maglev, packet::FlowKind};
use lb_common::{Backend, FlowKey, LbConfig, Stat, VipMeta};

#[inline(always)]
pub fn choose(
    flow: &FlowKey,
    vip: &VipMeta,
    kind: FlowKind,
    hash: u32,
    cfg: &LbConfig,
) -> Result<(u32, Backend), Stat> {
    if kind == FlowKind::Syn {
        count(Stat::ConnMissSyn);
    } else if let Some(hit) = conntrack::lookup(flow) {
        return Ok(hit);
    } else if kind == FlowKind::TcpOther {
        count(Stat::ConnMissNonSyn);
    } else if kind == FlowKind::Udp {
        count(Stat::ConnMissUdp);
    }
    let (id, backend) = maglev::lookup(vip, hash)?;
    if kind != FlowKind::IcmpError {
        conntrack::insert(flow, id, &backend, cfg);
    }
    Ok((id, backend))
}
