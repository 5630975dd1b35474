//! The front of every program: Ethernet with at most one 802.1Q / 802.1ad tag.

use crate::{hdr::EthHdr, hdr::VlanHdr, packet::read_at};
use aya_ebpf::programs::XdpContext;
use lb_common::{ETH_HDR_LEN, ETH_P_8021AD, ETH_P_8021Q, VLAN_HDR_LEN};

/// Where the network header starts, and its EtherType (network order).
#[derive(Clone, Copy)]
pub struct L2 {
    pub eth: EthHdr,
    /// The frame's tag (TPID and TCI, network order) when it carries one.
    pub tag: Option<VlanHdr>,
    pub proto: u16,
}

impl L2 {
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        if self.tag.is_some() {
            ETH_HDR_LEN + VLAN_HDR_LEN
        } else {
            ETH_HDR_LEN
        }
    }
}

/// `None` when the frame is shorter than its link-layer header.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Option<L2> {
    let eth: EthHdr = read_at(ctx, 0)?;
    if eth.proto == ETH_P_8021Q.to_be() || eth.proto == ETH_P_8021AD.to_be() {
        let vlan: VlanHdr = read_at(ctx, ETH_HDR_LEN)?;
        return Some(L2 {
            eth,
            tag: Some(VlanHdr {
                tci: vlan.tci,
                proto: eth.proto,
            }),
            proto: vlan.proto,
        });
    }
    Some(L2 {
        eth,
        tag: None,
        proto: eth.proto,
    })
}

/// Write an Ethernet header (and `tag`, whose `proto` holds its TPID) at the start of the frame.
/// Returns false if the frame is too short.
#[inline(always)]
pub fn write(
    ctx: &XdpContext,
    dst: [u16; 3],
    src: [u16; 3],
    tag: Option<VlanHdr>,
    proto: u16,
) -> bool {
    let Some(eth) = crate::packet::ptr_at::<EthHdr>(ctx, 0) else {
        return false;
    };
    let outer_proto = match tag {
        Some(tag) => {
            let Some(vlan) = crate::packet::ptr_at::<VlanHdr>(ctx, ETH_HDR_LEN) else {
                return false;
            };
            // SAFETY: bounds checked by ptr_at.
            unsafe {
                *vlan = VlanHdr {
                    tci: tag.tci,
                    proto,
                }
            };
            tag.proto
        }
        None => proto,
    };
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        *eth = EthHdr {
            dst,
            src,
            proto: outer_proto,
        }
    };
    true
}
