//! `--pcap FILE`: each traced packet as two Ethernet records, the frame as received and, for
//! XDP_TX, the frame as sent (with its outer IPIP / IPv6 header, which tcpdump on the
//! interface never shows: XDP_TX bypasses the stack's taps).

use super::event;
use anyhow::{Context, Result};
use lb_common::TraceEvent;
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
            // The usual 65535, not the 256 bytes kept: strict readers (pcap-file's own) refuse
            // records whose original length exceeds the file's snap length.
            snaplen: 65535,
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

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::{TraceHeader, TRACE_SNAP_LEN};
    use pcap_file::pcap::PcapReader;

    fn event(tx_cap: u32) -> TraceEvent {
        let mut e = TraceEvent {
            header: TraceHeader {
                rx_len: 1514,
                rx_cap: 4,
                tx_len: 106,
                tx_cap,
                ..Default::default()
            },
            rx: [0; TRACE_SNAP_LEN],
            tx: [0; TRACE_SNAP_LEN],
        };
        e.rx[..4].copy_from_slice(&[1, 2, 3, 4]);
        e.tx[..2].copy_from_slice(&[9, 8]);
        e
    }

    /// A forwarded packet is two records (as received, as sent), a passed one only the first;
    /// each record keeps the frame's real length and its capture time.
    #[test]
    fn records_hold_both_frames_with_their_lengths() {
        let path = std::env::temp_dir().join(format!("lb-trace-{}.pcap", std::process::id()));
        let mut pcap = Pcap::create(&path).unwrap();
        pcap.write(&event(2), 1_500_000_123_000).unwrap();
        pcap.write(&event(0), 1_500_000_124_000).unwrap();
        drop(pcap);
        let mut reader = PcapReader::new(File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.header().datalink, DataLink::ETHERNET);
        let mut records = Vec::new();
        while let Some(p) = reader.next_packet() {
            let p = p.unwrap();
            records.push((p.timestamp, p.orig_len, p.data.to_vec()));
        }
        std::fs::remove_file(&path).unwrap();
        let at = |ns| Duration::from_nanos(ns);
        assert_eq!(
            records,
            vec![
                (at(1_500_000_123_000), 1514, vec![1, 2, 3, 4]),
                (at(1_500_000_123_000), 106, vec![9, 8]),
                (at(1_500_000_124_000), 1514, vec![1, 2, 3, 4]),
            ]
        );
    }

    #[test]
    fn an_unwritable_path_says_which() {
        let err = Pcap::create(Path::new("/nonexistent/dir/x.pcap"))
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("--pcap: creating /nonexistent/dir/x.pcap"));
    }
}
