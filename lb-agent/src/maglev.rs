//! Weighted Maglev lookup-table builder (Eisenbud et al., NSDI 2016, with weights by quota).
//!
//! The data path maps a flow to `table[hash % size]`, so the table alone decides which backend
//! gets a new flow. Three properties matter, and each shapes the code below:
//!
//! * **Same table on every balancer host.** Hosts behind one ECMP group must agree, or a flow
//!   that is rehashed to another host lands on another backend. The table is therefore a pure
//!   function of the *set* of `(name, id, weight)`: input order is irrelevant (backends are
//!   sorted by name), and each backend's permutation comes from SipHash-2-4 with fixed keys over
//!   its name (never `RandomState`, which is seeded per process).
//! * **Weights.** Each backend gets a quota of `size * weight / sum(weights)` slots, rounded by
//!   the largest-remainder method (ties broken by name), so every backend is within one slot of
//!   its exact share and the quotas sum to `size`. Weight 0 means drained: no slots.
//! * **Small disruption.** Backends take turns in name order, each claiming the next empty slot
//!   of its own permutation until it has its quota (Maglev's population loop). Because a
//!   backend's preferences do not depend on the others, adding or removing one backend moves
//!   that backend's slots plus a small excess between the others (about 0.2-0.6% of the table
//!   for 10-100 backends; see `disruption_n10_n100` in the tests).
//!
//! Preferences are generated lazily (a cursor per backend), so building costs about
//! `size * ln(size)` probes and no allocation beyond the table and one cursor per backend.

use anyhow::{bail, Context, Result};
use lb_common::{is_prime, NO_BACKEND};

pub mod layout;
pub mod moves;

/// One backend as Maglev sees it.
///
/// `name` is the stable identity that positions the backend in the table (the agent passes its
/// IP address as text), so the same backend lands on the same slots on every host and across
/// restarts; `id` is only what is written into its slots (its index in the `BACKENDS` array),
/// so renumbering ids never reshuffles flows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaglevBackend {
    pub name: String,
    pub id: u32,
    pub weight: u32,
}

/// SipHash keys for the permutation offset and skip. Arbitrary but fixed forever: every host
/// (and every agent version) must use the same ones, or their tables differ.
const OFFSET_KEY: (u64, u64) = (0x6c62_2d6d_6167_6c65, 0x762d_6f66_6673_6574);
const SKIP_KEY: (u64, u64) = (0x6c62_2d6d_6167_6c65, 0x762d_736b_6970_2d31);

/// Builds the lookup table: `table[slot]` is the id of the backend owning `slot`, or
/// [`NO_BACKEND`] everywhere when no backend has a weight above zero.
///
/// `size` must be prime (so every skip in `1..size` walks all slots); errors on a size that is
/// not, on two backends with the same name (their permutations would be identical, and the
/// order between them undefined), and on a backend whose id is `NO_BACKEND` (its slots would
/// read as empty).
pub fn build_table(backends: &[MaglevBackend], size: u32) -> Result<Vec<u32>> {
    if size < 2 || !is_prime(size) {
        bail!("Maglev table size {size} is not a prime number");
    }
    let m = u64::from(size);
    let len = usize::try_from(size).context("Maglev table size does not fit in memory")?;

    // Name order makes the result independent of the caller's order.
    let mut sorted: Vec<&MaglevBackend> = backends.iter().collect();
    sorted.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    for pair in sorted.windows(2) {
        if pair[0].name == pair[1].name {
            bail!("duplicate Maglev backend name {:?}", pair[0].name);
        }
    }
    if let Some(b) = sorted.iter().find(|b| b.id == NO_BACKEND) {
        bail!(
            "backend {:?} has id {NO_BACKEND}, which marks an empty Maglev slot",
            b.name
        );
    }

    let mut table = Vec::new();
    table
        .try_reserve_exact(len)
        .with_context(|| format!("cannot allocate a Maglev table of {size} slots"))?;
    table.resize(len, NO_BACKEND);

    let live: Vec<&MaglevBackend> = sorted.into_iter().filter(|b| b.weight > 0).collect();
    if live.is_empty() {
        return Ok(table);
    }

    // Backends whose quota rounds to zero (more backends than slots, or a tiny weight) never
    // take a turn; the others' quotas still sum to `size`, so the table is always full.
    let mut active: Vec<Cursor> = live
        .iter()
        .zip(quotas(&live, m))
        .filter(|(_, quota)| *quota > 0)
        .map(|(b, quota)| Cursor::new(b, quota, m))
        .collect();

    // Each round, every backend still under quota claims its next preferred empty slot. Once a
    // backend reaches its quota it leaves `active`, so a round costs only the backends left and
    // the whole loop costs `size` claims plus the probes over taken slots.
    while !active.is_empty() {
        for cursor in &mut active {
            cursor.claim(&mut table, m)?;
        }
        active.retain(|c| c.taken < c.quota);
    }
    Ok(table)
}

/// A backend's position in its own permutation `(offset + j * skip) mod size`, j = `next`.
struct Cursor {
    id: u32,
    /// The `next`-th preference, kept incrementally to avoid a multiply and divide per probe.
    pos: u64,
    skip: u64,
    /// How many preferences have been tried; reaching `size` would mean the table is full.
    next: u64,
    quota: u64,
    taken: u64,
}

impl Cursor {
    fn new(backend: &MaglevBackend, quota: u64, m: u64) -> Self {
        let name = backend.name.as_bytes();
        let offset = siphash24(OFFSET_KEY.0, OFFSET_KEY.1, name) % m;
        // In 1..m: coprime with the prime m, so the permutation visits every slot once.
        let skip = siphash24(SKIP_KEY.0, SKIP_KEY.1, name) % (m - 1) + 1;
        Cursor {
            id: backend.id,
            pos: offset,
            skip,
            next: 0,
            quota,
            taken: 0,
        }
    }

    /// Takes the first empty slot in this backend's preference order.
    fn claim(&mut self, table: &mut [u32], m: u64) -> Result<()> {
        // Terminates: quotas sum to m, so while this backend is under quota an empty slot
        // exists, and its permutation reaches it within m steps. The bound turns a broken
        // invariant into an error instead of an endless loop.
        while self.next < m {
            let slot = self.pos;
            self.next += 1;
            self.pos += self.skip;
            if self.pos >= m {
                self.pos -= m;
            }
            let Some(entry) = usize::try_from(slot).ok().and_then(|s| table.get_mut(s)) else {
                break;
            };
            if *entry == NO_BACKEND {
                *entry = self.id;
                self.taken += 1;
                return Ok(());
            }
        }
        bail!(
            "internal error: Maglev table full before backend {} reached its quota",
            self.id
        )
    }
}

/// Slots per backend: `m * w / sum(w)` rounded by largest remainder (ties to the earlier name;
/// `live` is in name order and the sort is stable), so the result sums to exactly `m` and each
/// backend is within one slot of its exact share. u128 because `m * w` and the sum of many
/// `u32` weights can exceed u64.
fn quotas(live: &[&MaglevBackend], m: u64) -> Vec<u64> {
    let total: u128 = live.iter().map(|b| u128::from(b.weight)).sum();
    let m128 = u128::from(m);
    let mut quotas = Vec::with_capacity(live.len());
    let mut remainders = Vec::with_capacity(live.len());
    let mut assigned: u128 = 0;
    for (i, b) in live.iter().enumerate() {
        let share = m128 * u128::from(b.weight);
        let quota = share / total;
        assigned += quota;
        // quota <= m, so it fits in u64.
        quotas.push(u64::try_from(quota).unwrap_or(m));
        remainders.push((share % total, i));
    }
    // Fewer leftover slots than backends, since each floor loses less than one slot.
    let leftover = usize::try_from(m128.saturating_sub(assigned)).unwrap_or(0);
    remainders.sort_by_key(|&(remainder, _)| std::cmp::Reverse(remainder));
    for &(_, i) in remainders.iter().take(leftover) {
        if let Some(q) = quotas.get_mut(i) {
            *q += 1;
        }
    }
    quotas
}

/// SipHash-2-4 (Aumasson & Bernstein), written out so the table never depends on a hasher
/// whose output may change between Rust releases. Bytes are read little-endian explicitly, so
/// the result is the same on every host.
pub(crate) fn siphash24(k0: u64, k1: u64, data: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let le = |bytes: &[u8]| {
        bytes
            .iter()
            .rev()
            .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte))
    };
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let word = le(chunk);
        v[3] ^= word;
        sipround(&mut v);
        sipround(&mut v);
        v[0] ^= word;
    }
    // The length is taken mod 256, as the specification says.
    let last = le(chunks.remainder()) | ((data.len() as u64) << 56);
    v[3] ^= last;
    sipround(&mut v);
    sipround(&mut v);
    v[0] ^= last;
    v[2] ^= 0xff;
    for _ in 0..4 {
        sipround(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

fn sipround(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests;
