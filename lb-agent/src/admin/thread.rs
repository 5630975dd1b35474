//! The admin listeners on a thread and runtime of their own, below the agent's priority.
//!
//! On the agent's runtime a scrape's connection task and its blocking tasks queue behind
//! thousands of health checkers (at 10,000 backends an answer took from 81 ms to 3.5 s), and a
//! scrape's CPU competes with the checks that decide failover. Here the listeners are bound,
//! accepted and answered by one current-thread runtime whose threads (and its blocking pool,
//! which builds reports and encodes `/metrics`) run at nice [`NICE`]: a scrape never waits for
//! the checkers' queue, and when CPU is short the checkers and the controller get it first.

use super::{
    api::AdminRequest,
    endpoints::{serve, Listeners},
    server::Reporter,
};
use crate::config::AgentConfig;
use anyhow::{anyhow, Context as _};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

/// How much lower than the agent the admin threads run (the kernel's weight for nice 5 is a
/// third of nice 0's).
pub const NICE: i32 = 5;

/// Threads of the admin runtime's blocking pool: a report and an exposition per scrape in
/// flight; more scrapes wait for one.
const BLOCKING_THREADS: usize = 4;

/// Binds the listeners `agent` configures on the admin thread and serves them there until
/// `shutdown`. Returns once they are bound (or with the reason they could not be); the handle
/// ends when the admin server does.
pub async fn spawn(
    agent: &AgentConfig,
    requests: mpsc::Sender<AdminRequest>,
    report: Reporter,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
    let agent = agent.clone();
    let (bound_tx, bound_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("lb-admin".to_owned())
        .spawn(move || {
            lower_priority();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(BLOCKING_THREADS)
                .thread_name("lb-admin-blocking")
                .on_thread_start(lower_priority)
                .build()
                .context("starting the admin runtime")?;
            runtime.block_on(async move {
                let listeners = match Listeners::bind(&agent).await {
                    Ok(listeners) => listeners,
                    Err(e) => {
                        let _ = bound_tx.send(Err(e));
                        return Ok(());
                    }
                };
                let _ = bound_tx.send(Ok(()));
                serve(listeners, requests, report, shutdown).await
            })
        })
        .context("starting the admin thread")?;
    match bound_rx.await {
        Ok(bound) => bound?,
        // The thread ended before binding: its own error says why.
        Err(_) => {
            return Err(match thread.join() {
                Ok(Err(e)) => e,
                _ => anyhow!("the admin thread ended before binding its listeners"),
            })
        }
    }
    Ok(tokio::task::spawn_blocking(move || {
        thread
            .join()
            .map_err(|_| anyhow!("the admin thread panicked"))?
    }))
}

/// Lowers the calling thread's priority to [`NICE`] (Linux keeps a nice value per thread). A
/// failure only costs the protection, so it is logged, not fatal.
fn lower_priority() {
    // SAFETY: setpriority with PRIO_PROCESS and who = 0 changes the calling thread only.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
    if rc != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not lower the admin thread's priority; scrapes compete with health checks"
        );
    }
}
