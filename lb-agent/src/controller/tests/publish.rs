use super::*;
use std::net::Ipv4Addr;

fn member(id: u32, last: u8) -> Member {
    Member {
        id,
        weight: 1,
        address: IpAddr::V4(Ipv4Addr::new(198, 18, 1, last)),
    }
}

#[test]
fn digest_depends_on_addresses_not_ids() {
    let a = digest(&[0, 1, 0, NO_BACKEND], &[member(0, 1), member(1, 2)]);
    let b = digest(&[7, 9, 7, NO_BACKEND], &[member(7, 1), member(9, 2)]);
    assert_eq!(
        a, b,
        "another balancer numbers the same backends differently"
    );
    let c = digest(&[0, 1, 1, NO_BACKEND], &[member(0, 1), member(1, 2)]);
    assert_ne!(a, c);
    assert_eq!(a.len(), 16);
}

#[test]
fn moves_are_dated_from_their_first_publication() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(1);
    let mut since = HashMap::new();
    let moved_slot = Slot::moved(1, Some(0));
    note_moves(&mut since, &[Slot::EMPTY, moved_slot], t0);
    assert_eq!(since, HashMap::from([(1, t0)]));
    note_moves(&mut since, &[moved_slot, moved_slot], t1);
    assert_eq!(
        since,
        HashMap::from([(0, t1), (1, t0)]),
        "slot 1 keeps its first time"
    );
    note_moves(&mut since, &[Slot::EMPTY, Slot::EMPTY], t1);
    assert!(since.is_empty(), "stable slots are forgotten");
}

#[test]
fn slots_are_counted_per_backend() {
    let counts = slot_counts(&[3, 3, 5, NO_BACKEND]);
    assert_eq!(counts.get(&3), Some(&2));
    assert_eq!(counts.get(&5), Some(&1));
    let input = maglev_input(&[member(4, 9)]);
    assert_eq!((input[0].id, input[0].name.as_str()), (4, "198.18.1.9"));
}
