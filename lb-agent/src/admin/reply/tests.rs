use super::*;
use crate::admin::{listen::LIMITS, post, tests::start_with, AdminRequest};
use std::{net::IpAddr, time::Duration};
use tokio::sync::{mpsc, oneshot};

/// Short: the outcomes below do not depend on timing (claims happen before or after the
/// wait, never racing it), only how long the tests take.
const DEADLINE: Duration = Duration::from_millis(50);

#[tokio::test]
async fn an_answer_before_the_deadline_arrives() {
    let (reply, waiter) = reply_channel::<u32>();
    reply.claim().expect("waiting").send(7).unwrap();
    assert_eq!(waiter.wait(Instant::now() + DEADLINE).await, Ok(7));
}

#[tokio::test]
async fn an_unclaimed_request_past_its_deadline_can_never_be_claimed() {
    let (reply, waiter) = reply_channel::<u32>();
    assert_eq!(
        waiter.wait(Instant::now() + DEADLINE).await,
        Err(NoAnswer::TimedOut)
    );
    assert!(
        reply.claim().is_none(),
        "claimed after the requester gave up"
    );
}

#[tokio::test]
async fn a_claimed_request_is_answered_however_late() {
    let (reply, waiter) = reply_channel::<u32>();
    let sender = reply.claim().expect("waiting");
    tokio::spawn(async move {
        tokio::time::sleep(DEADLINE * 3).await;
        let _ = sender.send(9);
    });
    assert_eq!(waiter.wait(Instant::now() + DEADLINE).await, Ok(9));
}

#[tokio::test]
async fn a_claimed_request_dropped_unanswered_is_reported() {
    let (reply, waiter) = reply_channel::<u32>();
    drop(reply.claim());
    assert_eq!(
        waiter.wait(Instant::now() + DEADLINE).await,
        Err(NoAnswer::Dropped)
    );
}

#[test]
fn a_requester_that_went_away_cannot_be_claimed() {
    let (reply, waiter) = reply_channel::<u32>();
    drop(waiter);
    assert!(reply.claim().is_none());
}

/// Through HTTP: a drain the controller had not taken when the endpoint answered 503 is never
/// applied, even when the controller gets to it afterwards; a later drain is applied.
#[tokio::test]
async fn a_request_answered_503_is_never_applied_later() {
    let (tx, mut rx) = mpsc::channel::<AdminRequest>(8);
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let (applied_tx, mut applied_rx) = mpsc::unbounded_channel::<(IpAddr, bool)>();
    // A slow controller: holds the first request until told to go on, then handles it and
    // every later one, reporting whether each could be claimed (and so applied).
    tokio::spawn(async move {
        let mut go = Some(go_rx);
        while let Some(request) = rx.recv().await {
            if let Some(go) = go.take() {
                let _ = go.await;
            }
            if let AdminRequest::SetBackendState { backend, reply, .. } = request {
                let claimed = reply.claim().map(|r| r.send(Ok(())));
                let _ = applied_tx.send((backend, claimed.is_some()));
            }
        }
    });
    let (h, _) = start_with(tx, Duration::from_millis(200), LIMITS).await;

    let e = format!(
        "{:#}",
        post(&h.control, "/vips/web/backends/198.18.1.1/drain")
            .await
            .unwrap_err()
    );
    assert!(
        e.contains("503") && e.contains("nothing was changed"),
        "{e}"
    );
    go_tx.send(()).unwrap();
    assert_eq!(
        applied_rx.recv().await,
        Some(("198.18.1.1".parse().unwrap(), false)),
        "the drain answered 503 was applied"
    );

    let ok = post(&h.control, "/vips/web/backends/198.18.1.2/drain")
        .await
        .unwrap();
    assert!(ok.contains("admin state drain"), "{ok}");
    assert_eq!(
        applied_rx.recv().await,
        Some(("198.18.1.2".parse().unwrap(), true))
    );
    h.shutdown.cancel();
}
