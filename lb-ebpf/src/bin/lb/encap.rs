//! Encapsulation for direct server return: the client's IP packet goes inside an outer IPv4 or
//! IPv6 header addressed to the backend (IPv4/IPv6 in IPv4/IPv6), and leaves towards the gateway.

use crate::packet::Packet;
use aya_ebpf::programs::XdpContext;
use lb_common::{
    Backend, LbConfig, ETH_P_IP, ETH_P_IPV6, FAMILY_V4, IPPROTO_IPIP, IPPROTO_IPV6, IPV4_DF,
    IPV4_HDR_LEN, IPV6_HDR_LEN,
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
fn vary(word_be: u32, bits: u8, hash: u32) -> u32 {
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
        let mut hdr = Ipv4Hdr {
            vihl: 0x45,
            tos: pkt.tos,
            tot_len: ((pkt.ip_len + IPV4_HDR_LEN) as u16).to_be(),
            id: 0,
            frag: IPV4_DF.to_be(),
            ttl: cfg.outer_ttl,
            proto: inner_proto,
            check: 0,
            src: vary(cfg.encap_src_v4, cfg.src_hash_bits_v4, hash),
            dst: backend.addr[0],
        };
        hdr.check = ipv4_checksum(&hdr);
        // SAFETY: bounds checked by ptr_at.
        unsafe { *ip = hdr };
    } else {
        if !l2::write(ctx, gateway, pkt.l2.eth.dst, pkt.l2.tag, ETH_P_IPV6.to_be()) {
            return false;
        }
        let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, L3) else {
            return false;
        };
        let mut src = cfg.encap_src_v6;
        src[3] = vary(src[3], cfg.src_hash_bits_v6, hash);
        let vtc_flow = (6u32 << 28) | ((pkt.tos as u32) << 20) | (hash & 0x000f_ffff);
        // SAFETY: bounds checked by ptr_at.
        unsafe {
            *ip = Ipv6Hdr {
                vtc_flow: vtc_flow.to_be(),
                payload_len: (pkt.ip_len as u16).to_be(),
                next_hdr: inner_proto,
                hop_limit: cfg.outer_ttl,
                src,
                dst: backend.addr,
            }
        };
    }
    true
}
