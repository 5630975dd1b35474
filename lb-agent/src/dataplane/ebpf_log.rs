//! `lb-agent run --ebpf-log`: the balancer's `ebpf-log` variant (`lb-log`, aya-log of the rare
//! events) and the thread that forwards its records to the agent's log.

use anyhow::{Context, Result};
use aya::Ebpf;
use lb_common::Stat;
use std::os::fd::{AsRawFd, RawFd};

/// The data path logs a reason as `reason #N` (a `Stat` index: strings cost it stack it does
/// not have); the agent's log shows its counter name, as `lb-agent stats` does.
pub fn name_reasons(message: &str) -> String {
    const MARK: &str = "reason #";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let after = &rest[at + MARK.len()..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let name = after[..digits]
            .parse::<usize>()
            .ok()
            .and_then(|i| Stat::ALL.get(i));
        match name {
            Some(stat) => out.push_str(stat.name()),
            None => out.push_str(&rest[at..at + MARK.len() + digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// Passes the records on to the `log` facade with their reasons named.
struct Named;

impl log::Log for Named {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        log::logger().enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        let message = name_reasons(&record.args().to_string());
        log::logger().log(
            &log::Record::builder()
                .args(format_args!("{message}"))
                .level(record.level())
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        log::logger().flush()
    }
}

/// Forward the loaded variant's aya-log records to the `log` facade, which the agent's
/// tracing subscriber receives (tracing-subscriber's `log` bridge), from a thread of its own.
/// The thread owns the logger for the rest of the process: dropping it would close the ring
/// buffer the program writes to.
pub(super) fn start(ebpf: &mut Ebpf) -> Result<()> {
    let mut logger = aya_log::EbpfLogger::init_with_logger(ebpf, Named)
        .context("the ebpf-log variant has no aya-log ring buffer (AYA_LOGS)")?;
    let fd = logger.as_raw_fd();
    std::thread::Builder::new()
        .name("ebpf-log".into())
        .spawn(move || loop {
            if let Err(e) = wait_readable(fd) {
                tracing::warn!("ebpf-log: polling the aya-log ring buffer: {e}; no more eBPF logs");
                return;
            }
            logger.flush();
        })
        .context("starting the ebpf-log thread")?;
    tracing::info!("ebpf-log: the data path logs its rare events (ICMP sent, moved slots, drops)");
    Ok(())
}

fn wait_readable(fd: RawFd) -> std::io::Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one pollfd, owned by this frame; `fd` stays open while the logger lives.
        if unsafe { libc::poll(&mut pfd, 1, -1) } >= 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::name_reasons;

    #[test]
    fn reasons_are_named_and_unknown_ones_left_as_they_are() {
        let drop = lb_common::Stat::DropFragment as u32;
        let moved = lb_common::Stat::MovedToPrevious as u32;
        assert_eq!(
            name_reasons(&format!(
                "drop reason #{drop}: 198.18.100.2 > 198.18.10.1 proto 6"
            )),
            "drop drop_fragment: 198.18.100.2 > 198.18.10.1 proto 6"
        );
        assert_eq!(
            name_reasons(&format!("moved slot: to backend #3 (reason #{moved})")),
            "moved slot: to backend #3 (moved_to_previous)"
        );
        assert_eq!(name_reasons("reason #9999 x"), "reason #9999 x");
        assert_eq!(name_reasons("reason #"), "reason #");
        assert_eq!(name_reasons("no reason"), "no reason");
    }
}
