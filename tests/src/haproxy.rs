//! Debian's HAProxy in TCP mode as the comparison proxy: a configuration written to the
//! scenario's directory, run in the foreground (`-db`, one process) in a namespace.

use crate::netns::run_in;
use anyhow::{bail, Context, Result};
use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

pub struct HaProxy {
    child: Option<Child>,
    log: PathBuf,
}

/// `mode tcp`, round robin over `servers`, each health-checked with `GET {check_path}` every
/// second like the agent's backends (rise 2, fall 3: both defaults). No logging (the agent logs
/// no per-request line either).
pub fn config(
    listen: SocketAddr,
    servers: &[SocketAddr],
    threads: u32,
    check_path: &str,
) -> String {
    let mut text = format!(
        "global\n    nbthread {threads}\n    maxconn 4096\n\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\n\
         frontend bench\n    bind {listen}\n    default_backend servers\n\n\
         backend servers\n    balance roundrobin\n    option httpchk\n\
         \x20   http-check send meth GET uri {check_path}\n    http-check expect status 200\n"
    );
    for (i, s) in servers.iter().enumerate() {
        text.push_str(&format!("    server b{i} {s} check inter 1s\n"));
    }
    text
}

impl HaProxy {
    /// Start HAProxy in namespace `ns` and wait until it accepts on `listen`.
    pub fn start(
        ns: &str,
        dir: &Path,
        name: &str,
        listen: SocketAddr,
        servers: &[SocketAddr],
        threads: u32,
        check_path: &str,
    ) -> Result<Self> {
        let cfg = dir.join(format!("{name}.cfg"));
        std::fs::write(&cfg, config(listen, servers, threads, check_path))
            .with_context(|| format!("writing {}", cfg.display()))?;
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let child = crate::netns::command(ns, "haproxy")
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting haproxy (is it installed? cargo xtask setup)")?;
        let mut proxy = Self {
            child: Some(child),
            log,
        };
        proxy.wait_listening(ns, listen)?;
        Ok(proxy)
    }

    fn wait_listening(&mut self, ns: &str, listen: SocketAddr) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("haproxy exited ({status}):\n{}", self.log_text());
                }
            }
            let up = run_in(ns, move || {
                Ok(TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok())
            })?;
            if up {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "haproxy not listening on {listen} after 10 s:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Process id (nsenter execs haproxy: the same process).
    pub fn pid(&self) -> Result<u32> {
        self.child
            .as_ref()
            .map(Child::id)
            .context("haproxy not running")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::config;

    /// HAProxy itself parses what we write (`haproxy -c`), with the check and the servers.
    #[test]
    fn haproxy_accepts_the_generated_config() {
        let servers = [
            "198.18.1.1:80".parse().unwrap(),
            "198.18.1.2:80".parse().unwrap(),
        ];
        let text = config("127.0.0.1:8001".parse().unwrap(), &servers, 2, "/healthz");
        assert!(
            text.contains("server b1 198.18.1.2:80 check inter 1s"),
            "{text}"
        );
        assert!(
            text.contains("http-check send meth GET uri /healthz"),
            "{text}"
        );
        let dir = std::env::temp_dir().join(format!("lb-tests-haproxy-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("test.cfg");
        std::fs::write(&path, &text).unwrap();
        let out = std::process::Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("haproxy is installed (cargo xtask setup)");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
