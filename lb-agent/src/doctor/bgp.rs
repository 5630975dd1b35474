//! BGP checks, when the configuration has a `[bgp]` section: what the agent needs to announce
//! its VIPs through BIRD (the tun device, BIRD answering on its socket, the include file loaded,
//! the sessions up).

use super::Finding;
use crate::{
    bgp::{bird, render},
    config::BgpConfig,
};

pub(super) async fn checks(cfg: &BgpConfig) -> Vec<Finding> {
    let mut out = vec![tun(), include_dir(cfg)];
    let protocols = match bird::protocols(&cfg.birdc, &cfg.bird_socket).await {
        Ok(p) => {
            out.push(Finding::ok(
                "BIRD",
                format!("answers on {}", cfg.bird_socket.display()),
            ));
            p
        }
        Err(e) => {
            out.push(Finding::fail(
                "BIRD",
                format!("{e:#}"),
                format!(
                    "install and start BIRD 2 (`apt install bird2`, `systemctl start bird`), or \
                     point bgp.bird_socket at its control socket (now {}) and bgp.birdc at birdc",
                    cfg.bird_socket.display()
                ),
            ));
            return out;
        }
    };
    if !protocols.iter().any(|p| p.name == render::STATIC_V4) {
        out.push(Finding::warn(
            "BIRD include",
            "BIRD has not loaded the agent's announcements (the agent writes them when it runs)",
            format!(
                "add `include \"{}\";` (or a pattern matching it) to bird.conf, start the agent, \
                 and check that `birdc show protocols` lists {}",
                cfg.include_file.display(),
                render::STATIC_V4
            ),
        ));
        return out;
    }
    out.push(Finding::ok(
        "BIRD include",
        format!("BIRD runs the agent's {}", cfg.include_file.display()),
    ));
    for n in &cfg.neighbors {
        let name = render::peer_protocol(&n.address);
        let check = format!("BGP session to {}", n.address);
        out.push(match protocols.iter().find(|p| p.name == name) {
            Some(p) if p.established() => Finding::ok(check, "established"),
            Some(p) => Finding::warn(
                check,
                format!("{} {}", p.state, p.summary()),
                format!(
                    "check the router's side (AS {}, this host's address as its neighbor, the \
                     same password), TCP 179 to {}, and `birdc show protocols all {name}`",
                    n.remote_as, n.address
                ),
            ),
            None => Finding::warn(
                check,
                "BIRD has no such session yet",
                "start the agent (it writes the session into the include file)",
            ),
        });
    }
    out
}

fn tun() -> Finding {
    if std::path::Path::new("/dev/net/tun").exists() {
        Finding::ok("tun", "/dev/net/tun present (for the announce device)")
    } else {
        Finding::fail(
            "tun",
            "/dev/net/tun is missing: the agent cannot create its announce device",
            "modprobe tun (and list it in /etc/modules-load.d/)",
        )
    }
}

fn include_dir(cfg: &BgpConfig) -> Finding {
    let check = "BIRD include directory";
    match cfg.include_file.parent() {
        Some(dir) if dir.is_dir() => Finding::ok(check, dir.display().to_string()),
        Some(dir) => Finding::fail(
            check,
            format!(
                "{} does not exist (BIRD also refuses an include pattern over it)",
                dir.display()
            ),
            format!("mkdir -p {}", dir.display()),
        ),
        None => Finding::fail(
            check,
            "bgp.include_file has no directory",
            "set an absolute file path",
        ),
    }
}
