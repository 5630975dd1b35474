use super::*;
use lb_common::IPPROTO_TCP;
use std::net::Ipv4Addr;

fn key(last: u8, port: u16) -> VipKey {
    VipKey::new(Ipv4Addr::new(198, 18, 10, last).into(), port, IPPROTO_TCP)
}

fn meta(id: u32, active_table: u32) -> VipMeta {
    VipMeta {
        id,
        flags: 0,
        active_table,
        _reserved: 0,
    }
}

fn home(k: &VipKey) -> u32 {
    vip_index_slot(&k.words())
}

/// Three keys that share one home.
fn colliding() -> [VipKey; 3] {
    let first = key(1, 80);
    let mut same = (1..=u16::MAX)
        .map(|port| key(2, port))
        .filter(|k| home(k) == home(&first));
    let (Some(b), Some(c)) = (same.next(), same.next()) else {
        panic!("no two ports of 198.18.10.2 share a home with 198.18.10.1:80");
    };
    [first, b, c]
}

#[test]
fn a_key_goes_in_words_first_id_last() {
    let mut plan = Plan::new();
    let (k, m) = (key(1, 80), meta(3, 0));
    let s = home(&k);
    assert_eq!(
        plan.set(&k, &m),
        [
            Step::Quiesce(s),
            Step::Key(s, k),
            Step::Meta(s, m),
            Step::Id(s, 3)
        ]
    );
    assert!(plan.indexed(&k));
}

#[test]
fn a_table_flip_stores_the_meta_alone_and_nothing_unchanged_is_stored() {
    let mut plan = Plan::new();
    let k = key(1, 80);
    plan.set(&k, &meta(3, 0));
    assert_eq!(
        plan.set(&k, &meta(3, 1)),
        [Step::Meta(home(&k), meta(3, 1))]
    );
    assert_eq!(plan.set(&k, &meta(3, 1)), []);
}

#[test]
fn a_new_id_for_a_key_empties_the_slot_first() {
    let mut plan = Plan::new();
    let k = key(1, 80);
    let s = home(&k);
    plan.set(&k, &meta(3, 0));
    assert_eq!(
        plan.set(&k, &meta(4, 0)),
        [
            Step::Id(s, VIP_INDEX_EMPTY),
            Step::Quiesce(s),
            Step::Meta(s, meta(4, 0)),
            Step::Id(s, 4)
        ]
    );
}

#[test]
fn keys_whose_home_is_taken_spill_and_the_flag_clears_with_the_last() {
    let mut plan = Plan::new();
    let [a, b, c] = colliding();
    let s = home(&a);
    plan.set(&a, &meta(0, 0));
    assert_eq!(plan.set(&b, &meta(1, 0)), [Step::Spill(s, true)]);
    assert_eq!(plan.set(&c, &meta(2, 0)), []);
    // A spilled key's meta is in VIPS: nothing to store here.
    assert_eq!(plan.set(&b, &meta(1, 1)), []);
    assert!(plan.indexed(&a) && !plan.indexed(&b) && !plan.indexed(&c));
    assert_eq!(plan.remove(&b), []);
    assert_eq!(plan.remove(&c), [Step::Spill(s, false)]);
    assert_eq!(plan.remove(&a), [Step::Id(s, VIP_INDEX_EMPTY)]);
    assert_eq!(plan.remove(&a), []);
}

#[test]
fn a_spilled_key_moves_in_when_its_home_is_free_then_the_flag_clears() {
    let mut plan = Plan::new();
    let [a, b, _] = colliding();
    let s = home(&a);
    plan.set(&a, &meta(0, 0));
    plan.set(&b, &meta(1, 0));
    plan.remove(&a);
    assert_eq!(
        plan.set(&b, &meta(1, 1)),
        [
            Step::Quiesce(s),
            Step::Key(s, b),
            Step::Meta(s, meta(1, 1)),
            Step::Id(s, 1),
            Step::Spill(s, false)
        ]
    );
    assert!(plan.indexed(&b));
}

#[test]
fn removing_an_unknown_key_stores_nothing() {
    assert_eq!(Plan::new().remove(&key(9, 80)), []);
}
