//! `VIP_INDEX`, the direct-mapped index the data path tries before the `VIPS` hash map
//! (`lb_common::VipSlot`). Which words to store, and in what order, is decided by `Plan` (pure,
//! unit-tested); `VipIndex` stores them one aligned 32-bit word at a time through a shared
//! mapping, so a packet never reads a slot half written:
//! - a key moves into a free slot with its words and meta first, its id last;
//! - it leaves by its id alone (`VIP_INDEX_EMPTY`), and the slot takes another key only once
//!   packets that may have read the old id are long gone (`QUIESCENCE`);
//! - a key whose home holds another key lives in `VIPS` only, and its home's `spill` says so.
//!
//! `VIPS` stays the record of every VIP: the index is rebuilt from it when an agent adopts
//! pinned maps (the index itself is not pinned).

use super::table::Window;
use anyhow::{Context, Result};
use aya::maps::MapData;
use lb_common::{hash::vip_index_slot, VipKey, VipMeta, VipSlot, VIP_INDEX_EMPTY, VIP_INDEX_SLOTS};
use std::{
    collections::HashMap,
    mem::{offset_of, size_of},
    time::{Duration, Instant},
};

/// Least time between a key leaving a slot and another key's words going in: an XDP run lasts
/// well under a microsecond.
const QUIESCENCE: Duration = Duration::from_millis(1);

/// One store, in the order given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Wait until the slot has been empty for `QUIESCENCE`.
    Quiesce(u32),
    Key(u32, VipKey),
    Meta(u32, VipMeta),
    Id(u32, u32),
    Spill(u32, bool),
}

/// What one slot holds, as far as the data path can tell.
#[derive(Clone, Debug, Default)]
struct Home {
    occupant: Option<(VipKey, VipMeta)>,
    /// Keys whose home this is that live in `VIPS` only.
    spilled: Vec<VipKey>,
}

/// The index's contents and the steps that change them.
#[derive(Debug)]
pub struct Plan {
    homes: HashMap<u32, Home>,
}

impl Plan {
    pub fn new() -> Self {
        Self {
            homes: HashMap::new(),
        }
    }

    /// Steps that make `key` find `meta`.
    pub fn set(&mut self, key: &VipKey, meta: &VipMeta) -> Vec<Step> {
        let slot = vip_index_slot(&key.words());
        let home = self.homes.entry(slot).or_default();
        match home.occupant {
            Some((k, old)) if k == *key && old.id == meta.id => {
                home.occupant = Some((*key, *meta));
                if (old.flags, old.active_table) == (meta.flags, meta.active_table) {
                    Vec::new()
                } else {
                    vec![Step::Meta(slot, *meta)]
                }
            }
            // Another id for the same key: out first, so no packet pairs the new id with the
            // old meta.
            Some((k, _)) if k == *key => {
                home.occupant = Some((*key, *meta));
                vec![
                    Step::Id(slot, VIP_INDEX_EMPTY),
                    Step::Quiesce(slot),
                    Step::Meta(slot, *meta),
                    Step::Id(slot, meta.id),
                ]
            }
            Some(_) => {
                if home.spilled.contains(key) {
                    return Vec::new();
                }
                home.spilled.push(*key);
                if home.spilled.len() == 1 {
                    vec![Step::Spill(slot, true)]
                } else {
                    Vec::new()
                }
            }
            // A free home, also for a key that spilled while another held it.
            None => {
                home.occupant = Some((*key, *meta));
                let mut steps = vec![
                    Step::Quiesce(slot),
                    Step::Key(slot, *key),
                    Step::Meta(slot, *meta),
                    Step::Id(slot, meta.id),
                ];
                let spilled = home.spilled.len();
                home.spilled.retain(|k| k != key);
                if spilled == 1 && home.spilled.is_empty() {
                    steps.push(Step::Spill(slot, false));
                }
                steps
            }
        }
    }

    /// Steps that make `key` find nothing in the index (the caller removes it from `VIPS`
    /// after them).
    pub fn remove(&mut self, key: &VipKey) -> Vec<Step> {
        let slot = vip_index_slot(&key.words());
        let Some(home) = self.homes.get_mut(&slot) else {
            return Vec::new();
        };
        if home.occupant.is_some_and(|(k, _)| k == *key) {
            home.occupant = None;
            return vec![Step::Id(slot, VIP_INDEX_EMPTY)];
        }
        let before = home.spilled.len();
        home.spilled.retain(|k| k != key);
        if before > 0 && home.spilled.is_empty() {
            vec![Step::Spill(slot, false)]
        } else {
            Vec::new()
        }
    }

    /// Whether `key` lives in the index (not in `VIPS` only).
    #[cfg(test)]
    fn indexed(&self, key: &VipKey) -> bool {
        let slot = vip_index_slot(&key.words());
        self.homes
            .get(&slot)
            .is_some_and(|h| h.occupant.is_some_and(|(k, _)| k == *key))
    }
}

/// The index in the kernel, and what the agent wrote there.
pub struct VipIndex {
    map: MapData,
    plan: Plan,
    /// When each slot last lost its key.
    emptied: HashMap<u32, Instant>,
}

const STRIDE: usize = size_of::<VipSlot>();

impl VipIndex {
    /// A fresh (all-zero) index: every id is written before use, so first mark every slot
    /// empty; the program is not attached yet, so nothing reads it meanwhile.
    pub fn new(map: MapData) -> Result<Self> {
        let index = Self {
            map,
            plan: Plan::new(),
            emptied: HashMap::new(),
        };
        let window = index.window(0, VIP_INDEX_SLOTS as usize * STRIDE)?;
        for slot in 0..VIP_INDEX_SLOTS as usize {
            store(
                &window,
                slot * STRIDE + offset_of!(VipSlot, id),
                VIP_INDEX_EMPTY,
            );
        }
        Ok(index)
    }

    pub fn set(&mut self, key: &VipKey, meta: &VipMeta) -> Result<()> {
        let steps = self.plan.set(key, meta);
        self.run(&steps)
    }

    pub fn remove(&mut self, key: &VipKey) -> Result<()> {
        let steps = self.plan.remove(key);
        self.run(&steps)
    }

    fn window(&self, first: usize, bytes: usize) -> Result<Window> {
        Window::map(&self.map, first, bytes, "the VIP_INDEX map")
    }

    fn run(&mut self, steps: &[Step]) -> Result<()> {
        for step in steps {
            let slot = match step {
                Step::Quiesce(s) | Step::Key(s, _) | Step::Meta(s, _) => *s,
                Step::Id(s, _) | Step::Spill(s, _) => *s,
            };
            if let Step::Quiesce(_) = step {
                if let Some(wait) = self
                    .emptied
                    .get(&slot)
                    .and_then(|at| QUIESCENCE.checked_sub(at.elapsed()))
                {
                    std::thread::sleep(wait);
                }
                continue;
            }
            let window = self
                .window(slot as usize * STRIDE, STRIDE)
                .with_context(|| format!("writing slot {slot} of VIP_INDEX"))?;
            let word = |at: usize, value: u32| store(&window, at, value);
            match step {
                Step::Key(_, key) => {
                    for (i, w) in key.words().into_iter().enumerate() {
                        word(offset_of!(VipSlot, key) + i * 4, w);
                    }
                }
                Step::Meta(_, meta) => {
                    word(offset_of!(VipSlot, flags), meta.flags);
                    word(offset_of!(VipSlot, active_table), meta.active_table);
                }
                Step::Id(_, id) => {
                    word(offset_of!(VipSlot, id), *id);
                    if *id == VIP_INDEX_EMPTY {
                        self.emptied.insert(slot, Instant::now());
                    }
                }
                Step::Spill(_, on) => word(offset_of!(VipSlot, spill), u32::from(*on)),
                Step::Quiesce(_) => {}
            }
            // Each step visible before the next: the data path relies on their order.
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    }
}

/// One aligned 32-bit store: a packet reads the word's old or new value, never a mix.
fn store(window: &Window, at: usize, value: u32) {
    // SAFETY: `at` is a 4-aligned word offset inside the bytes `window` maps (slots are
    // 8-aligned in the page-aligned map); AtomicU32 has u32's layout.
    let word = unsafe { &*window.at(at).cast::<std::sync::atomic::AtomicU32>() };
    word.store(value, std::sync::atomic::Ordering::Release);
}

#[cfg(test)]
mod tests;
