//! The answer channel of a control request, with a claim: the controller acts on a request
//! only after claiming it, and a requester that gave up (timeout, closed connection) first
//! makes the claim fail. So a request answered with an error is never carried out later, and
//! one the controller took is always answered with what it did, however long that took.

use std::sync::{
    atomic::{AtomicU8, Ordering},
    Arc,
};
use tokio::{sync::oneshot, time::Instant};

const WAITING: u8 = 0;
const CLAIMED: u8 = 1;
const GAVE_UP: u8 = 2;

/// A request's answer channel: the controller's end ([`Reply`]) and the requester's
/// ([`Waiter`]).
pub fn reply_channel<T>() -> (Reply<T>, Waiter<T>) {
    let (tx, rx) = oneshot::channel();
    let state = Arc::new(AtomicU8::new(WAITING));
    (
        Reply {
            tx,
            state: state.clone(),
        },
        Waiter {
            rx: Some(rx),
            state,
        },
    )
}

/// The controller's end of a request's answer channel.
#[derive(Debug)]
pub struct Reply<T> {
    tx: oneshot::Sender<T>,
    state: Arc<AtomicU8>,
}

impl<T> Reply<T> {
    /// The sender of the answer, if the requester still waits; from then on it waits for the
    /// answer however long it takes. `None`: it gave up (and was told so): do nothing.
    pub fn claim(self) -> Option<oneshot::Sender<T>> {
        self.state
            .compare_exchange(WAITING, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| self.tx)
    }
}

/// Why no answer came.
#[derive(Debug, PartialEq, Eq)]
pub enum NoAnswer {
    /// The deadline passed before the controller claimed the request: it will not be acted on.
    TimedOut,
    /// The controller dropped the request (it stopped).
    Dropped,
}

/// The requester's end of a request's answer channel. Dropping it gives up the request.
#[derive(Debug)]
pub struct Waiter<T> {
    rx: Option<oneshot::Receiver<T>>,
    state: Arc<AtomicU8>,
}

impl<T> Waiter<T> {
    /// The answer; if none came by `deadline`, gives up unless the controller has claimed
    /// the request, whose answer it then waits for.
    pub async fn wait(mut self, deadline: Instant) -> Result<T, NoAnswer> {
        let Some(mut rx) = self.rx.take() else {
            return Err(NoAnswer::Dropped);
        };
        match tokio::time::timeout_at(deadline, &mut rx).await {
            Ok(answer) => answer.map_err(|_| NoAnswer::Dropped),
            Err(_) if self.give_up() => Err(NoAnswer::TimedOut),
            Err(_) => rx.await.map_err(|_| NoAnswer::Dropped),
        }
    }

    /// True when the request was still unclaimed: it never will be now.
    fn give_up(&self) -> bool {
        self.state
            .compare_exchange(WAITING, GAVE_UP, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

impl<T> Drop for Waiter<T> {
    /// A requester that goes away (its connection closed) gives up an unclaimed request.
    fn drop(&mut self) {
        self.give_up();
    }
}

#[cfg(test)]
mod tests;
