//! The connection table under a SYN flood larger than the table: with the per-CPU new-flow
//! guard on, established flows keep their entries; with it off, the flood evicts them. A flood
//! of spoofed ACKs into moved slots inserts nothing, guard or not.

use anyhow::Result;
use lb_tests::flood::{run, Flood};

const TABLE: u32 = 65536;
const ESTABLISHED: u32 = 1000;
/// Four times the whole table, so the flood overflows it however the CPUs split it.
const SYNS: u32 = 4 * TABLE;
/// Low enough that even a flood slowed to 10 s admits far fewer entries than the table's free
/// room on one CPU.
const GUARD: u32 = 1000;

fn flood(new_flows_per_sec: u32, moved: bool) -> Result<lb_tests::flood::Outcome> {
    run(&Flood {
        conn_table: TABLE,
        established: ESTABLISHED,
        syns: SYNS,
        spoofed_acks: false,
        new_flows_per_sec,
        moved,
    })
}

/// 300 flows opened after the move (their SYNs made entries), a table of 1,024 entries (512 or
/// fewer per CPU's LRU list), 20,000 spoofed ACKs without a guard: before non-SYN misses
/// stopped inserting, this flood evicted the flows' entries.
#[test]
fn spoofed_acks_into_moved_slots_evict_no_established_flow() -> Result<()> {
    let outcome = run(&Flood {
        conn_table: 1024,
        established: 300,
        syns: 20_000,
        spoofed_acks: true,
        new_flows_per_sec: 0,
        moved: true,
    })?;
    assert_eq!(
        outcome.survivors, 300,
        "established flows lost their entries"
    );
    assert_eq!(outcome.skipped, 0, "nothing was even tried");
    Ok(())
}

#[test]
fn guard_keeps_established_flows_through_a_flood_larger_than_the_table() -> Result<()> {
    let on = flood(GUARD, true)?;
    assert_eq!(
        on.survivors, ESTABLISHED as u64,
        "established flows lost their entries with the guard on"
    );
    assert!(
        on.skipped >= (SYNS - 20 * GUARD) as u64,
        "the guard skipped only {} of {SYNS} inserts in {:.2} s",
        on.skipped,
        on.seconds
    );

    let off = flood(0, true)?;
    assert_eq!(off.skipped, 0, "no guard, no skipped insert");
    assert!(
        off.survivors < ESTABLISHED as u64 / 10,
        "{} of {ESTABLISHED} established flows survived an unguarded flood of {SYNS} SYNs \
         into a table of {TABLE}",
        off.survivors
    );
    Ok(())
}

#[test]
fn flood_into_stable_slots_inserts_nothing_and_keeps_every_flow() -> Result<()> {
    let stable = flood(0, false)?;
    assert_eq!(
        stable.entries_after,
        Some(0),
        "a stable slot needs no entry"
    );
    assert_eq!(stable.survivors, ESTABLISHED as u64);
    Ok(())
}
