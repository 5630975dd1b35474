//! Rules of the data path's identity keys: `accept_macs` and `flow_hash_key_file` (whose
//! contents and mode are checked when the agent reads it, `hashkey::load`).

use super::{locate::KeyPath, validate::Problems, Config};
use lb_common::LOCAL_MACS;

impl Config {
    pub(super) fn check_datapath(&self, agent: &KeyPath, out: &mut Problems) {
        let a = &self.agent;
        let extra = LOCAL_MACS - 1;
        if a.accept_macs.len() > extra {
            out.add(
                agent.key("accept_macs"),
                format!(
                    "at most {extra} extra MACs (the interface's own is always accepted), got {}",
                    a.accept_macs.len()
                ),
            );
        }
        for (i, mac) in a.accept_macs.iter().enumerate() {
            let why = if mac.0 == [0; 6] {
                "is all zero"
            } else if mac.0[0] & 1 != 0 {
                "is a group (multicast or broadcast) address: only unicast MACs can be ours"
            } else {
                continue;
            };
            out.add(
                agent.key("accept_macs").index(i),
                format!("{} {why}", super::GatewayMac::Fixed(mac.0)),
            );
        }
        if a.flow_hash_key_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            out.add(
                agent.key("flow_hash_key_file"),
                "must not be empty: name the key file, or leave the key out for no key",
            );
        }
    }
}
