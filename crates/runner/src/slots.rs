//! Host uid ranges for sandboxes' user namespaces.
//!
//! Each sandbox gets its own range of 65536 host uids and gids, so root in one sandbox owns
//! nothing of another's. A sandbox keeps its slot for its whole life, because the files in its
//! upper directory are owned by uids of that range.
//!
//! Several servers may run on one host (tests start a few at once). With a registry
//! directory, a slot is taken host-wide by creating the file named after it, which contains the
//! directory of the sandbox that owns it; a file whose sandbox directory is gone is stale and
//! may be taken over. Without one, slots are only unique within this process.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// The slots this runner uses, each with the directory of its sandbox.
#[derive(Debug, Default)]
pub struct Slots {
    used: BTreeMap<u32, PathBuf>,
    registry: Option<PathBuf>,
}

impl Slots {
    /// Slots reserved host-wide in `registry` when it is given.
    pub fn new(registry: Option<PathBuf>) -> Self {
        Self {
            used: BTreeMap::new(),
            registry,
        }
    }

    /// Records the slot of a sandbox found on disk at start, claiming its registry file if
    /// it is missing.
    pub fn mark_used(&mut self, slot: u32, owner: &Path) {
        if let Some(registry) = &self.registry {
            let file = registry.join(slot.to_string());
            match std::fs::read_to_string(&file) {
                Ok(holder) if Path::new(&holder) == owner => {}
                Ok(holder) if Path::new(&holder).exists() => tracing::warn!(
                    slot,
                    owner = %owner.display(),
                    holder,
                    "a uid slot is recorded for two sandboxes; they share a host uid range"
                ),
                _ => {
                    if let Err(error) = write_owner(&file, owner, false) {
                        tracing::warn!(slot, %error, "failed to record a uid slot in the registry");
                    }
                }
            }
        }
        self.used.insert(slot, owner.to_owned());
    }

    /// Takes the lowest slot free on this host for the sandbox in `owner`, or `None` when all
    /// are used.
    pub fn allocate(&mut self, owner: &Path) -> Option<u32> {
        let slot = (0..SLOT_COUNT)
            .filter(|slot| !self.used.contains_key(slot))
            .find(|&slot| self.reserve(slot, owner))?;
        self.used.insert(slot, owner.to_owned());
        Some(slot)
    }

    /// Takes `slot` in the registry. Without a registry every slot is free here.
    fn reserve(&self, slot: u32, owner: &Path) -> bool {
        let Some(registry) = &self.registry else {
            return true;
        };
        let file = registry.join(slot.to_string());
        match write_owner(&file, owner, true) {
            Ok(()) => true,
            Err(error) if error.kind() == ErrorKind::AlreadyExists => {
                is_stale(&file)
                    && std::fs::remove_file(&file).is_ok()
                    && write_owner(&file, owner, true).is_ok()
            }
            Err(error) => {
                tracing::warn!(slot, registry = %registry.display(), %error, "failed to reserve a uid slot");
                false
            }
        }
    }

    pub fn release(&mut self, slot: u32) {
        let Some(owner) = self.used.remove(&slot) else {
            return;
        };
        if let Some(registry) = &self.registry {
            let file = registry.join(slot.to_string());
            // Only this runner's own reservation goes.
            if std::fs::read_to_string(&file).is_ok_and(|holder| Path::new(&holder) == owner) {
                let _ = std::fs::remove_file(&file);
            }
        }
    }
}

/// A reservation made before its sandbox directory is created must not look stale.
const RESERVATION_GRACE: Duration = Duration::from_secs(60);

/// Returns whether a registry file is left over: its sandbox directory is gone, and it is older than
/// the time a runner takes from reserving a slot to creating that directory.
fn is_stale(file: &Path) -> bool {
    let old = std::fs::metadata(file)
        .and_then(|meta| meta.modified())
        .is_ok_and(|modified| modified.elapsed().unwrap_or_default() > RESERVATION_GRACE);
    old && std::fs::read_to_string(file).is_ok_and(|holder| !Path::new(&holder).exists())
}

/// Writes `owner` into a registry file; with `exclusive`, fails if the file exists.
fn write_owner(file: &Path, owner: &Path, exclusive: bool) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true);
    if exclusive {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    let mut handle = options.open(file)?;
    handle.write_all(owner.as_os_str().as_encoded_bytes())
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    #[test]
    fn slots_reuse_lowest_free() {
        let mut slots = Slots::default();
        let owner = Path::new("/nowhere");
        assert_eq!(slots.allocate(owner), Some(0));
        assert_eq!(slots.allocate(owner), Some(1));
        slots.release(0);
        assert_eq!(slots.allocate(owner), Some(0));
        assert_eq!(slots.allocate(owner), Some(2));
    }

    #[test]
    fn registry_separates_runners() {
        let dir = tempfile::tempdir().unwrap();
        let registry = dir.path().join("slots");
        std::fs::create_dir(&registry).unwrap();
        let first_sandbox = dir.path().join("a");
        let second_sandbox = dir.path().join("b");
        std::fs::create_dir(&first_sandbox).unwrap();
        std::fs::create_dir(&second_sandbox).unwrap();

        let mut first = Slots::new(Some(registry.clone()));
        let mut second = Slots::new(Some(registry.clone()));
        assert_eq!(first.allocate(&first_sandbox), Some(0));
        // The other runner skips the slot the first one holds.
        assert_eq!(second.allocate(&second_sandbox), Some(1));

        // A runner that died left slot 0 behind with its sandbox removed: stale once older
        // than the grace time.
        std::fs::remove_dir(&first_sandbox).unwrap();
        let mut early = Slots::new(Some(registry.clone()));
        assert_eq!(early.allocate(&first_sandbox), Some(2));
        early.release(2);
        let past = SystemTime::now() - RESERVATION_GRACE * 2;
        std::fs::File::options()
            .write(true)
            .open(registry.join("0"))
            .unwrap()
            .set_modified(past)
            .unwrap();
        let mut third = Slots::new(Some(registry.clone()));
        let third_sandbox = dir.path().join("c");
        std::fs::create_dir(&third_sandbox).unwrap();
        assert_eq!(third.allocate(&third_sandbox), Some(0));

        // Releasing removes only one's own reservation.
        first.release(0);
        assert!(registry.join("0").exists());
        third.release(0);
        second.release(1);
        assert_eq!(std::fs::read_dir(&registry).unwrap().count(), 0);
    }

    #[test]
    fn last_slot_stays_below_2_pow_31() {
        let last = host_base(SLOT_COUNT - 1) as u64 + RANGE_SIZE as u64;
        assert!(last <= i32::MAX as u64 + 1);
    }
}
