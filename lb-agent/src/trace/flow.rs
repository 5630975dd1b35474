//! The flow of a traced frame, read off its bytes as received (the data path sends the frame,
//! not its parse): protocol, addresses, ports and TCP flags; for an ICMP error, the flow it
//! quotes. Frames cut at the snap length parse as far as they go.

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
use std::net::IpAddr;

/// ICMPv4 destination unreachable, source quench, time exceeded, parameter problem; ICMPv6
/// destination unreachable, packet too big, time exceeded, parameter problem: the errors that
/// quote a packet.
const ICMPV4_ERRORS: [u8; 4] = [3, 4, 11, 12];
const ICMPV6_ERRORS: [u8; 4] = [1, 2, 3, 4];

/// `tcp 198.18.100.2:40000 > 198.18.10.1:80 [S]`, `icmp 3/4 about tcp ...`, or what stopped
/// the parse.
pub fn describe(frame: &[u8]) -> String {
    match LaxSlicedPacket::from_ethernet(frame) {
        Ok(packet) => describe_packet(&packet, 0),
        Err(e) => format!("unparsed frame ({e})"),
    }
}

fn addresses(net: &LaxNetSlice) -> Option<(IpAddr, IpAddr)> {
    match net {
        LaxNetSlice::Ipv4(ip) => {
            let h = ip.header();
            Some((h.source_addr().into(), h.destination_addr().into()))
        }
        LaxNetSlice::Ipv6(ip) => {
            let h = ip.header();
            Some((h.source_addr().into(), h.destination_addr().into()))
        }
        LaxNetSlice::Arp(_) => None,
    }
}

fn endpoint(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

fn tcp_flags(tcp: &etherparse::TcpSlice) -> String {
    let flags = [
        (tcp.syn(), 'S'),
        (tcp.fin(), 'F'),
        (tcp.rst(), 'R'),
        (tcp.psh(), 'P'),
        (tcp.ack(), '.'),
    ];
    flags.iter().filter(|(on, _)| *on).map(|(_, c)| c).collect()
}

fn describe_packet(packet: &LaxSlicedPacket, depth: u8) -> String {
    let Some(net) = &packet.net else {
        return match &packet.link {
            Some(etherparse::LinkSlice::Ethernet2(eth)) => {
                format!("non-IP frame (ethertype {:#06x})", eth.ether_type().0)
            }
            _ => "non-IP frame".to_string(),
        };
    };
    let Some((src, dst)) = addresses(net) else {
        return "ARP".to_string();
    };
    match &packet.transport {
        Some(TransportSlice::Tcp(tcp)) => format!(
            "tcp {} > {} [{}]",
            endpoint(src, tcp.source_port()),
            endpoint(dst, tcp.destination_port()),
            tcp_flags(tcp)
        ),
        Some(TransportSlice::Udp(udp)) => format!(
            "udp {} > {}",
            endpoint(src, udp.source_port()),
            endpoint(dst, udp.destination_port())
        ),
        Some(TransportSlice::Icmpv4(icmp)) => {
            let (t, c) = (icmp.type_u8(), icmp.code_u8());
            let quoted = ICMPV4_ERRORS.contains(&t).then(|| icmp.payload());
            icmp_line("icmp", src, dst, t, c, quoted, depth)
        }
        Some(TransportSlice::Icmpv6(icmp)) => {
            let (t, c) = (icmp.type_u8(), icmp.code_u8());
            let quoted = ICMPV6_ERRORS.contains(&t).then(|| icmp.payload());
            icmp_line("icmp6", src, dst, t, c, quoted, depth)
        }
        None => {
            let proto = match net {
                LaxNetSlice::Ipv4(ip) => ip.header().protocol().0,
                LaxNetSlice::Ipv6(ip) => ip.header().next_header().0,
                LaxNetSlice::Arp(_) => 0,
            };
            format!("ip proto {proto} {src} > {dst}")
        }
    }
}

fn icmp_line(
    name: &str,
    src: IpAddr,
    dst: IpAddr,
    kind: u8,
    code: u8,
    quoted: Option<&[u8]>,
    depth: u8,
) -> String {
    let head = format!("{name} {src} > {dst} type {kind}/{code}");
    // One level: a quote inside a quote is not followed.
    match quoted.filter(|_| depth == 0) {
        Some(bytes) => match LaxSlicedPacket::from_ip(bytes) {
            Ok(inner) => format!("{head} about {}", describe_packet(&inner, depth + 1)),
            Err(_) => head,
        },
        None => head,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn tcp_v4(syn: bool) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4([198, 18, 100, 2], [198, 18, 10, 1], 64)
            .tcp(40000, 80, 1, 1000);
        if syn {
            b = b.syn();
        } else {
            b = b.ack(5);
        }
        let mut out = Vec::new();
        b.write(&mut out, b"hello").unwrap();
        out
    }

    #[test]
    fn tcp_and_udp_flows_with_flags() {
        assert_eq!(
            describe(&tcp_v4(true)),
            "tcp 198.18.100.2:40000 > 198.18.10.1:80 [S]"
        );
        assert_eq!(
            describe(&tcp_v4(false)),
            "tcp 198.18.100.2:40000 > 198.18.10.1:80 [.]"
        );
        let mut udp = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6(
                "2001:db8:100::2"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
                "2001:db8:10::1"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
                64,
            )
            .udp(5353, 53)
            .write(&mut udp, b"q")
            .unwrap();
        assert_eq!(
            describe(&udp),
            "udp [2001:db8:100::2]:5353 > [2001:db8:10::1]:53"
        );
    }

    #[test]
    fn a_frame_cut_at_the_snap_length_still_gives_its_flow() {
        let mut frame = tcp_v4(true);
        frame.extend_from_slice(&[0u8; 400]);
        // IP total length says more than the capture holds.
        let len = (frame.len() - 14) as u16;
        frame[16..18].copy_from_slice(&len.to_be_bytes());
        frame.truncate(80);
        assert_eq!(
            describe(&frame),
            "tcp 198.18.100.2:40000 > 198.18.10.1:80 [S]"
        );
    }

    #[test]
    fn an_icmp_error_names_the_flow_it_quotes() {
        // The client's segment, quoted in a "fragmentation needed" to the client.
        let quoted = &tcp_v4(false)[14..];
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(MAC_B, MAC_A)
            .ipv4([198, 18, 10, 1], [198, 18, 100, 2], 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: 1480,
                },
            ))
            .write(&mut frame, quoted)
            .unwrap();
        assert_eq!(
            describe(&frame),
            "icmp 198.18.10.1 > 198.18.100.2 type 3/4 about tcp 198.18.100.2:40000 > \
             198.18.10.1:80 [.]"
        );
    }

    #[test]
    fn garbage_and_non_ip_frames_say_so() {
        assert!(
            describe(&[1, 2, 3]).starts_with("unparsed frame"),
            "{}",
            describe(&[1, 2, 3])
        );
        let mut arp = vec![0u8; 14];
        arp[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        assert_eq!(describe(&arp), "non-IP frame (ethertype 0x88b5)");
    }
}
