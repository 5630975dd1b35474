//! One traced packet: the record the data path sent, and its line.

use super::{filter::action_name, flow};
use anyhow::{bail, Result};
use lb_common::{
    Stat, TraceEvent, TraceHeader, TRACE_ANY, TRACE_SLOT_MOVED, TRACE_SLOT_STABLE, TRACE_SNAP_LEN,
};
use std::net::IpAddr;

/// A record of `TRACE_EVENTS`, checked.
pub fn decode(bytes: &[u8]) -> Result<TraceEvent> {
    if bytes.len() < size_of::<TraceEvent>() {
        bail!(
            "a trace record of {} bytes, expected {}: is this lb-agent the running agent's \
             version?",
            bytes.len(),
            size_of::<TraceEvent>()
        );
    }
    // SAFETY: TraceEvent is plain integers and bytes (any bit pattern is valid) and the slice
    // holds at least its size; read_unaligned makes no alignment assumption.
    let event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<TraceEvent>()) };
    let h = &event.header;
    if h.rx_cap as usize > TRACE_SNAP_LEN || h.tx_cap as usize > TRACE_SNAP_LEN {
        bail!("a trace record claims more than {TRACE_SNAP_LEN} captured bytes");
    }
    Ok(event)
}

/// The frame as received, as far as it was captured.
pub fn rx(event: &TraceEvent) -> &[u8] {
    &event.rx[..event.header.rx_cap as usize]
}

/// The frame as sent (XDP_TX only), as far as it was captured.
pub fn tx(event: &TraceEvent) -> &[u8] {
    &event.tx[..event.header.tx_cap as usize]
}

pub fn reason_name(reason: u32) -> String {
    Stat::ALL
        .get(reason as usize)
        .map_or_else(|| format!("reason#{reason}"), |s| s.name().to_string())
}

fn slot_name(slot: u32) -> &'static str {
    match slot {
        TRACE_SLOT_STABLE => "stable",
        TRACE_SLOT_MOVED => "moved",
        _ => "-",
    }
}

/// What the tracer knows to name an event's ids with.
pub struct Names<'a> {
    pub vip: Option<&'a str>,
    pub backend: Option<IpAddr>,
}

/// `HH:MM:SS.micros` (UTC) of a wall-clock time in nanoseconds since the epoch.
pub fn clock(wall_ns: u64) -> String {
    let secs = wall_ns / 1_000_000_000;
    let micros = (wall_ns % 1_000_000_000) / 1000;
    let day = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{micros:06}",
        day / 3600,
        day % 3600 / 60,
        day % 60
    )
}

/// One line per packet: time, CPU, verdict and reason, VIP, slot, backend, flow, lengths.
pub fn line(event: &TraceEvent, wall_ns: u64, names: &Names) -> String {
    let h: &TraceHeader = &event.header;
    let vip = match (h.vip_id, names.vip) {
        (TRACE_ANY, _) => "-".to_string(),
        (_, Some(name)) => name.to_string(),
        (id, None) => format!("#{id}"),
    };
    let backend = match (h.backend_id, names.backend) {
        (TRACE_ANY, _) => "-".to_string(),
        (_, Some(addr)) => addr.to_string(),
        (id, None) => format!("#{id}"),
    };
    let lengths = if h.tx_len > 0 {
        format!("{}>{}", h.rx_len, h.tx_len)
    } else {
        h.rx_len.to_string()
    };
    format!(
        "{} cpu{} {} {} vip={vip} slot={} backend={backend} {} len={lengths}",
        clock(wall_ns),
        h.cpu,
        action_name(h.action),
        reason_name(h.reason),
        slot_name(h.slot),
        flow::describe(rx(event)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn event() -> TraceEvent {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([198, 18, 100, 2], [198, 18, 10, 1], 64)
            .tcp(40000, 80, 1, 1000)
            .syn()
            .write(&mut frame, &[])
            .unwrap();
        let mut e = TraceEvent {
            header: TraceHeader {
                ts_ns: 1,
                action: 3,
                reason: Stat::Forwarded as u32,
                vip_id: 0,
                backend_id: 2,
                slot: TRACE_SLOT_STABLE,
                cpu: 1,
                rx_len: frame.len() as u32,
                rx_cap: frame.len() as u32,
                tx_len: frame.len() as u32 + 20,
                tx_cap: 0,
            },
            rx: [0; TRACE_SNAP_LEN],
            tx: [0; TRACE_SNAP_LEN],
        };
        e.rx[..frame.len()].copy_from_slice(&frame);
        e
    }

    fn bytes(e: &TraceEvent) -> Vec<u8> {
        // SAFETY: plain bytes of a repr(C) value without padding.
        unsafe {
            std::slice::from_raw_parts(
                (e as *const TraceEvent).cast::<u8>(),
                size_of::<TraceEvent>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn a_forwarded_packet_reads_as_one_line() {
        let e = decode(&bytes(&event())).unwrap();
        let names = Names {
            vip: Some("web"),
            backend: Some("198.18.1.3".parse().unwrap()),
        };
        let wall = (13 * 3600 + 4 * 60 + 5) * 1_000_000_000 + 123_456_789;
        assert_eq!(
            line(&e, wall, &names),
            "13:04:05.123456 cpu1 tx forwarded vip=web slot=stable backend=198.18.1.3 \
             tcp 198.18.100.2:40000 > 198.18.10.1:80 [S] len=54>74"
        );
        let unnamed = Names {
            vip: None,
            backend: None,
        };
        assert!(line(&e, 0, &unnamed).contains("vip=#0 slot=stable backend=#2 "));
    }

    #[test]
    fn a_packet_without_vip_or_backend_shows_dashes() {
        let mut e = event();
        e.header.action = 1;
        e.header.reason = Stat::DropMalformed as u32;
        e.header.vip_id = TRACE_ANY;
        e.header.backend_id = TRACE_ANY;
        e.header.slot = 0;
        e.header.tx_len = 0;
        let names = Names {
            vip: None,
            backend: None,
        };
        let l = line(&e, 0, &names);
        assert!(
            l.contains(" drop drop_malformed vip=- slot=- backend=- tcp ")
                && l.ends_with(" len=54"),
            "{l}"
        );
        assert_eq!(reason_name(9999), "reason#9999");
    }

    #[test]
    fn short_or_overlong_records_are_refused() {
        let good = bytes(&event());
        assert!(decode(&good[..100])
            .unwrap_err()
            .to_string()
            .contains("100 bytes"));
        let mut e = event();
        e.header.rx_cap = TRACE_SNAP_LEN as u32 + 1;
        assert!(decode(&bytes(&e)).is_err());
    }
}
