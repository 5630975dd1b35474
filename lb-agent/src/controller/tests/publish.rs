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
fn slots_are_counted_per_backend_id() {
    let members = [member(3, 1), member(5, 2)];
    let mut layouts = crate::maglev::layout::Layouts::default();
    let layout = layouts.get(&pool(&members), 7).unwrap();
    let ids = HashMap::from([(members[0].address, 3), (members[1].address, 5)]);
    let counts = slot_counts(&layout, &ids);
    assert_eq!(counts.values().sum::<u32>(), 7);
    assert!(counts[&3] >= 3 && counts[&5] >= 3, "{counts:?}");
    let table = layout.table(|m| id_of(&ids, m));
    assert_eq!(table.iter().filter(|&&id| id == 3).count() as u32, counts[&3]);
}
