//! Reloads in two steps, so the controller never waits on the file system: `start_reload`
//! reads and parses the file on a blocking thread (`config::Reader`: regular files only,
//! capped, timed out), and the event loop hands the result back to `on_loaded`, which applies
//! it. Health reports, admin requests and signals keep being served in between.

use super::Controller;
use crate::{admin::Reply, config};
use anyhow::Context as _;
use tokio::sync::mpsc;
use tracing::{error, warn};

/// A configuration read (or not) off the controller's task, and who asked for it.
pub struct LoadedConfig {
    pub result: anyhow::Result<config::Config>,
    /// `None` for SIGHUP.
    pub reply: Option<Reply<Result<String, String>>>,
}

impl Controller {
    /// The results of `start_reload`, for the event loop to pass to `on_loaded`; `None` after
    /// the first call.
    pub fn take_loaded(&mut self) -> Option<mpsc::Receiver<LoadedConfig>> {
        self.loaded_rx.take()
    }

    /// Read and parse the configuration file off this task; the result arrives on
    /// `take_loaded`'s receiver. Needs a tokio runtime.
    pub fn start_reload(&self, reply: Option<Reply<Result<String, String>>>) {
        let reader = self.reader.clone();
        let path = self.config_path.clone();
        let loaded = self.loaded_tx.clone();
        tokio::spawn(async move {
            let result = reader.load(path, config::READ_TIMEOUT).await;
            // Refused only when the agent is stopping.
            let _ = loaded.send(LoadedConfig { result, reply }).await;
        });
    }

    /// Apply a configuration `start_reload` read; errors are logged and answered, and leave
    /// the running configuration in place. The outcome is returned for systemd's READY=1.
    pub fn on_loaded(&mut self, loaded: LoadedConfig) -> Result<String, String> {
        // Claimed only now: a requester that gave up during the read gets nothing applied.
        let reply = match loaded.reply.map(Reply::claim) {
            Some(None) => {
                let why =
                    "reload given up by its sender (timeout or closed connection): not applied";
                warn!("{why}");
                return Err(why.to_string());
            }
            Some(Some(reply)) => Some(reply),
            None => None,
        };
        let result = loaded
            .result
            .context("the running configuration stays")
            .and_then(|new| self.apply_config(new))
            .map_err(|e| format!("{e:#}"));
        if let Err(e) = &result {
            error!("reload rejected: {e}");
        }
        self.shared.reloaded(&result);
        // Before the reply: `status` right after a reload command shows the new configuration.
        self.share();
        if let Some(reply) = reply {
            let _ = reply.send(result.clone());
        }
        result
    }
}
