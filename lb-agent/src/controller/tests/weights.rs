use super::*;
use crate::config::Weight;

fn w(n: u32) -> Weight {
    match Weight::new(n) {
        Ok(w) => w,
        Err(e) => panic!("{n}: {e}"),
    }
}

#[test]
fn the_files_weight_is_no_override() {
    assert_eq!(override_for(100, w(300)), Some(300));
    assert_eq!(override_for(100, w(1)), Some(1));
    assert_eq!(
        override_for(100, w(100)),
        None,
        "setting the file's weight removes it"
    );
}

#[test]
fn the_answer_names_the_weight_its_origin_and_the_backend() {
    let addr: IpAddr = "198.18.1.2".parse().unwrap();
    assert_eq!(
        answer("web", addr, 100, Some(300), AdminState::Active, Health::Up),
        "backend 198.18.1.2 of VIP web: weight 300 (override, config 100) until the next reload"
    );
    assert_eq!(
        answer("web", addr, 100, None, AdminState::Active, Health::Up),
        "backend 198.18.1.2 of VIP web: weight 100 (config, no override)"
    );
}

#[test]
fn the_answer_says_why_the_table_does_not_show_the_weight_yet() {
    let addr: IpAddr = "2001:db8::2".parse().unwrap();
    for (admin, health, why) in [
        (
            AdminState::Drain,
            Health::Up,
            "drained: the weight applies once it is undrained",
        ),
        (
            AdminState::Disabled,
            Health::Up,
            "disabled: the weight applies once it is enabled",
        ),
        (
            AdminState::Active,
            Health::Down,
            "down: the weight applies once its checks pass",
        ),
        (AdminState::Drain, Health::Down, "drained"),
    ] {
        let text = answer("web6", addr, 5, Some(50), admin, health);
        assert!(
            text.starts_with("backend 2001:db8::2 of VIP web6: weight 50"),
            "{text}"
        );
        assert!(
            text.ends_with(why) || text.contains(why),
            "{admin:?} {health:?}: {text}"
        );
    }
}
