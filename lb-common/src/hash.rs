//! The flow hash, shared so the agent and tests can predict which slot a flow takes.
//!
//! Words are the packet's own bytes loaded in native order (see the crate docs). Murmur3's
//! 32-bit mixing: cheap in BPF (no loops beyond a few fixed words) and well spread modulo a prime.
//!
//! An optional fleet-wide secret [`FlowHashKey`] (the agent's `flow_hash_key_file`) enters the
//! seed and the words a client chooses (its address and ports), so which source ports share a
//! backend cannot be worked out from this code. It is not a cryptographic PRF: it raises the bar
//! from reading the code to recovering 64 unknown bits from observed backend choices. The zero
//! key is no key: every function gives exactly the unkeyed hash.

const SEED: u32 = 0x9e37_79b9;

/// Secret key of the flow hash as the data path holds it (`LbConfig::flow_hash_key`).
pub type FlowHashKey = [u32; 4];

/// No key: the unkeyed hash.
pub const NO_KEY: FlowHashKey = [0; 4];

#[inline(always)]
fn mix(h: u32, k: u32) -> u32 {
    let k = k
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn finish(mut h: u32, len: u32) -> u32 {
    h ^= len;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Ports packed as the data path loads them: source port in the low half (both network order).
#[inline(always)]
pub fn ports_word(src_port_be: u16, dst_port_be: u16) -> u32 {
    (src_port_be as u32) | ((dst_port_be as u32) << 16)
}

/// 5-tuple hash of an IPv4 flow.
#[inline(always)]
pub fn flow_hash_v4(src: u32, dst: u32, ports: u32, proto: u8, key: &FlowHashKey) -> u32 {
    let h = mix(SEED ^ key[0], src ^ key[1]);
    let h = mix(h, dst ^ key[2]);
    let h = mix(h, ports ^ (proto as u32) ^ key[3]);
    finish(h, 12)
}

/// 5-tuple hash of an IPv6 flow.
#[inline(always)]
pub fn flow_hash_v6(
    src: &[u32; 4],
    dst: &[u32; 4],
    ports: u32,
    proto: u8,
    key: &FlowHashKey,
) -> u32 {
    let mut h = SEED ^ key[0];
    h = mix(h, src[0] ^ key[1]);
    h = mix(h, src[1]);
    h = mix(h, src[2]);
    h = mix(h, src[3] ^ key[2]);
    h = mix(h, dst[0]);
    h = mix(h, dst[1]);
    h = mix(h, dst[2]);
    h = mix(h, dst[3]);
    h = mix(h, ports ^ (proto as u32) ^ key[3]);
    finish(h, 36)
}

/// Source-address-only hash (VIPs with `VIP_F_HASH_SRC_ONLY`).
#[inline(always)]
pub fn source_hash_v4(src: u32, key: &FlowHashKey) -> u32 {
    finish(mix(SEED ^ key[0], src ^ key[1]), 4)
}

#[inline(always)]
pub fn source_hash_v6(src: &[u32; 4], key: &FlowHashKey) -> u32 {
    let mut h = SEED ^ key[0];
    h = mix(h, src[0] ^ key[1]);
    h = mix(h, src[1]);
    h = mix(h, src[2] ^ key[3]);
    h = mix(h, src[3] ^ key[2]);
    finish(h, 16)
}

/// Bit of the `ADDR_FILTER` bitmap that stands for an address (Fibonacci hashing: one multiply).
#[inline(always)]
pub fn addr_filter_bit(addr: &[u32; 4], family: u8) -> u32 {
    let folded = if family == crate::FAMILY_V4 {
        addr[0]
    } else {
        addr[0] ^ addr[1].rotate_left(8) ^ addr[2].rotate_left(16) ^ addr[3].rotate_left(24)
    };
    folded.wrapping_mul(0x9e37_79b1) >> 16
}

/// Home slot of a VIP key (`VipKey::words`) in `VIP_INDEX`: the words folded, then Fibonacci
/// hashing. Not keyed: only configured VIPs live in the index, and a key whose home is taken
/// still works (through `VIPS`), so an adversary gains nothing by aiming at a slot.
#[inline(always)]
pub fn vip_index_slot(words: &[u32; 5]) -> u32 {
    let folded = words[0]
        ^ words[1].rotate_left(8)
        ^ words[2].rotate_left(16)
        ^ words[3].rotate_left(24)
        ^ words[4].wrapping_mul(0x85eb_ca6b);
    folded.wrapping_mul(0x9e37_79b1) >> (32 - crate::VIP_INDEX_SLOTS.trailing_zeros())
}

/// The hash the data path picks a Maglev slot with: the 5-tuple, or the client address only
/// for VIPs with `VIP_F_HASH_SRC_ONLY`; keyed with the balancer's `key` ([`NO_KEY`] for none).
#[inline(always)]
pub fn flow_key_hash(flow: &crate::FlowKey, vip_flags: u32, key: &FlowHashKey) -> u32 {
    let v4 = flow.family == crate::FAMILY_V4;
    if vip_flags & crate::VIP_F_HASH_SRC_ONLY != 0 {
        return if v4 {
            source_hash_v4(flow.src[0], key)
        } else {
            source_hash_v6(&flow.src, key)
        };
    }
    let ports = ports_word(flow.src_port, flow.dst_port);
    if v4 {
        flow_hash_v4(flow.src[0], flow.dst[0], ports, flow.proto, key)
    } else {
        flow_hash_v6(&flow.src, &flow.dst, ports, flow.proto, key)
    }
}

/// The slot of a VIP's table of `table_size` slots that `flow` falls in, as the data path picks
/// it (`maglev::slot` there reuses the hash it already has).
pub fn table_slot(
    flow: &crate::FlowKey,
    vip_flags: u32,
    table_size: u32,
    key: &FlowHashKey,
) -> u32 {
    flow_key_hash(flow, vip_flags, key) % table_size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_change_the_hash_but_not_the_source_hash() {
        let a = flow_hash_v4(1, 2, ports_word(1000u16.to_be(), 80u16.to_be()), 6, &NO_KEY);
        let b = flow_hash_v4(1, 2, ports_word(1001u16.to_be(), 80u16.to_be()), 6, &NO_KEY);
        assert_ne!(a, b);
        assert_eq!(source_hash_v4(1, &NO_KEY), source_hash_v4(1, &NO_KEY));
    }

    #[test]
    fn spreads_sequential_ports_over_a_prime_table() {
        let m = 65537u32;
        let mut buckets = [0u32; 16];
        for port in 0..16_000u16 {
            let h = flow_hash_v4(
                0x0a00_0001,
                0x0a00_0002,
                ports_word(port.to_be(), 80u16.to_be()),
                6,
                &NO_KEY,
            );
            buckets[((h % m) * 16 / m) as usize] += 1;
        }
        for b in buckets {
            assert!((800..1200).contains(&b), "uneven bucket {b}: {buckets:?}");
        }
    }

    /// Consecutive addresses and ports, as VIPs are usually numbered, mostly get homes of
    /// their own.
    #[test]
    fn vip_index_homes_spread() {
        extern crate std;
        use crate::{VipKey, IPPROTO_TCP, VIP_INDEX_SLOTS};
        let mut homes = std::collections::HashSet::new();
        let mut keys = 0;
        for last in 1..=32u8 {
            for port in [80u16, 443, 8080, 0] {
                let ip = core::net::Ipv4Addr::new(198, 18, 10, last).into();
                let slot = vip_index_slot(&VipKey::new(ip, port, IPPROTO_TCP).words());
                assert!(slot < VIP_INDEX_SLOTS);
                homes.insert(slot);
                keys += 1;
            }
        }
        // 128 keys in 4096 slots: about 2 shared homes are expected of a random function.
        assert!(
            homes.len() >= keys - 6,
            "{} homes for {keys} keys",
            homes.len()
        );
    }

    /// The unkeyed hash is the one every balancer computed before keys existed: fixed values,
    /// so a change to it cannot slip in (it would move every flow of a fleet mid-upgrade).
    #[test]
    fn zero_key_is_the_unkeyed_hash() {
        let ports = ports_word(40000u16.to_be(), 80u16.to_be());
        assert_eq!(
            flow_hash_v4(0x0a00_0001, 0x0a00_0002, ports, 6, &NO_KEY),
            0xb34c_f493
        );
        assert_eq!(source_hash_v4(0x0a00_0001, &NO_KEY), 0xcfbd_6bad);
        let key = [1, 2, 3, 4];
        assert_ne!(
            flow_hash_v4(0x0a00_0001, 0x0a00_0002, ports, 6, &key),
            flow_hash_v4(0x0a00_0001, 0x0a00_0002, ports, 6, &NO_KEY)
        );
    }
}
