//! Running a loaded XDP program once on a frame with BPF_PROG_TEST_RUN.

use anyhow::{Context, Result};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};

/// XDP verdicts, for readable assertions.
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// The program's verdict and the frame as it left the program.
pub fn run_once(prog: &Xdp, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
    // Room for encapsulation growth.
    let mut out = vec![0u8; frame.len() + 256];
    let result = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    out.truncate(result.data_size_out as usize);
    Ok((result.return_value, out))
}

/// TC verdicts.
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;

/// Bytes of the `struct __sk_buff` handed in as context (up to and including `mark`; the
/// kernel reads the rest as zero).
const SKB_CTX_LEN: usize = 12;

/// Run a loaded TC program once on `frame` as a packet carrying `mark` (skb->mark).
pub fn run_tc_once(prog: &SchedClassifier, frame: &[u8], mark: u32) -> Result<(u32, Vec<u8>)> {
    let mut out = vec![0u8; frame.len() + 256];
    // __sk_buff: len, pkt_type, mark.
    let mut ctx = [0u8; SKB_CTX_LEN];
    ctx[8..12].copy_from_slice(&mark.to_ne_bytes());
    let result = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat: 1,
            ..Default::default()
        })
        .context("BPF_PROG_TEST_RUN (TC)")?;
    out.truncate(result.data_size_out as usize);
    Ok((result.return_value, out))
}
