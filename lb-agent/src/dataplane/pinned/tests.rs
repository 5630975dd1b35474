use super::*;

/// A scratch directory (ownership records work on any file system; bpffs is not needed).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lb-pinned-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hint(p: &Path) -> String {
    format!("--pin-dir {}", p.display())
}

#[test]
fn the_first_claim_records_this_namespace_and_a_second_one_agrees() {
    let dir = Scratch::new("mine");
    claim(&dir.0, hint).expect("first claim");
    let cookie = netns_cookie().expect("cookie");
    assert_eq!(recorded(&dir.0), vec![cookie]);
    claim(&dir.0, hint).expect("claim again");
    assert_eq!(recorded(&dir.0), vec![cookie]);
    release(&dir.0).expect("release");
    assert!(recorded(&dir.0).is_empty());
}

#[test]
fn another_namespace_s_pins_are_refused_with_the_directory_to_use() {
    let dir = Scratch::new("foreign");
    let mine = netns_cookie().expect("cookie");
    let other = mine.wrapping_add(1);
    std::fs::create_dir(record_path(&dir.0, other)).expect("foreign record");
    let err = format!("{:#}", claim(&dir.0, hint).expect_err("adopted"));
    let d = dir.0.display();
    assert!(err.contains("another network namespace"), "{err}");
    assert!(err.contains(&format!("netns cookie {other}")), "{err}");
    assert!(err.contains(&format!("--pin-dir {d}-ns{mine}")), "{err}");
    assert!(err.contains(&format!("rm -r {d}")), "{err}");
    // Nothing recorded for this namespace.
    assert_eq!(recorded(&dir.0), vec![other]);
}

#[test]
fn records_that_are_not_cookies_are_ignored() {
    let dir = Scratch::new("garbage");
    for name in ["netns-", "netns-abc", "netns--1", "VIPS"] {
        std::fs::create_dir(dir.0.join(name)).expect("entry");
    }
    claim(&dir.0, hint).expect("claim");
    assert_eq!(recorded(&dir.0), vec![netns_cookie().expect("cookie")]);
}

#[test]
fn a_file_that_is_not_a_pinned_link_is_no_link() {
    let dir = Scratch::new("notalink");
    let file = dir.0.join("xdp_link_eth0");
    std::fs::write(&file, b"x").expect("file");
    let err = format!("{:#}", link_state(&file).expect_err("a link?"));
    assert!(err.contains("opening the pinned link"), "{err}");
    assert!(err.contains(&file.display().to_string()), "{err}");
}

#[test]
fn interface_names_that_cannot_exist_have_no_index() {
    assert_eq!(ifindex("lb-no-such-if0"), None);
    assert_eq!(ifindex("bad\0name"), None);
    assert_eq!(ifindex(""), None);
}
