use crate::{
    config::{
        parse,
        tests::{assert_rejected, line, rejected, with_check},
        CheckKind,
    },
    testpki::Pki,
};
use std::io::Write as _;

fn ca_file(pem: &str) -> tempfile_path::TempFile {
    tempfile_path::TempFile::with(pem.as_bytes())
}

/// A file removed when dropped (no tempfile crate in this workspace).
mod tempfile_path {
    use std::path::PathBuf;
    pub struct TempFile(pub PathBuf);
    impl TempFile {
        pub fn with(bytes: &[u8]) -> Self {
            let path = std::env::temp_dir().join(format!(
                "lb-agent-ca-{}-{}.pem",
                std::process::id(),
                fastrand::u64(..)
            ));
            std::fs::write(&path, bytes).unwrap();
            Self(path)
        }
        pub fn path(&self) -> String {
            self.0.display().to_string()
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

// ---- expect_status ----------------------------------------------------------------------------

#[test]
fn expect_status_accepts_an_integer_a_range_and_a_list() {
    for (value, yes, no) in [
        ("200", vec![200], vec![201, 199]),
        ("\"200-399\"", vec![200, 302, 399], vec![199, 400]),
        ("[200, 204]", vec![200, 204], vec![201, 203]),
        ("[200, \"300-302\"]", vec![200, 300, 302], vec![299, 303]),
        ("\"204\"", vec![204], vec![200]),
    ] {
        let c = parse(
            &with_check(&format!("kind = \"http\"\nexpect_status = {value}")),
            "lb.toml",
        )
        .unwrap_or_else(|e| panic!("{value}: {e:#}"));
        let set = &c.vips[0].health_check.expect_status;
        for s in yes {
            assert!(set.contains(s), "{value} should contain {s}");
        }
        for s in no {
            assert!(!set.contains(s), "{value} should not contain {s}");
        }
        // `lb-agent check` prints it back as written, and that parses to the same set.
        let again = parse(&c.to_toml().unwrap(), "again").unwrap();
        assert_eq!(&again.vips[0].health_check.expect_status, set, "{value}");
    }
}

#[test]
fn the_default_check_is_unchanged() {
    let c = parse(&with_check("kind = \"http\""), "lb.toml").unwrap();
    let hc = &c.vips[0].health_check;
    assert!(hc.expect_status.contains(200) && !hc.expect_status.contains(204));
    assert!(hc.verify);
    assert_eq!(
        (&hc.host, &hc.sni, &hc.ca_file, &hc.expect_body),
        (&None, &None, &None, &None)
    );
}

// ---- the corpus of bad check options ----------------------------------------------------------

/// Each case: the health_check table, the key, the marker of the line, the reason.
#[rustfmt::skip]
const BAD: &[(&str, &str, &str, &str)] = &[
    ("kind = \"http\"\nexpect_status = \"399-200\" # m", "expect_status", "# m", "range \"399-200\" is reversed"),
    ("kind = \"http\"\nexpect_status = 700 # m", "expect_status", "# m", "between 100 and 599, got 700"),
    ("kind = \"http\"\nexpect_status = 99 # m", "expect_status", "# m", "between 100 and 599, got 99"),
    ("kind = \"http\"\nexpect_status = \"200-600\" # m", "expect_status", "# m", "between 100 and 599, got 600"),
    ("kind = \"http\"\nexpect_status = [] # m", "expect_status", "# m", "at least one status"),
    ("kind = \"http\"\nexpect_status = [200, 1000] # m", "expect_status", "# m", "got 1000"),
    ("kind = \"http\"\nexpect_status = 70000 # m", "expect_status", "# m", "between 100 and 599, got 70000"),
    ("kind = \"http\"\nexpect_status = \"2xx\" # m", "expect_status", "# m", "invalid status \"2xx\""),
    ("kind = \"http\"\nexpect_status = \"200-\" # m", "expect_status", "# m", "invalid status"),
    ("kind = \"http\"\nexpect_status = [[200]] # m", "expect_status", "# m", "cannot nest"),
    ("kind = \"http\"\nexpect_status = 2.5 # m", "expect_status", "# m", "a status (200), a range"),
    ("kind = \"http\"\nexpect_body = \"\" # m", "expect_body", "# m", "must not be empty"),
    ("kind = \"tcp\"\nexpect_body = \"ok\" # m", "expect_body", "# m", "only applies to kind = \"http\" or \"https\""),
    ("kind = \"http\"\nhost = \"a b\" # m", "host", "# m", "is not a host name"),
    ("kind = \"http\"\nhost = \"x\\r\\nX-Evil: 1\" # m", "host", "# m", "is not a host name"),
    ("kind = \"http\"\nhost = \"\" # m", "host", "# m", "must not be empty"),
    ("kind = \"tcp\"\nhost = \"a.test\" # m", "host", "# m", "only applies"),
    ("kind = \"http\"\nsni = \"a.test\" # m", "sni", "# m", "only applies to kind = \"tls\" or \"https\""),
    ("kind = \"tcp\"\nverify = false # m", "verify", "# m", "only applies to kind = \"tls\" or \"https\""),
    ("kind = \"http\"\nca_file = \"/etc/ca.pem\" # m", "ca_file", "# m", "only applies"),
    ("kind = \"https\"\nverify = false\nsni = \"bad name!\" # m", "sni", "# m", "is not a DNS name or an IP address"),
    ("kind = \"https\"\nverify = false\nsni = \"\" # m", "sni", "# m", "is not a DNS name"),
    ("kind = \"https\" # m\nsni = \"a.test\"", "verify", "# m", "verify = true (the default) needs ca_file"),
    ("kind = \"tls\"\nverify = false\nca_file = \"/etc/ca.pem\" # m", "ca_file", "# m", "is unused with verify = false"),
    ("kind = \"tls\"\nsni = \"a.test\"\nca_file = \"ca.pem\" # m", "ca_file", "# m", "must be an absolute path"),
    ("kind = \"tls\"\nca_file = \"/etc/ca.pem\" # m", "sni", "# m", "verify = true needs the name"),
];

#[test]
fn every_bad_check_option_is_rejected_with_key_line_and_reason() {
    for (check, key, marker, reason) in BAD {
        let text = with_check(check);
        let key = format!("vip[0].health_check.{key}");
        // A key missing from the file is reported at its table's line.
        let at = if text.contains(&format!("\n{}", key.rsplit('.').next().unwrap())) {
            line(&text, marker)
        } else {
            line(&text, "[vip.health_check]")
        };
        let at = if check.contains(&format!("{} =", key.rsplit('.').next().unwrap())) {
            line(&text, marker)
        } else {
            at
        };
        assert_rejected(&text, &key, at, reason);
    }
}

// ---- the CA file ------------------------------------------------------------------------------

#[test]
fn a_ca_file_is_read_at_load() {
    let pki = Pki::new();
    let f = ca_file(&pki.ca_pem());
    let text = with_check(&format!(
        "kind = \"https\"\nsni = \"backend.test\"\nca_file = \"{}\"",
        f.path()
    ));
    let c = parse(&text, "lb.toml").unwrap();
    let hc = &c.vips[0].health_check;
    assert_eq!(hc.kind, CheckKind::Https);
    assert_eq!(hc.ca_certs.certs().len(), 1);
    assert_eq!(hc.server_name().as_deref(), Some("backend.test"));
}

#[test]
fn sni_defaults_to_the_host_part_of_host() {
    let c = parse(
        &with_check("kind = \"https\"\nverify = false\nhost = \"api.test:8443\""),
        "lb.toml",
    )
    .unwrap();
    assert_eq!(
        c.vips[0].health_check.server_name().as_deref(),
        Some("api.test")
    );
}

#[test]
fn unusable_ca_files_are_rejected_with_key_line_and_reason() {
    let not_pem = ca_file("hello\n");
    let garbage = ca_file("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    let dir = std::env::temp_dir();
    let mut big = ca_file("");
    {
        let mut f = std::fs::File::create(&big.0).unwrap();
        f.write_all(&vec![b'a'; (super::MAX_CA_BYTES + 1) as usize])
            .unwrap();
    }
    big.0 = big.0.clone();
    for (path, reason) in [
        (
            "/nonexistent/ca.pem".to_string(),
            "cannot read /nonexistent/ca.pem: No such file".to_string(),
        ),
        (not_pem.path(), "no PEM certificate".to_string()),
        (
            garbage.path(),
            "certificate 1 is not a usable CA certificate".to_string(),
        ),
        (
            dir.display().to_string(),
            "is not a regular file".to_string(),
        ),
        (big.path(), "is larger than 1048576 bytes".to_string()),
    ] {
        let text = with_check(&format!(
            "kind = \"tls\"\nsni = \"a.test\"\nca_file = \"{path}\" # m"
        ));
        assert_rejected(
            &text,
            "vip[0].health_check.ca_file",
            line(&text, "# m"),
            &reason,
        );
    }
    // Not read at all when the rest of the file is wrong (one report of what to fix first).
    let text =
        with_check("kind = \"tls\"\nsni = \"a.test\"\nca_file = \"/nonexistent/ca.pem\"\nrise = 0");
    let err = rejected(&text);
    assert!(
        err.contains("rise") && !err.contains("cannot read"),
        "{err}"
    );
}
