//! `POST /vips/{vip}/backends/{addr}/weight/{n}` against the fake controller, and how a weight
//! override shows in the status text, its JSON and the metrics.

use super::{
    client::{request, Target},
    tests::{canned_report, start},
    *,
};
use std::net::IpAddr;

fn ip(text: &str) -> IpAddr {
    match text.parse() {
        Ok(ip) => ip,
        Err(e) => panic!("{text}: {e}"),
    }
}

#[tokio::test]
async fn weight_reaches_the_controller_and_its_answer_comes_back() {
    let h = start(Ok("reloaded".to_owned())).await;
    let answer = post(&h.control, "/vips/web/backends/198.18.1.1/weight/300")
        .await
        .unwrap();
    assert_eq!(answer, "backend 198.18.1.1 of VIP web: weight 300");
    for (path, weight) in [
        ("/vips/dns/backends/2001:db8::3/weight/1", 1),
        ("/vips/web/backends/198.18.1.2/weight/10000", 10_000),
    ] {
        post(&h.control, path).await.unwrap();
        assert_eq!(h.weights.lock().unwrap().last().unwrap().2, weight);
    }
    assert_eq!(
        *h.weights.lock().unwrap(),
        vec![
            ("web".to_owned(), ip("198.18.1.1"), 300),
            ("dns".to_owned(), ip("2001:db8::3"), 1),
            ("web".to_owned(), ip("198.18.1.2"), 10_000),
        ]
    );
    assert!(h.calls.lock().unwrap().is_empty(), "no admin state change");
    // The TCP control listener takes it too, with the token.
    let control = Control::Tcp {
        addr: h.control_tcp,
        token: Token::parse(super::tests::TOKEN).unwrap(),
    };
    post(&control, "/vips/web/backends/198.18.1.1/weight/2")
        .await
        .unwrap();
    assert_eq!(h.weights.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn bad_weights_are_400_naming_the_problem_and_nothing_reaches_the_controller() {
    let h = start(Ok("reloaded".to_owned())).await;
    for (weight, expected) in [
        ("0", "must be between 1 and 10000, got 0"),
        ("10001", "must be between 1 and 10000, got 10001"),
        ("-3", "must be between 1 and 10000, got -3"),
        ("4294967296", "must be between 1 and 10000, got 4294967296"),
        (
            "abc",
            r#"must be a whole number between 1 and 10000, got "abc""#,
        ),
        ("2.5", r#"got "2.5""#),
        ("%20", r#"got " ""#),
        ("1e3", r#"got "1e3""#),
    ] {
        let path = format!("/vips/web/backends/198.18.1.1/weight/{weight}");
        let e = post(&h.control, &path).await.unwrap_err().to_string();
        assert!(e.contains("400"), "{weight}: {e}");
        assert!(
            e.contains("invalid weight for backend 198.18.1.1 of VIP web"),
            "{weight}: {e}"
        );
        assert!(e.contains(expected), "{weight}: {e}");
    }
    // 0 comes with the way to do what it would mean.
    let e = post(&h.control, "/vips/web/backends/198.18.1.1/weight/0")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("lb-agent backend drain"), "{e}");
    assert!(h.weights.lock().unwrap().is_empty());
}

#[tokio::test]
async fn weight_of_an_unknown_vip_or_backend_is_404_and_a_bad_address_400() {
    let h = start(Ok("reloaded".to_owned())).await;
    let e = post(&h.control, "/vips/nope/backends/198.18.1.1/weight/5")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("404") && e.contains(r#"unknown VIP "nope""#),
        "{e}"
    );
    let e = post(&h.control, "/vips/web/backends/198.18.9.9/weight/5")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("404") && e.contains("has no backend 198.18.9.9"),
        "{e}"
    );
    let e = post(&h.control, "/vips/web/backends/not-an-ip/weight/5")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("400") && e.contains("not-an-ip"), "{e}");
    assert!(h.weights.lock().unwrap().is_empty());
}

#[tokio::test]
async fn weight_without_a_value_or_with_more_is_refused() {
    let h = start(Ok("reloaded".to_owned())).await;
    let e = post(&h.control, "/vips/web/backends/198.18.1.1/weight")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("400") && e.contains("weight/N"), "{e}");
    let e = post(&h.control, "/vips/web/backends/198.18.1.1/weight/5/6")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("404"), "{e}");
    // Control actions are POSTs.
    let (status, _) = request(
        Target::Control(&h.control),
        hyper::Method::GET,
        "/vips/web/backends/198.18.1.1/weight/5",
    )
    .await
    .unwrap();
    assert_eq!(status, hyper::StatusCode::METHOD_NOT_ALLOWED);
    // And not on the read-only listener.
    let (status, _) = request(
        Target::Read(h.addr),
        hyper::Method::POST,
        "/vips/web/backends/198.18.1.1/weight/5",
    )
    .await
    .unwrap();
    assert_eq!(status, hyper::StatusCode::NOT_FOUND);
    assert!(h.weights.lock().unwrap().is_empty());
}

/// The canned report with 198.18.1.1 of web at 300 instead of the file's 100.
fn overridden() -> StatusReport {
    let mut report = canned_report();
    let b = &mut report.vips[0].backends[0];
    b.weight_override = Some(300);
    b.effective_weight = 300;
    report
}

#[test]
fn an_override_shows_in_status_text_json_and_metrics() {
    let report = overridden();
    let text = render_status(&report);
    assert!(text.contains("300*/300"), "{text}");
    assert!(
        text.contains("  * 198.18.1.1: weight 300 (override, config 100) until the next reload"),
        "{text}"
    );
    assert_eq!(text.matches("(override").count(), 1, "{text}");
    let plain = render_status(&canned_report());
    assert!(
        !plain.contains('*') && !plain.contains("override"),
        "{plain}"
    );

    let json = serde_json::to_value(&report).unwrap();
    let b = &json["vips"][0]["backends"];
    assert_eq!(b[0]["weight"], 100);
    assert_eq!(b[0]["weight_override"], 300);
    assert_eq!(b[0]["effective_weight"], 300);
    assert!(b[1]["weight_override"].is_null());
    // A report without the field (an older agent) reads as no override.
    let mut old = json.clone();
    old["vips"][0]["backends"][0]
        .as_object_mut()
        .unwrap()
        .remove("weight_override");
    let back: StatusReport = serde_json::from_value(old).unwrap();
    assert_eq!(back.vips[0].backends[0].weight_override, None);

    let metrics = render_metrics(&report);
    let lines: Vec<&str> = metrics.lines().collect();
    assert!(
        lines.contains(&r#"lb_backend_weight_override{vip="web",backend="198.18.1.1"} 300"#),
        "{metrics}"
    );
    assert!(
        lines.contains(&r#"lb_backend_weight{vip="web",backend="198.18.1.1"} 300"#),
        "{metrics}"
    );
    assert_eq!(
        metrics.matches("lb_backend_weight_override{").count(),
        1,
        "only overridden backends have a series: {metrics}"
    );
}
