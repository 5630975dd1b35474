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
fn vip_keeps_its_adopted_id_unless_taken() {
    let used: BTreeSet<u32> = [0].into();
    let reserved: BTreeSet<u32> = [1, 3].into();
    assert_eq!(vip_id(Some(3), &used, &reserved, 8), Some(3));
    assert_eq!(
        vip_id(Some(0), &used, &reserved, 8),
        Some(2),
        "0 is taken: lowest unreserved"
    );
    assert_eq!(vip_id(None, &used, &reserved, 8), Some(2));
    assert_eq!(
        vip_id(None, &used, &reserved, 2),
        None,
        "0 used, 1 reserved"
    );
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
