//! From a VIP flow to the frame on the wire: the connection table first (never for a SYN), else
//! the VIP's Maglev table; then the MTU check, counters, encapsulation and transmit.

use crate::{
    conntrack, counters, encap, icmp, maglev,
    maps::CONFIG,
    packet::{FlowKind, Packet},
    verdict::{drop, pass, tx},
    vip,
};
use aya_ebpf::programs::XdpContext;
use lb_common::{hash::flow_key_hash, Backend, FlowKey, LbConfig, Stat};

#[inline(always)]
pub fn forward<const L3: usize>(
    ctx: &XdpContext,
    pkt: &Packet,
    flow: &FlowKey,
    kind: FlowKind,
) -> u32 {
    let Some(cfg) = CONFIG.get(0) else {
        return drop(Stat::DropUnconfigured);
    };
    // The 5-tuple hash also varies the outer header per flow, identically on every packet.
    let hash = flow_key_hash(flow, 0);
    if kind != FlowKind::Syn {
        if let Some(hit) = conntrack::lookup(flow) {
            return send::<L3>(
                ctx,
                pkt,
                cfg,
                hit.backend_id,
                &hit.backend,
                hit.vip_id,
                hash,
                kind,
            );
        }
    }
    let Some(vip) = vip::lookup(flow.dst, flow.family, flow.dst_port, flow.proto) else {
        return pass(Stat::PassNotVip);
    };
    match kind {
        FlowKind::Syn => counters::count(Stat::ConnMissSyn),
        FlowKind::TcpOther => counters::count(Stat::ConnMissNonSyn),
        FlowKind::Udp => counters::count(Stat::ConnMissUdp),
        // Routed by the table like the flow's first packet was.
        FlowKind::IcmpError => {}
    }
    let table_hash = if vip.flags == 0 {
        hash
    } else {
        flow_key_hash(flow, vip.flags)
    };
    let (id, backend) = match maglev::lookup(&vip, table_hash) {
        Ok(choice) => choice,
        Err(reason) => return drop(reason),
    };
    if kind != FlowKind::IcmpError {
        conntrack::insert(flow, id, &backend, vip.id, cfg);
    }
    send::<L3>(ctx, pkt, cfg, id, &backend, vip.id, hash, kind)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn send<const L3: usize>(
    ctx: &XdpContext,
    pkt: &Packet,
    cfg: &LbConfig,
    backend_id: u32,
    backend: &Backend,
    vip_id: u32,
    hash: u32,
    kind: FlowKind,
) -> u32 {
    if cfg.ready == 0 {
        return drop(Stat::DropUnconfigured);
    }
    let outer = encap::outer_len(backend);
    if pkt.ip_len + outer > cfg.mtu as usize {
        // Never answer an ICMP error with another one (RFC 1122 3.2.2, RFC 4443 2.4).
        if kind == FlowKind::IcmpError {
            return drop(Stat::EncapFailed);
        }
        return icmp::too_big::<L3>(ctx, pkt, cfg.mtu.saturating_sub(outer as u16));
    }
    // Counted as the frame that arrived, without any Ethernet padding.
    let bytes = L3 + pkt.ip_len;
    counters::vip(vip_id, bytes);
    counters::backend(backend_id, bytes);
    if !encap::encapsulate::<L3>(ctx, pkt, backend, hash, cfg) {
        return drop(Stat::EncapFailed);
    }
    if kind == FlowKind::IcmpError {
        tx(Stat::IcmpErrorForwarded)
    } else {
        tx(Stat::Forwarded)
    }
}
