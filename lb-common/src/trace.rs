//! Packet trace: what `lb-agent trace` writes to the data path (`TRACE_CONTROL`) and what the
//! data path sends back for each traced packet (`TRACE_EVENTS`, a ring buffer).
//!
//! The trace is off unless a tracer keeps renewing `until_ns`: a tracer killed without
//! clearing it stops the events within [`crate::TRACE_LEASE_NS`] all the same.

#[cfg(test)]
use crate::consts::TRACE_RING_BYTES;
use crate::consts::TRACE_SNAP_LEN;

/// A filter field that matches everything, or an event field that has no value (no VIP found,
/// no backend chosen).
pub const TRACE_ANY: u32 = u32::MAX;

/// Slot kinds in [`TraceHeader::slot`].
pub const TRACE_SLOT_NONE: u32 = 0;
pub const TRACE_SLOT_STABLE: u32 = 1;
pub const TRACE_SLOT_MOVED: u32 = 2;

/// Single element of the `TRACE_CONTROL` array, written by the tracer only.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TraceControl {
    /// CLOCK_MONOTONIC nanoseconds until which packets are traced; 0: off. The one field every
    /// packet reads.
    pub until_ns: u64,
    /// Only this VIP id, or [`TRACE_ANY`].
    pub vip_id: u32,
    /// Only this `Stat` (the verdict's reason), or [`TRACE_ANY`].
    pub reason: u32,
    /// Bit `1 << action` for each XDP action traced (XDP_DROP 1, XDP_PASS 2, XDP_TX 3).
    pub actions: u32,
    /// One matching packet in `sample` per CPU is sent (1: every one).
    pub sample: u32,
    /// Bytes of each frame to copy, at most [`TRACE_SNAP_LEN`].
    pub snap_len: u32,
    /// The tracer's pid, for the message a second tracer gets.
    pub tracer_pid: u32,
}

/// What the data path knows about a traced packet's verdict.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TraceHeader {
    /// CLOCK_MONOTONIC nanoseconds at the verdict.
    pub ts_ns: u64,
    /// XDP action (1 drop, 2 pass, 3 tx).
    pub action: u32,
    /// The `Stat` counted for the verdict.
    pub reason: u32,
    /// VIP id, or [`TRACE_ANY`] if the packet matched no VIP.
    pub vip_id: u32,
    /// Backend id, or [`TRACE_ANY`] if none was chosen.
    pub backend_id: u32,
    /// `TRACE_SLOT_*`: the flow's Maglev slot, if one was looked up.
    pub slot: u32,
    pub cpu: u32,
    /// Length of the frame as received, and how many of its bytes are in `rx`.
    pub rx_len: u32,
    pub rx_cap: u32,
    /// Length of the frame as sent (XDP_TX only, else 0), and how many bytes are in `tx`.
    pub tx_len: u32,
    pub tx_cap: u32,
}

/// One record of `TRACE_EVENTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    pub header: TraceHeader,
    pub rx: [u8; TRACE_SNAP_LEN],
    pub tx: [u8; TRACE_SNAP_LEN],
}

/// Per-CPU scratch of the data path (`TRACE_SCRATCH`): the event being built (the frame as
/// received is copied before the program rewrites it) and the sampling count.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceScratch {
    pub event: TraceEvent,
    /// Matching packets seen on this CPU since the map was created.
    pub matched: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<TraceControl>(), 32);
        assert_eq!(size_of::<TraceHeader>(), 48);
        assert_eq!(size_of::<TraceEvent>(), 48 + 2 * TRACE_SNAP_LEN);
        assert_eq!(size_of::<TraceScratch>(), size_of::<TraceEvent>() + 8);
        assert!(TRACE_RING_BYTES.is_power_of_two());
    }
}
