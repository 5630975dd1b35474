//! The admin keys of `[agent]`: the control socket path, and the TCP control listener that is
//! only allowed with a token file (checked on disk: it exists and only its owner can read it).

use super::{KeyPath, Problems};
use crate::config::AgentConfig;
use std::path::Path;

/// Longest Unix socket path (`sun_path` holds 108 bytes with the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

pub(super) fn check(a: &AgentConfig, agent: &KeyPath, out: &mut Problems) {
    check_socket_path(&a.control_socket, &agent.key("control_socket"), out);
    match (a.control_listen, &a.control_token_file) {
        (Some(addr), Some(file)) => {
            if addr.ip().is_unspecified() {
                out.add(
                    agent.key("control_listen"),
                    format!(
                        "{addr} would open the control API on every interface: name the one \
                         address to listen on (a management network), or remove control_listen \
                         and use the control socket"
                    ),
                );
            } else if addr == a.admin_listen {
                out.add(
                    agent.key("control_listen"),
                    format!(
                        "{addr} is also admin_listen (the read-only listener): use another port"
                    ),
                );
            }
            check_token_file(file, &agent.key("control_token_file"), out);
        }
        (Some(_), None) => out.add(
            agent.key("control_listen"),
            "needs agent.control_token_file (a file, mode 0600, holding the bearer token): an \
             unauthenticated control API on TCP is refused; or remove control_listen and use \
             control_socket",
        ),
        (None, Some(_)) => out.add(
            agent.key("control_token_file"),
            "is only used with agent.control_listen: set both, or remove it",
        ),
        (None, None) => {}
    }
}

fn check_socket_path(path: &Path, key: &KeyPath, out: &mut Problems) {
    let shown = path.display();
    if !path.is_absolute() {
        out.add(
            key.clone(),
            format!("must be an absolute path, got {:?}", shown.to_string()),
        );
    } else if path.file_name().is_none() {
        out.add(key.clone(), format!("must name a file, got {shown:?}"));
    } else if path.as_os_str().len() > MAX_SOCKET_PATH {
        out.add(
            key.clone(),
            format!(
                "is {} bytes long; a Unix socket path holds at most {MAX_SOCKET_PATH}",
                path.as_os_str().len()
            ),
        );
    }
}

fn check_token_file(path: &Path, key: &KeyPath, out: &mut Problems) {
    if !path.is_absolute() {
        out.add(
            key.clone(),
            format!(
                "must be an absolute path, got {:?}",
                path.display().to_string()
            ),
        );
        return;
    }
    if let Err(e) = crate::admin::check_token_file(path) {
        out.add(key.clone(), format!("{e:#}"));
    }
}

#[cfg(test)]
mod tests;
