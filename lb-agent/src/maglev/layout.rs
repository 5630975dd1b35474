//! A table's layout: which member owns each slot, by the member's position in name order. The
//! layout is a function of the members' names and weights and the table size alone (ids only
//! label slots), so VIPs over one pool share it: when a backend of a pool that several VIPs use
//! fails, the first VIP's publication builds the new layout and the others relabel it with their
//! own ids, a pass over the table instead of a Maglev build (about 0.1 ms against 1–2 ms at
//! M = 65537). [`Layouts`] keeps the few most recent.

use super::{build_table, MaglevBackend};
use anyhow::{bail, Result};
use lb_common::NO_BACKEND;
use std::{collections::VecDeque, net::IpAddr, sync::Arc};

/// Layouts kept: distinct memberships published recently. 4 × 128 KiB at M = 65537.
const KEPT: usize = 4;

/// A slot no member owns (no member has a weight above zero).
const EMPTY: u16 = u16::MAX;

/// One member of a table: its address (its Maglev name) and published weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolMember {
    pub address: IpAddr,
    pub weight: u32,
}

/// What identifies a layout: the table size and the members in name order.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    size: u32,
    members: Vec<(String, PoolMember)>,
}

impl Key {
    fn new(members: &[PoolMember], size: u32) -> Self {
        let mut members: Vec<(String, PoolMember)> = members
            .iter()
            .map(|m| (m.address.to_string(), *m))
            .collect();
        members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Key { size, members }
    }
}

/// Who owns each slot, with what follows from it.
#[derive(Debug)]
pub struct Layout {
    /// Members in name order: the positions `owner` refers to.
    members: Vec<PoolMember>,
    owner: Vec<u16>,
    /// Slots each member (by position) owns.
    slots: Vec<u32>,
    digest: String,
}

impl Layout {
    fn build(key: &Key) -> Result<Self> {
        if key.members.len() >= usize::from(EMPTY) {
            bail!(
                "a table of {} backends: at most {} fit one VIP",
                key.members.len(),
                EMPTY - 1
            );
        }
        let input: Vec<MaglevBackend> = key
            .members
            .iter()
            .enumerate()
            .map(|(position, (name, m))| MaglevBackend {
                name: name.clone(),
                id: position as u32,
                weight: m.weight,
            })
            .collect();
        let by_position = build_table(&input, key.size)?;
        let members: Vec<PoolMember> = key.members.iter().map(|(_, m)| *m).collect();
        let mut slots = vec![0u32; members.len()];
        let mut digest = Fnv::new();
        let mut owner = Vec::with_capacity(by_position.len());
        for &p in &by_position {
            match members.get(p as usize) {
                Some(m) if p != NO_BACKEND => {
                    slots[p as usize] += 1;
                    digest.address(m.address);
                    owner.push(p as u16);
                }
                _ => {
                    digest.eat(&[0xff]);
                    owner.push(EMPTY);
                }
            }
        }
        Ok(Layout {
            members,
            owner,
            slots,
            digest: format!("{:016x}", digest.0),
        })
    }

    /// The table with each slot holding its owner's id; `id_of` names each member's id.
    pub fn table(&self, id_of: impl Fn(&PoolMember) -> u32) -> Vec<u32> {
        let ids: Vec<u32> = self.members.iter().map(id_of).collect();
        self.owner
            .iter()
            .map(|&p| ids.get(usize::from(p)).copied().unwrap_or(NO_BACKEND))
            .collect()
    }

    /// Each member with the number of slots it owns.
    pub fn slots(&self) -> impl Iterator<Item = (&PoolMember, u32)> {
        self.members.iter().zip(self.slots.iter().copied())
    }

    /// FNV-1a over the owner's address of every slot (0xff for an empty one): equal on every
    /// balancer with the same backends, whatever ids each one gave them.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn eat(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn address(&mut self, address: IpAddr) {
        match address {
            IpAddr::V4(a) => self.eat(&a.octets()),
            IpAddr::V6(a) => self.eat(&a.octets()),
        }
    }
}

/// The most recently used layouts, most recent first.
#[derive(Default)]
pub struct Layouts {
    kept: VecDeque<(Key, Arc<Layout>)>,
    built: u64,
}

impl Layouts {
    /// The layout of `members` at `size`: kept, or built now (and kept).
    pub fn get(&mut self, members: &[PoolMember], size: u32) -> Result<Arc<Layout>> {
        let key = Key::new(members, size);
        if let Some(i) = self.kept.iter().position(|(k, _)| *k == key) {
            let entry = self.kept.remove(i).expect("position is in range");
            let layout = entry.1.clone();
            self.kept.push_front(entry);
            return Ok(layout);
        }
        let layout = Arc::new(Layout::build(&key)?);
        self.built += 1;
        self.kept.push_front((key, layout.clone()));
        self.kept.truncate(KEPT);
        Ok(layout)
    }

    /// Layouts built (not found kept) so far.
    pub fn built(&self) -> u64 {
        self.built
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn pool(lasts: &[u8]) -> Vec<PoolMember> {
        lasts
            .iter()
            .map(|&l| PoolMember {
                address: IpAddr::V4(Ipv4Addr::new(198, 18, 1, l)),
                weight: 1,
            })
            .collect()
    }

    fn id_by_last(base: u32) -> impl Fn(&PoolMember) -> u32 {
        move |m| match m.address {
            IpAddr::V4(a) => base + u32::from(a.octets()[3]),
            IpAddr::V6(_) => unreachable!(),
        }
    }

    #[test]
    fn relabelled_layout_is_the_table_a_build_makes() {
        let members = pool(&[3, 1, 2, 10]);
        let mut layouts = Layouts::default();
        for base in [0, 100] {
            let table = layouts.get(&members, 251).unwrap().table(id_by_last(base));
            let direct: Vec<MaglevBackend> = members
                .iter()
                .map(|m| MaglevBackend {
                    name: m.address.to_string(),
                    id: id_by_last(base)(m),
                    weight: m.weight,
                })
                .collect();
            assert_eq!(table, build_table(&direct, 251).unwrap());
        }
        assert_eq!(
            layouts.built(),
            1,
            "the second VIP relabels the first's layout"
        );
    }

    #[test]
    fn input_order_does_not_matter_and_weights_do() {
        let mut layouts = Layouts::default();
        let a = layouts.get(&pool(&[1, 2, 3]), 251).unwrap();
        let b = layouts.get(&pool(&[3, 1, 2]), 251).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let mut heavier = pool(&[1, 2, 3]);
        heavier[0].weight = 5;
        let c = layouts.get(&heavier, 251).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_ne!(a.digest(), c.digest());
        let slots: Vec<u32> = c.slots().map(|(_, n)| n).collect();
        assert_eq!(slots.iter().sum::<u32>(), 251);
        assert!(slots[0] > 4 * slots[1], "{slots:?}");
    }

    #[test]
    fn few_layouts_are_kept() {
        let mut layouts = Layouts::default();
        for last in 1..=(KEPT as u8 + 1) {
            layouts.get(&pool(&[last]), 7).unwrap();
        }
        assert_eq!(layouts.kept.len(), KEPT);
        layouts.get(&pool(&[1]), 7).unwrap();
        assert_eq!(layouts.built(), KEPT as u64 + 2, "the oldest was dropped");
    }

    #[test]
    fn digest_depends_on_addresses_not_ids() {
        let mut layouts = Layouts::default();
        let a = layouts.get(&pool(&[1, 2]), 7).unwrap();
        assert_eq!(a.digest().len(), 16);
        let mut other = Layouts::default();
        assert_eq!(other.get(&pool(&[2, 1]), 7).unwrap().digest(), a.digest());
        assert_ne!(layouts.get(&pool(&[1, 3]), 7).unwrap().digest(), a.digest());
        let empty = layouts.get(&[], 7).unwrap();
        assert_eq!(empty.table(|_| 0), vec![NO_BACKEND; 7]);
        assert_eq!(empty.slots().count(), 0);
    }
}
