//! BGP announcements through BIRD. The controller says which VIP addresses can serve; one task
//! turns that into BIRD's include file and `birdc configure`, retries while BIRD is away, and
//! watches the sessions. The agent never speaks BGP itself.

pub(crate) mod bird;
mod link;
pub mod render;

use crate::config::BgpConfig;
use anyhow::{Context, Result};
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
    /// VIP addresses the agent wants announced (those with a VIP that can serve)
    pub wanted: Vec<IpAddr>,
    /// VIP addresses BIRD last accepted in its configuration
    pub announced: Vec<IpAddr>,
    /// why the last attempt to reconfigure BIRD failed, if it did
    pub error: Option<String>,
    pub peers: Vec<BgpPeer>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BgpPeer {
    pub neighbor: IpAddr,
    /// BIRD's protocol name
    pub protocol: String,
    /// BIRD's session state: "Established", "Active", "Connect", ... or "unknown"
    pub state: String,
    pub established: bool,
}

#[derive(Clone, Debug, PartialEq)]
struct Wanted {
    config: BgpConfig,
    prefixes: BTreeSet<IpAddr>,
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
        });
        let (status_tx, status) = watch::channel(BgpStatus::default());
        let task =
            tokio::spawn(run(link, origin, wanted_rx, status_tx).instrument(info_span!("bgp")));
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

    pub fn status(&self) -> BgpStatus {
        self.status.borrow().clone()
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

async fn run(
    link: link::AnnounceLink,
    origin: String,
    mut wanted: watch::Receiver<Wanted>,
    status: watch::Sender<BgpStatus>,
) {
    let mut applied: Option<Wanted> = None;
    let mut retry = RETRY_FIRST;
    let mut retry_at: Option<Instant> = None;
    let mut poll = tokio::time::interval(PEER_POLL);
    loop {
        let current = wanted.borrow_and_update().clone();
        status.send_modify(|s| s.wanted = current.prefixes.iter().copied().collect());
        let due = retry_at.is_none_or(|at| Instant::now() >= at);
        if applied.as_ref() != Some(&current) && due {
            match apply(&current, &origin).await {
                Ok(()) => {
                    info!(
                        announced = ?current.prefixes,
                        "BIRD reconfigured"
                    );
                    status.send_modify(|s| {
                        s.announced = current.prefixes.iter().copied().collect();
                        s.error = None;
                    });
                    applied = Some(current.clone());
                    retry = RETRY_FIRST;
                    retry_at = None;
                }
                Err(e) => {
                    let message = format!("{e:#}");
                    if status.borrow().error.as_deref() != Some(message.as_str()) {
                        warn!("cannot update BIRD (retrying): {message}");
                    }
                    status.send_modify(|s| s.error = Some(message));
                    retry_at = Some(Instant::now() + retry);
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
        let sleep_until = retry_at.map(tokio::time::Instant::from_std);
        tokio::select! {
            changed = wanted.changed() => {
                if changed.is_err() {
                    break;
                }
                // A new wish is tried at once.
                retry_at = None;
            }
            _ = poll.tick() => {
                let peers = peers(&current.config).await;
                status.send_modify(|s| s.peers = peers);
            }
            _ = tokio::time::sleep_until(sleep_until.unwrap_or_else(tokio::time::Instant::now)),
                if sleep_until.is_some() => {}
        }
    }
    drop(link);
    info!("BGP announce device removed");
}

/// Write the include file (atomically) and have BIRD load it.
async fn apply(w: &Wanted, origin: &str) -> Result<()> {
    let text = render::render(&w.config, &w.prefixes, origin);
    write_atomically(&w.config.include_file, &text).await?;
    bird::configure(&w.config.birdc, &w.config.bird_socket).await?;
    let protocols = bird::protocols(&w.config.birdc, &w.config.bird_socket).await?;
    if !protocols.iter().any(|p| p.name == render::STATIC_V4) {
        anyhow::bail!(
            "BIRD runs, but its configuration does not include {} (add `include \"{}\";` to \
             bird.conf)",
            w.config.include_file.display(),
            w.config.include_file.display()
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
            let state =
                protocols
                    .iter()
                    .find(|p| p.name == name)
                    .map_or("unknown".to_string(), |p| {
                        p.info
                            .split_whitespace()
                            .next()
                            .unwrap_or(&p.state)
                            .to_string()
                    });
            BgpPeer {
                neighbor: n.address,
                established: state == "Established",
                protocol: name,
                state,
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
        let wanted = Wanted {
            config,
            prefixes: BTreeSet::from(["198.18.10.1".parse().expect("address")]),
        };
        assert!(apply(&wanted, "test").await.is_err(), "no birdc there");
        let meta = std::fs::metadata(&include).expect("include file written");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let written = std::fs::read_to_string(&include).expect("read");
        assert!(written.contains("password \"s3cret\""), "{written}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
