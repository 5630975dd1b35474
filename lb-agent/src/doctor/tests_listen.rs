use super::*;
use crate::doctor::report::Verdict;

const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

/// A /proc/net/tcp{,6} line for `addr` in state `st`, words in this host's byte order.
fn line(addr: SocketAddr, st: &str) -> String {
    let hex: String = match addr.ip() {
        IpAddr::V4(a) => format!("{:08X}", u32::from_ne_bytes(a.octets())),
        IpAddr::V6(a) => a
            .octets()
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect(),
    };
    format!(
        "   0: {hex}:{:04X} 00000000:0000 {st} 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n",
        addr.port()
    )
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn listening_sockets_are_parsed_and_others_skipped() {
    let text = format!(
        "{HEADER}{}{}{}",
        line(sa("198.18.1.1:80"), "0A"),
        line(sa("0.0.0.0:22"), "0A"),
        line(sa("198.18.1.1:80"), "01"), // an established connection
    );
    assert_eq!(
        parse_listeners(&text, false),
        Ok(vec![sa("198.18.1.1:80"), sa("0.0.0.0:22")])
    );
    let text = format!(
        "{HEADER}{}{}",
        line(sa("[::]:443"), "0A"),
        line(sa("[2001:db8::10]:80"), "0A")
    );
    assert_eq!(
        parse_listeners(&text, true),
        Ok(vec![sa("[::]:443"), sa("[2001:db8::10]:80")])
    );
}

#[test]
fn malformed_lines_are_errors_naming_the_line() {
    for (text, v6, want) in [
        (
            format!("{HEADER}   0: 0100007F:0050\n"),
            false,
            "line 2: too few fields",
        ),
        (
            format!("{HEADER}   0: 0100007F 00000000:0000 0A x\n"),
            false,
            "line 2: local address \"0100007F\"",
        ),
        (
            format!("{HEADER}   0: 0100007G:0050 00000000:0000 0A x\n"),
            false,
            "is not ADDR:PORT in hex",
        ),
        (
            format!("{HEADER}   0: 0100007F:10000 00000000:0000 0A x\n"),
            false,
            "is not ADDR:PORT",
        ),
        // An IPv4-sized address in tcp6.
        (
            format!("{HEADER}   0: 0100007F:0050 00000000:0000 0A x\n"),
            true,
            "is not ADDR:PORT",
        ),
    ] {
        let err = parse_listeners(&text, v6).unwrap_err();
        assert!(err.contains(want), "{err} (wanted {want})");
    }
    // Blank lines and the header alone are fine.
    assert_eq!(parse_listeners(&format!("{HEADER}\n"), false), Ok(vec![]));
}

/// Reads this namespace's real table: a listener bound here shows up.
#[test]
fn a_bound_listener_is_found_in_proc() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let found = listeners().unwrap();
    assert!(found.contains(&addr), "{addr} not in {found:?}");
}

#[test]
fn a_service_bound_to_the_backends_own_address_fails() {
    let vip = [sa("198.18.0.10:80")];
    let f = finding(&vip, &[sa("198.18.1.1:80"), sa("0.0.0.0:22")]);
    assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
    assert!(
        f.detail
            .starts_with("198.18.0.10:80 (listening only on 198.18.1.1)"),
        "{f:?}"
    );
    assert!(f.fix.unwrap().contains("0.0.0.0 or [::]"));

    let v6 = [sa("[2001:db8::10]:443")];
    let f = finding(&v6, &[sa("[2001:db8:1::1]:443"), sa("0.0.0.0:443")]);
    assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
}

#[test]
fn the_vip_or_a_wildcard_of_the_right_family_is_accepted() {
    let vip = [sa("198.18.0.10:80")];
    for ok in [
        "198.18.0.10:80",
        "0.0.0.0:80",
        "[::]:80",
        "[::ffff:198.18.0.10]:80",
    ] {
        let f = finding(&vip, &[sa(ok), sa("198.18.1.1:80")]);
        assert_eq!(f.verdict, Verdict::Ok, "{ok}: {f:?}");
    }
    let v6 = [sa("[2001:db8::10]:80")];
    assert_eq!(finding(&v6, &[sa("[::]:80")]).verdict, Verdict::Ok);
    // An IPv4 wildcard does not take IPv6 connections.
    let f = finding(&v6, &[sa("0.0.0.0:80")]);
    assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
    assert!(f.detail.contains("listening only on 0.0.0.0"), "{f:?}");
    // Another port's wildcard does not count.
    assert_eq!(finding(&vip, &[sa("0.0.0.0:81")]).verdict, Verdict::Warn);
}

#[test]
fn nothing_listening_is_a_warning() {
    let f = finding(&[sa("198.18.0.10:80")], &[]);
    assert_eq!(f.verdict, Verdict::Warn);
    assert!(
        f.detail.contains("nothing listens on 198.18.0.10:80"),
        "{f:?}"
    );
    assert_eq!(finding(&[], &[]).verdict, Verdict::Ok);
}

#[test]
fn services_are_the_local_tcp_vips_ports_and_check_ports() {
    let cfg = crate::config::parse(
        "[agent]\ninterface = \"eth0\"\nencap_source_v4 = \"198.18.0.2\"\n\
         [[vip]]\nname = \"web\"\naddress = \"198.18.0.10\"\nport = 80\nprotocol = \"tcp\"\n\
         [vip.health_check]\nport = 8080\n[[vip.backend]]\naddress = \"198.18.1.1\"\n\
         [[vip]]\nname = \"other\"\naddress = \"198.18.0.11\"\nport = 80\nprotocol = \"tcp\"\n\
         [[vip.backend]]\naddress = \"198.18.1.2\"\n\
         [[vip]]\nname = \"dns\"\naddress = \"198.18.0.12\"\nport = 53\nprotocol = \"udp\"\n\
         [[vip.backend]]\naddress = \"198.18.1.1\"\n",
        "t",
    )
    .unwrap();
    let local: BTreeSet<IpAddr> = ["198.18.1.1".parse().unwrap()].into();
    assert_eq!(
        services(&cfg, &local),
        vec![sa("198.18.0.10:80"), sa("198.18.0.10:8080")]
    );
    // No local backend: every TCP VIP.
    assert_eq!(services(&cfg, &BTreeSet::new()).len(), 3);
}
