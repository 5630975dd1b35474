//! A balancer loaded into the kernel and programmed the way the agent does it, with a fixed
//! set of backends, plus the predictions the fixtures compare against.

use crate::{expect::Outer, run::run_once};
use anyhow::{anyhow, Context, Result};
use lb_agent::{
    dataplane::{Balancer, LoadOptions, LB_PROGRAM},
    maglev::{build_table, moves::next_slots, MaglevBackend},
};
use lb_common::{
    hash::{flow_key_hash, table_slot},
    words_addr, Backend, FlowKey, LbConfig, VipKey, VipMeta, DEFAULT_OUTER_TTL, DEFAULT_TABLE_SIZE,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const ENCAP_SRC_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const ENCAP_SRC_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
pub const MTU: u16 = 1500;

/// Backend ids 0..=2 are IPv4, 3..=4 IPv6.
pub const BACKENDS: [&str; 5] = [
    "198.18.1.1",
    "198.18.1.2",
    "198.18.1.3",
    "2001:db8:1::1",
    "2001:db8:1::2",
];

pub struct Lab {
    pub lb: Balancer,
    pub config: LbConfig,
    next_vip_id: u32,
    /// VIPs with a published table, whose changes therefore move slots.
    published: std::collections::HashSet<VipKey>,
    /// Backends taken down (`take_down`): their flows are not kept by moved slots.
    down: std::collections::HashSet<u32>,
}

pub fn backend_ip(id: u32) -> IpAddr {
    BACKENDS[id as usize].parse().expect("valid literal")
}

impl Lab {
    /// A balancer with the standard configuration and backends, no VIPs.
    pub fn new() -> Result<Self> {
        Self::load(8, 4096)
    }

    /// As `new`, with a connection table of `entries` (split over the CPUs' LRU lists).
    pub fn with_conn_table(entries: u32) -> Result<Self> {
        Self::load(8, entries)
    }

    /// As `new`, with room for `max_vips` VIPs (the control-plane benchmark publishes 100).
    pub fn with_max_vips(max_vips: u32) -> Result<Self> {
        Self::load(max_vips, 4096)
    }

    /// As `new`, with its maps pinned in `dir`: a second `pinned` on the same directory adopts
    /// them, as a restarted agent does.
    pub fn pinned(dir: &std::path::Path) -> Result<Self> {
        Self::load_with(8, 4096, Some(dir.to_path_buf()))
    }

    fn load(max_vips: u32, conn_table_entries: u32) -> Result<Self> {
        Self::load_with(max_vips, conn_table_entries, None)
    }

    fn load_with(
        max_vips: u32,
        conn_table_entries: u32,
        pin_dir: Option<std::path::PathBuf>,
    ) -> Result<Self> {
        let mut lb = Balancer::load(LoadOptions {
            table_size: DEFAULT_TABLE_SIZE,
            max_vips,
            conn_table_entries,
            pin_dir,
            ebpf_log: false,
        })?;
        let config = LbConfig {
            gateway_mac: crate::frames::ROUTER_MAC,
            mtu: MTU,
            encap_src_v4: u32::from_ne_bytes(ENCAP_SRC_V4.octets()),
            encap_src_v6: lb_common::v6_words(ENCAP_SRC_V6),
            src_hash_bits_v4: 0,
            src_hash_bits_v6: 0,
            outer_ttl: DEFAULT_OUTER_TTL,
            ready: 1,
            new_flows_per_sec: 0,
            local_macs: [crate::frames::LB_MAC; lb_common::LOCAL_MACS],
            flow_hash_key: lb_common::hash::NO_KEY,
        };
        lb.set_config(&config)?;
        for id in 0..BACKENDS.len() as u32 {
            lb.set_backend(id, &Backend::new(backend_ip(id), 1, 0))?;
        }
        Ok(Self {
            lb,
            config,
            next_vip_id: 0,
            published: Default::default(),
            down: Default::default(),
        })
    }

    pub fn outer(&self) -> Outer {
        Outer {
            src_v4: ENCAP_SRC_V4,
            src_v6: ENCAP_SRC_V6,
            ttl: self.config.outer_ttl,
        }
    }

    pub fn set_config(&mut self, config: LbConfig) -> Result<()> {
        self.config = config;
        self.lb.set_config(&config)
    }

    /// Add a VIP served by `backends` (equal weights) and publish its table.
    pub fn add_vip(
        &mut self,
        addr: IpAddr,
        port: u16,
        proto: u8,
        flags: u32,
        backends: &[u32],
    ) -> Result<VipKey> {
        let key = VipKey::new(addr, port, proto);
        let meta = VipMeta {
            id: self.next_vip_id,
            flags,
            active_table: 0,
            _reserved: 0,
        };
        self.next_vip_id += 1;
        self.lb.set_vip(&key, &meta)?;
        self.set_backends(&key, backends)?;
        Ok(key)
    }

    /// Publish a table built by the agent's Maglev builder for `backends`.
    pub fn set_backends(&mut self, key: &VipKey, backends: &[u32]) -> Result<()> {
        self.publish_ids(key, &equal_table(backends)?)
    }

    /// Publish a table whose every slot holds `id`.
    pub fn fill_table(&mut self, key: &VipKey, id: u32) -> Result<()> {
        self.publish_ids(key, &vec![id; DEFAULT_TABLE_SIZE as usize])
    }

    /// Make every slot of the VIP a moved one (so every flow consults the connection table),
    /// all of them pointing at `id` for new flows; `id` and `via` must differ.
    pub fn move_every_slot(&mut self, key: &VipKey, via: u32, id: u32) -> Result<()> {
        self.fill_table(key, via)?;
        self.fill_table(key, id)
    }

    /// Publish a table of backend ids the way the agent does (`maglev::moves`): a slot that
    /// leaves a backend that is not down becomes a moved slot.
    pub fn publish_ids(&mut self, key: &VipKey, ids: &[u32]) -> Result<()> {
        let live = if self.published.contains(key) {
            Some(self.lb.live_table(&self.lb.vip(key)?)?)
        } else {
            None
        };
        let slots = next_slots(live.as_deref(), ids, |id| !self.down.contains(&id));
        self.lb.publish_table(key, &slots)?;
        self.published.insert(*key);
        Ok(())
    }

    /// What the agent does when a backend goes down: bump its generation (its entries go
    /// stale) and remember it is down for the next publication.
    pub fn take_down(&mut self, id: u32) -> Result<()> {
        let mut backend = self.lb.backend(id)?;
        backend.generation += 1;
        self.lb.set_backend(id, &backend)?;
        self.down.insert(id);
        Ok(())
    }

    /// The backend the live table gives `flow`, read back from the kernel's view of the VIP.
    pub fn table_backend(&self, key: &VipKey, flow: &FlowKey, table: &[u32]) -> Result<u32> {
        let meta = self.lb.vip(key)?;
        let slot = table_slot(
            flow,
            meta.flags,
            DEFAULT_TABLE_SIZE,
            &self.config.flow_hash_key,
        );
        Ok(table[slot as usize])
    }

    /// Maglev's choice for `flow` among `backends` (what a fresh lookup must return).
    pub fn predict(&self, key: &VipKey, flow: &FlowKey, backends: &[u32]) -> Result<u32> {
        self.table_backend(key, flow, &equal_table(backends)?)
    }

    /// The 5-tuple hash that varies the outer header (whatever the VIP hashes its table on).
    pub fn hash(&self, flow: &FlowKey) -> u32 {
        flow_key_hash(flow, 0, &self.config.flow_hash_key)
    }

    /// Run `frame` through the balancer once.
    pub fn run(&mut self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        run_once(self.lb.program(LB_PROGRAM)?, frame)
    }
}

/// The agent's Maglev table for `backends` (lab ids) with equal weights.
fn equal_table(backends: &[u32]) -> Result<Vec<u32>> {
    let members: Vec<MaglevBackend> = backends
        .iter()
        .map(|id| MaglevBackend {
            name: BACKENDS[*id as usize].to_string(),
            id: *id,
            weight: 1,
        })
        .collect();
    build_table(&members, DEFAULT_TABLE_SIZE)
}

/// The flow key the data path derives from a client frame (untagged or tagged).
pub fn flow_of(frame: &[u8]) -> Result<FlowKey> {
    let l3 = crate::expect::l3_offset(frame);
    let ip = &frame[l3..];
    let word = |b: &[u8]| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    let (src, dst, proto, l4, family) = if ip[0] >> 4 == 4 {
        let ihl = (ip[0] & 0xf) as usize * 4;
        (
            [word(&ip[12..]), 0, 0, 0],
            [word(&ip[16..]), 0, 0, 0],
            ip[9],
            ihl,
            lb_common::FAMILY_V4,
        )
    } else if ip[0] >> 4 == 6 {
        let w = |o: usize| {
            [
                word(&ip[o..]),
                word(&ip[o + 4..]),
                word(&ip[o + 8..]),
                word(&ip[o + 12..]),
            ]
        };
        (w(8), w(24), ip[6], 40, lb_common::FAMILY_V6)
    } else {
        return Err(anyhow!("not an IP frame"));
    };
    let port = |o: usize| u16::from_ne_bytes([ip[l4 + o], ip[l4 + o + 1]]);
    Ok(FlowKey {
        src,
        dst,
        src_port: port(0),
        dst_port: port(2),
        proto,
        family,
        _pad: [0; 2],
    })
}

/// The address a flow's backend has, for building expected frames.
pub fn backend_addr(lb: &Balancer, id: u32) -> Result<IpAddr> {
    let b = lb.backend(id)?;
    words_addr(b.addr, b.family).context("backend with an unknown family")
}
