//! Transport headers: the ports, and whether a TCP segment opens a connection.

use crate::packet::FlowKind;
use aya_ebpf::programs::XdpContext;
use lb_common::{Stat, IPPROTO_TCP, TCP_FLAG_ACK, TCP_FLAG_SYN, TCP_HDR_LEN, UDP_HDR_LEN};
use lb_ebpf::{
    hdr::{Ports, TCP_FLAGS_OFFSET},
    packet::{ptr_at, read_at},
};

pub struct L4 {
    pub ports: Ports,
    pub kind: FlowKind,
}

/// Parse the TCP or UDP header at `off`; `ip_end` is where the IP packet ends.
/// A header cut short by the frame or by the IP length is malformed.
#[inline(always)]
pub fn parse(ctx: &XdpContext, off: usize, ip_end: usize, proto: u8) -> Result<L4, Stat> {
    if proto == IPPROTO_TCP {
        if off + TCP_HDR_LEN > ip_end {
            return Err(Stat::DropMalformed);
        }
        let hdr = ptr_at::<[u8; TCP_HDR_LEN]>(ctx, off).ok_or(Stat::DropMalformed)?;
        // SAFETY: ptr_at checked the whole header is inside the frame.
        let (ports, doff, flags) = unsafe {
            (
                *(hdr as *const Ports),
                (*hdr)[TCP_FLAGS_OFFSET - 1] >> 4,
                (*hdr)[TCP_FLAGS_OFFSET],
            )
        };
        if (doff as usize) * 4 < TCP_HDR_LEN {
            return Err(Stat::DropMalformed);
        }
        let kind = if flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN {
            FlowKind::Syn
        } else {
            FlowKind::TcpOther
        };
        return Ok(L4 { ports, kind });
    }
    if off + UDP_HDR_LEN > ip_end || ptr_at::<[u8; UDP_HDR_LEN]>(ctx, off).is_none() {
        return Err(Stat::DropMalformed);
    }
    let ports = read_at::<Ports>(ctx, off).ok_or(Stat::DropMalformed)?;
    Ok(L4 {
        ports,
        kind: FlowKind::Udp,
    })
}
