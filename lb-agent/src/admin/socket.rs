//! The control socket (`agent.control_socket`): created mode 0600 with no window in which it
//! is more open, a stale one from a crashed agent replaced, a live one never taken over.

use anyhow::{bail, Context as _};
use std::{
    io::ErrorKind,
    os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};
use tokio::net::UnixListener;

/// A bound control socket.
#[derive(Debug)]
pub struct ControlSocket {
    pub(super) listener: UnixListener,
    pub(super) file: SocketFile,
}

/// The control socket's file; [`SocketFile::remove`] deletes it if it is still this one.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    /// (device, inode) of the socket file we created: another agent's file is left alone.
    id: (u64, u64),
}

impl ControlSocket {
    /// Binds the control socket at `path` (absolute). The parent directory is created (mode
    /// 0755) if missing. A socket file nobody answers on is a leftover and is replaced; one
    /// that answers belongs to a running agent and is an error, as is any other kind of file.
    pub async fn bind(path: &Path) -> anyhow::Result<ControlSocket> {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .with_context(|| format!("control socket {}: no parent directory", path.display()))?;
        if !parent.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .with_context(|| format!("creating {} for the control socket", parent.display()))?;
        }
        remove_stale(path).await?;
        // Bound under a temporary name, restricted, then renamed into place: the socket is
        // never reachable at `path` with the umask's wider mode.
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = parent.join(format!(".{file}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp)
            .with_context(|| format!("binding the control socket {}", tmp.display()))?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| {
                format!(
                    "placing the control socket at {} (mode 0600)",
                    path.display()
                )
            });
        }
        let meta = std::fs::metadata(path)
            .with_context(|| format!("reading back the control socket {}", path.display()))?;
        Ok(ControlSocket {
            listener,
            file: SocketFile {
                path: path.to_path_buf(),
                id: (meta.dev(), meta.ino()),
            },
        })
    }

    pub fn path(&self) -> &Path {
        &self.file.path
    }
}

impl SocketFile {
    /// Deletes the socket file if it is still the one this agent created.
    pub fn remove(&self) {
        match std::fs::metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.id => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), "removing the control socket: {e}");
                }
            }
            _ => {}
        }
    }
}

/// Removes `path` if it is a socket no one answers on; errors if someone does, or if it is
/// not a socket.
async fn remove_stale(path: &Path) -> anyhow::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket: remove it, or set agent.control_socket to another path",
            path.display()
        );
    }
    match tokio::net::UnixStream::connect(path).await {
        Ok(_) => bail!(
            "another process answers on the control socket {}: is another agent running? \
             Stop it, or give this one another agent.control_socket",
            path.display()
        ),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing a stale control socket");
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale control socket {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| {
            format!(
                "checking whether the control socket {} is in use",
                path.display()
            )
        }),
    }
}
