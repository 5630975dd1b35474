//! Bounds-checked access to the frame: every read and write goes through these, so the verifier
//! sees a check before each access and malformed frames can never fault.

use aya_ebpf::programs::XdpContext;
use core::mem::size_of;

/// Start and end of the frame. Volatile loads: LLVM otherwise merges the two 32-bit context
/// fields into shifted 64-bit values, arithmetic on the end pointer that the verifier rejects,
/// and reuses stale copies across checks the verifier cannot connect.
#[inline(always)]
fn bounds(ctx: &XdpContext) -> (usize, usize) {
    // SAFETY: ctx.ctx is the program's context pointer, valid for the whole run.
    unsafe {
        (
            core::ptr::read_volatile(&(*ctx.ctx).data) as usize,
            core::ptr::read_volatile(&(*ctx.ctx).data_end) as usize,
        )
    }
}

/// Pointer to a `T` at `off` bytes into the frame, or `None` if the frame is too short.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let (start, end) = bounds(ctx);
    if start + off + size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

/// Copy of the `T` at `off`.
#[inline(always)]
pub fn read_at<T: Copy>(ctx: &XdpContext, off: usize) -> Option<T> {
    // SAFETY: ptr_at checked that size_of::<T>() bytes at `off` lie inside the frame.
    ptr_at::<T>(ctx, off).map(|p| unsafe { *p })
}

/// Whether the frame holds at least `len` bytes. Lengths are only ever compared this way: the
/// verifier forbids arithmetic on the end pointer, so `data_end - data` cannot be computed.
#[inline(always)]
pub fn holds(ctx: &XdpContext, len: usize) -> bool {
    let (start, end) = bounds(ctx);
    start + len <= end
}

/// Whether the frame is exactly `len` bytes long.
#[inline(always)]
pub fn is_exactly(ctx: &XdpContext, len: usize) -> bool {
    let (start, end) = bounds(ctx);
    start + len == end
}

/// Grow (negative `delta`) or shrink the frame at its head.
#[inline(always)]
pub fn adjust_head(ctx: &XdpContext, delta: i32) -> bool {
    // SAFETY: plain helper call on the program's own context.
    unsafe { aya_ebpf::helpers::bpf_xdp_adjust_head(ctx.ctx, delta) == 0 }
}

/// Grow or shrink the frame at its tail.
#[inline(always)]
pub fn adjust_tail(ctx: &XdpContext, delta: i32) -> bool {
    // SAFETY: plain helper call on the program's own context.
    unsafe { aya_ebpf::helpers::bpf_xdp_adjust_tail(ctx.ctx, delta) == 0 }
}
