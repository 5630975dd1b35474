//! Pieces shared by the XDP programs: wire headers, bounds-checked packet access, checksums,
//! counters and the Ethernet/VLAN front of the parser. Each program's own logic lives under
//! `src/bin/`.
#![cfg_attr(target_arch = "bpf", no_std)]

pub mod csum;
pub mod hdr;
pub mod l2;
pub mod packet;

use aya_ebpf::maps::PerCpuArray;

/// Add one to counter `index` of a per-CPU counter array. Array lookups on per-CPU arrays are
/// inlined by the verifier, so a count costs a few instructions and no atomic operation.
#[inline(always)]
pub fn increment(counters: &PerCpuArray<u64>, index: u32) {
    if let Some(c) = counters.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no other writer while this program runs on this CPU.
        unsafe { *c += 1 };
    }
}

/// Declares a `#[map]` static and checks at compile time that its identifier, which becomes
/// its name in the object, is the name `lb_common::maps` gives it (the agent finds maps by
/// those names). A static without such a constant does not compile.
#[macro_export]
macro_rules! named_map {
    ($(#[$attr:meta])* $vis:vis static $name:ident: $ty:ty = $init:expr;) => {
        $(#[$attr])*
        #[aya_ebpf::macros::map]
        $vis static $name: $ty = $init;

        const _: () = assert!(
            lb_common::maps::same_name(stringify!($name), lb_common::maps::$name),
            concat!("map ", stringify!($name), " differs from its name in lb_common::maps"),
        );
    };
}
