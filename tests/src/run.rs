//! Running a loaded XDP program once on a frame with BPF_PROG_TEST_RUN.

use anyhow::{Context, Result};
use aya::programs::{TestRun, TestRunOptions, Xdp};

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
