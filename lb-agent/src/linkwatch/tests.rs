use super::*;
use rtnetlink::packet_route::link::LinkMessage;

fn link(index: u32, name: &str) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    m
}

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

fn watch(current: Option<u32>) -> Watch {
    Watch {
        iface: "eth0".to_string(),
        current,
        mac: Some(MAC),
    }
}

#[test]
fn deleting_and_recreating_the_interface_is_gone_then_present() {
    let mut w = watch(Some(3));
    let del = RouteNetlinkMessage::DelLink(link(3, "eth0"));
    assert_eq!(w.on_message(&del), Some(LinkEvent::Gone { ifindex: 3 }));
    // A second notification of the same deletion changes nothing.
    assert_eq!(w.on_message(&del), None);
    let new = RouteNetlinkMessage::NewLink(link(9, "eth0"));
    assert_eq!(w.on_message(&new), Some(LinkEvent::Present { ifindex: 9 }));
    // Further changes of the same interface (up, XDP attached) are no events.
    assert_eq!(w.on_message(&new), None);
}

#[test]
fn other_interfaces_are_ignored() {
    let mut w = watch(Some(3));
    for m in [
        RouteNetlinkMessage::NewLink(link(4, "eth1")),
        RouteNetlinkMessage::DelLink(link(4, "eth1")),
    ] {
        assert_eq!(w.on_message(&m), None);
    }
    assert_eq!(w.current, Some(3));
}

#[test]
fn renaming_the_interface_away_is_gone() {
    let mut w = watch(Some(3));
    let renamed = RouteNetlinkMessage::NewLink(link(3, "old0"));
    assert_eq!(w.on_message(&renamed), Some(LinkEvent::Gone { ifindex: 3 }));
}

#[test]
fn the_poll_catches_what_messages_missed() {
    let mut w = watch(Some(3));
    assert_eq!(w.on_poll(Some(3)), None);
    // Deleted and re-created between two polls: present under its new index.
    assert_eq!(w.on_poll(Some(7)), Some(LinkEvent::Present { ifindex: 7 }));
    assert_eq!(w.on_poll(None), Some(LinkEvent::Gone { ifindex: 7 }));
    assert_eq!(w.on_poll(None), None);
}

#[test]
fn a_new_mac_on_the_same_interface_is_an_event_once() {
    let mut w = watch(Some(3));
    let mut m = link(3, "eth0");
    m.attributes.push(LinkAttribute::Address(MAC.to_vec()));
    assert_eq!(w.on_message(&RouteNetlinkMessage::NewLink(m.clone())), None);
    let other = [2, 0, 0, 0, 0, 2];
    m.attributes[1] = LinkAttribute::Address(other.to_vec());
    let changed = RouteNetlinkMessage::NewLink(m);
    assert_eq!(
        w.on_message(&changed),
        Some(LinkEvent::Address { mac: other })
    );
    assert_eq!(w.on_message(&changed), None);
    // Missed messages: the poll reads the MAC too.
    assert_eq!(
        w.on_address(Some(MAC)),
        Some(LinkEvent::Address { mac: MAC })
    );
    assert_eq!(w.on_address(None), None);
}

#[test]
fn a_recreated_interface_is_present_and_its_mac_remembered() {
    let mut w = watch(None);
    let other = [2, 0, 0, 0, 0, 2];
    let mut m = link(9, "eth0");
    m.attributes.push(LinkAttribute::Address(other.to_vec()));
    let new = RouteNetlinkMessage::NewLink(m);
    assert_eq!(w.on_message(&new), Some(LinkEvent::Present { ifindex: 9 }));
    assert_eq!(w.on_message(&new), None);
    assert_eq!(w.mac, Some(other));
}
