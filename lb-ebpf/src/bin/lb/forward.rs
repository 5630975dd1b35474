//! From a VIP match to the frame on the wire: pick the backend, enforce the MTU, count,
//! encapsulate, transmit.

use crate::{
    counters, encap, icmp,
    maps::CONFIG,
    packet::{FlowKind, Packet},
    select,
    verdict::{drop, tx},
};
use aya_ebpf::programs::XdpContext;
use lb_common::{hash::flow_key_hash, FlowKey, Stat, VipMeta};

#[inline(always)]
pub fn forward<const L3: usize>(
    ctx: &XdpContext,
    pkt: &Packet,
    flow: &FlowKey,
    vip: &VipMeta,
    kind: FlowKind,
) -> u32 {
    let Some(cfg) = CONFIG.get(0) else {
        return drop(Stat::DropUnconfigured);
    };
    if cfg.ready == 0 {
        return drop(Stat::DropUnconfigured);
    }
    let hash = flow_key_hash(flow, vip.flags);
    let (id, backend) = match select::choose(flow, vip, kind, hash, cfg) {
        Ok(choice) => choice,
        Err(reason) => return drop(reason),
    };
    let outer = encap::outer_len(&backend);
    if pkt.ip_len + outer > cfg.mtu as usize {
        // Never answer an ICMP error with another one (RFC 1122 3.2.2, RFC 4443 2.4).
        if kind == FlowKind::IcmpError {
            return drop(Stat::EncapFailed);
        }
        return icmp::too_big::<L3>(ctx, pkt, cfg.mtu.saturating_sub(outer as u16));
    }
    // Counted as the frame that arrived, without any Ethernet padding.
    let bytes = L3 + pkt.ip_len;
    counters::vip(vip.id, bytes);
    counters::backend(id, bytes);
    if !encap::encapsulate::<L3>(ctx, pkt, &backend, hash, cfg) {
        return drop(Stat::EncapFailed);
    }
    if kind == FlowKind::IcmpError {
        tx(Stat::IcmpErrorForwarded)
    } else {
        tx(Stat::Forwarded)
    }
}
