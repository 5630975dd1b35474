//! systemd notifications (sd_notify): READY once the balancer forwards with every table
//! published, RELOADING/READY around each reload with the outcome in STATUS= and ERRNO=,
//! STOPPING, and the watchdog. Without NOTIFY_SOCKET (not under systemd) every call does nothing.
//!
//! `systemctl reload` cannot learn from these messages that a reload was rejected: systemd takes
//! READY=1 after RELOADING=1 as success whatever else the message says. The unit's ExecReload=
//! (`lb-agent reload`, which exits non-zero on a rejection) is what fails the job; the messages
//! here keep `systemctl status` truthful (state, Status: line, Error: line).

use std::time::Duration;
use tokio::time::{interval, Interval, MissedTickBehavior};
use tracing::{debug, info, warn};

/// ERRNO= sent with a rejected reload: EINVAL, shown by `systemctl status` as
/// "Error: 22 (Invalid argument)".
pub const REJECTED_ERRNO: u32 = libc::EINVAL as u32;

/// systemd keeps at most 16 KiB of STATUS=; a long list of configuration errors is cut well
/// before that, the journal has it whole.
const STATUS_MAX: usize = 1024;

/// Sends the daemon's notifications; cheap to copy around the startup code.
#[derive(Clone, Copy, Debug, Default)]
pub struct Notifier;

impl Notifier {
    /// The program is attached, every table is published and the admin endpoint answers.
    pub fn ready(&self, status: &str) {
        send(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status_line(status)),
        ]);
        info!("ready: {status}");
    }

    /// A reload starts. MONOTONIC_USEC ties it to the SIGHUP systemd sent (Type=notify-reload
    /// ignores a RELOADING=1 without it).
    pub fn reloading(&self) {
        let mut states = vec![
            sd_notify::NotifyState::Reloading,
            sd_notify::NotifyState::Status("reloading the configuration"),
        ];
        match sd_notify::NotifyState::monotonic_usec_now() {
            Ok(now) => states.push(now),
            Err(e) => warn!("reading CLOCK_MONOTONIC for the reload notification: {e}"),
        }
        send(&states);
    }

    /// A reload ended: READY=1 either way (systemd waits for it), with the outcome.
    pub fn reloaded(&self, outcome: &Result<String, String>) {
        let (status, errno) = reload_status(outcome);
        send(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
            sd_notify::NotifyState::Errno(errno),
        ]);
    }

    /// `run` as one reload between RELOADING=1 and READY=1.
    pub fn reload(&self, run: impl FnOnce() -> anyhow::Result<String>) -> anyhow::Result<String> {
        self.reloading();
        let result = run();
        self.reloaded(
            &result
                .as_ref()
                .map(Clone::clone)
                .map_err(|e| format!("{e:#}")),
        );
        result
    }

    pub fn stopping(&self) {
        send(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status("stopping"),
        ]);
    }
}

fn send(states: &[sd_notify::NotifyState]) {
    // A lost notification must not stop the balancer: systemd notices through its timeouts.
    if let Err(e) = sd_notify::notify(states) {
        warn!("sending {states:?} to systemd (NOTIFY_SOCKET): {e}");
    }
}

/// STATUS= text and ERRNO= value for a reload's outcome (ERRNO=0 clears an earlier error).
pub fn reload_status(outcome: &Result<String, String>) -> (String, u32) {
    match outcome {
        Ok(summary) => (status_line(summary), 0),
        Err(e) => (
            status_line(&format!("reload rejected, running configuration kept: {e}")),
            REJECTED_ERRNO,
        ),
    }
}

/// One line (a newline would end the STATUS= field), at most STATUS_MAX bytes.
pub fn status_line(text: &str) -> String {
    let mut line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if line.len() > STATUS_MAX {
        let mut cut = STATUS_MAX - 3;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("...");
    }
    line
}

/// Half of WATCHDOG_USEC, as sd_watchdog_enabled(3) advises: one late feed is not yet a miss.
pub fn feed_interval(watchdog: Duration) -> Duration {
    (watchdog / 2).max(Duration::from_millis(1))
}

/// Feeds systemd's watchdog. Polled by the controller's own loop (a `select!` branch), so a
/// controller stuck in one event stops the feeding and systemd restarts the agent.
pub struct Watchdog {
    ticks: Option<Interval>,
}

impl Watchdog {
    /// From WATCHDOG_USEC (and WATCHDOG_PID): inactive when systemd set no watchdog.
    pub fn from_env() -> Self {
        Self::new(sd_notify::watchdog_enabled())
    }

    pub fn new(watchdog: Option<Duration>) -> Self {
        let ticks = watchdog.map(|limit| {
            let every = feed_interval(limit);
            info!(
                limit_ms = limit.as_millis() as u64,
                every_ms = every.as_millis() as u64,
                "systemd watchdog on"
            );
            let mut ticks = interval(every);
            // After a stall, one feed, not a burst that would hide how late it was.
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ticks
        });
        Self { ticks }
    }

    /// Resolves when the next feed is due; never when the watchdog is off.
    pub async fn due(&mut self) {
        match self.ticks.as_mut() {
            Some(ticks) => {
                ticks.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    pub fn feed(&self) {
        debug!("feeding the systemd watchdog");
        send(&[sd_notify::NotifyState::Watchdog]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_reload_carries_the_error_and_einval() {
        let (status, errno) = reload_status(&Err(
            "lb.toml:3: agent.table_size: must be a prime\nlb.toml:9: vip.port: 0".into(),
        ));
        assert_eq!(errno, 22);
        assert_eq!(
            status,
            "reload rejected, running configuration kept: lb.toml:3: agent.table_size: must be a prime; lb.toml:9: vip.port: 0"
        );
        assert!(!status.contains('\n'));
    }

    #[test]
    fn accepted_reload_clears_the_error() {
        let (status, errno) = reload_status(&Ok("configuration reloaded: no change".into()));
        assert_eq!(
            (status.as_str(), errno),
            ("configuration reloaded: no change", 0)
        );
    }

    #[test]
    fn long_status_is_cut_on_a_char_boundary() {
        let long = "é".repeat(STATUS_MAX);
        let line = status_line(&long);
        assert!(line.len() <= STATUS_MAX);
        assert!(line.ends_with("..."));
    }

    #[test]
    fn feeds_at_half_the_limit() {
        assert_eq!(
            feed_interval(Duration::from_secs(20)),
            Duration::from_secs(10)
        );
        assert_eq!(
            feed_interval(Duration::from_micros(1)),
            Duration::from_millis(1)
        );
    }

    /// The feed is a branch of the controller's loop: nothing feeds unless the loop polls it.
    #[tokio::test(start_paused = true)]
    async fn due_only_when_polled_and_never_without_a_watchdog() {
        let mut on = Watchdog::new(Some(Duration::from_millis(200)));
        // The first tick is immediate, the next one a feed interval later.
        on.due().await;
        let before = tokio::time::Instant::now();
        on.due().await;
        assert_eq!(before.elapsed(), Duration::from_millis(100));
        let mut off = Watchdog::new(None);
        let waited = tokio::time::timeout(Duration::from_secs(3600), off.due()).await;
        assert!(
            waited.is_err(),
            "a watchdog systemd did not ask for never fires"
        );
    }
}
