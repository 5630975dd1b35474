//! Moved slots: what makes the connection table unnecessary for most packets.
//!
//! A freshly built table says where *new* flows go. An established flow only needs another
//! answer when its slot changed while its backend stayed up (a backend was added, a weight
//! changed, one was drained): those slots are published as *moved* (`lb_common::Slot`), with
//! the backend they had before. The data path consults the connection table only there. A slot
//! whose old backend went down is not moved: its flows have nowhere better to go than the new
//! backend.
//!
//! A moved slot stays moved until the agent's sweep (`settled`) finds that no live flow still
//! needs anything but the slot's backend, and at least `flow_idle_timeout` has passed since
//! the move (a flow idle that long is treated as gone, as conntrack and IPVS treat it).

use lb_common::{Slot, NO_BACKEND};
use std::collections::HashMap;

/// The slots to publish for a freshly built table of backend `ids`.
///
/// `live`: the slots the data path reads now, if they belong to this VIP. `up(id)`: whether
/// the established flows of backend `id` must stay on it (up and not disabled).
pub fn next_slots(live: Option<&[Slot]>, ids: &[u32], up: impl Fn(u32) -> bool) -> Vec<Slot> {
    ids.iter()
        .enumerate()
        .map(|(i, &id)| {
            let Some(old) = live.and_then(|l| l.get(i)).copied() else {
                return Slot::stable(id);
            };
            if old.is_moved() {
                // Keep the backend from before the first move: flows from before it have no
                // entry, and every flow since has one.
                return Slot::moved(id, old.previous().filter(|p| up(*p)));
            }
            let was = old.backend();
            if was != id && was != NO_BACKEND && up(was) {
                Slot::moved(id, Some(was))
            } else {
                Slot::stable(id)
            }
        })
        .collect()
}

/// What one sweep of the connection table found for one slot: the backends live entries name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    One(u32),
    /// Entries naming two or more backends.
    Several,
}

impl Claim {
    pub fn add(claim: Option<Claim>, backend: u32) -> Claim {
        match claim {
            None => Claim::One(backend),
            Some(Claim::One(b)) if b == backend => Claim::One(b),
            Some(_) => Claim::Several,
        }
    }
}

/// Moved slots that may become stable: moved before `cutoff` (idle timeout ago, measured from
/// the sweep's start), and no live entry names a backend other than the slot's.
pub fn settled(
    slots: &[Slot],
    moved_since: &HashMap<u32, std::time::Instant>,
    claims: Option<&HashMap<u32, Claim>>,
    cutoff: std::time::Instant,
) -> Vec<u32> {
    let mut out: Vec<u32> = moved_since
        .iter()
        .filter(|(_, at)| **at <= cutoff)
        .map(|(slot, _)| *slot)
        .filter(|slot| {
            let Some(live) = slots.get(*slot as usize) else {
                return false;
            };
            live.is_moved()
                && match claims.and_then(|c| c.get(slot)) {
                    None => true,
                    Some(Claim::One(b)) => *b == live.backend(),
                    Some(Claim::Several) => false,
                }
        })
        .collect();
    out.sort_unstable();
    out
}

/// `live` with the slots numbered `settled` made stable.
pub fn stabilize(live: &[Slot], settled: &[u32]) -> Vec<Slot> {
    let mut out = live.to_vec();
    for &s in settled {
        if let Some(slot) = out.get_mut(s as usize) {
            *slot = Slot::stable(slot.backend());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn stable(ids: &[u32]) -> Vec<Slot> {
        ids.iter().map(|id| Slot::stable(*id)).collect()
    }

    #[test]
    fn first_table_is_stable() {
        assert_eq!(next_slots(None, &[1, 2, 1], |_| true), stable(&[1, 2, 1]));
    }

    #[test]
    fn slot_moves_only_away_from_a_backend_that_is_up() {
        let live = stable(&[1, 2, 3, NO_BACKEND]);
        // 2 went down (its slot took 1), 3 stays up but lost its slot to 4, the empty slot got 4.
        let slots = next_slots(Some(&live), &[1, 1, 4, 4], |id| id != 2);
        assert_eq!(slots[0], Slot::stable(1));
        assert_eq!(
            slots[1],
            Slot::stable(1),
            "the old backend is down: nothing to keep"
        );
        assert_eq!(slots[2], Slot::moved(4, Some(3)));
        assert_eq!(slots[3], Slot::stable(4));
    }

    #[test]
    fn moved_slot_keeps_its_first_previous_until_that_goes_down() {
        let live = vec![Slot::moved(2, Some(1))];
        let again = next_slots(Some(&live), &[3], |_| true);
        assert_eq!(again[0], Slot::moved(3, Some(1)));
        let gone = next_slots(Some(&again), &[3], |id| id != 1);
        assert_eq!(
            gone[0],
            Slot::moved(3, None),
            "stays moved: entries may name 2"
        );
    }

    #[test]
    fn settles_old_moves_that_no_live_entry_contradicts() {
        let live = vec![
            Slot::moved(5, Some(1)),
            Slot::moved(5, Some(1)),
            Slot::moved(5, Some(1)),
            Slot::moved(5, Some(1)),
            Slot::stable(5),
        ];
        let now = Instant::now();
        let old = now - Duration::from_secs(10);
        let moved_since: HashMap<u32, Instant> =
            [(0, old), (1, old), (2, old), (3, now), (4, old)].into();
        let claims: HashMap<u32, Claim> =
            [(0, Claim::One(5)), (1, Claim::One(1)), (2, Claim::Several)].into();
        let cutoff = now - Duration::from_secs(5);
        // 0: entries agree; 1: a flow still on 1; 2: mixed; 3: too recent; 4: not moved.
        assert_eq!(settled(&live, &moved_since, Some(&claims), cutoff), vec![0]);
        assert_eq!(settled(&live, &moved_since, None, cutoff), vec![0, 1, 2]);
        let out = stabilize(&live, &[0]);
        assert_eq!(out[0], Slot::stable(5));
        assert_eq!(out[1..], live[1..]);
    }

    #[test]
    fn claims_collapse_to_several_on_a_second_backend() {
        let c = Claim::add(None, 3);
        assert_eq!(Claim::add(Some(c), 3), Claim::One(3));
        assert_eq!(Claim::add(Some(c), 4), Claim::Several);
    }
}
