//! From a VIP flow to the frame on the wire: the flow's slot in the VIP's Maglev table (and, in a
//! moved slot only, the connection table), then the MTU check, counters, encapsulation and
//! transmit.

use crate::{
    conntrack::{self, Lookup},
    counters, encap, icmp, log, mac,
    maglev::{self, Choice, Slot},
    maps::CONFIG,
    packet::{FlowKind, Packet},
    trace, trailer,
    verdict::{drop, pass, tx, Verdict},
    vip,
};
use aya_ebpf::programs::XdpContext;
use lb_common::{hash::flow_key_hash, FlowKey, LbConfig, Stat, VipMeta};

#[inline(always)]
pub fn forward<const L3: usize, const TRACED: bool>(
    ctx: &XdpContext,
    pkt: &Packet,
    flow: &FlowKey,
    kind: FlowKind,
) -> Verdict {
    let Some(vip) = vip::lookup(&flow.dst, flow.family, flow.dst_port, flow.proto) else {
        return pass(Stat::PassNotVip);
    };
    if TRACED {
        trace::note_vip(vip.id);
    }
    to_vip::<L3, TRACED>(ctx, pkt, flow, kind, &vip)
}

#[inline(always)]
fn to_vip<const L3: usize, const TRACED: bool>(
    ctx: &XdpContext,
    pkt: &Packet,
    flow: &FlowKey,
    kind: FlowKind,
    vip: &VipMeta,
) -> Verdict {
    // Before anything that may write the connection table: an unconfigured balancer keeps none.
    let cfg = match CONFIG.get(0) {
        Some(cfg) if cfg.ready != 0 => cfg,
        _ => return drop(Stat::DropUnconfigured),
    };
    // Broadcast, multicast and other hosts' frames are never forwarded (nor answered).
    if !mac::is_ours(pkt.l2.eth.dst, cfg) {
        return pass(Stat::PassNotOurMac);
    }
    // From here the frame is ours to rewrite: it ends where the IP packet does.
    if let Err(reason) = trailer::fit(ctx, L3 + pkt.ip_len) {
        return drop(reason);
    }
    // The 5-tuple hash also varies the outer header per flow, identically on every packet.
    let key = &cfg.flow_hash_key;
    let hash = flow_key_hash(flow, 0, key);
    let table_hash = if vip.flags == 0 {
        hash
    } else {
        flow_key_hash(flow, vip.flags, key)
    };
    let slot = match maglev::slot(vip, table_hash) {
        Ok(slot) => slot,
        Err(reason) => return drop(reason),
    };
    let choice = if slot.is_moved() {
        moved_slot(ctx, flow, kind, slot, vip.id, cfg)
    } else {
        // Every flow of a stable slot belongs to the slot's backend: no table to consult.
        counters::count(Stat::StableSlot);
        maglev::backend(slot.backend())
    };
    if TRACED {
        trace::note_slot(slot.is_moved(), choice.map(|c| c.id));
    }
    match choice {
        Some(choice) => {
            let verdict = send::<L3>(ctx, pkt, cfg, &choice, vip.id, hash, kind);
            if verdict.reason == Stat::IcmpTooBigSent {
                log::too_big(ctx, flow);
            }
            verdict
        }
        None => drop(Stat::DropNoBackend),
    }
}

/// A moved slot: a flow with a live entry keeps that entry's backend. A non-SYN without one
/// began before the move (every connection since got an entry with its SYN), so it goes where
/// the slot pointed then, the previous backend, and gets no entry: `MAGLEV_PREVIOUS` already
/// says where it belongs, and a flood of spoofed non-SYN packets therefore cannot evict the
/// entries of live flows. A SYN, or a flow whose entry names a backend that is gone, takes the
/// slot's backend and gets an entry.
#[inline(always)]
fn moved_slot(
    ctx: &XdpContext,
    flow: &FlowKey,
    kind: FlowKind,
    slot: Slot,
    vip_id: u32,
    cfg: &LbConfig,
) -> Option<Choice> {
    let found = if kind == FlowKind::Syn {
        Lookup::Miss
    } else {
        conntrack::lookup(flow)
    };
    let stale = match found {
        Lookup::Hit(choice) => {
            log::moved(ctx, flow, choice.id, Stat::ConnHit);
            return Some(choice);
        }
        Lookup::Stale => true,
        Lookup::Miss => false,
    };
    match kind {
        FlowKind::Syn => counters::count(Stat::ConnMissSyn),
        FlowKind::TcpOther => counters::count(Stat::ConnMissNonSyn),
        FlowKind::Udp => counters::count(Stat::ConnMissUdp),
        FlowKind::IcmpError => {}
    }
    let previous = if kind == FlowKind::Syn || stale {
        None
    } else {
        slot.previous()
    };
    let choice = match previous {
        Some(choice) => {
            counters::count(Stat::MovedToPrevious);
            choice
        }
        None => maglev::backend(slot.backend())?,
    };
    // Only a SYN or a stale entry writes: a spoofed segment, UDP datagram or ICMP error
    // without an entry cannot take another flow's place in the table.
    if kind == FlowKind::Syn || (stale && kind != FlowKind::IcmpError) {
        conntrack::insert(flow, &choice, vip_id, cfg);
    }
    let why = match (previous.is_some(), stale, kind) {
        (true, _, _) => Stat::MovedToPrevious,
        (false, true, _) => Stat::ConnStale,
        (false, false, FlowKind::Syn) => Stat::ConnMissSyn,
        (false, false, FlowKind::Udp) => Stat::ConnMissUdp,
        (false, false, FlowKind::TcpOther) => Stat::ConnMissNonSyn,
        (false, false, FlowKind::IcmpError) => Stat::IcmpErrorForwarded,
    };
    log::moved(ctx, flow, choice.id, why);
    Some(choice)
}

#[inline(always)]
fn send<const L3: usize>(
    ctx: &XdpContext,
    pkt: &Packet,
    cfg: &LbConfig,
    choice: &Choice,
    vip_id: u32,
    hash: u32,
    kind: FlowKind,
) -> Verdict {
    let backend = choice.backend;
    let outer = encap::outer_len(backend);
    if pkt.ip_len + outer > cfg.mtu as usize {
        // Never answer an ICMP error with another one (RFC 1122 3.2.2, RFC 4443 2.4).
        if kind == FlowKind::IcmpError {
            return drop(Stat::DropIcmpErrorTooBig);
        }
        return icmp::too_big::<L3>(ctx, pkt, cfg.mtu.saturating_sub(outer as u16));
    }
    // Counted as the frame that arrived, without any Ethernet padding.
    let bytes = L3 + pkt.ip_len;
    counters::vip(vip_id, bytes);
    counters::backend(choice.id, bytes);
    if !encap::encapsulate::<L3>(ctx, pkt, backend, hash, cfg) {
        return drop(Stat::EncapFailed);
    }
    if kind == FlowKind::IcmpError {
        tx(Stat::IcmpErrorForwarded)
    } else {
        tx(Stat::Forwarded)
    }
}
