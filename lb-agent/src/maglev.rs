//! Weighted Maglev lookup-table builder (Eisenbud et al., NSDI 2016, with weights by quota).
//!
//! The data path maps a flow to `table[hash % size]`, so the table alone decides which backend
//! gets a new flow. Three properties matter, and each shapes the code below:
//!
//! * **Same table on every balancer host.** Hosts behind one ECMP group must agree, or a flow
//!   that is rehashed to another host lands on another backend. The table is therefore a pure
//!   function of the *set* of `(name, id, weight)`: input order is irrelevant (backends are
//!   sorted by name), and each backend's permutation comes from SipHash-2-4 with fixed keys over
//!   its name (never `RandomState`, which is seeded per process).
//! * **Weights.** Each backend gets a quota of `size * weight / sum(weights)` slots, rounded by
//!   the largest-remainder method (ties broken by name), so every backend is within one slot of
//!   its exact share and the quotas sum to `size`. Weight 0 means drained: no slots.
//! * **Small disruption.** Backends take turns in name order, each claiming the next empty slot
//!   of its own permutation until it has its quota (Maglev's population loop). Because a
//!   backend's preferences do not depend on the others, adding or removing one backend moves
//!   that backend's slots plus a small excess between the others (about 0.2-0.6% of the table
//!   for 10-100 backends; see `disruption_n10_n100` in the tests).
//!
//! Preferences are generated lazily (a cursor per backend), so building costs about
//! `size * ln(size)` probes and no allocation beyond the table and one cursor per backend.

use anyhow::{bail, Context, Result};
use lb_common::NO_BACKEND;

pub mod moves;

/// One backend as Maglev sees it.
///
/// `name` is the stable identity that positions the backend in the table (the agent passes its
/// IP address as text), so the same backend lands on the same slots on every host and across
/// restarts; `id` is only what is written into its slots (its index in the `BACKENDS` array),
/// so renumbering ids never reshuffles flows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaglevBackend {
    pub name: String,
    pub id: u32,
    pub weight: u32,
}

/// SipHash keys for the permutation offset and skip. Arbitrary but fixed forever: every host
/// (and every agent version) must use the same ones, or their tables differ.
const OFFSET_KEY: (u64, u64) = (0x6c62_2d6d_6167_6c65, 0x762d_6f66_6673_6574);
const SKIP_KEY: (u64, u64) = (0x6c62_2d6d_6167_6c65, 0x762d_736b_6970_2d31);

/// Builds the lookup table: `table[slot]` is the id of the backend owning `slot`, or
/// [`NO_BACKEND`] everywhere when no backend has a weight above zero.
///
/// `size` must be prime (so every skip in `1..size` walks all slots); errors on a size that is
/// not, on two backends with the same name (their permutations would be identical, and the
/// order between them undefined), and on a backend whose id is `NO_BACKEND` (its slots would
/// read as empty).
pub fn build_table(backends: &[MaglevBackend], size: u32) -> Result<Vec<u32>> {
    if size < 2 || !is_prime(size) {
        bail!("Maglev table size {size} is not a prime number");
    }
    let m = u64::from(size);
    let len = usize::try_from(size).context("Maglev table size does not fit in memory")?;

    // Name order makes the result independent of the caller's order.
    let mut sorted: Vec<&MaglevBackend> = backends.iter().collect();
    sorted.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    for pair in sorted.windows(2) {
        if pair[0].name == pair[1].name {
            bail!("duplicate Maglev backend name {:?}", pair[0].name);
        }
    }
    if let Some(b) = sorted.iter().find(|b| b.id == NO_BACKEND) {
        bail!(
            "backend {:?} has id {NO_BACKEND}, which marks an empty Maglev slot",
            b.name
        );
    }

    let mut table = Vec::new();
    table
        .try_reserve_exact(len)
        .with_context(|| format!("cannot allocate a Maglev table of {size} slots"))?;
    table.resize(len, NO_BACKEND);

    let live: Vec<&MaglevBackend> = sorted.into_iter().filter(|b| b.weight > 0).collect();
    if live.is_empty() {
        return Ok(table);
    }

    // Backends whose quota rounds to zero (more backends than slots, or a tiny weight) never
    // take a turn; the others' quotas still sum to `size`, so the table is always full.
    let mut active: Vec<Cursor> = live
        .iter()
        .zip(quotas(&live, m))
        .filter(|(_, quota)| *quota > 0)
        .map(|(b, quota)| Cursor::new(b, quota, m))
        .collect();

    // Each round, every backend still under quota claims its next preferred empty slot. Once a
    // backend reaches its quota it leaves `active`, so a round costs only the backends left and
    // the whole loop costs `size` claims plus the probes over taken slots.
    while !active.is_empty() {
        for cursor in &mut active {
            cursor.claim(&mut table, m)?;
        }
        active.retain(|c| c.taken < c.quota);
    }
    Ok(table)
}

/// Whether `n` is prime (trial division by 6k ± 1: at most ~11k iterations for any `u32`).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n < 4 {
        return true;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    // u64 so `d * d` cannot overflow near u32::MAX.
    let n = u64::from(n);
    let mut d: u64 = 5;
    while d * d <= n {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

/// A backend's position in its own permutation `(offset + j * skip) mod size`, j = `next`.
struct Cursor {
    id: u32,
    /// The `next`-th preference, kept incrementally to avoid a multiply and divide per probe.
    pos: u64,
    skip: u64,
    /// How many preferences have been tried; reaching `size` would mean the table is full.
    next: u64,
    quota: u64,
    taken: u64,
}

impl Cursor {
    fn new(backend: &MaglevBackend, quota: u64, m: u64) -> Self {
        let name = backend.name.as_bytes();
        let offset = siphash24(OFFSET_KEY.0, OFFSET_KEY.1, name) % m;
        // In 1..m: coprime with the prime m, so the permutation visits every slot once.
        let skip = siphash24(SKIP_KEY.0, SKIP_KEY.1, name) % (m - 1) + 1;
        Cursor {
            id: backend.id,
            pos: offset,
            skip,
            next: 0,
            quota,
            taken: 0,
        }
    }

    /// Takes the first empty slot in this backend's preference order.
    fn claim(&mut self, table: &mut [u32], m: u64) -> Result<()> {
        // Terminates: quotas sum to m, so while this backend is under quota an empty slot
        // exists, and its permutation reaches it within m steps. The bound turns a broken
        // invariant into an error instead of an endless loop.
        while self.next < m {
            let slot = self.pos;
            self.next += 1;
            self.pos += self.skip;
            if self.pos >= m {
                self.pos -= m;
            }
            let Some(entry) = usize::try_from(slot).ok().and_then(|s| table.get_mut(s)) else {
                break;
            };
            if *entry == NO_BACKEND {
                *entry = self.id;
                self.taken += 1;
                return Ok(());
            }
        }
        bail!(
            "internal error: Maglev table full before backend {} reached its quota",
            self.id
        )
    }
}

/// Slots per backend: `m * w / sum(w)` rounded by largest remainder (ties to the earlier name;
/// `live` is in name order and the sort is stable), so the result sums to exactly `m` and each
/// backend is within one slot of its exact share. u128 because `m * w` and the sum of many
/// `u32` weights can exceed u64.
fn quotas(live: &[&MaglevBackend], m: u64) -> Vec<u64> {
    let total: u128 = live.iter().map(|b| u128::from(b.weight)).sum();
    let m128 = u128::from(m);
    let mut quotas = Vec::with_capacity(live.len());
    let mut remainders = Vec::with_capacity(live.len());
    let mut assigned: u128 = 0;
    for (i, b) in live.iter().enumerate() {
        let share = m128 * u128::from(b.weight);
        let quota = share / total;
        assigned += quota;
        // quota <= m, so it fits in u64.
        quotas.push(u64::try_from(quota).unwrap_or(m));
        remainders.push((share % total, i));
    }
    // Fewer leftover slots than backends, since each floor loses less than one slot.
    let leftover = usize::try_from(m128.saturating_sub(assigned)).unwrap_or(0);
    remainders.sort_by_key(|&(remainder, _)| std::cmp::Reverse(remainder));
    for &(_, i) in remainders.iter().take(leftover) {
        if let Some(q) = quotas.get_mut(i) {
            *q += 1;
        }
    }
    quotas
}

/// SipHash-2-4 (Aumasson & Bernstein), written out so the table never depends on a hasher
/// whose output may change between Rust releases. Bytes are read little-endian explicitly, so
/// the result is the same on every host.
fn siphash24(k0: u64, k1: u64, data: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let le = |bytes: &[u8]| {
        bytes
            .iter()
            .rev()
            .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte))
    };
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let word = le(chunk);
        v[3] ^= word;
        sipround(&mut v);
        sipround(&mut v);
        v[0] ^= word;
    }
    // The length is taken mod 256, as the specification says.
    let last = le(chunks.remainder()) | ((data.len() as u64) << 56);
    v[3] ^= last;
    sipround(&mut v);
    sipround(&mut v);
    v[0] ^= last;
    v[2] ^= 0xff;
    for _ in 0..4 {
        sipround(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

fn sipround(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const M: u32 = 65537;

    /// Backend `i`: names look like the agent's (IPv4 and IPv6 literals), ids are `i`.
    fn backend(i: u32, weight: u32) -> MaglevBackend {
        let name = if i.is_multiple_of(2) {
            format!("198.18.{}.{}", i / 250, i % 250 + 1)
        } else {
            format!("2001:db8::{:x}", i + 1)
        };
        MaglevBackend {
            name,
            id: i,
            weight,
        }
    }

    fn equal(n: u32) -> Vec<MaglevBackend> {
        (0..n).map(|i| backend(i, 1)).collect()
    }

    fn build(backends: &[MaglevBackend], size: u32) -> Vec<u32> {
        build_table(backends, size).expect("valid input")
    }

    fn counts(table: &[u32]) -> HashMap<u32, u64> {
        let mut c = HashMap::new();
        for &id in table {
            *c.entry(id).or_insert(0) += 1;
        }
        c
    }

    /// Largest `|slots/weight - mean| / mean` over backends, mean = total slots / total weight,
    /// counting only backends whose exact share is at least `min_share` slots.
    fn max_deviation(backends: &[MaglevBackend], table: &[u32], min_share: f64) -> f64 {
        let c = counts(table);
        let total: f64 = backends.iter().map(|b| f64::from(b.weight)).sum();
        let mean = table.len() as f64 / total;
        backends
            .iter()
            .filter(|b| f64::from(b.weight) * mean >= min_share)
            .map(|b| {
                let slots = *c.get(&b.id).unwrap_or(&0) as f64;
                (slots / f64::from(b.weight) - mean).abs() / mean
            })
            .fold(0.0, f64::max)
    }

    /// Every backend within one slot of its exact share `m * w / sum(w)` (the best any integer
    /// table can do), and no slot empty.
    fn assert_exact_shares(backends: &[MaglevBackend], table: &[u32]) {
        assert!(table.iter().all(|&id| id != NO_BACKEND));
        let c = counts(table);
        let total: f64 = backends.iter().map(|b| f64::from(b.weight)).sum();
        for b in backends {
            let exact = table.len() as f64 * f64::from(b.weight) / total;
            let slots = *c.get(&b.id).unwrap_or(&0) as f64;
            assert!(
                (slots - exact).abs() < 1.0,
                "{}: {slots} slots, exact share {exact}",
                b.name
            );
        }
        assert_eq!(c.values().sum::<u64>(), table.len() as u64);
    }

    fn changed(a: &[u32], b: &[u32]) -> usize {
        a.iter().zip(b).filter(|(x, y)| x != y).count()
    }

    #[test]
    fn siphash_matches_reference_vectors() {
        // Key 00..0f; messages 00..(n-1). From the SipHash paper (Appendix A) and its
        // reference implementation's vectors.h.
        let (k0, k1) = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
        let msg: Vec<u8> = (0..64).collect();
        assert_eq!(siphash24(k0, k1, &msg[..0]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash24(k0, k1, &msg[..15]), 0xa129_ca61_49be_45e5);
    }

    proptest! {
        /// Same function as std's (deprecated) SipHasher fed raw bytes, whatever the key.
        #[test]
        fn siphash_matches_std(k0: u64, k1: u64, data in proptest::collection::vec(any::<u8>(), 0..80)) {
            #[allow(deprecated)]
            let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
            std::hash::Hasher::write(&mut h, &data);
            prop_assert_eq!(siphash24(k0, k1, &data), std::hash::Hasher::finish(&h));
        }
    }

    #[test]
    fn is_prime_small_and_large() {
        let primes: Vec<u32> = (0..60).filter(|&n| is_prime(n)).collect();
        assert_eq!(
            primes,
            [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59]
        );
        assert!(is_prime(65537));
        assert!(is_prime(655373));
        assert!(!is_prime(65535));
        assert!(!is_prime(65536));
        assert!(!is_prime(65539 * 3));
        assert!(is_prime(4_294_967_291)); // largest u32 prime
        assert!(!is_prime(u32::MAX));
        assert!(!is_prime(65521 * 65519)); // product of two large primes
    }

    #[test]
    fn size_must_be_prime() {
        let b = equal(3);
        for size in [0, 1, 4, 9, 65535, 65536, u32::MAX] {
            assert!(build_table(&b, size).is_err(), "size {size}");
            assert!(build_table(&[], size).is_err(), "size {size}");
        }
        assert_eq!(build(&b, 2).len(), 2);
        assert_eq!(build(&b, 3).len(), 3);
    }

    #[test]
    fn duplicate_names_and_reserved_id_are_errors() {
        let mut b = equal(5);
        b[3].name = b[1].name.clone();
        assert!(build_table(&b, 13).is_err());
        // Even if one of them is drained: the input is ambiguous.
        b[3].weight = 0;
        assert!(build_table(&b, 13).is_err());

        let mut b = equal(5);
        b[2].id = NO_BACKEND;
        assert!(build_table(&b, 13).is_err());
    }

    #[test]
    fn empty_list_gives_empty_table() {
        let t = build(&[], M);
        assert_eq!(t.len(), M as usize);
        assert!(t.iter().all(|&id| id == NO_BACKEND));
    }

    #[test]
    fn all_drained_gives_empty_table() {
        let b: Vec<_> = (0..10).map(|i| backend(i, 0)).collect();
        let t = build(&b, M);
        assert!(t.iter().all(|&id| id == NO_BACKEND));
    }

    #[test]
    fn single_backend_owns_every_slot() {
        for size in [2, 3, 13, M] {
            let t = build(&[backend(7, 3)], size);
            assert!(t.iter().all(|&id| id == 7));
        }
        // A drained neighbour changes nothing.
        let t = build(&[backend(7, 3), backend(8, 0)], M);
        assert!(t.iter().all(|&id| id == 7));
    }

    #[test]
    fn drained_backends_get_no_slots() {
        let mut b = equal(20);
        for i in [0, 5, 19] {
            b[i].weight = 0;
        }
        let t = build(&b, M);
        let c = counts(&t);
        for i in [0, 5, 19] {
            assert!(!c.contains_key(&(i as u32)));
        }
        let live: Vec<_> = b.iter().filter(|b| b.weight > 0).cloned().collect();
        assert_exact_shares(&live, &t);
        // Draining is the same as removing.
        assert_eq!(t, build(&live, M));
    }

    #[test]
    fn more_backends_than_slots_still_fills_every_slot() {
        // Equal weights: every exact share is 7/20, so the 7 first names get one slot each.
        let b = equal(20);
        let t = build(&b, 7);
        assert!(t.iter().all(|&id| id != NO_BACKEND));
        let c = counts(&t);
        assert_eq!(c.len(), 7);
        let mut names: Vec<_> = b.iter().map(|b| (&b.name, b.id)).collect();
        names.sort();
        for (_, id) in &names[..7] {
            assert_eq!(c.get(id), Some(&1));
        }
        // Unequal weights and the smallest table.
        let b: Vec<_> = (0..50).map(|i| backend(i, i % 7)).collect();
        for size in [2, 3, 5, 7, 11, 13, 31] {
            let t = build(&b, size);
            assert!(t.iter().all(|&id| id != NO_BACKEND), "size {size}");
            let live: Vec<_> = b.iter().filter(|b| b.weight > 0).cloned().collect();
            assert_exact_shares(&live, &t);
        }
    }

    #[test]
    fn huge_weights_do_not_overflow() {
        let b: Vec<_> = (0..100).map(|i| backend(i, u32::MAX - i)).collect();
        let t = build(&b, M);
        assert_exact_shares(&b, &t);
    }

    #[test]
    fn order_does_not_matter() {
        let b: Vec<_> = (0..40).map(|i| backend(i, 1 + i % 5)).collect();
        let t = build(&b, M);
        let mut rev = b.clone();
        rev.reverse();
        assert_eq!(t, build(&rev, M));
        let mut rot = b.clone();
        rot.rotate_left(17);
        assert_eq!(t, build(&rot, M));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn order_does_not_matter_prop(
            perm in Just((0..30u32).collect::<Vec<_>>()).prop_shuffle(),
            weights in proptest::collection::vec(0u32..50, 30),
        ) {
            let b: Vec<_> = (0..30).map(|i| backend(i, weights[i as usize])).collect();
            let shuffled: Vec<_> = perm.iter().map(|&i| b[i as usize].clone()).collect();
            prop_assert_eq!(build(&b, 4099), build(&shuffled, 4099));
        }
    }

    /// Pins the hash keys and the algorithm: if this changes, tables built by this version
    /// differ from those of older agents, and mixed-version hosts disagree during an upgrade.
    /// The expected values were cross-checked with an independent Python implementation.
    #[test]
    fn golden_table() {
        let b = [
            ("198.18.1.1", 0, 1),
            ("198.18.1.2", 1, 2),
            ("2001:db8::1", 2, 1),
        ]
        .map(|(name, id, weight)| MaglevBackend {
            name: name.into(),
            id,
            weight,
        });
        assert_eq!(build(&b, 13), [1, 1, 0, 1, 1, 2, 1, 0, 1, 2, 1, 2, 0]);
        let t = build(&b, M);
        assert_eq!(
            t[..32],
            [
                0, 1, 1, 0, 1, 2, 1, 2, 2, 2, 1, 1, 0, 1, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 0, 2, 2, 2,
                2, 2, 2, 0
            ]
        );
        let c = counts(&t);
        assert_eq!((c[&0], c[&1], c[&2]), (16384, 32769, 16384));
    }

    /// Measured max deviation of slots/weight from the mean: 0.011% (N = 10), 0.096% (N = 100).
    #[test]
    fn equal_weights_balance() {
        for n in [1, 2, 3, 10, 99, 100] {
            let b = equal(n);
            let t = build(&b, M);
            assert_exact_shares(&b, &t);
            let dev = max_deviation(&b, &t, 0.0);
            println!("equal weights, N={n}: max deviation {:.4}%", dev * 100.0);
            assert!(dev < 0.01, "n={n}: {dev}");
        }
    }

    /// Measured max deviation: 0.018% (weights 1, 10, 100, 1000: 58.99 slots exact for weight 1,
    /// 59 given).
    #[test]
    fn skewed_weights_balance() {
        let b: Vec<_> = [1, 10, 100, 1000]
            .iter()
            .enumerate()
            .map(|(i, &w)| backend(i as u32, w))
            .collect();
        let t = build(&b, M);
        assert_exact_shares(&b, &t);
        let dev = max_deviation(&b, &t, 0.0);
        println!("weights 1/10/100/1000: max deviation {:.4}%", dev * 100.0);
        assert!(dev < 0.01, "{dev}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// With weights 1..=1000 a backend's exact share can be below one slot (weight 1 next
        /// to 99 backends of weight 1000: 65537/99001 = 0.66 slots), so no integer table can
        /// hold every backend within 1% of the mean. What holds for all: each backend is within
        /// one slot of its exact share; hence within 1% of the mean once that share is >= 100
        /// slots. Measured over 2000 random sets: max 0.54% for shares >= 100 slots; 37% over
        /// all backends (a share of 1.27 slots given 1).
        #[test]
        fn random_weights_balance(weights in proptest::collection::vec(1u32..=1000, 1..=100)) {
            let b: Vec<_> = weights.iter().enumerate().map(|(i, &w)| backend(i as u32, w)).collect();
            let t = build(&b, M);
            assert_exact_shares(&b, &t);
            let dev = max_deviation(&b, &t, 100.0);
            prop_assert!(dev < 0.01, "{}", dev);
        }
    }

    /// Removes backend `gone` from `n` equal ones; returns (changed slots, changed slots that
    /// belonged to `gone`).
    fn remove_one(n: u32, gone: u32) -> (usize, usize) {
        let before_b = equal(n);
        let after_b: Vec<_> = before_b.iter().filter(|b| b.id != gone).cloned().collect();
        let before = build(&before_b, M);
        let after = build(&after_b, M);
        let diff = changed(&before, &after);
        let own = before
            .iter()
            .zip(&after)
            .filter(|(x, y)| x != y && **x == gone)
            .count();
        // Every slot of the removed backend moves, of course.
        assert_eq!(own, before.iter().filter(|&&x| x == gone).count());
        (diff, own)
    }

    /// Adds backend `n` to `n` equal ones; returns (changed slots, changed slots that went to
    /// the new backend).
    fn add_one(n: u32) -> (usize, usize) {
        let before = build(&equal(n), M);
        let after = build(&equal(n + 1), M);
        let diff = changed(&before, &after);
        let to_new = after
            .iter()
            .zip(&before)
            .filter(|(x, y)| x != y && **x == n)
            .count();
        assert_eq!(to_new, after.iter().filter(|&&x| x == n).count());
        (diff, to_new)
    }

    /// Bound: removing one of N equal backends changes at most M/N + 1% of M slots.
    #[test]
    fn removal_disruption_is_bounded() {
        let m = M as usize;
        for n in 2..=100u32 {
            // Vary which backend leaves with n, deterministically.
            let gone = (n * 37 + 11) % n;
            let (diff, _) = remove_one(n, gone);
            let bound = m / n as usize + m / 100;
            assert!(diff <= bound, "n={n}: {diff} changed > {bound}");
        }
    }

    /// Bound: adding one backend to N equal ones changes at most M/(N+1) + 1% of M slots.
    #[test]
    fn addition_disruption_is_bounded() {
        let m = M as usize;
        for n in 2..=100u32 {
            let (diff, _) = add_one(n);
            let bound = m / (n as usize + 1) + m / 100;
            assert!(diff <= bound, "n={n}: {diff} changed > {bound}");
        }
    }

    /// Every possible removal (and the addition) at N = 10 and N = 100, M = 65537. Measured
    /// (names as in `backend()`; the minimum possible is M/N resp. M/(N+1)):
    ///
    /// | case           | changed slots, % of M                     | of which removed/new backend's |
    /// |----------------|-------------------------------------------|--------------------------------|
    /// | remove 1 of 10 | mean 6712 (10.24%), worst 6751 (10.30%)   | mean 97.6%, worst 97.1%        |
    /// | add 10 -> 11   | 6136 (9.36%; minimum 9.09%)               | 97.1%                          |
    /// | remove 1 of 100| mean 1020 (1.56%), worst 1060 (1.62%)     | mean 64.2%, worst 61.8%        |
    /// | add 100 -> 101 | 1013 (1.55%; minimum 0.99%)               | 64.1%                          |
    ///
    /// Maglev also moves some slots between surviving backends (a freed slot changes what the
    /// others claim later in the population loop), hence the excess over the minimum: on
    /// average 0.23% of M at N = 10 and 0.57% at N = 100. A one-off sweep (not kept here) over
    /// 24 naming schemes, every removal and the addition for N = 2..=100 (123,552 cases) found
    /// the excess above 1% of M in 8 cases, all at N = 50, at most 1.03%: the bound asserted
    /// below is typical, not guaranteed. Run with `--nocapture` to print the figures.
    #[test]
    fn disruption_n10_n100() {
        let m = M as usize;
        for n in [10u32, 100] {
            let bound = m / n as usize + m / 100;
            let (mut sum, mut sum_own, mut worst, mut worst_share) = (0, 0, 0, 1.0f64);
            for gone in 0..n {
                let (diff, own) = remove_one(n, gone);
                assert!(diff <= bound, "n={n} gone={gone}: {diff} changed > {bound}");
                sum += diff;
                sum_own += own;
                worst = worst.max(diff);
                worst_share = worst_share.min(own as f64 / diff as f64);
            }
            let pct = |slots: f64| slots / f64::from(M) * 100.0;
            println!(
                "remove 1 of {n}: mean {:.0} ({:.2}% of M), worst {worst} ({:.2}%), minimum {:.2}%; \
                 removed backend's share of the changes: mean {:.1}%, worst {:.1}%",
                sum as f64 / f64::from(n),
                pct(sum as f64 / f64::from(n)),
                pct(worst as f64),
                100.0 / f64::from(n),
                sum_own as f64 / sum as f64 * 100.0,
                worst_share * 100.0
            );
            let (diff, to_new) = add_one(n);
            assert!(diff <= m / (n as usize + 1) + m / 100);
            println!(
                "add 1 to {n}: {diff} ({:.2}% of M), minimum {:.2}%; new backend's share {:.1}%",
                pct(diff as f64),
                100.0 / f64::from(n + 1),
                to_new as f64 / diff as f64 * 100.0
            );
        }
    }

    #[test]
    fn thousand_backends_fill_every_slot() {
        let b: Vec<_> = (0..1000).map(|i| backend(i, 1 + i % 3)).collect();
        let t = build(&b, M);
        assert!(t.iter().all(|&id| id != NO_BACKEND));
        assert_exact_shares(&b, &t);
        assert_eq!(counts(&t).len(), 1000);
    }

    /// Release build on the development machine (2 CPUs), best of 50: N = 100: 1.2 ms equal,
    /// 0.93 ms weighted; N = 1000: 1.24 ms equal, 1.29 ms weighted. Prints only:
    /// `cargo test --release -p lb-agent --lib maglev -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_build_time() {
        for n in [100u32, 1000] {
            let b: Vec<_> = (0..n).map(|i| backend(i, 1)).collect();
            let w: Vec<_> = (0..n).map(|i| backend(i, 1 + i % 1000)).collect();
            for (label, set) in [("equal", &b), ("weighted", &w)] {
                let runs = 50;
                let mut best = std::time::Duration::MAX;
                let start = std::time::Instant::now();
                for _ in 0..runs {
                    let t0 = std::time::Instant::now();
                    let t = build(std::hint::black_box(set), M);
                    best = best.min(t0.elapsed());
                    std::hint::black_box(t);
                }
                println!(
                    "M={M} N={n} {label}: mean {:?}, best {:?}",
                    start.elapsed() / runs,
                    best
                );
            }
        }
    }
}
