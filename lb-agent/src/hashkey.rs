//! The fleet-wide secret key of the flow hash (`agent.flow_hash_key_file`): read once at start,
//! written into the data path's `CONFIG` and used by the agent's own slot computations, so every
//! balancer with the same key picks the same backend for a flow. Only a digest is ever shown.

use anyhow::{bail, Context, Result};
use lb_common::hash::{FlowHashKey, NO_KEY};
use std::{
    io::Read as _,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::Path,
};

/// Key length in bytes: a file holds exactly this many raw bytes, or twice as many hex digits.
pub const KEY_BYTES: usize = 16;

/// Fixed, public SipHash keys of the digest: anyone can compute it from the key, nobody can
/// recover the key from it.
const DIGEST_KEYS: (u64, u64) = (0x6c62_2d66_6c6f_772d, 0x6861_7368_2d6b_6579);

/// Longest key file read: a key is 16 bytes or a line of 32 hex digits, anything bigger is a
/// wrong path.
const MAX_KEY_FILE: u64 = 4096;

/// The key in `path`, checked: a regular file that no other user can read or write (mode
/// 0600 or 0400), holding 16 raw bytes or 32 hex digits (surrounding whitespace allowed).
pub fn load(path: &Path) -> Result<FlowHashKey> {
    let what = || format!("agent.flow_hash_key_file {}", path.display());
    // Non-blocking: opening a FIFO named by mistake must not hang the start.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("reading {}", what()))?;
    // The checks look at the opened file, not at whatever the path names a moment later.
    let meta = file
        .metadata()
        .with_context(|| format!("reading {}", what()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", what());
    }
    if meta.mode() & 0o077 != 0 {
        bail!(
            "{} has mode {:03o}: the key must be secret, run `chmod 600 {}`",
            what(),
            meta.mode() & 0o777,
            path.display()
        );
    }
    let mut bytes = Vec::new();
    file.by_ref()
        .take(MAX_KEY_FILE)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", what()))?;
    let key = parse(&bytes).with_context(what)?;
    if key == NO_KEY {
        bail!(
            "{} holds the all-zero key, which is no key: generate one with \
             `head -c 16 /dev/urandom | xxd -p > {}`",
            what(),
            path.display()
        );
    }
    Ok(key)
}

/// 16 raw bytes, or 32 hex digits with optional surrounding whitespace.
pub fn parse(bytes: &[u8]) -> Result<FlowHashKey> {
    let raw: [u8; KEY_BYTES] = if bytes.len() == KEY_BYTES {
        bytes.try_into().expect("length checked")
    } else {
        let text = std::str::from_utf8(bytes)
            .ok()
            .map(str::trim)
            .filter(|t| t.len() == 2 * KEY_BYTES && t.bytes().all(|b| b.is_ascii_hexdigit()))
            .with_context(|| {
                format!(
                    "expected {KEY_BYTES} raw bytes or {} hex digits, found {} bytes that are \
                     neither: generate a key with `head -c 16 /dev/urandom | xxd -p`",
                    2 * KEY_BYTES,
                    bytes.len()
                )
            })?;
        let mut raw = [0u8; KEY_BYTES];
        for (i, byte) in raw.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex digits checked");
        }
        raw
    };
    let word = |i: usize| u32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
    Ok([word(0), word(4), word(8), word(12)])
}

/// What `status` shows of the key: 16 hex digits of a keyed hash of it, equal on every
/// balancer with the same key; "none" without a key.
pub fn digest(key: &FlowHashKey) -> String {
    if *key == NO_KEY {
        return "none".to_string();
    }
    let bytes: Vec<u8> = key.iter().flat_map(|w| w.to_le_bytes()).collect();
    format!(
        "{:016x}",
        crate::maglev::siphash24(DIGEST_KEYS.0, DIGEST_KEYS.1, &bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const HEX: &str = "00112233445566778899aabbccddeeff";

    fn file(name: &str, bytes: &[u8], mode: u32) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("lb-hashkey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn hex_and_raw_files_give_the_same_key() {
        let hex = load(&file("hex", format!("{HEX}\n").as_bytes(), 0o600)).unwrap();
        let raw: Vec<u8> = (0..16).map(|i| i * 0x11).collect();
        let raw = load(&file("raw", &raw, 0o400)).unwrap();
        assert_eq!(hex, raw);
        assert_eq!(hex[0], u32::from_le_bytes([0x00, 0x11, 0x22, 0x33]));
    }

    #[test]
    fn readable_by_others_is_refused_with_the_fix() {
        let path = file("open", HEX.as_bytes(), 0o644);
        let e = format!("{:#}", load(&path).unwrap_err());
        assert!(
            e.contains("agent.flow_hash_key_file") && e.contains("chmod 600"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            load(&file("group", HEX.as_bytes(), 0o640)).unwrap_err()
        );
        assert!(e.contains("mode 640"), "{e}");
    }

    #[test]
    fn bad_lengths_contents_and_paths_are_refused() {
        for (name, bytes) in [
            ("short", &b"0011"[..]),
            ("long", &[0x41u8; 33][..]),
            ("nothex", &b"zz112233445566778899aabbccddeeff"[..]),
            ("empty", &b""[..]),
        ] {
            let e = format!("{:#}", load(&file(name, bytes, 0o600)).unwrap_err());
            assert!(
                e.contains("expected 16 raw bytes or 32 hex digits"),
                "{name}: {e}"
            );
        }
        let e = format!("{:#}", load(&file("zero", &[0u8; 16], 0o600)).unwrap_err());
        assert!(e.contains("all-zero"), "{e}");
        let e = format!("{:#}", load(Path::new("/nonexistent/key")).unwrap_err());
        assert!(
            e.contains("agent.flow_hash_key_file /nonexistent/key"),
            "{e}"
        );
        let dir = std::env::temp_dir();
        let e = format!("{:#}", load(&dir).unwrap_err());
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn digest_names_the_key_without_revealing_it() {
        let a = parse(HEX.as_bytes()).unwrap();
        let b = parse(b"ffeeddccbbaa99887766554433221100").unwrap();
        assert_eq!(digest(&a), digest(&a));
        assert_ne!(digest(&a), digest(&b));
        assert_eq!(digest(&a).len(), 16);
        assert!(!digest(&a).contains("0011223344"));
        assert_eq!(digest(&NO_KEY), "none");
    }
}
