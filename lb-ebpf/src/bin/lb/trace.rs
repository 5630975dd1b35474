//! Packet trace (`lb-agent trace`): while a tracer holds `TRACE_CONTROL` on, each packet's
//! frame as received, its verdict with reason, VIP, slot and backend, and for XDP_TX the frame
//! as sent, go to the `TRACE_EVENTS` ring buffer.
//!
//! Off, the trace costs every packet one array lookup (inlined by the verifier) and one
//! branch. A traced packet runs its own copy of the path (`TRACED`), which notes the VIP, slot
//! and backend in this CPU's scratch event as it learns them; copying frames and sending are
//! two functions of their own (BPF-to-BPF calls), so their code stays out of the path.

use crate::{
    maps::{TRACE_CONTROL, TRACE_EVENTS, TRACE_SCRATCH},
    verdict::Verdict,
};
use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    cty::c_void,
    helpers::{
        bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_xdp_get_buff_len, bpf_xdp_load_bytes,
    },
    programs::XdpContext,
};
use lb_common::{
    TraceEvent, TRACE_ANY, TRACE_SLOT_MOVED, TRACE_SLOT_NONE, TRACE_SLOT_STABLE, TRACE_SNAP_LEN,
};

/// Whether this packet is traced. When it is, its frame as received is in the scratch event.
#[inline(always)]
pub fn start(ctx: &XdpContext) -> bool {
    match TRACE_CONTROL.get(0) {
        Some(control) if control.until_ns != 0 => begin(ctx.ctx) != 0,
        _ => false,
    }
}

/// Send the event of a traced packet, if the tracer's filters and sampling want it.
#[inline(always)]
pub fn finish(ctx: &XdpContext, v: &Verdict) {
    emit(ctx.ctx, v.action, v.reason as u32);
}

/// The traced packet matched VIP `id`.
#[inline(always)]
pub fn note_vip(id: u32) {
    if let Some(scratch) = TRACE_SCRATCH.get_ptr_mut(0) {
        // SAFETY: this CPU's scratch value; nothing else writes it while this program runs here.
        unsafe { (*scratch).event.header.vip_id = id };
    }
}

/// The traced packet's slot (moved or stable) and the backend it gave, if any.
#[inline(always)]
pub fn note_slot(moved: bool, backend: Option<u32>) {
    if let Some(scratch) = TRACE_SCRATCH.get_ptr_mut(0) {
        // SAFETY: as in `note_vip`.
        let h = unsafe { &mut (*scratch).event.header };
        h.slot = if moved {
            TRACE_SLOT_MOVED
        } else {
            TRACE_SLOT_STABLE
        };
        h.backend_id = backend.unwrap_or(TRACE_ANY);
    }
}

/// The lease is still running: copy the frame as received. Returns 1 if the packet is traced.
#[inline(never)]
fn begin(ctx: *mut xdp_md) -> u32 {
    let (Some(control), Some(scratch)) = (TRACE_CONTROL.get(0), TRACE_SCRATCH.get_ptr_mut(0))
    else {
        return 0;
    };
    // SAFETY: helper without arguments.
    if unsafe { bpf_ktime_get_ns() } > control.until_ns {
        return 0;
    }
    // SAFETY: this CPU's scratch value; nothing else writes it while this program runs here.
    let event = unsafe { &mut (*scratch).event };
    let (len, cap) = copy_frame(ctx, &mut event.rx, control.snap_len);
    let h = &mut event.header;
    h.rx_len = len;
    h.rx_cap = cap;
    h.vip_id = TRACE_ANY;
    h.backend_id = TRACE_ANY;
    h.slot = TRACE_SLOT_NONE;
    1
}

/// Filter, sample, complete and send the event.
#[inline(never)]
fn emit(ctx: *mut xdp_md, action: u32, reason: u32) -> u32 {
    let (Some(control), Some(scratch)) = (TRACE_CONTROL.get(0), TRACE_SCRATCH.get_ptr_mut(0))
    else {
        return 0;
    };
    // SAFETY: as in `begin`.
    let scratch = unsafe { &mut *scratch };
    let vip = scratch.event.header.vip_id;
    if action >= 32 || control.actions & (1 << action) == 0 {
        return 0;
    }
    if (control.reason != TRACE_ANY && control.reason != reason)
        || (control.vip_id != TRACE_ANY && control.vip_id != vip)
    {
        return 0;
    }
    scratch.matched += 1;
    if control.sample > 1 && scratch.matched % control.sample as u64 != 0 {
        return 0;
    }
    let event = &mut scratch.event;
    let (tx_len, tx_cap) = if action == xdp_action::XDP_TX {
        copy_frame(ctx, &mut event.tx, control.snap_len)
    } else {
        (0, 0)
    };
    // Field by field: a whole-struct store would go through memcpy and its stack frame, and
    // the forwarding path leaves only a few bytes of the 512 to the functions it calls.
    let h = &mut event.header;
    // SAFETY: helpers without arguments.
    h.ts_ns = unsafe { bpf_ktime_get_ns() };
    h.cpu = unsafe { bpf_get_smp_processor_id() };
    h.action = action;
    h.reason = reason;
    h.tx_len = tx_len;
    h.tx_cap = tx_cap;
    // A full ring buffer loses the event; the tracer reports the gap in its summary.
    let _ = TRACE_EVENTS.output::<TraceEvent>(&*event, 0);
    1
}

/// Copy up to `snap` bytes of the frame into `buf`: (frame length, bytes copied).
#[inline(always)]
fn copy_frame(ctx: *mut xdp_md, buf: &mut [u8; TRACE_SNAP_LEN], snap: u32) -> (u32, u32) {
    // SAFETY: plain helper call on the program's own context.
    let len = unsafe { bpf_xdp_get_buff_len(ctx) } as u32;
    let want = if len < snap { len } else { snap };
    // The verifier needs the size bounded by the buffer on this very register.
    let n = want & (2 * TRACE_SNAP_LEN as u32 - 1);
    if n == 0 || n > TRACE_SNAP_LEN as u32 {
        return (len, 0);
    }
    // SAFETY: `buf` holds TRACE_SNAP_LEN >= n bytes.
    let rc = unsafe { bpf_xdp_load_bytes(ctx, 0, buf.as_mut_ptr() as *mut c_void, n) };
    (len, if rc == 0 { n } else { 0 })
}
