use super::*;

const DRAIN: Duration = Duration::from_secs(30);

fn wanted() -> BTreeSet<IpAddr> {
    ["198.18.10.1", "2001:db8:10::1"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect()
}

#[test]
fn normal_announces_what_can_serve_without_the_community() {
    let m = Maintenance::default();
    assert_eq!(m.phase(), Phase::Normal);
    assert_eq!(
        m.announcement(&wanted()),
        Announcement {
            prefixes: wanted(),
            graceful_shutdown: false
        }
    );
    assert_eq!(m.status(Instant::now()), MaintenanceStatus::default());
}

#[test]
fn on_drains_with_the_community_then_withdraws_at_the_deadline() {
    let t0 = Instant::now();
    let mut m = Maintenance::default();
    assert!(m.set(true, t0, DRAIN));
    assert_eq!(m.phase(), Phase::Draining);
    assert_eq!(m.deadline(), Some(t0 + DRAIN));
    assert_eq!(
        m.announcement(&wanted()),
        Announcement {
            prefixes: wanted(),
            graceful_shutdown: true
        }
    );
    let s = m.status(t0 + Duration::from_secs(10));
    assert!(s.on);
    assert_eq!(s.drain_left_ms, Some(20_000));

    assert!(!m.tick(t0 + DRAIN - Duration::from_millis(1)), "not yet");
    assert!(m.tick(t0 + DRAIN));
    assert_eq!(m.phase(), Phase::Withdrawn);
    assert_eq!(m.deadline(), None);
    assert!(m.announcement(&wanted()).prefixes.is_empty());
    assert_eq!(
        m.status(t0 + DRAIN),
        MaintenanceStatus {
            on: true,
            phase: Phase::Withdrawn,
            drain_left_ms: None
        }
    );
}

#[test]
fn a_second_on_keeps_the_first_deadline() {
    let t0 = Instant::now();
    let mut m = Maintenance::default();
    m.set(true, t0, DRAIN);
    assert!(!m.set(true, t0 + Duration::from_secs(20), DRAIN));
    assert_eq!(m.deadline(), Some(t0 + DRAIN));
    // Nor does one after the withdrawal start another drain.
    m.tick(t0 + DRAIN);
    assert!(!m.set(true, t0 + DRAIN * 2, DRAIN));
    assert_eq!(m.phase(), Phase::Withdrawn);
}

#[test]
fn off_announces_normally_from_any_phase() {
    let t0 = Instant::now();
    for advance in [Duration::ZERO, DRAIN] {
        let mut m = Maintenance::default();
        m.set(true, t0, DRAIN);
        m.tick(t0 + advance);
        assert!(m.set(false, t0 + advance, DRAIN));
        assert_eq!(m, Maintenance::default());
        assert_eq!(m.announcement(&wanted()).prefixes, wanted());
    }
    // Off while off: nothing happens.
    assert!(!Maintenance::default().set(false, t0, DRAIN));
}

#[test]
fn a_zero_drain_withdraws_at_once_and_a_late_wake_up_too() {
    let t0 = Instant::now();
    let mut m = Maintenance::default();
    assert!(m.set(true, t0, Duration::ZERO));
    assert_eq!(m.phase(), Phase::Withdrawn);
    // The task woke long after the deadline: one tick ends the drain.
    let mut m = Maintenance::default();
    m.set(true, t0, DRAIN);
    assert!(m.tick(t0 + DRAIN * 10));
    assert_eq!(m.phase(), Phase::Withdrawn);
}

#[test]
fn phase_words_in_json() {
    let s = MaintenanceStatus {
        on: true,
        phase: Phase::Draining,
        drain_left_ms: Some(1500),
    };
    assert_eq!(
        serde_json::to_string(&s).unwrap(),
        r#"{"on":true,"phase":"draining","drain_left_ms":1500}"#
    );
    let names: Vec<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
    assert_eq!(names, ["normal", "draining", "withdrawn"]);
}
