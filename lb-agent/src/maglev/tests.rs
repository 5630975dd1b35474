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
            0, 1, 1, 0, 1, 2, 1, 2, 2, 2, 1, 1, 0, 1, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 0, 2, 2, 2, 2,
            2, 2, 0
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
