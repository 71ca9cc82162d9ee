//! How many syncs the process has issued, by kind: the counting shim the
//! tests use to prove a sync happened, and the source of sync metrics.

use std::sync::atomic::{AtomicU64, Ordering};

pub(super) static FSYNC: AtomicU64 = AtomicU64::new(0);
pub(super) static FDATASYNC: AtomicU64 = AtomicU64::new(0);

/// Syncs issued so far by this process through the platform layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncCounts {
    /// full syncs (fsync)
    pub fsync: u64,
    /// data syncs (fdatasync)
    pub fdatasync: u64,
}

/// The counts now.
pub fn sync_counts() -> SyncCounts {
    SyncCounts {
        fsync: FSYNC.load(Ordering::Relaxed),
        fdatasync: FDATASYNC.load(Ordering::Relaxed),
    }
}
