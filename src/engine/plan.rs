//! What a file's policy makes of each event in its life: a write, the
//! app's sync, its close, growth of an `append` file. These decisions are
//! the promises of DESIGN.md; every frontend's engine takes them from here
//! (the POSIX engine under FUSE and macFUSE, the WinFsp frontend on
//! Windows), so an OS cannot quietly promise something else.

use std::time::Duration;

use super::SyncKind;
use crate::policy::{FilePolicy, SyncTrigger, WriteStrategy};

/// What follows a write that reached the backing file (or the stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterWrite {
    /// nothing now
    Nothing,
    /// sync before the write returns (`always`)
    Sync(SyncKind),
    /// sync within this long (`interval`)
    Schedule(Duration, SyncKind),
}

/// What the app's fsync/fdatasync (FlushFileBuffers on Windows) becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppSync {
    /// commit the atomic stage (sync it, rename it over the target, sync
    /// the directory)
    Commit,
    /// acknowledged and counted, nothing synced (`never`)
    Drop,
    /// this sync
    Sync(SyncKind),
}

/// What the last close of a writable open does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtClose {
    /// nothing
    Nothing,
    /// commit the atomic stage
    Commit,
    /// sync (`on-close` with unsynced writes)
    Sync(SyncKind),
}

/// The sync a policy's own steps issue (not the app's).
pub fn own_sync(fp: &FilePolicy) -> SyncKind {
    SyncKind::of(fp.method)
}

/// After a write; `staged`: it went to an atomic stage, made durable by
/// the commit, never write by write. (An atomic file written in place, as
/// one with hard links is, follows its sync trigger like any other.)
pub fn after_write(fp: &FilePolicy, staged: bool) -> AfterWrite {
    if staged {
        return AfterWrite::Nothing;
    }
    match fp.sync {
        SyncTrigger::Always => AfterWrite::Sync(own_sync(fp)),
        SyncTrigger::Interval(every) => AfterWrite::Schedule(every, own_sync(fp)),
        SyncTrigger::Never | SyncTrigger::OnFsync | SyncTrigger::OnClose => AfterWrite::Nothing,
    }
}

/// The app asks for a sync (`full`: fsync rather than fdatasync); `staged`:
/// an atomic stage holds writes not yet committed. The stage is committed
/// whatever the trigger, `never` included: the app asked for the new
/// contents to be in place.
pub fn app_sync(fp: &FilePolicy, staged: bool, full: bool) -> AppSync {
    if staged {
        return AppSync::Commit;
    }
    if fp.sync == SyncTrigger::Never {
        return AppSync::Drop;
    }
    AppSync::Sync(SyncKind::for_app(fp.method, full))
}

/// The last close of a writable open; `staged`: its writes went to an
/// atomic stage; `dirty`: written since its last sync.
pub fn at_close(fp: &FilePolicy, staged: bool, dirty: bool) -> AtClose {
    if staged {
        return AtClose::Commit;
    }
    if fp.sync == SyncTrigger::OnClose && dirty {
        return AtClose::Sync(own_sync(fp));
    }
    AtClose::Nothing
}

/// How far an `append` file is preallocated once a write reaches `end`:
/// the next multiple of the policy's step past it, or None when `end` is
/// already inside what is `reserved` (or the policy preallocates nothing).
pub fn reserve_to(fp: &FilePolicy, end: u64, reserved: u64) -> Option<u64> {
    let step = fp.preallocate;
    if fp.write != WriteStrategy::Append || step == 0 || end <= reserved {
        return None;
    }
    Some((end / step + 1).saturating_mul(step))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Policy, SyncMethod};

    fn policy(write: &str, sync: &str, method: &str) -> FilePolicy {
        let text = format!(
            "version = 1\n[defaults]\nwrite = \"{write}\"\nsync = {sync}\nmethod = \"{method}\"\n"
        );
        Policy::parse(&text, "test")
            .expect("valid policy")
            .0
            .resolve(b"f")
    }

    #[test]
    fn always_syncs_each_write_with_the_policy_method() {
        let fp = policy("passthrough", "\"always\"", "full");
        assert_eq!(after_write(&fp, false), AfterWrite::Sync(SyncKind::Full));
        let fp = policy("direct", "\"always\"", "barrier");
        assert_eq!(after_write(&fp, false), AfterWrite::Sync(SyncKind::Barrier));
    }

    #[test]
    fn interval_schedules_and_atomic_waits_for_its_commit() {
        let fp = policy("append", "{ interval = \"250ms\" }", "data");
        assert_eq!(
            after_write(&fp, false),
            AfterWrite::Schedule(Duration::from_millis(250), SyncKind::Data)
        );
        let fp = policy("atomic", "\"on-close\"", "data");
        assert_eq!(after_write(&fp, true), AfterWrite::Nothing);
        let fp = policy("append", "\"always\"", "data");
        assert_eq!(after_write(&fp, true), AfterWrite::Nothing);
        for sync in ["\"never\"", "\"on-fsync\"", "\"on-close\""] {
            let fp = policy("passthrough", sync, "data");
            assert_eq!(after_write(&fp, false), AfterWrite::Nothing, "{sync}");
        }
    }

    #[test]
    fn app_syncs_commit_stages_are_dropped_under_never_and_never_weakened() {
        let fp = policy("atomic", "\"on-fsync\"", "full");
        assert_eq!(app_sync(&fp, true, false), AppSync::Commit);
        assert_eq!(app_sync(&fp, false, false), AppSync::Sync(SyncKind::Full));
        let text = "version = 1\n[defaults]\nsync = \"never\"\n";
        let fp = Policy::parse(text, "test").unwrap().0.resolve(b"f");
        assert_eq!(app_sync(&fp, false, true), AppSync::Drop);
        let fp = policy("passthrough", "\"on-fsync\"", "data");
        assert_eq!(app_sync(&fp, false, true), AppSync::Sync(SyncKind::Full));
        assert_eq!(app_sync(&fp, false, false), AppSync::Sync(SyncKind::Data));
        let fp = policy("passthrough", "\"on-fsync\"", "full");
        assert_eq!(app_sync(&fp, false, false), AppSync::Sync(SyncKind::Full));
        assert_eq!(
            SyncKind::for_app(SyncMethod::Barrier, false),
            SyncKind::Barrier
        );
    }

    #[test]
    fn close_commits_stages_and_syncs_only_dirty_on_close_files() {
        let fp = policy("atomic", "\"on-close\"", "data");
        assert_eq!(at_close(&fp, true, false), AtClose::Commit);
        assert_eq!(at_close(&fp, false, true), AtClose::Sync(SyncKind::Data));
        let fp = policy("passthrough", "\"on-close\"", "full");
        assert_eq!(at_close(&fp, false, true), AtClose::Sync(SyncKind::Full));
        assert_eq!(at_close(&fp, false, false), AtClose::Nothing);
        let fp = policy("passthrough", "\"always\"", "full");
        assert_eq!(at_close(&fp, false, true), AtClose::Nothing);
    }

    #[test]
    fn append_files_reserve_whole_steps_past_the_end() {
        let text = "version = 1\n[defaults]\nwrite = \"append\"\npreallocate = \"1MiB\"\n";
        let fp = Policy::parse(text, "test").unwrap().0.resolve(b"log");
        let mib = 1 << 20;
        assert_eq!(reserve_to(&fp, 1, 0), Some(mib));
        assert_eq!(reserve_to(&fp, mib, 0), Some(2 * mib));
        assert_eq!(reserve_to(&fp, mib - 1, mib), None);
        let fp = policy("passthrough", "\"always\"", "data");
        assert_eq!(reserve_to(&fp, 1, 0), None);
    }
}
