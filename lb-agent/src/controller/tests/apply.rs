use super::*;
use crate::config::parse;

fn vips(text: &str) -> Vec<VipConfig> {
    let agent = "[agent]\ninterface = \"eth0\"\ngateway_mac = \"02:00:00:00:00:fe\"\n\
                 encap_source_v4 = \"198.18.0.2\"\n";
    match parse(&format!("{agent}{text}"), "test") {
        Ok(c) => c.vips,
        Err(e) => panic!("test config does not parse: {e:#}"),
    }
}

fn vip(name: &str, port: u16, backends: &[&str]) -> String {
    let mut text = format!(
        "[[vip]]\nname = \"{name}\"\naddress = \"198.18.0.10\"\nport = {port}\nprotocol = \"tcp\"\n"
    );
    for b in backends {
        text.push_str(&format!("[[vip.backend]]\naddress = \"{b}\"\n"));
    }
    text
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

/// What an earlier agent left: VIP web (port 80, id 0) with backends .1 (id 0) and .2 (id 1),
/// VIP api (port 81, id 1) with .1 (id 2).
fn adopted() -> Adopted {
    let old =
        vips(&(vip("web", 80, &["198.18.1.1", "198.18.1.2"]) + &vip("api", 81, &["198.18.1.1"])));
    let mut a = Adopted::default();
    a.vips.insert(reload::vip_key(&old[0]), 0);
    a.vips.insert(reload::vip_key(&old[1]), 1);
    a.backends.insert((0, ip("198.18.1.1")), 0);
    a.backends.insert((0, ip("198.18.1.2")), 1);
    a.backends.insert((1, ip("198.18.1.1")), 2);
    a
}

fn kept(new: &[VipConfig], ids: &[(usize, u32)]) -> Vec<u32> {
    let ids = ids
        .iter()
        .map(|&(i, id)| (reload::vip_key(&new[i]), id))
        .collect();
    let mut kept: Vec<u32> = kept_backend_ids(&adopted(), new, &ids)
        .into_iter()
        .collect();
    kept.sort();
    kept
}

#[test]
fn a_restart_keeps_the_ids_of_backends_it_still_lists_under_their_vip() {
    let same =
        vips(&(vip("web", 80, &["198.18.1.1", "198.18.1.2"]) + &vip("api", 81, &["198.18.1.1"])));
    assert_eq!(kept(&same, &[(0, 0), (1, 1)]), vec![0, 1, 2]);
    // A backend left out frees its id; so does every backend of a VIP left out.
    let fewer = vips(&vip("web", 80, &["198.18.1.2", "198.18.1.3"]));
    assert_eq!(kept(&fewer, &[(0, 0)]), vec![1]);
}

#[test]
fn a_vip_that_takes_over_a_removed_vips_id_adopts_none_of_its_backends() {
    // api is gone; a new VIP on port 82 gets its id 1 but not its backend id 2.
    let new = vips(&(vip("web", 80, &["198.18.1.1"]) + &vip("other", 82, &["198.18.1.1"])));
    assert_eq!(kept(&new, &[(0, 0), (1, 1)]), vec![0]);
    // Nothing adopted at all for a configuration of other VIPs: every old id is free.
    let other = vips(&vip("other", 82, &["198.18.1.1", "198.18.1.2"]));
    assert!(kept(&other, &[(0, 0)]).is_empty());
}
