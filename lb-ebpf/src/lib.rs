//! Pieces shared by the XDP programs: wire headers, bounds-checked packet access, checksums
//! and the Ethernet/VLAN front of the parser. Each program's own logic lives under `src/bin/`.
#![cfg_attr(target_arch = "bpf", no_std)]

pub mod csum;
pub mod hdr;
pub mod l2;
pub mod packet;
