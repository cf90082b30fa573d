//! Host uid ranges for sandboxes' user namespaces.
//!
//! Each sandbox gets its own range of 65536 host uids and gids, so root in one sandbox owns
//! nothing of another's. A sandbox keeps its slot for its whole life, because the files in its
//! upper directory are owned by uids of that range.

use std::collections::BTreeSet;

/// First host uid of slot 0. High enough to stay clear of regular users and of the ranges
/// `/etc/subuid` hands out (which start at 100000), low enough that every slot stays below 2^31.
pub const HOST_UID_BASE: u32 = 1_000_000_000;

/// Size of each sandbox's range: the full 16-bit uid space that images use.
pub const RANGE_SIZE: u32 = 65536;

/// Number of slots: ranges up to 2^31 - 1.
pub const SLOT_COUNT: u32 = ((i32::MAX as u32) - HOST_UID_BASE) / RANGE_SIZE;

/// First host uid of a slot.
pub fn host_base(slot: u32) -> u32 {
    HOST_UID_BASE + slot * RANGE_SIZE
}

/// The slots in use, with the lowest free one handed out next.
#[derive(Debug, Default)]
pub struct Slots {
    used: BTreeSet<u32>,
}

impl Slots {
    /// Records a slot as used, for sandboxes found on disk at start.
    pub fn mark_used(&mut self, slot: u32) {
        self.used.insert(slot);
    }

    /// Takes the lowest free slot, or `None` when all are used.
    pub fn allocate(&mut self) -> Option<u32> {
        let slot = (0..SLOT_COUNT).find(|slot| !self.used.contains(slot))?;
        self.used.insert(slot);
        Some(slot)
    }

    pub fn release(&mut self, slot: u32) {
        self.used.remove(&slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_reuse_lowest_free() {
        let mut slots = Slots::default();
        assert_eq!(slots.allocate(), Some(0));
        assert_eq!(slots.allocate(), Some(1));
        slots.release(0);
        assert_eq!(slots.allocate(), Some(0));
        assert_eq!(slots.allocate(), Some(2));
    }

    #[test]
    fn last_slot_stays_below_2_pow_31() {
        let last = host_base(SLOT_COUNT - 1) as u64 + RANGE_SIZE as u64;
        assert!(last <= i32::MAX as u64 + 1);
    }
}
