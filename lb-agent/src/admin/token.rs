//! The bearer token of the TCP control listener (`agent.control_token_file`), and the checks
//! on its file: the token is a password, so a file others can read (or replace) is refused
//! rather than trusted.

use anyhow::{bail, Context as _};
use std::{
    fmt,
    io::Read as _,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::Path,
};

/// Longest token file read; a token is a line of text, anything bigger is a wrong path.
const MAX_TOKEN_FILE: u64 = 4096;
/// Shortest token accepted: shorter ones can be guessed over the network.
pub const MIN_TOKEN_LEN: usize = 16;

/// A control token; never printed.
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl Token {
    /// Reads the token file at `path` after [`check_file`]: one line of printable ASCII (no
    /// spaces), at least [`MIN_TOKEN_LEN`] characters; surrounding whitespace is ignored.
    pub fn from_file(path: &Path) -> anyhow::Result<Token> {
        let mut file = std::fs::File::open(path)
            .with_context(|| format!("opening the control token file {}", path.display()))?;
        // The checks look at the opened file, not at whatever the path names a moment later.
        let meta = file
            .metadata()
            .with_context(|| format!("reading the metadata of {}", path.display()))?;
        check_metadata(path, &meta)?;
        let mut text = String::new();
        file.by_ref()
            .take(MAX_TOKEN_FILE)
            .read_to_string(&mut text)
            .with_context(|| {
                format!(
                    "reading the control token file {}: it must hold one line of text",
                    path.display()
                )
            })?;
        Token::parse(&text).with_context(|| format!("control token file {}", path.display()))
    }

    /// The token in `text` (a file's content).
    pub fn parse(text: &str) -> anyhow::Result<Token> {
        let token = text.trim();
        if token.is_empty() {
            bail!("it is empty: write a random token into it, e.g. `openssl rand -hex 32`");
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            bail!(
                "the token must be one line of printable ASCII without spaces (it is sent in \
                 an HTTP header): e.g. `openssl rand -hex 32`"
            );
        }
        if token.len() < MIN_TOKEN_LEN {
            bail!(
                "the token has {} characters, fewer than {MIN_TOKEN_LEN}: use a random one, e.g. \
                 `openssl rand -hex 32`",
                token.len()
            );
        }
        Ok(Token(token.as_bytes().to_vec()))
    }

    /// The token as sent in `Authorization: Bearer ...`.
    pub(super) fn as_str(&self) -> &str {
        // Checked ASCII in `parse`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Whether `presented` is this token, in time independent of where they differ (the
    /// length may leak; the content does not).
    pub fn matches(&self, presented: &[u8]) -> bool {
        if presented.len() != self.0.len() {
            return false;
        }
        let diff = self
            .0
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

/// What `lb-agent check` verifies of a token file without reading it: it exists, is a regular
/// file, and neither group nor others have any permission on it.
pub fn check_file(path: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path).with_context(|| {
        format!(
            "cannot read {}: create it (mode 0600) with a random token, e.g. \
             `openssl rand -hex 32 > {0} && chmod 600 {0}`",
            path.display()
        )
    })?;
    check_metadata(path, &meta)
}

fn check_metadata(path: &Path, meta: &std::fs::Metadata) -> anyhow::Result<()> {
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{} has mode {mode:04o}: group and others must have no access to a token \
             (chmod 600 {0})",
            path.display()
        );
    }
    if meta.size() > MAX_TOKEN_FILE {
        bail!(
            "{} has {} bytes: a token file holds one line (at most {MAX_TOKEN_FILE} bytes)",
            path.display(),
            meta.size()
        );
    }
    Ok(())
}
