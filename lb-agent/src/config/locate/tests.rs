use crate::config::tests::{assert_rejected, line, rejected, vip, with_check, HEAD};

// ---- rejected by toml: unknown keys, types, values, syntax ------------------------------------

#[test]
fn rejects_unknown_top_level_key() {
    let text = format!("colour = \"blue\"\n{HEAD}");
    assert_rejected(&text, "colour", 1, "unknown field `colour`");
}

#[test]
fn rejects_unknown_key_in_agent() {
    let text = format!("{HEAD}interfaces = \"eth1\"\n");
    assert_rejected(&text, "agent.interfaces", 4, "unknown field `interfaces`");
}

#[test]
fn rejects_unknown_key_in_backend() {
    let text = format!(
        "{HEAD}{}[[vip.backend]]\naddress = \"198.18.1.1\"\n[[vip.backend]]\n\
         address = \"198.18.1.2\"\nwieght = 5\n",
        vip("web", "198.18.0.10", 80)
    );
    assert_rejected(
        &text,
        "vip[0].backend[1].wieght",
        line(&text, "wieght"),
        "unknown field `wieght`",
    );
}

#[test]
fn rejects_unknown_key_in_health_check() {
    let text = with_check("retries = 3");
    assert_rejected(
        &text,
        "vip[0].health_check.retries",
        line(&text, "retries"),
        "unknown field `retries`",
    );
}

#[test]
fn rejects_bad_check_via() {
    for bad in ["\"ipip\"", "\"Tunnel\"", "\"\"", "true"] {
        let text = with_check(&format!("via = {bad}"));
        let expect = if bad == "true" {
            "wanted string"
        } else {
            "expected `tunnel` or `direct`"
        };
        assert_rejected(
            &text,
            "vip[0].health_check.via",
            line(&text, "via ="),
            expect,
        );
    }
}

#[test]
fn rejects_wrong_type() {
    let text =
        format!("{HEAD}{}", vip("web", "198.18.0.10", 80)).replace("port = 80", "port = \"80\"");
    assert_rejected(
        &text,
        "vip[0].port",
        line(&text, "port ="),
        "invalid type: string \"80\", expected u16",
    );
}

#[test]
fn rejects_out_of_range_integer() {
    let text = format!("{HEAD}mtu = 70000\n");
    assert_rejected(&text, "agent.mtu", 4, "70000");
}

#[test]
fn rejects_vip_as_a_table() {
    let text = format!("{HEAD}[vip]\nname = \"web\"\n");
    assert_rejected(&text, "vip", 4, "expected a sequence");
}

#[test]
fn rejects_bad_xdp_mode() {
    let text = format!("{HEAD}xdp_mode = \"fast\"\n");
    assert_rejected(&text, "agent.xdp_mode", 4, "unknown variant `fast`");
}

#[test]
fn rejects_bad_backend_state() {
    let text = format!(
        "{HEAD}{}backend = [{{ address = \"198.18.1.1\", state = \"off\" }}]\n",
        vip("web", "198.18.0.10", 80)
    );
    assert_rejected(
        &text,
        "vip[0].backend[0].state",
        line(&text, "\"off\""),
        "`off`",
    );
}

#[test]
fn rejects_bad_gateway_mac() {
    let text = format!("{HEAD}gateway_mac = \"aa:bb:cc:dd:ee\"\n");
    assert_rejected(&text, "agent.gateway_mac", 4, "\"aa:bb:cc:dd:ee\"");
}

#[test]
fn rejects_bad_ip_address() {
    let text = format!(
        "{HEAD}{}[[vip.backend]]\naddress = \"198.18.1.256\"\n",
        vip("web", "198.18.0.10", 80)
    );
    assert_rejected(
        &text,
        "vip[0].backend[0].address",
        line(&text, "198.18.1.256"),
        "invalid IP address",
    );
}

#[test]
fn rejects_bad_encap_source() {
    let text = "[agent]\ninterface = \"eth0\"\nencap_source_v4 = \"2001:db8::2\"\n";
    assert_rejected(text, "agent.encap_source_v4", 3, "invalid IPv4 address");
}

#[test]
fn rejects_missing_required_key() {
    let text =
        format!("{HEAD}{}", vip("web", "198.18.0.10", 80)).replace("protocol = \"tcp\"\n", "");
    assert_rejected(
        &text,
        "vip[0].protocol",
        line(&text, "[[vip]]"),
        "missing field `protocol`",
    );
    assert_rejected("# nothing\n", "agent", 1, "missing field `agent`");
}

#[test]
fn rejects_syntax_error() {
    let text = format!("{HEAD}mtu = \n");
    assert_rejected(&text, "agent.mtu", 4, "");
    let text = format!("{HEAD}[[vip\n");
    let err = rejected(&text);
    assert!(err.starts_with("lb.toml:4: "), "{err}");
}

#[test]
fn rejects_duplicate_key() {
    let text = format!("{HEAD}interface = \"eth1\"\n");
    assert_rejected(&text, "agent.interface", 4, "duplicate key");
}

// ---- accept_macs and flow_hash_key_file ------------------------------------------------------

#[test]
fn rejects_accept_macs_that_are_not_macs() {
    let text = format!("{HEAD}accept_macs = [\"00:00:5e:00:01\"]\n");
    assert_rejected(
        &text,
        "agent.accept_macs",
        4,
        "invalid MAC \"00:00:5e:00:01\"",
    );
    let text = format!("{HEAD}accept_macs = \"00:00:5e:00:01:07\"\n");
    assert_rejected(&text, "agent.accept_macs", 4, "expected a sequence");
}

#[test]
fn rejects_group_zero_and_too_many_accept_macs() {
    let text = format!(
        "{HEAD}accept_macs = [\"00:00:5e:00:01:07\", \"01:00:5e:00:00:01\", \"00:00:00:00:00:00\", \
         \"02:00:00:00:00:01\"]\n"
    );
    assert_rejected(&text, "agent.accept_macs", 4, "at most 3 extra MACs");
    assert_rejected(
        &text,
        "agent.accept_macs[1]",
        4,
        "01:00:5e:00:00:01 is a group (multicast or broadcast) address",
    );
    assert_rejected(&text, "agent.accept_macs[2]", 4, "is all zero");
    let text = format!("{HEAD}accept_macs = [\"ff:ff:ff:ff:ff:ff\"]\n");
    assert_rejected(&text, "agent.accept_macs[0]", 4, "is a group");
}

#[test]
fn rejects_an_empty_or_mistyped_flow_hash_key_file() {
    let text = format!("{HEAD}flow_hash_key_file = \"\"\n");
    assert_rejected(&text, "agent.flow_hash_key_file", 4, "must not be empty");
    let text = format!("{HEAD}flow_hash_key_file = 16\n");
    assert_rejected(&text, "agent.flow_hash_key_file", 4, "invalid type");
}

#[test]
fn accepts_accept_macs_and_a_key_file() {
    let text = format!(
        "{HEAD}accept_macs = [\"00:00:5E:00:01:07\"]\nflow_hash_key_file = \"/etc/lb/k\"\n"
    );
    let c = crate::config::parse(&text, "lb.toml").expect("valid");
    assert_eq!(
        c.agent.accept_macs,
        vec![crate::config::Mac([0, 0, 0x5e, 0, 1, 7])]
    );
    assert!(c
        .to_toml()
        .unwrap()
        .contains("accept_macs = [\"00:00:5e:00:01:07\"]"));
}
