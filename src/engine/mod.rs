//! The durability engine: how an open file's writes and syncs reach the
//! backing store.
//!
//! The filesystem layer hands every open, read, write, close (FUSE FLUSH),
//! fsync, truncate and directory change to the engine, which applies the
//! open file's [`FilePolicy`](crate::policy::FilePolicy), resolved when the file is opened and kept
//! until it is closed (a reload or a rename does not change it):
//!
//! - write strategies: `passthrough` (as they come), `direct` (O_DIRECT,
//!   sector-aligned, unaligned edges read-modify-written under a per-file
//!   lock), `atomic` (staged in a hidden file beside the target, synced and
//!   renamed over it on close or fsync), `append` (extents preallocated
//!   ahead of the end of file, the unused tail released on the last close);
//! - sync triggers: `always` (group commit per file), `on-close`,
//!   `on-fsync` (upgraded to the policy's method), `interval` (a flusher
//!   thread), `never` (app fsyncs acknowledged and counted);
//! - `dir-sync`: directories changed by a metadata operation are synced
//!   (group commit per directory) before it returns;
//! - a failed sync marks the file: every later sync of it fails until all
//!   its opens are closed (data the kernel dropped is never reported
//!   durable by a retry);
//! - the crash simulator and fault injection sit under all of it, so what
//!   durafs itself makes durable is tracked the same as what the app does.
//!
//! No FUSE type is seen here.
//!
//! What is OS-neutral is built on every OS: [`plan`] (what each policy
//! makes of a write, an app sync, a close, an append's growth),
//! [`GroupCommit`] and [`SyncKind`]. The engine over file descriptors
//! (`posix.rs`: writers, stages, flusher, crash simulator, faults) serves
//! the FUSE and macFUSE frontends; the WinFsp frontend drives the same
//! `plan` and `GroupCommit` over Windows handles, through [`by_path`] (the
//! per-file state of a frontend that names files by path).

#[cfg(any(target_os = "linux", target_os = "macos"))]
mod active;
pub mod by_path;
mod commit;
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub mod crash;
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub mod fault;
#[cfg(any(target_os = "linux", target_os = "macos"))]
mod file;
#[cfg(any(target_os = "linux", target_os = "macos"))]
mod flusher;
pub mod plan;
#[cfg(any(target_os = "linux", target_os = "macos"))]
mod posix;
#[cfg(any(target_os = "linux", target_os = "macos"))]
mod stats;

#[cfg(any(target_os = "linux", target_os = "macos"))]
pub use active::{ActivePolicy, Reloaded};
pub use commit::{Covered, GroupCommit};
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub use crash::{Change, CrashMode, CrashOutcome, CrashSim, Stale};
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub use fault::{FaultOp, Faults, Hit};
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub use file::FileState;
#[cfg(any(target_os = "linux", target_os = "macos"))]
use posix::Core;
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub use posix::{Engine, EngineOptions, IoFd, KernelIo, Repoint, Writer};
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub use stats::{Histogram, RuleStats, Stats};

use crate::policy::SyncMethod;

/// The prefix of every name the engine keeps in the backing tree (atomic
/// stages, the crash simulator's graveyard). Such names never show through
/// the mount and cannot be created through it.
pub const HIDDEN_PREFIX: &[u8] = b".durafs-";

/// Which sync a durability step issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// fdatasync
    Data,
    /// fsync (F_FULLFSYNC on macOS)
    Full,
    /// a barrier (fdatasync on Linux)
    Barrier,
}

impl SyncKind {
    fn of(method: SyncMethod) -> SyncKind {
        match method {
            SyncMethod::Data => SyncKind::Data,
            SyncMethod::Full => SyncKind::Full,
            SyncMethod::Barrier => SyncKind::Barrier,
        }
    }

    /// The app's fsync (`full`) or fdatasync, upgraded to `method`: never
    /// weaker than what the app asked for.
    pub fn for_app(method: SyncMethod, full: bool) -> SyncKind {
        if full {
            SyncKind::Full
        } else {
            SyncKind::of(method)
        }
    }
}

/// xorshift64*: the seeded generator behind torn crashes and fault
/// probabilities, so a seed always gives the same sequence.
#[cfg(any(target_os = "linux", target_os = "macos"))]
#[derive(Debug, Clone)]
pub(crate) struct SeededRng(u64);

#[cfg(any(target_os = "linux", target_os = "macos"))]
impl SeededRng {
    pub(crate) fn new(seed: u64) -> SeededRng {
        SeededRng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_syncs_are_never_weakened() {
        assert_eq!(SyncKind::for_app(SyncMethod::Data, true), SyncKind::Full);
        assert_eq!(SyncKind::for_app(SyncMethod::Data, false), SyncKind::Data);
        assert_eq!(SyncKind::for_app(SyncMethod::Full, false), SyncKind::Full);
        assert_eq!(
            SyncKind::for_app(SyncMethod::Barrier, false),
            SyncKind::Barrier
        );
    }
}
