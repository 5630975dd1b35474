//! `--pcap FILE`: each traced packet as two Ethernet records, the frame as received and, for
//! XDP_TX, the frame as sent (with its outer IPIP / IPv6 header, which tcpdump on the
//! interface never shows: XDP_TX bypasses the stack's taps).

use super::event;
use anyhow::{Context, Result};
use lb_common::{TraceEvent, TRACE_SNAP_LEN};
use pcap_file::{
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    DataLink,
};
use std::{fs::File, path::Path, time::Duration};

pub struct Pcap {
    writer: PcapWriter<File>,
}

impl Pcap {
    pub fn create(path: &Path) -> Result<Self> {
        let file =
            File::create(path).with_context(|| format!("--pcap: creating {}", path.display()))?;
        let header = PcapHeader {
            datalink: DataLink::ETHERNET,
            snaplen: TRACE_SNAP_LEN as u32,
            ..Default::default()
        };
        let writer = PcapWriter::with_header(file, header)
            .with_context(|| format!("--pcap: writing to {}", path.display()))?;
        Ok(Self { writer })
    }

    /// Written unbuffered: the file is complete after every packet, however the trace ends.
    pub fn write(&mut self, e: &TraceEvent, wall_ns: u64) -> Result<()> {
        let at = Duration::from_nanos(wall_ns);
        let rx = event::rx(e);
        self.writer
            .write_packet(&PcapPacket::new(
                at,
                e.header.rx_len.max(rx.len() as u32),
                rx,
            ))
            .context("--pcap: writing a frame")?;
        let tx = event::tx(e);
        if !tx.is_empty() {
            self.writer
                .write_packet(&PcapPacket::new(
                    at,
                    e.header.tx_len.max(tx.len() as u32),
                    tx,
                ))
                .context("--pcap: writing a frame")?;
        }
        Ok(())
    }
}
