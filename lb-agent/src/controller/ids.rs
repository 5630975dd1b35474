//! Backend and VIP id allocation. Pure bookkeeping over what the BACKENDS and VIPS maps hold, so
//! its rules (ids never collide; a reused id never matches an old flow) are tested without a
//! kernel. The caller writes every change into the maps at once.

use std::{
    collections::{BTreeSet, HashMap},
    hash::Hash,
};

/// Which backend ids are taken and the generation each id's BACKENDS entry holds. Connection-
/// table entries remember the generation they were made with: bumping it on every free, reuse
/// and failure makes the data path ignore them from their next packet on.
#[derive(Clone, Debug)]
pub struct BackendIds {
    generation: Vec<u32>,
    in_use: Vec<bool>,
    /// Every id below this one is taken: the search for a free id starts here, so an
    /// allocation costs a step or two instead of a scan from 0 (quadratic at 10,000).
    first_maybe_free: u32,
}

impl BackendIds {
    /// From a scan of the BACKENDS map, id 0 first: (taken, generation) of each entry.
    pub fn from_entries(entries: impl IntoIterator<Item = (bool, u32)>) -> Self {
        let (in_use, generation) = entries.into_iter().unzip();
        Self {
            generation,
            in_use,
            first_maybe_free: 0,
        }
    }

    pub fn capacity(&self) -> u32 {
        self.in_use.len() as u32
    }

    pub fn is_taken(&self, id: u32) -> bool {
        self.in_use.get(id as usize).copied().unwrap_or(false)
    }

    pub fn taken(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.capacity()).filter(|id| self.is_taken(*id))
    }

    /// The generation the id's entry holds now.
    #[cfg(test)]
    pub fn generation(&self, id: u32) -> u32 {
        self.generation.get(id as usize).copied().unwrap_or(0)
    }

    /// A free id, now taken, and the generation its new backend must carry (one past the
    /// freed entry's, so no flow of the id's earlier user matches).
    pub fn allocate(&mut self) -> Option<(u32, u32)> {
        let hint = self.first_maybe_free.min(self.capacity());
        // From the hint up, then (should the hint be stale) the rest.
        let id = (hint..self.capacity())
            .chain(0..hint)
            .find(|id| !self.in_use[*id as usize])?;
        let i = id as usize;
        self.in_use[i] = true;
        self.generation[i] = self.generation[i].wrapping_add(1);
        self.first_maybe_free = id + 1;
        Some((id, self.generation[i]))
    }

    /// Release `id`; the generation to write into its now-free entry.
    pub fn free(&mut self, id: u32) -> u32 {
        let generation = self.bump(id);
        if let Some(slot) = self.in_use.get_mut(id as usize) {
            *slot = false;
        }
        self.first_maybe_free = self.first_maybe_free.min(id);
        generation
    }

    /// A new generation for a taken id (its backend went down or was disabled): flows that
    /// remember the old one are re-selected.
    pub fn bump(&mut self, id: u32) -> u32 {
        match self.generation.get_mut(id as usize) {
            Some(g) => {
                *g = g.wrapping_add(1);
                *g
            }
            None => 0,
        }
    }
}

/// Ids for the configured VIPs `wanted` (in order), given the ids an earlier agent left for
/// VIP keys (`adopted`): a VIP still configured keeps its id (its tables and flows stay valid);
/// the others take the lowest ids left, including those of adopted VIPs the configuration no
/// longer has. So a restart accepts every configuration a reload of the running one would.
/// None: more VIPs than `max_vips`.
pub fn assign_vip_ids<K: Hash + Eq + Copy>(
    adopted: &HashMap<K, u32>,
    wanted: &[K],
    max_vips: u32,
) -> Option<HashMap<K, u32>> {
    let mut ids = HashMap::new();
    let mut used = BTreeSet::new();
    for k in wanted {
        // First come keeps an id, should a damaged map name one twice.
        if let Some(id) = adopted
            .get(k)
            .filter(|id| **id < max_vips && !used.contains(*id))
        {
            used.insert(*id);
            ids.insert(*k, *id);
        }
    }
    for k in wanted {
        if !ids.contains_key(k) {
            let id = next_vip_id(&used, max_vips)?;
            used.insert(id);
            ids.insert(*k, id);
        }
    }
    Some(ids)
}

/// The lowest VIP id not in `used`.
pub fn next_vip_id(used: &BTreeSet<u32>, max_vips: u32) -> Option<u32> {
    (0..max_vips).find(|i| !used.contains(i))
}

#[cfg(test)]
#[path = "tests/ids.rs"]
mod tests;
