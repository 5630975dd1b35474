use super::*;
use rtnetlink::packet_route::link::LinkMessage;

fn link(index: u32, name: &str) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    m
}

fn watch(current: Option<u32>) -> Watch {
    Watch {
        iface: "eth0".to_string(),
        current,
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
