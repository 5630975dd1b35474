use super::*;
use std::{ffi::CString, os::unix::ffi::OsStrExt as _, sync::mpsc};

/// A fresh directory of this test's own.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lb-agent-read-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

fn refused(path: &Path) -> String {
    format!("{:#}", read_text(path).expect_err("must be refused"))
}

#[test]
fn a_regular_file_is_read() {
    let dir = temp_dir("regular");
    let path = dir.join("lb.toml");
    std::fs::write(&path, "[agent]\ninterface = \"eth0\"\n").unwrap();
    assert_eq!(read_text(&path).unwrap(), "[agent]\ninterface = \"eth0\"\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Nobody ever opens the FIFO for writing: a blocking open would hang this test.
#[test]
fn a_fifo_is_refused_without_waiting_for_a_writer() {
    let dir = temp_dir("fifo");
    let path = dir.join("lb.toml");
    mkfifo(&path);
    let err = refused(&path);
    assert!(
        err.contains("FIFO") && err.contains("not a regular file"),
        "{err}"
    );
    assert!(err.contains(&path.display().to_string()), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn devices_and_directories_are_refused() {
    let err = refused(Path::new("/dev/zero"));
    assert!(err.contains("/dev/zero is a character device"), "{err}");
    let dir = temp_dir("dir");
    let err = refused(&dir);
    assert!(err.contains("is a directory, not a regular file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_over_the_cap_is_refused() {
    let dir = temp_dir("big");
    let path = dir.join("lb.toml");
    // Sparse: no 16 MiB actually written.
    let file = File::create(&path).unwrap();
    file.set_len(MAX_BYTES + 1).unwrap();
    let err = refused(&path);
    assert!(err.contains("at most 16777216 bytes (16 MiB)"), "{err}");
    // A file that grew after its size was checked is cut at the cap, then refused.
    let err = format!(
        "{:#}",
        read_capped(File::open(&path).unwrap(), &path).unwrap_err()
    );
    assert!(err.contains("at most 16777216 bytes"), "{err}");
    // Exactly at the cap is fine (as far as reading goes).
    file.set_len(MAX_BYTES).unwrap();
    assert_eq!(read_text(&path).unwrap().len() as u64, MAX_BYTES);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn binary_content_is_refused() {
    let dir = temp_dir("binary");
    let path = dir.join("lb.toml");
    std::fs::write(&path, b"[agent]\n\xff\xfe").unwrap();
    let err = refused(&path);
    assert!(
        err.contains("not UTF-8 text (invalid byte at offset 8)"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_reader_loads_and_refuses_like_load() {
    let dir = temp_dir("reader");
    let path = dir.join("lb.toml");
    mkfifo(&path);
    let err = format!(
        "{:#}",
        Reader::default()
            .load(path.clone(), Duration::from_secs(60))
            .await
            .unwrap_err()
    );
    assert!(err.contains("FIFO"), "{err}");
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, "[agent]\ninterface = \"eth0\"\n").unwrap();
    let cfg = Reader::default()
        .load(path, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(cfg.agent.interface, "eth0");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A read that hangs (a hung filesystem) times out, and while its thread is still stuck the
/// next read is refused at once instead of stacking another thread on it.
#[tokio::test]
async fn a_hung_read_times_out_and_blocks_no_further_thread() {
    let reader = Reader::default();
    let (release, hung) = mpsc::channel::<()>();
    let stuck = move || {
        // Returns only when the test says so: the timeout must fire first.
        let _ = hung.recv();
        Err(anyhow!("released"))
    };
    let err = format!(
        "{:#}",
        reader
            .run(stuck, Duration::from_millis(50), "lb.toml")
            .await
            .unwrap_err()
    );
    assert!(err.contains("lb.toml took longer than 0.05 s"), "{err}");
    let err = format!(
        "{:#}",
        reader
            .run(
                || unreachable!("must not run"),
                Duration::from_secs(60),
                "lb.toml"
            )
            .await
            .unwrap_err()
    );
    assert!(err.contains("has still not returned"), "{err}");
    release.send(()).unwrap();
    // The stuck thread ends soon after its release; a bounded wait for it, not a timing claim.
    let ok = || Ok(crate::config::parse("[agent]\ninterface = \"eth0\"\n", "x").unwrap());
    for _ in 0..1000 {
        match reader.run(ok, Duration::from_secs(60), "lb.toml").await {
            Ok(cfg) => {
                assert_eq!(cfg.agent.interface, "eth0");
                return;
            }
            Err(e) => assert!(format!("{e:#}").contains("still not returned"), "{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the released read never ended");
}
