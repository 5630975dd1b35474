use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

fn empty(n: u32) -> BackendIds {
    BackendIds::from_entries((0..n).map(|_| (false, 0)))
}

#[test]
fn allocates_lowest_free_and_bumps_generation() {
    let mut ids = BackendIds::from_entries([(true, 7), (false, 3), (false, 0)]);
    assert_eq!(ids.allocate(), Some((1, 4)));
    assert_eq!(ids.allocate(), Some((2, 1)));
    assert_eq!(ids.allocate(), None, "all three taken");
    assert_eq!(ids.generation(0), 7, "an adopted id keeps its generation");
}

#[test]
fn freed_id_is_reused_with_a_newer_generation() {
    let mut ids = empty(4);
    let (a, ga) = ids.allocate().unwrap();
    let (_, _) = ids.allocate().unwrap();
    let written = ids.free(a);
    assert!(
        written > ga,
        "the free entry no longer matches the old flows"
    );
    let (again, g2) = ids.allocate().unwrap();
    assert_eq!(again, a, "the lowest free id is reused");
    assert!(g2 > written);
}

#[test]
fn bump_changes_only_the_generation() {
    let mut ids = empty(2);
    let (id, g) = ids.allocate().unwrap();
    assert_eq!(ids.bump(id), g + 1);
    assert!(ids.is_taken(id));
    assert_eq!(ids.taken().collect::<Vec<_>>(), vec![id]);
}

#[test]
fn out_of_range_ids_are_harmless() {
    let mut ids = empty(1);
    assert_eq!(ids.bump(5), 0);
    assert_eq!(ids.free(5), 0);
    assert!(!ids.is_taken(5));
    assert_eq!(ids.allocate(), Some((0, 1)));
}

#[test]
fn vips_keep_adopted_ids_and_new_ones_reuse_those_of_removed_vips() {
    // 60 VIPs left by an earlier agent in a map of 64; 5 of them changed port (new keys).
    let adopted: HashMap<u32, u32> = (0..60).map(|k| (k, k)).collect();
    let wanted: Vec<u32> = (0..55).chain(100..105).collect();
    let ids = assign_vip_ids(&adopted, &wanted, 64).expect("60 VIPs fit in 64");
    assert!((0..55).all(|k| ids[&k] == k), "kept VIPs keep their ids");
    let new: BTreeSet<u32> = (100..105).map(|k| ids[&k]).collect();
    assert_eq!(
        new,
        (55..60).collect(),
        "ids of the removed VIPs are reused first"
    );
    assert_eq!(
        assign_vip_ids(&adopted, &(0..65).collect::<Vec<_>>(), 64),
        None
    );
}

#[test]
fn an_adopted_id_beyond_the_map_is_replaced() {
    let adopted: HashMap<u32, u32> = [(7, 9)].into();
    let ids = assign_vip_ids(&adopted, &[7], 4).unwrap();
    assert_eq!(ids[&7], 0);
    assert_eq!(next_vip_id(&[0, 1].into(), 3), Some(2));
    assert_eq!(next_vip_id(&[0, 1].into(), 2), None);
}

#[derive(Clone, Debug)]
enum Op {
    Allocate,
    Free(usize),
    Bump(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Allocate),
        2 => any::<usize>().prop_map(Op::Free),
        1 => any::<usize>().prop_map(Op::Bump),
    ]
}

proptest! {
    /// VIP ids are distinct and below the map's size, and a VIP kept keeps its id.
    #[test]
    fn vip_ids_never_collide(
        adopted in proptest::collection::hash_map(0u32..40, 0u32..40, 0..30),
        wanted in proptest::collection::btree_set(0u32..60, 0..40),
        max in 1u32..48,
    ) {
        let wanted: Vec<u32> = wanted.into_iter().collect();
        match assign_vip_ids(&adopted, &wanted, max) {
            Some(ids) => {
                let distinct: BTreeSet<u32> = ids.values().copied().collect();
                prop_assert_eq!(distinct.len(), wanted.len());
                prop_assert!(distinct.iter().all(|id| *id < max));
                // Adopted ids may collide in a corrupt map; among distinct ones, each is kept.
                let mut counts = std::collections::HashMap::new();
                for k in &wanted {
                    if let Some(id) = adopted.get(k) {
                        *counts.entry(*id).or_insert(0) += 1;
                    }
                }
                for k in &wanted {
                    if let Some(id) = adopted.get(k) {
                        if *id < max && counts[id] == 1 {
                            prop_assert_eq!(ids[k], *id);
                        }
                    }
                }
            }
            None => prop_assert!(wanted.len() as u32 > max),
        }
    }

    /// Whatever the order of allocations, frees and bumps: no two live backends share an id,
    /// an adopted taken id is never handed out, and every (id, generation) a backend is given
    /// is new, so no flow of an earlier user of the id can match it.
    #[test]
    fn ids_never_collide(
        adopted in proptest::collection::vec((any::<bool>(), 0u32..1000), 1..40),
        ops in proptest::collection::vec(op(), 0..200),
    ) {
        let mut ids = BackendIds::from_entries(adopted.iter().copied());
        let mut live: Vec<u32> = adopted
            .iter()
            .enumerate()
            .filter(|(_, (taken, _))| *taken)
            .map(|(i, _)| i as u32)
            .collect();
        let mut seen: HashMap<u32, u32> = adopted
            .iter()
            .enumerate()
            .map(|(i, (_, g))| (i as u32, *g))
            .collect();
        for op in ops {
            match op {
                Op::Allocate => match ids.allocate() {
                    Some((id, generation)) => {
                        prop_assert!(!live.contains(&id), "id {id} given twice");
                        prop_assert!(generation > seen[&id], "generation reused for {id}");
                        seen.insert(id, generation);
                        live.push(id);
                    }
                    None => prop_assert_eq!(live.len() as u32, ids.capacity()),
                },
                Op::Free(i) if !live.is_empty() => {
                    let id = live.swap_remove(i % live.len());
                    let generation = ids.free(id);
                    prop_assert!(generation > seen[&id]);
                    seen.insert(id, generation);
                }
                Op::Bump(i) if !live.is_empty() => {
                    let id = live[i % live.len()];
                    let generation = ids.bump(id);
                    prop_assert!(generation > seen[&id]);
                    seen.insert(id, generation);
                }
                _ => {}
            }
            let mut taken: Vec<u32> = ids.taken().collect();
            let mut expected = live.clone();
            taken.sort_unstable();
            expected.sort_unstable();
            prop_assert_eq!(taken, expected);
        }
    }
}
