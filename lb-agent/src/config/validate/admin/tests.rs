//! The admin keys: bad values rejected with file:line and key, good ones accepted.

use crate::config::{
    parse,
    tests::{assert_rejected, line, HEAD},
};
use std::os::unix::fs::PermissionsExt as _;

const TOKEN: &str = "0123456789abcdef0123456789abcdef\n";

/// A token file with `mode` in a fresh temp dir (removed by the caller's `dir`).
fn token_file(tag: &str, mode: u32) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("lb-cfg-admin-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, TOKEN).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
    (dir, file)
}

#[test]
fn defaults_keep_old_files_valid() {
    let config = parse(HEAD, "lb.toml").unwrap();
    assert_eq!(
        config.agent.control_socket,
        std::path::PathBuf::from("/run/lb-agent/admin.sock")
    );
    assert_eq!(config.agent.control_listen, None);
    assert_eq!(config.agent.control_token_file, None);
}

#[test]
fn rejects_a_relative_or_too_long_control_socket() {
    let text = format!("{HEAD}control_socket = \"run/admin.sock\" # here\n");
    assert_rejected(
        &text,
        "agent.control_socket",
        line(&text, "# here"),
        "absolute path",
    );
    let long = format!("/run/{}.sock", "x".repeat(120));
    let text = format!("{HEAD}control_socket = \"{long}\" # here\n");
    assert_rejected(
        &text,
        "agent.control_socket",
        line(&text, "# here"),
        "at most 107",
    );
    let text = format!("{HEAD}control_socket = \"/\" # here\n");
    assert_rejected(
        &text,
        "agent.control_socket",
        line(&text, "# here"),
        "must name a file",
    );
}

#[test]
fn rejects_control_listen_without_a_token_file_and_the_reverse() {
    let text = format!("{HEAD}control_listen = \"127.0.0.1:9301\" # here\n");
    assert_rejected(
        &text,
        "agent.control_listen",
        line(&text, "# here"),
        "needs agent.control_token_file",
    );
    let (dir, file) = token_file("reverse", 0o600);
    let text = format!("{HEAD}control_token_file = \"{}\" # here\n", file.display());
    assert_rejected(
        &text,
        "agent.control_token_file",
        line(&text, "# here"),
        "only used with agent.control_listen",
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn rejects_bad_token_files_and_wildcard_control_addresses() {
    let (dir, file) = token_file("bad", 0o644);
    let both = |listen: &str, token: &str| {
        format!("{HEAD}control_listen = \"{listen}\"\ncontrol_token_file = \"{token}\" # tok\n")
    };
    let shown = file.display().to_string();
    let text = both("127.0.0.1:9301", &shown);
    assert_rejected(
        &text,
        "agent.control_token_file",
        line(&text, "# tok"),
        "mode 0644",
    );
    let missing = dir.join("missing").display().to_string();
    let text = both("127.0.0.1:9301", &missing);
    assert_rejected(
        &text,
        "agent.control_token_file",
        line(&text, "# tok"),
        "cannot read",
    );
    let text = both("127.0.0.1:9301", "token");
    assert_rejected(
        &text,
        "agent.control_token_file",
        line(&text, "# tok"),
        "absolute path",
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    for wild in ["0.0.0.0:9301", "[::]:9301"] {
        let text = both(wild, &shown);
        assert_rejected(&text, "agent.control_listen", 4, "every interface");
    }
    let text = both("127.0.0.1:9300", &shown);
    assert_rejected(&text, "agent.control_listen", 4, "also admin_listen");
    // Right: a named address and a private token file.
    let config = parse(&both("127.0.0.1:9301", &shown), "lb.toml").unwrap();
    assert_eq!(
        config.agent.control_token_file.as_deref(),
        Some(file.as_path())
    );
    let _ = std::fs::remove_dir_all(dir);
}
