//! Encapsulation for direct server return: the client's IP packet goes inside an outer IPv4 or
//! IPv6 header addressed to the backend (IPv4/IPv6 in IPv4/IPv6), and leaves towards the gateway.

use crate::packet::Packet;
use aya_ebpf::programs::XdpContext;
use lb_common::{
    Backend, LbConfig, ETH_P_IP, ETH_P_IPV6, FAMILY_V4, IPPROTO_IPIP, IPPROTO_IPV6, IPV4_HDR_LEN,
    IPV6_HDR_LEN,
};
use lb_ebpf::{
    csum,
    hdr::{Ipv4Hdr, Ipv6Hdr},
    l2,
    packet::{adjust_head, ptr_at},
};

/// Widest run of outer-source bits the agent may vary per flow.
const MAX_SOURCE_HASH_BITS: u8 = 16;

/// Size of the outer header for a backend.
#[inline(always)]
pub fn outer_len(backend: &Backend) -> usize {
    if backend.family == FAMILY_V4 {
        IPV4_HDR_LEN
    } else {
        IPV6_HDR_LEN
    }
}

/// Replace the low `bits` of an address word (network order) with flow-hash bits.
#[inline(always)]
pub fn vary(word_be: u32, bits: u8, hash: u32) -> u32 {
    if bits == 0 {
        return word_be;
    }
    let mask = (1u32 << bits.min(MAX_SOURCE_HASH_BITS)) - 1;
    ((u32::from_be(word_be) & !mask) | (hash & mask)).to_be()
}

#[inline(always)]
pub fn ipv4_checksum(h: &Ipv4Hdr) -> u16 {
    // SAFETY: Ipv4Hdr is 20 plain bytes, i.e. five u32 words.
    let words: [u32; 5] = unsafe { core::mem::transmute(*h) };
    let mut sum = 0;
    for w in words {
        sum = csum::add32(sum, w);
    }
    csum::finish(sum)
}

/// The protocol number of the outer header for an inner packet of `family` (as `encapsulate`
/// chooses it).
#[inline(always)]
pub fn inner_proto(family: u8) -> u8 {
    if family == FAMILY_V4 {
        IPPROTO_IPIP
    } else {
        IPPROTO_IPV6
    }
}

/// `let mut $hdr`: the outer IPv4 header in front of an inner packet of `$ip_len` bytes with
/// TOS `$tos`. The one definition `xdp_lb` (client packets) and `tc_probe_encap` (health-check
/// probes) share, so a probe reaches its backend exactly as a client packet does. A macro, not
/// a function: expanded in place, `xdp_lb`'s instructions stay those of the code written
/// inline (a function returning the header by value made LLVM schedule them differently).
macro_rules! outer_v4 {
    ($hdr:ident, $tos:expr, $ip_len:expr, $inner_proto:expr, $backend:expr, $hash:expr, $cfg:expr) => {
        let mut $hdr = lb_ebpf::hdr::Ipv4Hdr {
            vihl: 0x45,
            tos: $tos,
            tot_len: (($ip_len + lb_common::IPV4_HDR_LEN) as u16).to_be(),
            id: 0,
            frag: lb_common::IPV4_DF.to_be(),
            ttl: $cfg.outer_ttl,
            proto: $inner_proto,
            check: 0,
            src: $crate::encap::vary($cfg.encap_src_v4, $cfg.src_hash_bits_v4, $hash),
            dst: $backend.addr[0],
        };
        $hdr.check = $crate::encap::ipv4_checksum(&$hdr);
    };
}
pub(crate) use outer_v4;

/// Assigns the outer IPv6 header to `$place` (the packet, or a local), as [`outer_v4`].
macro_rules! outer_v6 {
    ($place:expr, $tos:expr, $ip_len:expr, $inner_proto:expr, $backend:expr, $hash:expr, $cfg:expr) => {
        let mut src = $cfg.encap_src_v6;
        src[3] = $crate::encap::vary(src[3], $cfg.src_hash_bits_v6, $hash);
        let vtc_flow = (6u32 << 28) | (($tos as u32) << 20) | ($hash & 0x000f_ffff);
        // SAFETY: the caller's place is a bounds-checked packet pointer or a local.
        #[allow(unused_unsafe)]
        unsafe {
            $place = lb_ebpf::hdr::Ipv6Hdr {
                vtc_flow: vtc_flow.to_be(),
                payload_len: ($ip_len as u16).to_be(),
                next_hdr: $inner_proto,
                hop_limit: $cfg.outer_ttl,
                src,
                dst: $backend.addr,
            }
        };
    };
}
pub(crate) use outer_v6;

/// Prepend Ethernet (towards the gateway, VLAN tag kept) and the outer IP header.
#[inline(always)]
pub fn encapsulate<const L3: usize>(
    ctx: &XdpContext,
    pkt: &Packet,
    backend: &Backend,
    hash: u32,
    cfg: &LbConfig,
) -> bool {
    let outer = outer_len(backend);
    let inner_proto = if pkt.family == FAMILY_V4 {
        IPPROTO_IPIP
    } else {
        IPPROTO_IPV6
    };
    if !adjust_head(ctx, -(outer as i32)) {
        return false;
    }
    // SAFETY: gateway_mac is 6 bytes at offset 0 of a 4-aligned map value.
    let gateway: [u16; 3] = unsafe { *(cfg.gateway_mac.as_ptr() as *const [u16; 3]) };
    if backend.family == FAMILY_V4 {
        if !l2::write(ctx, gateway, pkt.l2.eth.dst, pkt.l2.tag, ETH_P_IP.to_be()) {
            return false;
        }
        let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, L3) else {
            return false;
        };
        outer_v4!(hdr, pkt.tos, pkt.ip_len, inner_proto, backend, hash, cfg);
        // SAFETY: bounds checked by ptr_at.
        unsafe { *ip = hdr };
    } else {
        if !l2::write(ctx, gateway, pkt.l2.eth.dst, pkt.l2.tag, ETH_P_IPV6.to_be()) {
            return false;
        }
        let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, L3) else {
            return false;
        };
        outer_v6!(*ip, pkt.tos, pkt.ip_len, inner_proto, backend, hash, cfg);
    }
    true
}
