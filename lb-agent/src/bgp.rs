//! BGP announcements through BIRD. The controller says which VIP addresses can serve; one task
//! turns that into BIRD's include file and `birdc configure`, retries while BIRD is away, and
//! watches the sessions. The agent never speaks BGP itself.

pub(crate) mod bird;
mod link;
pub mod maintenance;
pub mod render;

use crate::config::BgpConfig;
use anyhow::{Context, Result};
use maintenance::{Announcement, Maintenance, MaintenanceStatus, Phase};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{info, info_span, warn, Instrument};

/// How often the sessions' state is read from BIRD.
const PEER_POLL: Duration = Duration::from_secs(2);
/// Retry delays while BIRD cannot be reconfigured (not running yet, bad main config, ...).
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BgpStatus {
    /// VIP addresses the agent wants announced (those with a VIP that can serve, none once a
    /// maintenance drain is over)
    pub wanted: Vec<IpAddr>,
    /// VIP addresses BIRD last accepted in its configuration
    pub announced: Vec<IpAddr>,
    /// why the last attempt to reconfigure BIRD failed, if it did
    pub error: Option<String>,
    pub peers: Vec<BgpPeer>,
    /// maintenance mode (`lb-agent maintenance on|off`)
    #[serde(default)]
    pub maintenance: MaintenanceStatus,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BgpPeer {
    pub neighbor: IpAddr,
    /// BIRD's protocol name
    pub protocol: String,
    /// BIRD's session state: "Established", "Active", "Connect", ... or "unknown"
    pub state: String,
    pub established: bool,
    /// why the session last failed, as BIRD says (while not established)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
struct Wanted {
    config: BgpConfig,
    prefixes: BTreeSet<IpAddr>,
    /// The operator's maintenance setting, as of the request: the handle reports its phase
    /// (advanced to the moment of asking) and the task acts on it, so both always agree.
    maintenance: Maintenance,
}

/// The handle the controller holds; dropping it ends the task and removes the announce device.
pub struct Speaker {
    wanted: watch::Sender<Wanted>,
    status: watch::Receiver<BgpStatus>,
    task: JoinHandle<()>,
}

impl Speaker {
    /// Create the announce device and start the task; nothing is announced until
    /// [`Speaker::announce`].
    pub async fn start(config: BgpConfig, origin: String) -> Result<Self> {
        let link = link::AnnounceLink::create(&config.announce_interface).await?;
        info!(device = %link.name, "BGP announce device up");
        let (wanted, wanted_rx) = watch::channel(Wanted {
            config,
            prefixes: BTreeSet::new(),
            maintenance: Maintenance::default(),
        });
        let (status_tx, status) = watch::channel(BgpStatus::default());
        let task = Task {
            origin,
            wanted: wanted_rx,
            shared: status_tx,
            phase: Phase::Normal,
            applied: None,
            retry: RETRY_FIRST,
            retry_at: None,
        };
        let task = tokio::spawn(task.run(link).instrument(info_span!("bgp")));
        Ok(Self {
            wanted,
            status,
            task,
        })
    }

    pub fn announce(&self, prefixes: BTreeSet<IpAddr>) {
        self.wanted.send_if_modified(|w| {
            let changed = w.prefixes != prefixes;
            w.prefixes = prefixes;
            changed
        });
    }

    pub fn reconfigure(&self, config: BgpConfig) {
        self.wanted.send_if_modified(|w| {
            let changed = w.config != config;
            w.config = config;
            changed
        });
    }

    /// Maintenance mode on or off (the task drains and withdraws); the answer for the operator.
    pub fn set_maintenance(&self, on: bool) -> String {
        let drain_ms = self.wanted.borrow().config.maintenance_drain_ms;
        let changed = self.wanted.send_if_modified(|w| {
            let was_on = w.maintenance.phase() != Phase::Normal;
            let drain = Duration::from_millis(w.config.maintenance_drain_ms);
            w.maintenance.set(on, Instant::now(), drain);
            was_on != on
        });
        if changed {
            info!(on, drain_ms, "maintenance mode set");
        }
        maintenance_reply(on, changed, drain_ms)
    }

    pub fn status(&self) -> BgpStatus {
        let mut status = self.status.borrow().clone();
        let now = Instant::now();
        let mut maintenance = self.wanted.borrow().maintenance.clone();
        maintenance.tick(now);
        status.maintenance = maintenance.status(now);
        status
    }

    /// Withdraw everything and wait (at most `timeout`) until BIRD accepted it, then stop.
    pub async fn withdraw_all(mut self, timeout: Duration) {
        self.announce(BTreeSet::new());
        let done = self
            .status
            .wait_for(|s| s.wanted.is_empty() && s.announced.is_empty() && s.error.is_none());
        match tokio::time::timeout(timeout, done).await {
            Ok(Ok(_)) => info!("BGP announcements withdrawn"),
            _ => warn!(
                "BIRD did not confirm the withdrawal in time; the announce device goes away \
                 with the agent, which withdraws the routes anyway"
            ),
        }
        drop(self.wanted);
        let _ = self.task.await;
    }
}

/// What `lb-agent maintenance on|off` prints.
fn maintenance_reply(on: bool, changed: bool, drain_ms: u64) -> String {
    match (on, changed) {
        (true, true) => format!(
            "maintenance on: announcing with the graceful-shutdown community 65535:0 for \
             {drain_ms} ms, then withdrawing (lb-agent status shows the phase)"
        ),
        (true, false) => "maintenance is already on (lb-agent status shows the phase)".into(),
        (false, true) => "maintenance off: announcing normally again".into(),
        (false, false) => "maintenance is already off".into(),
    }
}

/// The speaker task's state: the wish it serves, what BIRD last accepted, retries.
struct Task {
    origin: String,
    wanted: watch::Receiver<Wanted>,
    shared: watch::Sender<BgpStatus>,
    /// The maintenance phase last acted on, to log changes.
    phase: Phase,
    applied: Option<(BgpConfig, Announcement)>,
    retry: Duration,
    retry_at: Option<Instant>,
}

impl Task {
    async fn run(mut self, link: link::AnnounceLink) {
        let mut poll = tokio::time::interval(PEER_POLL);
        loop {
            let current = self.wanted.borrow_and_update().clone();
            let target = self.target(&current);
            self.apply_when_due(&current.config, target).await;
            let now = tokio::time::Instant::now();
            let at = |i: Option<Instant>| i.map(tokio::time::Instant::from_std);
            let (retry_at, drain_at) = (at(self.retry_at), at(current.maintenance.deadline()));
            tokio::select! {
                changed = self.wanted.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    // A new wish is tried at once.
                    self.retry_at = None;
                }
                _ = poll.tick() => {
                    let peers = peers(&current.config).await;
                    self.shared.send_modify(|s| s.peers = peers);
                }
                _ = tokio::time::sleep_until(retry_at.unwrap_or(now)), if retry_at.is_some() => {}
                _ = tokio::time::sleep_until(drain_at.unwrap_or(now)), if drain_at.is_some() => {}
            }
        }
        drop(link);
        info!("BGP announce device removed");
    }

    /// Advance maintenance mode to now and share what should be announced.
    fn target(&mut self, current: &Wanted) -> Announcement {
        let mut maintenance = current.maintenance.clone();
        // Ends a drain whose deadline passed.
        maintenance.tick(Instant::now());
        if maintenance.phase() != self.phase {
            info!(from = %self.phase, to = %maintenance.phase(), "maintenance phase changed");
            self.phase = maintenance.phase();
        }
        let target = maintenance.announcement(&current.prefixes);
        self.shared
            .send_modify(|s| s.wanted = target.prefixes.iter().copied().collect());
        target
    }

    /// Reconfigure BIRD for `target` unless it has it already or a retry is not yet due.
    async fn apply_when_due(&mut self, config: &BgpConfig, target: Announcement) {
        let due = self.retry_at.is_none_or(|at| Instant::now() >= at);
        let next = (config.clone(), target);
        if self.applied.as_ref() == Some(&next) || !due {
            return;
        }
        let (config, target) = &next;
        match apply(config, target, &self.origin).await {
            Ok(()) => {
                info!(
                    announced = ?target.prefixes,
                    graceful_shutdown = target.graceful_shutdown,
                    "BIRD reconfigured"
                );
                self.shared.send_modify(|s| {
                    s.announced = target.prefixes.iter().copied().collect();
                    s.error = None;
                });
                self.applied = Some(next);
                self.retry = RETRY_FIRST;
                self.retry_at = None;
            }
            Err(e) => {
                let message = format!("{e:#}");
                if self.shared.borrow().error.as_deref() != Some(message.as_str()) {
                    warn!("cannot update BIRD (retrying): {message}");
                }
                self.shared.send_modify(|s| s.error = Some(message));
                self.retry_at = Some(Instant::now() + self.retry);
                self.retry = (self.retry * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Write the include file (atomically) and have BIRD load it.
async fn apply(config: &BgpConfig, target: &Announcement, origin: &str) -> Result<()> {
    let text = render::render(config, &target.prefixes, origin, target.graceful_shutdown);
    write_atomically(&config.include_file, &text).await?;
    bird::configure(&config.birdc, &config.bird_socket).await?;
    let protocols = bird::protocols(&config.birdc, &config.bird_socket).await?;
    if !protocols.iter().any(|p| p.name == render::STATIC_V4) {
        anyhow::bail!(
            "BIRD runs, but its configuration does not include {} (add `include \"{}\";` to \
             bird.conf)",
            config.include_file.display(),
            config.include_file.display()
        );
    }
    Ok(())
}

/// The include file holds the sessions' TCP-MD5 passwords: owner-only (0600) from creation.
async fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let (path, text) = (path.to_path_buf(), text.to_string());
    tokio::task::spawn_blocking(move || crate::secrets::write_private_atomically(&path, &text))
        .await
        .context("writing the BIRD include file: the writer task failed")?
}

async fn peers(cfg: &BgpConfig) -> Vec<BgpPeer> {
    let protocols = bird::protocols(&cfg.birdc, &cfg.bird_socket)
        .await
        .unwrap_or_default();
    cfg.neighbors
        .iter()
        .map(|n| {
            let name = render::peer_protocol(&n.address);
            let p = protocols.iter().find(|p| p.name == name);
            BgpPeer {
                neighbor: n.address,
                state: p
                    .and_then(|p| p.bgp_state.clone())
                    .unwrap_or_else(|| "unknown".to_string()),
                established: p.is_some_and(bird::Protocol::established),
                last_error: p
                    .filter(|p| !p.established())
                    .and_then(|p| p.last_error.clone()),
                protocol: name,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The include file is written before BIRD is asked to load it, so a missing `birdc` still
    /// leaves the file to look at.
    #[tokio::test]
    async fn the_include_file_with_the_password_is_0600() {
        let dir = std::env::temp_dir().join(format!("lb-bgp-include-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let include = dir.join("bird").join("vips.conf");
        let text = format!(
            "local_as = 65010\nrouter_id = \"198.18.0.2\"\nbirdc = \"{}\"\ninclude_file = \"{}\"\n\
             [[neighbor]]\naddress = \"198.18.0.1\"\nremote_as = 65000\npassword = \"s3cret\"\n",
            dir.join("no-birdc").display(),
            include.display()
        );
        let config: BgpConfig = toml::from_str(&text).expect("bgp section");
        let target = Announcement {
            prefixes: BTreeSet::from(["198.18.10.1".parse().expect("address")]),
            graceful_shutdown: false,
        };
        assert!(
            apply(&config, &target, "test").await.is_err(),
            "no birdc there"
        );
        let meta = std::fs::metadata(&include).expect("include file written");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let written = std::fs::read_to_string(&include).expect("read");
        assert!(written.contains("password \"s3cret\""), "{written}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn maintenance_replies() {
        let on = maintenance_reply(true, true, 30_000);
        assert!(
            on.contains("65535:0") && on.contains("30000 ms, then withdrawing"),
            "{on}"
        );
        assert!(maintenance_reply(true, false, 1).contains("already on"));
        assert_eq!(
            maintenance_reply(false, true, 1),
            "maintenance off: announcing normally again"
        );
        assert!(maintenance_reply(false, false, 1).contains("already off"));
    }
}
