//! End-to-end tests of the `lb-agent` command line: the real binary, run as a child process.
//!
//! Nothing here needs root, bpffs or a running agent: help and version output, `check` on
//! valid and invalid configuration files, the client commands against an address where nothing
//! listens (or a fake endpoint), and clap's rejection of bad arguments. Addresses are from
//! 198.18.0.0/15 and 2001:db8::/32 only.

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{SystemTime, UNIX_EPOCH},
};

// ---------------------------------------------------------------------------------------------
// Helpers

const BIN: &str = env!("CARGO_BIN_EXE_lb-agent");

/// Runs `lb-agent ARGS` to completion (no stdin, no RUST_LOG from the caller's environment).
fn lb(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {BIN} {args:?}: {e}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A description of a run for assertion messages.
fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "lb-agent {}\nexit: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        args.join(" "),
        out.status.code(),
        stdout(out),
        stderr(out)
    )
}

/// Runs `lb-agent ARGS`, asserts it exits 0 and returns its stdout.
fn lb_ok(args: &[&str]) -> String {
    let out = lb(args);
    assert!(
        out.status.success(),
        "expected success:\n{}",
        describe(args, &out)
    );
    stdout(&out)
}

/// Runs `lb-agent ARGS`, asserts it exits with `code` and returns its stderr.
fn lb_fails(args: &[&str], code: i32) -> String {
    let out = lb(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit code {code}:\n{}",
        describe(args, &out)
    );
    stderr(&out)
}

fn assert_mentions(text: &str, needles: &[&str], what: &str) {
    for needle in needles {
        assert!(
            text.contains(needle),
            "{what}: expected {needle:?} in:\n{text}"
        );
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "lb-agent-cli-{tag}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TempDir(dir)
    }

    /// Writes `text` to `name` in the directory; its path.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn s(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// 1-based line of the only line of `text` containing `marker`.
fn line_of(text: &str, marker: &str) -> usize {
    let hits: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(marker))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "marker {marker:?} must occur once in:\n{text}"
    );
    hits[0]
}

/// A valid `[agent]` table for IPv4 and IPv6 backends (4 lines).
const AGENT: &str = r#"[agent]
interface = "eth0"
encap_source_v4 = "198.18.0.2"
encap_source_v6 = "2001:db8::2"
"#;

fn vip(name: &str, address: &str, port: u16) -> String {
    format!("\n[[vip]]\nname = \"{name}\"\naddress = \"{address}\"\nport = {port}\nprotocol = \"tcp\"\n")
}

/// A valid configuration: two VIPs (one IPv4, one IPv6), a health check, IPv4 and IPv6
/// backends, and many keys left to their defaults.
fn valid_config() -> String {
    format!(
        "{AGENT}admin_listen = \"127.0.0.1:9311\"\n{}\n[vip.health_check]\nkind = \"http\"\n\
         path = \"/healthz\"\n\n[[vip.backend]]\naddress = \"198.18.1.1\"\n\n[[vip.backend]]\n\
         address = \"198.18.1.2\"\nweight = 50\nstate = \"drain\"\n{}\n[[vip.backend]]\n\
         address = \"2001:db8::11\"\n",
        vip("web", "198.18.0.10", 80),
        vip("web6", "2001:db8::10", 443),
    )
}

// ---------------------------------------------------------------------------------------------
// 1. Help and version

#[test]
fn top_level_help_lists_every_command_and_the_long_description() {
    let help = lb_ok(&["--help"]);
    assert_mentions(
        &help,
        &[
            "Usage: lb-agent",
            "run",
            "check",
            "decap",
            "status",
            "stats",
            "backend",
            "reload",
            "maintenance",
            "top",
            "doctor",
            "--log-format",
            "human",
            "json",
            "--version",
            // long_about
            "XDP layer-4 load balancer agent",
            "Maglev",
            "pinned",
            "bpffs",
            "lb-agent decap attach",
            "lb-agent doctor",
        ],
        "lb-agent --help",
    );
    // `-h` is the short form: the one-line about, and still every command.
    let short = lb_ok(&["-h"]);
    assert_mentions(
        &short,
        &["Maglev hashing", "run", "check", "doctor", "--log-format"],
        "lb-agent -h",
    );
}

#[test]
fn version_prints_name_and_version() {
    for flag in ["--version", "-V"] {
        let out = lb_ok(&[flag]);
        assert_eq!(
            out.trim(),
            format!("lb-agent {}", env!("CARGO_PKG_VERSION")),
            "lb-agent {flag}"
        );
    }
}

#[test]
fn run_help() {
    let help = lb_ok(&["run", "--help"]);
    assert_mentions(
        &help,
        &[
            "Usage: lb-agent run",
            "--config <CONFIG>",
            "-c,",
            "Configuration file (TOML)",
            "--iface <IFACE>",
            "overrides agent.interface",
            "--detach-on-exit",
            "remove the pinned maps",
            // long_about
            "SIGINT or SIGTERM",
            "SIGHUP",
            "POST /reload",
            "agent.xdp_mode",
            "agent.pin_path",
            "Maps and the XDP link are pinned",
            "connection table survives",
            "an invalid file is rejected and the running configuration stays",
        ],
        "lb-agent run --help",
    );
}

#[test]
fn check_help() {
    let help = lb_ok(&["check", "--help"]);
    assert_mentions(
        &help,
        &[
            "Usage: lb-agent check",
            "--config <CONFIG>",
            "-c,",
            "Validate a configuration file",
            "every default filled in",
        ],
        "lb-agent check --help",
    );
}

#[test]
fn decap_help() {
    let help = lb_ok(&["decap", "--help"]);
    assert_mentions(
        &help,
        &[
            "Usage: lb-agent decap",
            "attach",
            "detach",
            "IPIP / IPv6-in-IPv6",
        ],
        "lb-agent decap --help",
    );
}

#[test]
fn decap_attach_help() {
    let expected = [
        "Usage: lb-agent decap attach",
        "--iface <IFACE>",
        "--address <ADDRESS>",
        "default: every address on IFACE",
        "--mode <MODE>",
        "[default: auto]",
        "native",
        "skb",
        "--pin-dir <PIN_DIR>",
        "/sys/fs/bpf/lb-decap",
        "pinned link",
    ];
    assert_mentions(
        &lb_ok(&["decap", "attach", "--help"]),
        &expected,
        "lb-agent decap attach --help",
    );
    // `help decap attach` says the same.
    assert_mentions(
        &lb_ok(&["help", "decap", "attach"]),
        &expected,
        "lb-agent help decap attach",
    );
}

#[test]
fn decap_detach_help() {
    let help = lb_ok(&["decap", "detach", "--help"]);
    assert_mentions(
        &help,
        &[
            "Usage: lb-agent decap detach",
            "Detach the decap program",
            "--iface <IFACE>",
            "--pin-dir <PIN_DIR>",
            "/sys/fs/bpf/lb-decap",
        ],
        "lb-agent decap detach --help",
    );
    assert!(
        !help.contains("--address"),
        "detach takes no --address:\n{help}"
    );
}

#[test]
fn client_commands_help() {
    for (command, about) in [
        (
            "status",
            "VIPs, backends, health, weights and table generations",
        ),
        ("stats", "counters, per VIP and per backend"),
    ] {
        let help = lb_ok(&[command, "--help"]);
        assert_mentions(
            &help,
            &[
                &format!("Usage: lb-agent {command}"),
                about,
                "--admin <ADMIN>",
                "127.0.0.1:9300",
                "admin_listen",
                "--config <CONFIG>",
                "-c,",
            ],
            &format!("lb-agent {command} --help"),
        );
        assert!(help.contains("--json"), "{command}: {help}");
    }
    for command in ["reload", "backend"] {
        let help = lb_ok(&[command, "--help"]);
        assert_mentions(
            &help,
            &[
                &format!("Usage: lb-agent {command}"),
                "--socket <SOCKET>",
                "/run/lb-agent/admin.sock",
                "control_socket",
                "--control <CONTROL>",
                "--token-file <TOKEN_FILE>",
                "--config <CONFIG>",
            ],
            &format!("lb-agent {command} --help"),
        );
        assert!(!help.contains("--admin"), "{command}: {help}");
        assert!(!help.contains("--json"), "{command}: {help}");
    }
}

#[test]
fn backend_help() {
    let help = lb_ok(&["backend", "--help"]);
    assert_mentions(
        &help,
        &[
            "Usage: lb-agent backend",
            "<ACTION> <VIP> <BACKEND>",
            "drain",
            "undrain",
            "disable",
            "enable",
            "Keep existing connections, send no new ones",
            "connections move at their next packet",
            "VIP name",
            "Backend address",
            "--socket <SOCKET>",
            "--config <CONFIG>",
        ],
        "lb-agent backend --help",
    );
}

#[test]
fn doctor_help() {
    let help = lb_ok(&["doctor", "--help"]);
    assert_mentions(
        &help,
        &[
            "Usage: lb-agent doctor",
            "--iface <IFACE>",
            "--config <CONFIG>",
            "--backend",
            "backend-side checks",
            // long_about
            "OK, WARN or FAIL",
            "bpffs",
            "BTF",
            "MTU headroom",
            "rp_filter",
            "VIPs on loopback",
            "Exits non-zero if any check FAILs",
        ],
        "lb-agent doctor --help",
    );
}

#[test]
fn global_log_format_is_accepted_after_the_subcommand() {
    let help = lb_ok(&["status", "--help"]);
    assert!(help.contains("--log-format"), "{help}");
    let dir = TempDir::new("logfmt");
    let cfg = dir.write("lb.toml", &valid_config());
    lb_ok(&["check", "--config", s(&cfg), "--log-format", "json"]);
    lb_ok(&["--log-format", "json", "check", "--config", s(&cfg)]);
}

// ---------------------------------------------------------------------------------------------
// 2. check: a valid configuration

#[test]
fn check_prints_the_resolved_configuration_with_defaults() {
    let dir = TempDir::new("valid");
    let text = valid_config();
    let cfg = dir.write("lb.toml", &text);
    for key in [
        "mtu",
        "slow_start_ms",
        "max_vips",
        "table_size",
        "rise",
        "weight = 100",
    ] {
        assert!(
            !text.contains(key),
            "{key} must be left to its default in the input"
        );
    }

    let out = lb(&["check", "--config", s(&cfg)]);
    assert!(out.status.success(), "{}", describe(&["check"], &out));
    assert!(
        stderr(&out).is_empty(),
        "check wrote to stderr:\n{}",
        stderr(&out)
    );
    let printed = stdout(&out);

    let first = printed.lines().next().unwrap_or_default();
    assert_eq!(first, format!("# {}: valid", cfg.display()), "{printed}");
    assert_mentions(
        &printed,
        &[
            "[agent]",
            "[[vip]]",
            "[vip.health_check]",
            "[[vip.backend]]",
            // From the file.
            "interface = \"eth0\"",
            "admin_listen = \"127.0.0.1:9311\"",
            "name = \"web\"",
            "name = \"web6\"",
            "address = \"2001:db8::10\"",
            "address = \"198.18.1.2\"",
            "weight = 50",
            "state = \"drain\"",
            "kind = \"http\"",
            "path = \"/healthz\"",
            // Defaults that were not in the file.
            "mtu = 1500",
            "slow_start_ms = 10000",
            "max_vips = ",
            "table_size = ",
            "conn_table_size = 1000000",
            "outer_ttl = ",
            "new_flows_per_sec = ",
            "xdp_mode = \"auto\"",
            "pin_path = \"/sys/fs/bpf/lb\"",
            "gateway_mac = \"auto\"",
            "log_level = \"info\"",
            "hash = \"five-tuple\"",
            "all_down = \"fail-open\"",
            "interval_ms = 1000",
            "timeout_ms = 500",
            "rise = 2",
            "fall = 3",
            "expect_status = 200",
            "weight = 100",
            "state = \"active\"",
        ],
        "lb-agent check",
    );
    assert_eq!(printed.matches("[[vip]]").count(), 2, "{printed}");
    assert_eq!(printed.matches("[[vip.backend]]").count(), 3, "{printed}");
}

#[test]
fn check_output_parses_again_to_the_same_configuration() {
    let dir = TempDir::new("reparse");
    let cfg = dir.write("lb.toml", &valid_config());
    let first = lb_ok(&["check", "-c", s(&cfg)]);

    // The whole output (its first line is a TOML comment) is a valid configuration itself.
    let again = dir.write("resolved.toml", &first);
    let second = lb_ok(&["check", "-c", s(&again)]);

    let body = |out: &str| out.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert!(
        second.starts_with(&format!("# {}: valid\n", again.display())),
        "{second}"
    );
    assert_eq!(body(&first), body(&second), "check is not a fixed point");
    assert!(body(&second).contains("[agent]") && body(&second).contains("[[vip]]"));
}

#[test]
fn check_masks_the_bgp_passwords() {
    let dir = TempDir::new("secret");
    let text = format!(
        "{}\n[bgp]\nlocal_as = 65010\nrouter_id = \"198.18.0.2\"\n\
         next_hop_v6 = \"2001:db8::2\"\n\n[[bgp.neighbor]]\n\
         address = \"198.18.0.1\"\nremote_as = 65000\npassword = \"md5-s3cret\"\n",
        valid_config()
    );
    let cfg = dir.write("lb.toml", &text);
    let out = lb(&["check", "--config", s(&cfg)]);
    assert!(out.status.success(), "{}", describe(&["check"], &out));
    let printed = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        !printed.contains("md5-s3cret"),
        "check printed the password:\n{printed}"
    );
    assert_mentions(&printed, &["password = \"********\""], "lb-agent check");
}

#[test]
fn check_accepts_a_minimal_configuration_without_vips() {
    let dir = TempDir::new("minimal");
    let cfg = dir.write("lb.toml", "[agent]\ninterface = \"eth0\"\n");
    let out = lb_ok(&["check", "--config", s(&cfg)]);
    assert_mentions(
        &out,
        &["[agent]", "mtu = 1500", "max_vips"],
        "minimal check",
    );
    assert!(!out.contains("[[vip]]"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// 3. check: invalid configurations

/// Runs `check` on `text`; asserts exit 1, nothing on stdout, and a stderr line
/// `error: PATH:LINE: KEY: ...WHAT...` (the first problem) or `PATH:LINE: KEY: ...WHAT...`.
fn assert_check_rejects(tag: &str, text: &str, line: usize, key: &str, what: &str) -> String {
    let dir = TempDir::new(tag);
    let cfg = dir.write("lb.toml", text);
    let args = ["check", "--config", s(&cfg)];
    let out = lb(&args);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&args, &out));
    assert!(stdout(&out).is_empty(), "{}", describe(&args, &out));
    let err = stderr(&out);
    let prefix = format!("{}:{line}: {key}: ", cfg.display());
    assert!(
        err.lines().any(|l| {
            let l = l.strip_prefix("error: ").unwrap_or(l);
            l.starts_with(&prefix) && l.contains(what)
        }),
        "expected a line starting with {prefix:?} containing {what:?}:\n{}\nfor:\n{text}",
        describe(&args, &out)
    );
    err
}

#[test]
fn check_rejects_an_unknown_key() {
    let text = format!("{AGENT}interfaces = \"eth1\"\n");
    let err = assert_check_rejects(
        "unknown",
        &text,
        5,
        "agent.interfaces",
        "unknown field `interfaces`",
    );
    // And lists what it expected.
    assert!(err.contains("`interface`"), "{err}");

    let text = format!(
        "{AGENT}{}[[vip.backend]]\naddress = \"198.18.1.1\"\nwieght = 5\n",
        vip("web", "198.18.0.10", 80)
    );
    assert_check_rejects(
        "unknown-backend",
        &text,
        line_of(&text, "wieght"),
        "vip[0].backend[0].wieght",
        "unknown field `wieght`",
    );
}

#[test]
fn check_rejects_a_non_prime_table_size() {
    let text = format!("{AGENT}table_size = 65536\n");
    assert_check_rejects(
        "prime",
        &text,
        5,
        "agent.table_size",
        "must be a prime number >= 101, got 65536",
    );
}

#[test]
fn check_rejects_a_duplicate_vip_name() {
    let text = format!(
        "{AGENT}{}{}",
        vip("web", "198.18.0.10", 80),
        vip("web", "198.18.0.11", 80).replace("name =", "name  =")
    );
    assert_check_rejects(
        "dupname",
        &text,
        line_of(&text, "name  ="),
        "vip[1].name",
        "duplicate VIP name \"web\" (also vip[0].name)",
    );
}

#[test]
fn check_rejects_a_backend_weight_of_zero() {
    let text = format!(
        "{AGENT}{}[[vip.backend]]\naddress = \"198.18.1.1\"\n[[vip.backend]]\n\
         address = \"2001:db8::12\"\nweight = 0\n",
        vip("web", "198.18.0.10", 80)
    );
    let err = assert_check_rejects(
        "weight0",
        &text,
        line_of(&text, "weight = 0"),
        "vip[0].backend[1].weight",
        "must be between 1 and 10000, got 0",
    );
    assert!(
        err.contains("state = \"drain\""),
        "the hint is missing:\n{err}"
    );
}

#[test]
fn check_reports_every_problem_in_file_order() {
    let text = format!(
        "{AGENT}mtu = 100\n{}[[vip.backend]]\naddress = \"198.18.1.1\"\nweight = 0\n",
        vip("web site", "198.18.0.10", 80)
    );
    let err = assert_check_rejects("several", &text, 5, "agent.mtu", "must be at least");
    let mtu = err.find("agent.mtu").unwrap();
    let name = err
        .find("vip[0].name")
        .expect("the VIP name problem is missing");
    let weight = err
        .find("vip[0].backend[0].weight")
        .expect("the weight problem is missing");
    assert!(mtu < name && name < weight, "not in file order:\n{err}");
}

#[test]
fn check_rejects_a_toml_syntax_error_with_its_line() {
    let text = format!("{AGENT}\n[[vip\n");
    let dir = TempDir::new("syntax");
    let cfg = dir.write("lb.toml", &text);
    let err = lb_fails(&["check", "--config", s(&cfg)], 1);
    assert!(
        err.contains(&format!("{}:6: ", cfg.display())),
        "no file:line in:\n{err}"
    );
}

#[test]
fn check_names_a_missing_file() {
    let dir = TempDir::new("missing");
    let path = dir.0.join("does-not-exist.toml");
    let err = lb_fails(&["check", "--config", s(&path)], 1);
    assert_mentions(
        &err,
        &["error: ", s(&path), "No such file or directory"],
        "check of a missing file",
    );
}

#[test]
fn check_without_config_is_a_usage_error() {
    let err = lb_fails(&["check"], 2);
    assert!(err.contains("--config <CONFIG>"), "{err}");
}

#[test]
fn doctor_with_a_bad_config_fails_before_any_check() {
    let dir = TempDir::new("doctor");
    let path = dir.0.join("does-not-exist.toml");
    let out = lb(&["doctor", "--config", s(&path)]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        describe(&["doctor"], &out)
    );
    assert!(
        stdout(&out).is_empty(),
        "doctor ran checks:\n{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains(s(&path)), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------------------------
// 4. Client commands without a running agent

/// An admin address where nothing listens.
const NOBODY: &str = "127.0.0.1:1";

fn assert_not_running(err: &str, addr: &str, what: &str) {
    assert_mentions(
        err,
        &[
            "error: ",
            &format!("cannot connect to the agent's admin endpoint at {addr}"),
            "is `lb-agent run` running?",
            &format!("admin_listen is {addr}"),
            "--admin ADDR",
            "--config FILE",
        ],
        what,
    );
}

#[test]
fn client_commands_say_the_agent_is_not_running() {
    let commands: [&[&str]; 4] = [
        &["status", "--admin", NOBODY],
        &["status", "--admin", NOBODY, "--json"],
        &["stats", "--admin", NOBODY],
        &["stats", "--admin", NOBODY, "--json"],
    ];
    for args in commands {
        let out = lb(args);
        assert_eq!(out.status.code(), Some(1), "{}", describe(args, &out));
        assert!(stdout(&out).is_empty(), "{}", describe(args, &out));
        assert_not_running(&stderr(&out), NOBODY, &args.join(" "));
    }
    let dir = TempDir::new("no-socket");
    let socket = dir.0.join("admin.sock");
    let socket = s(&socket);
    let commands: [&[&str]; 3] = [
        &["reload", "--socket", socket],
        &["backend", "drain", "web", "198.18.1.1", "--socket", socket],
        &[
            "backend",
            "enable",
            "web6",
            "2001:db8::11",
            "--socket",
            socket,
        ],
    ];
    for args in commands {
        let out = lb(args);
        assert_eq!(out.status.code(), Some(1), "{}", describe(args, &out));
        assert!(stdout(&out).is_empty(), "{}", describe(args, &out));
        assert_mentions(
            &stderr(&out),
            &[
                &format!("cannot connect to the agent's control socket {socket}"),
                "is `lb-agent run` running?",
                &format!("control_socket is {socket}"),
                "--socket PATH",
                "--config FILE",
            ],
            &args.join(" "),
        );
    }
}

#[test]
fn control_over_tcp_needs_a_private_token_file() {
    let dir = TempDir::new("token-cli");
    let open = dir.write("open.token", "0123456789abcdef0123456789abcdef\n");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = lb_fails(
        &["reload", "--control", NOBODY, "--token-file", s(&open)],
        1,
    );
    assert_mentions(
        &err,
        &["--token-file", "mode 0644", "chmod 600", s(&open)],
        "0644 token",
    );
    // --control without --token-file is a usage error.
    let err = lb_fails(&["reload", "--control", NOBODY], 2);
    assert!(err.contains("--token-file"), "{err}");
}

#[test]
fn client_commands_take_the_admin_address_from_the_config() {
    let dir = TempDir::new("admin-from-config");
    let text = valid_config().replace("127.0.0.1:9311", NOBODY);
    let cfg = dir.write("lb.toml", &text);
    for command in ["status", "stats"] {
        let err = lb_fails(&[command, "--config", s(&cfg)], 1);
        assert_not_running(&err, NOBODY, command);
    }
    // The control commands take control_socket from it.
    let socket = dir.0.join("admin.sock");
    let text = text.replacen(
        "admin_listen",
        &format!("control_socket = \"{}\"\nadmin_listen", socket.display()),
        1,
    );
    let cfg = dir.write("socket.toml", &text);
    let err = lb_fails(&["reload", "--config", s(&cfg)], 1);
    assert!(
        err.contains(&format!("control_socket is {}", socket.display())),
        "{err}"
    );
    // --admin wins over the configuration's admin_listen.
    let cfg2 = dir.write("other.toml", &valid_config());
    let err = lb_fails(&["status", "--config", s(&cfg2), "--admin", NOBODY], 1);
    assert_not_running(&err, NOBODY, "status --config --admin");
}

#[test]
fn client_commands_report_an_invalid_config() {
    let dir = TempDir::new("client-bad-config");
    let cfg = dir.write("lb.toml", &format!("{AGENT}table_size = 100\n"));
    let err = lb_fails(&["status", "--config", s(&cfg)], 1);
    assert!(
        err.contains(&format!("{}:5: agent.table_size: ", cfg.display())),
        "{err}"
    );
}

/// Serves one HTTP exchange on 127.0.0.1 with a canned answer; the address and the request
/// line it received.
fn fake_admin(status: &'static str, body: &'static str) -> (String, thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a fake admin endpoint");
    let addr = listener.local_addr().unwrap().to_string();
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accepting the CLI's connection");
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap() == 0 || header == "\r\n" {
                break;
            }
        }
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        stream.flush().unwrap();
        request_line.trim_end().to_owned()
    });
    (addr, handle)
}

#[test]
fn status_from_something_that_is_not_an_agent() {
    let (addr, server) = fake_admin("200 OK", "hello, I am a web server\n");
    let err = lb_fails(&["status", "--admin", &addr], 1);
    assert_eq!(server.join().unwrap(), "GET /status HTTP/1.1");
    assert_mentions(
        &err,
        &[
            &format!("the answer of {addr} to GET /status is not a status report"),
            "same version",
        ],
        "status from a non-agent",
    );
}

/// A private token file (mode 0600) in `dir`, for `--control`.
fn private_token(dir: &TempDir) -> PathBuf {
    let path = dir.write("token", "0123456789abcdef0123456789abcdef\n");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn backend_posts_the_action_and_reports_the_agents_refusal() {
    let dir = TempDir::new("refusal");
    let token = private_token(&dir);
    let (addr, server) = fake_admin("404 Not Found", "no VIP named \"web\"\n");
    let err = lb_fails(
        &[
            "backend",
            "disable",
            "web",
            "198.18.1.1",
            "--control",
            &addr,
            "--token-file",
            s(&token),
        ],
        1,
    );
    assert_eq!(
        server.join().unwrap(),
        "POST /vips/web/backends/198.18.1.1/disable HTTP/1.1"
    );
    assert_mentions(
        &err,
        &[
            "404",
            "no VIP named \"web\"",
            "/vips/web/backends/198.18.1.1/disable",
        ],
        "backend disable refused",
    );
}

#[test]
fn backend_and_reload_print_the_agents_answer() {
    let dir = TempDir::new("answers");
    let token = private_token(&dir);
    let (addr, server) = fake_admin("200 OK", "198.18.1.1 of web: drain\n");
    let out = lb_ok(&[
        "backend",
        "drain",
        "web",
        "198.18.1.1",
        "--control",
        &addr,
        "--token-file",
        s(&token),
    ]);
    assert_eq!(
        server.join().unwrap(),
        "POST /vips/web/backends/198.18.1.1/drain HTTP/1.1"
    );
    assert_eq!(out, "198.18.1.1 of web: drain\n");

    let (addr, server) = fake_admin("200 OK", "reloaded\n");
    let out = lb_ok(&["reload", "--control", &addr, "--token-file", s(&token)]);
    assert_eq!(server.join().unwrap(), "POST /reload HTTP/1.1");
    assert_eq!(out, "reloaded\n");
}

// ---------------------------------------------------------------------------------------------
// 5. Usage errors: exit code 2

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let err = lb_fails(&["frobnicate"], 2);
    assert_mentions(
        &err,
        &["unrecognized subcommand", "frobnicate", "Usage:"],
        "unknown command",
    );
    let err = lb_fails(&["decap", "frobnicate"], 2);
    assert!(err.contains("frobnicate"), "{err}");
}

#[test]
fn no_subcommand_is_a_usage_error() {
    let out = lb(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&[], &out));
    assert!(stderr(&out).contains("Usage: lb-agent"), "{}", stderr(&out));
}

#[test]
fn bad_log_format_is_a_usage_error() {
    let dir = TempDir::new("logfmt-bad");
    let cfg = dir.write("lb.toml", &valid_config());
    for args in [
        &["--log-format", "xml", "check", "--config", s(&cfg)][..],
        &["check", "--config", s(&cfg), "--log-format", "xml"][..],
        &["--log-format", "xml", "status", "--admin", NOBODY][..],
    ] {
        let err = lb_fails(args, 2);
        assert_mentions(
            &err,
            &["invalid value 'xml'", "--log-format", "human", "json"],
            &args.join(" "),
        );
    }
}

#[test]
fn bad_arguments_are_usage_errors() {
    let cases: [(&[&str], &str); 6] = [
        (&["backend", "frob", "web", "198.18.1.1"], "'frob'"),
        (
            &["backend", "drain", "web", "198.18.1.300"],
            "'198.18.1.300'",
        ),
        (&["backend", "drain", "web"], "<BACKEND>"),
        (&["status", "--admin", "not-an-address"], "'not-an-address'"),
        (
            &["decap", "attach", "--iface", "eth0", "--mode", "fast"],
            "'fast'",
        ),
        (
            &[
                "decap",
                "attach",
                "--iface",
                "eth0",
                "--address",
                "198.18.0.256",
            ],
            "'198.18.0.256'",
        ),
    ];
    for (args, what) in cases {
        let err = lb_fails(args, 2);
        assert!(
            err.contains(what),
            "{}: expected {what:?} in:\n{err}",
            args.join(" ")
        );
    }
    // Required flags.
    let err = lb_fails(&["run"], 2);
    assert!(err.contains("--config <CONFIG>"), "{err}");
    let err = lb_fails(&["decap", "attach"], 2);
    assert!(err.contains("--iface <IFACE>"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Files and values the agent cannot use (issue 12, items 7 and 8)

/// `check` of a FIFO returns at once with an error instead of waiting for a writer. Nothing
/// ever writes to the FIFO; the generous bound only keeps a regression from hanging the suite.
#[test]
fn check_refuses_a_fifo_without_waiting_for_a_writer() {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = TempDir::new("fifo");
    let path = dir.0.join("lb.toml");
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let mut child = Command::new(BIN)
        .args(["check", "--config", s(&path)])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning lb-agent");
    let bound = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().expect("waiting for lb-agent").is_none() {
        if std::time::Instant::now() > bound {
            let _ = child.kill();
            panic!("`lb-agent check` on a FIFO did not return");
        }
        thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("lb-agent output");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&["check"], &out));
    assert_mentions(
        &stderr(&out),
        &[s(&path), "is a FIFO (named pipe), not a regular file"],
        "check of a FIFO",
    );
}

#[test]
fn check_refuses_a_device_and_an_oversized_file() {
    let err = lb_fails(&["check", "--config", "/dev/zero"], 1);
    assert_mentions(
        &err,
        &["/dev/zero is a character device"],
        "check of /dev/zero",
    );
    let dir = TempDir::new("big");
    let path = dir.write("lb.toml", "");
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len((16 << 20) + 1))
        .expect("growing the file (sparse)");
    let err = lb_fails(&["check", "--config", s(&path)], 1);
    assert_mentions(
        &err,
        &["at most 16777216 bytes"],
        "check of a 16 MiB + 1 file",
    );
}

#[test]
fn check_rejects_unusable_values_with_file_line_key_and_reason() {
    #[rustfmt::skip]
    let cases = [
        ("path", "path = \"/health check\"", "vip[0].health_check.path", "whitespace"),
        ("interval", "interval_ms = 9223372036854775807", "vip[0].health_check.interval_ms", "between 10 and 3600000"),
        ("backend", "address = \"198.18.0.10\" # the VIP itself", "vip[0].backend[0].address", "is a VIP address"),
    ];
    for (tag, line, key, what) in cases {
        let text = format!(
            "{AGENT}{}[vip.health_check]\nkind = \"http\"\n{}\n[[vip.backend]]\n{}\n",
            vip("web", "198.18.0.10", 80),
            if tag == "backend" {
                "path = \"/\""
            } else {
                line
            },
            if tag == "backend" {
                line
            } else {
                "address = \"198.18.1.1\""
            },
        );
        assert_check_rejects(tag, &text, line_of(&text, line), key, what);
    }
    let text = format!("{AGENT}table_size = 4294967291\n");
    assert_check_rejects(
        "table",
        &text,
        5,
        "agent.table_size",
        "must be at most 1000003",
    );
    let text = format!("{AGENT}{}", vip("mcast", "224.0.0.1", 80));
    assert_check_rejects(
        "vip",
        &text,
        line_of(&text, "224.0.0.1"),
        "vip[0].address",
        "a multicast address",
    );
    let text = AGENT.replace("\"eth0\"", "\"../../etc\"");
    assert_check_rejects(
        "iface",
        &text,
        2,
        "agent.interface",
        "is not an interface name",
    );
}

#[test]
fn iface_arguments_must_be_interface_names() {
    for args in [
        &[
            "run",
            "--config",
            "/nonexistent.toml",
            "--iface",
            "../../etc",
        ][..],
        &["decap", "detach", "--iface", "../../etc"],
        &["decap", "attach", "--iface", "a-sixteen-byte-nm"],
        &["doctor", "--iface", "eth 0"],
    ] {
        let err = lb_fails(args, 2);
        assert_mentions(&err, &["invalid value", "--iface"], &args.join(" "));
    }
}

// ---------------------------------------------------------------------------------------------
// Maintenance mode

#[test]
fn maintenance_posts_on_and_off_and_prints_the_answer() {
    let dir = TempDir::new("maintenance");
    let token = private_token(&dir);
    for action in ["on", "off"] {
        let (addr, server) = fake_admin("200 OK", "maintenance: ok\n");
        let out = lb_ok(&[
            "maintenance",
            action,
            "--control",
            &addr,
            "--token-file",
            s(&token),
        ]);
        assert_eq!(
            server.join().unwrap(),
            format!("POST /maintenance/{action} HTTP/1.1")
        );
        assert_eq!(out, "maintenance: ok\n");
    }
}

#[test]
fn maintenance_reports_the_agents_refusal() {
    let dir = TempDir::new("maintenance-409");
    let token = private_token(&dir);
    let (addr, server) = fake_admin("409 Conflict", "lb.toml has no [bgp] section\n");
    let err = lb_fails(
        &[
            "maintenance",
            "on",
            "--control",
            &addr,
            "--token-file",
            s(&token),
        ],
        1,
    );
    assert_eq!(server.join().unwrap(), "POST /maintenance/on HTTP/1.1");
    assert_mentions(
        &err,
        &["409", "no [bgp] section", "/maintenance/on"],
        "maintenance refused",
    );
}

#[test]
fn maintenance_with_a_bad_or_missing_action_is_a_usage_error() {
    let err = lb_fails(&["maintenance", "maybe"], 2);
    assert_mentions(
        &err,
        &["invalid value 'maybe'", "on", "off"],
        "maintenance maybe",
    );
    let err = lb_fails(&["maintenance"], 2);
    assert_mentions(&err, &["<ACTION>"], "maintenance without action");
    let help = lb_ok(&["maintenance", "--help"]);
    assert_mentions(
        &help,
        &["65535:0", "maintenance_drain_ms", "lb_maintenance"],
        "maintenance --help",
    );
}

// ---------------------------------------------------------------------------------------------
// Runtime weights

#[test]
fn backend_weight_posts_the_weight_and_prints_the_answer() {
    let dir = TempDir::new("weight");
    let token = private_token(&dir);
    let (addr, server) = fake_admin(
        "200 OK",
        "backend 2001:db8::2 of VIP web6: weight 300 (override, config 100) until the next reload\n",
    );
    let out = lb_ok(&[
        "backend",
        "weight",
        "web6",
        "2001:db8::2",
        "300",
        "--control",
        &addr,
        "--token-file",
        s(&token),
    ]);
    assert_eq!(
        server.join().unwrap(),
        "POST /vips/web6/backends/2001:db8::2/weight/300 HTTP/1.1"
    );
    assert!(out.contains("weight 300 (override, config 100)"), "{out}");
}

#[test]
fn backend_weight_reports_the_agents_refusal() {
    let dir = TempDir::new("weight-404");
    let token = private_token(&dir);
    let (addr, server) = fake_admin("404 Not Found", "VIP web has no backend 198.18.9.9\n");
    let err = lb_fails(
        &[
            "backend",
            "weight",
            "web",
            "198.18.9.9",
            "5",
            "--control",
            &addr,
            "--token-file",
            s(&token),
        ],
        1,
    );
    assert_eq!(
        server.join().unwrap(),
        "POST /vips/web/backends/198.18.9.9/weight/5 HTTP/1.1"
    );
    assert_mentions(
        &err,
        &["404", "VIP web has no backend 198.18.9.9", "/weight/5"],
        "backend weight refused",
    );
}

/// Bad weights never reach the agent: nothing listens on the socket, and each is a usage
/// error (2) that names what is wrong.
#[test]
fn backend_weight_with_a_bad_or_missing_weight_is_a_usage_error() {
    let dir = TempDir::new("weight-usage");
    let socket = dir.0.join("nobody.sock");
    let socket = s(&socket);
    let cases: [(&[&str], &[&str]); 10] = [
        (
            &["0"],
            &[
                "invalid value '0'",
                "must be between 1 and 10000, got 0",
                "lb-agent backend drain",
            ],
        ),
        (&["10001"], &["must be between 1 and 10000, got 10001"]),
        (
            &["-3"],
            &["invalid value '-3'", "must be between 1 and 10000, got -3"],
        ),
        (&["99999999999999999999"], &["got 99999999999999999999"]),
        (
            &["abc"],
            &["must be a whole number between 1 and 10000, got \"abc\""],
        ),
        (&["2.5"], &["got \"2.5\""]),
        (&["+5"], &["got \"+5\""]),
        (&[""], &["got \"\""]),
        (&[], &["required", "<WEIGHT>"]),
        (&["5", "6"], &["unexpected argument '6'"]),
    ];
    for (weight, needles) in cases {
        let mut args = vec!["backend", "weight", "web", "198.18.1.1"];
        args.extend_from_slice(weight);
        args.extend_from_slice(&["--socket", socket]);
        let err = lb_fails(&args, 2);
        assert_mentions(&err, needles, &args.join(" "));
    }
    // A weight given to another action would look applied: refused.
    let err = lb_fails(
        &[
            "backend",
            "drain",
            "web",
            "198.18.1.1",
            "5",
            "--socket",
            socket,
        ],
        2,
    );
    assert_mentions(
        &err,
        &[
            "WEIGHT (5) is only for `lb-agent backend weight`, not `drain`",
            "Usage: lb-agent backend",
        ],
        "drain with a weight",
    );
    // A bad address is still the address's error.
    let err = lb_fails(&["backend", "weight", "web", "198.18.1.300", "5"], 2);
    assert!(err.contains("'198.18.1.300'"), "{err}");
}

#[test]
fn backend_help_describes_weight() {
    let help = lb_ok(&["backend", "--help"]);
    assert_mentions(
        &help,
        &[
            "<ACTION> <VIP> <BACKEND> [WEIGHT]",
            "weight:",
            "until the next reload",
            "1..=10000",
            "lb-agent status",
        ],
        "lb-agent backend --help",
    );
}
