//! Backend and VIP id allocation. Pure bookkeeping over what the BACKENDS and VIPS maps hold, so
//! its rules (ids never collide; a reused id never matches an old flow) are tested without a
//! kernel. The caller writes every change into the maps at once.

use std::collections::BTreeSet;

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

/// The id for a VIP: the one an earlier agent gave it (`adopted`) if no other VIP took it since,
/// else the lowest id that is neither in use nor an adopted id another VIP may still claim.
pub fn vip_id(
    adopted: Option<u32>,
    used: &BTreeSet<u32>,
    reserved: &BTreeSet<u32>,
    max_vips: u32,
) -> Option<u32> {
    match adopted {
        Some(id) if !used.contains(&id) => Some(id),
        _ => (0..max_vips).find(|i| !used.contains(i) && !reserved.contains(i)),
    }
}

#[cfg(test)]
#[path = "tests/ids.rs"]
mod tests;
