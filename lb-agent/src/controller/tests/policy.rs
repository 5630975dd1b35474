use super::*;
use proptest::prelude::*;
use std::net::Ipv4Addr;

const SLOW: Duration = Duration::from_secs(10);

fn backend(id: u32, admin: AdminState, health: Health) -> Candidate {
    Candidate {
        id,
        address: IpAddr::V4(Ipv4Addr::new(198, 18, 1, id as u8)),
        weight: 100,
        weight_override: None,
        admin,
        health,
        up_for: None,
    }
}

fn ids(plan: &TablePlan) -> Vec<u32> {
    plan.members.iter().map(|m| m.id).collect()
}

#[test]
fn only_active_and_up_backends_get_weight() {
    let c = [
        backend(0, AdminState::Active, Health::Up),
        backend(1, AdminState::Active, Health::Down),
        backend(2, AdminState::Drain, Health::Up),
        backend(3, AdminState::Disabled, Health::Up),
    ];
    let p = plan(&c, AllDown::FailOpen, SLOW, false);
    assert_eq!(ids(&p), vec![0]);
    assert!(!p.fail_open);
    assert!(p.serving());
    // A drained backend keeps its flows; a disabled or down one does not.
    assert_eq!(p.keep, [0, 2].into());
}

#[test]
fn fail_open_publishes_every_active_backend_when_all_are_down() {
    let c = [
        backend(0, AdminState::Active, Health::Down),
        backend(1, AdminState::Drain, Health::Down),
        backend(2, AdminState::Active, Health::Down),
    ];
    let p = plan(&c, AllDown::FailOpen, SLOW, false);
    assert!(p.fail_open);
    assert_eq!(ids(&p), vec![0, 2]);
    assert_eq!(p.weights(), vec![(0, 100), (2, 100)]);
    assert!(
        p.keep.is_empty(),
        "no backend is up and the live table was not fail-open"
    );
    let p = plan(&c, AllDown::FailOpen, SLOW, true);
    assert_eq!(p.keep, [0, 2].into(), "a fail-open table keeps its flows");
}

#[test]
fn drop_policy_publishes_an_empty_table() {
    let c = [backend(0, AdminState::Active, Health::Down)];
    let p = plan(&c, AllDown::Drop, SLOW, false);
    assert!(!p.fail_open);
    assert!(!p.serving());
}

#[test]
fn slow_start_ramps_a_returning_backend() {
    let mut b = backend(0, AdminState::Active, Health::Up);
    b.up_for = Some(Duration::ZERO);
    assert_eq!(weight(&b, SLOW), 10, "a tenth to begin with");
    b.up_for = Some(SLOW / 2);
    assert_eq!(weight(&b, SLOW), 55);
    b.up_for = Some(SLOW);
    assert_eq!(weight(&b, SLOW), 100);
    assert_eq!(weight(&b, Duration::ZERO), 100, "no slow start");
}

#[test]
fn a_weight_override_is_the_weight_in_force() {
    let mut c = [
        backend(0, AdminState::Active, Health::Up),
        backend(1, AdminState::Active, Health::Up),
    ];
    c[0].weight_override = Some(300);
    assert_eq!(c[0].weight_in_force(), 300);
    assert_eq!(
        c[1].weight_in_force(),
        100,
        "no override: the file's weight"
    );
    let p = plan(&c, AllDown::FailOpen, SLOW, false);
    assert_eq!(p.weights(), vec![(0, 300), (1, 100)]);
    // Lower than the file's too.
    c[0].weight_override = Some(1);
    assert_eq!(
        plan(&c, AllDown::FailOpen, SLOW, false).weights(),
        vec![(0, 1), (1, 100)]
    );
}

#[test]
fn an_override_does_not_bring_back_a_backend_that_takes_no_new_flows() {
    for (admin, health) in [
        (AdminState::Drain, Health::Up),
        (AdminState::Disabled, Health::Up),
        (AdminState::Active, Health::Down),
    ] {
        let mut b = backend(0, admin, health);
        b.weight_override = Some(500);
        assert_eq!(weight(&b, SLOW), 0, "{admin:?} {health:?}");
        let p = plan(
            &[b, backend(1, AdminState::Active, Health::Up)],
            AllDown::FailOpen,
            SLOW,
            false,
        );
        assert_eq!(ids(&p), vec![1], "{admin:?} {health:?}");
    }
    // A drained backend with an override still keeps its established flows.
    let mut drained = backend(0, AdminState::Drain, Health::Up);
    drained.weight_override = Some(500);
    let p = plan(&[drained], AllDown::FailOpen, SLOW, false);
    assert!(p.keep.contains(&0));
}

#[test]
fn slow_start_ramps_to_the_override() {
    let mut b = backend(0, AdminState::Active, Health::Up);
    b.weight_override = Some(1000);
    b.up_for = Some(Duration::ZERO);
    assert_eq!(
        weight(&b, SLOW),
        100,
        "a tenth of the override to begin with"
    );
    b.up_for = Some(SLOW / 2);
    assert_eq!(weight(&b, SLOW), 550);
    b.up_for = Some(SLOW);
    assert_eq!(
        weight(&b, SLOW),
        1000,
        "ends at the override, not the file's 100"
    );
}

#[test]
fn fail_open_publishes_the_weight_in_force() {
    let mut c = [
        backend(0, AdminState::Active, Health::Down),
        backend(1, AdminState::Active, Health::Down),
    ];
    c[1].weight_override = Some(7);
    let p = plan(&c, AllDown::FailOpen, SLOW, false);
    assert!(p.fail_open);
    assert_eq!(p.weights(), vec![(0, 100), (1, 7)]);
}

fn admin() -> impl Strategy<Value = AdminState> {
    prop_oneof![
        Just(AdminState::Active),
        Just(AdminState::Drain),
        Just(AdminState::Disabled)
    ]
}

fn health() -> impl Strategy<Value = Health> {
    prop_oneof![Just(Health::Up), Just(Health::Down)]
}

fn candidates() -> impl Strategy<Value = Vec<Candidate>> {
    proptest::collection::vec(
        (
            admin(),
            health(),
            1u32..=10_000,
            proptest::option::of(1u32..=10_000),
            proptest::option::of(0u64..20_000),
        ),
        0..12,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(
                |(i, (admin, health, weight, weight_override, up_ms))| Candidate {
                    id: i as u32,
                    address: IpAddr::V4(Ipv4Addr::new(198, 18, 2, i as u8)),
                    weight,
                    weight_override,
                    admin,
                    health,
                    up_for: up_ms.map(Duration::from_millis),
                },
            )
            .collect()
    })
}

proptest! {
    /// fail-open never publishes an empty table while a backend is active.
    #[test]
    fn fail_open_never_empty_while_a_backend_is_active(c in candidates(), live in any::<bool>()) {
        let p = plan(&c, AllDown::FailOpen, SLOW, live);
        if c.iter().any(|b| b.admin == AdminState::Active) {
            prop_assert!(p.serving());
        }
        prop_assert!(p.members.iter().all(|m| m.weight > 0));
    }

    /// Members are exactly the backends with a weight; never a disabled or drained one
    /// unless fail-open (which takes only active ones).
    #[test]
    fn members_are_active(c in candidates(), live in any::<bool>(), drop in any::<bool>()) {
        let all_down = if drop { AllDown::Drop } else { AllDown::FailOpen };
        let p = plan(&c, all_down, SLOW, live);
        for m in &p.members {
            let b = &c[m.id as usize];
            prop_assert_eq!(b.admin, AdminState::Active);
            prop_assert!(m.weight <= b.weight_in_force());
        }
        prop_assert!(p.keep.iter().all(|id| c[*id as usize].admin != AdminState::Disabled));
    }

    /// Slow start is monotonic: a backend's weight never falls as its clock advances, starts
    /// above zero and ends at its full weight.
    #[test]
    fn slow_start_is_monotonic(full in 1u32..=10_000, a in 0u64..30_000, b in 0u64..30_000,
                               window in 0u64..20_000) {
        let window = Duration::from_millis(window);
        let mut c = backend(0, AdminState::Active, Health::Up);
        c.weight = full;
        let (lo, hi) = (a.min(b), a.max(b));
        c.up_for = Some(Duration::from_millis(lo));
        let w_lo = weight(&c, window);
        c.up_for = Some(Duration::from_millis(hi));
        let w_hi = weight(&c, window);
        prop_assert!(w_lo >= 1 && w_lo <= w_hi && w_hi <= full);
        c.up_for = Some(window);
        prop_assert_eq!(weight(&c, window), full);
    }
}
