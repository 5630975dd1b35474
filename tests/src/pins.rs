//! Pin directories a test creates outside the topology's own (decap pins, a directory an error
//! message suggested), `lb-agent decap attach` run in a namespace, and a second agent run to its
//! end. Teardown always: the guard detaches and removes whatever is pinned there.

use crate::{agentproc::agent_binary, netns};
use anyhow::{bail, Context, Result};
use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

/// A bpffs directory removed with everything in it when dropped (pinned links detach).
pub struct PinDir(pub PathBuf);

impl PinDir {
    /// `/sys/fs/bpf/<topology prefix>-<name>`: `topo::remove_stale` finds it after a crash.
    pub fn new(prefix: &str, name: &str) -> Self {
        Self(PathBuf::from(format!("/sys/fs/bpf/{prefix}-{name}")))
    }

    pub fn at(path: PathBuf) -> Self {
        Self(path)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        remove_pins(&self.0);
    }
}

/// Remove every pin (and the namespace record) under `dir`, then `dir`.
pub fn remove_pins(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                remove_pins(&path);
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// `lb-agent decap attach --iface IFACE --pin-dir DIR` in `ns`: exit success and output.
pub fn decap_attach(ns: &str, iface: &str, dir: &Path) -> Result<(bool, String)> {
    let out = netns::command(ns, agent_binary()?)
        .args([
            "decap",
            "attach",
            "--mode",
            "native",
            "--iface",
            iface,
            "--pin-dir",
        ])
        .arg(dir)
        .env("RUST_LOG", "info,netlink_packet_route=error")
        .stdin(Stdio::null())
        .output()
        .context("running lb-agent decap attach")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// Run `lb-agent run --config CONFIG` in `ns` to its end (at most 30 s): exit code and output.
pub fn run_to_end(ns: &str, config: &Path) -> Result<(Option<i32>, String)> {
    let log = config.with_extension("run.log");
    let out = std::fs::File::create(&log)?;
    let mut child = netns::command(ns, agent_binary()?)
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info,netlink_packet_route=error")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("starting lb-agent")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "lb-agent still runs after 30 s:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok((status.code(), std::fs::read_to_string(&log)?))
}

/// The word after `marker` in `text`, without trailing punctuation: the path an error message
/// suggests.
pub fn word_after(text: &str, marker: &str) -> Option<String> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let word = rest.split_whitespace().next()?;
    Some(
        word.trim_end_matches(['.', ',', ';'])
            .trim_matches('"')
            .to_string(),
    )
}
