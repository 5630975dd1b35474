//! Secrets in the configuration (the BGP sessions' TCP-MD5 passwords): kept out of what the
//! agent prints, and written only to files no other user can read.

use crate::config::Config;
use anyhow::{Context, Result};
use std::{
    io::Write,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::Path,
};

/// What `lb-agent check` prints in place of a secret.
pub const MASK: &str = "********";

/// `cfg` with every secret replaced by [`MASK`], for printing.
pub fn masked(cfg: &Config) -> Config {
    let mut cfg = cfg.clone();
    if let Some(bgp) = cfg.bgp.as_mut() {
        for n in &mut bgp.neighbors {
            if let Some(pw) = n.password.as_mut() {
                *pw = MASK.to_string();
            }
        }
    }
    cfg
}

/// Replace `path` with `text` atomically, the file readable by its owner only (0600) from the
/// moment it exists: the temporary file is created with that mode, never widened or chmod-ed.
/// When the directory belongs to another user (BIRD running as `bird` reads the include file),
/// the file is given to that user and group before it appears under its name.
pub fn write_private_atomically(path: &Path, text: &str) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    // A temporary file left by a crash may have another mode: mode applies only on creation.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", tmp.display())),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let owner = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    let me = file
        .metadata()
        .with_context(|| format!("reading {}", tmp.display()))?;
    if owner.uid() != me.uid() {
        std::os::unix::fs::fchown(&file, Some(owner.uid()), Some(owner.gid())).with_context(
            || {
                format!(
                    "giving {} to the owner of {} (uid {}, gid {}): run the agent as root, or \
                     own the directory yourself",
                    tmp.display(),
                    dir.display(),
                    owner.uid(),
                    owner.gid()
                )
            },
        )?;
    }
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(file);
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const WITH_PASSWORD: &str = r#"
[agent]
interface = "eth0"
gateway_mac = "02:00:00:00:00:01"
encap_source_v4 = "198.18.0.2"

[[vip]]
name = "web"
address = "198.18.10.1"
port = 80
protocol = "tcp"
[vip.health_check]
kind = "none"
[[vip.backend]]
address = "198.18.1.1"

[bgp]
local_as = 65010
router_id = "198.18.0.2"

[[bgp.neighbor]]
address = "198.18.0.1"
remote_as = 65000
password = "s3cret-md5"

[[bgp.neighbor]]
address = "198.18.0.5"
remote_as = 65000
"#;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("lb-secrets-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn masked_hides_every_password_and_keeps_the_rest() {
        let dir = temp_dir("mask");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("lb.toml");
        std::fs::write(&path, WITH_PASSWORD).expect("write");
        let cfg = crate::config::load(&path).expect("valid configuration");
        let text = masked(&cfg).to_toml().expect("toml");
        assert!(!text.contains("s3cret-md5"), "{text}");
        assert!(text.contains(&format!("password = \"{MASK}\"")), "{text}");
        // A neighbor without a password gets none, and the original is untouched.
        assert_eq!(text.matches("password").count(), 1, "{text}");
        let bgp = cfg.bgp.as_ref().expect("bgp");
        assert_eq!(bgp.neighbors[0].password.as_deref(), Some("s3cret-md5"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn written_file_is_0600_even_over_a_wider_file_and_a_stale_temporary() {
        let dir = temp_dir("write");
        let path = dir.join("bird").join("vips.conf");
        write_private_atomically(&path, "first\n").expect("first write");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "first\n");
        // An older agent's 0644 file and a crash's 0644 temporary are both replaced.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, "stale").expect("stale tmp");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_private_atomically(&path, "second\n").expect("second write");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "second\n");
        assert!(!tmp.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
