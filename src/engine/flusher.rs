//! The interval flusher: syncs each file written under `sync = { interval }`
//! at most that long after its first unsynced write, and everything still
//! pending when the mount ends.
//!
//! Files whose writes the daemon does not see (kernel passthrough opens of
//! `passthrough` and `append` files) are watched instead: while such an
//! open lives, the file is synced every interval unless it is provably
//! unchanged since the last sync (same size and mtime, and that mtime well
//! before the sync began, so no write can hide inside the timestamp's
//! granularity), and an `append` file's preallocation is moved ahead of
//! its size. The last such close queues one more sync.

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::platform;

use super::file::FileState;
use super::stats::RuleStats;
use super::{Core, SyncKind, Writer};

struct Pending {
    due: Instant,
    file: Arc<FileState>,
    kind: SyncKind,
    stats: Arc<RuleStats>,
}

/// A file synced every interval while opens the daemon cannot see live.
struct Watched {
    due: Instant,
    every: Duration,
    file: Arc<FileState>,
    kind: SyncKind,
    stats: Arc<RuleStats>,
    /// the `append` preallocation step (0: none)
    step: u64,
    /// (mtime ns, size) before the last sync, and when that sync began
    last: Option<(i128, u64, i128)>,
}

/// A write's mtime can lag the clock by the timestamp granularity (a
/// jiffy, coarse clocks): a file modified this long before a sync began
/// cannot be written again without its mtime moving.
const MTIME_SLACK_NS: i128 = 50_000_000;

fn now_ns() -> i128 {
    match SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(_) => 0,
    }
}

impl Watched {
    /// Syncs the file unless it is provably unchanged since the last
    /// sync, and moves an append file's preallocation ahead of its size.
    fn tick(&mut self, core: &Core) {
        let began = now_ns();
        let fd = self.file.sync_fd();
        let Ok(st) = platform::stat_fd(fd.as_fd()) else {
            return;
        };
        let mtime = st.st_mtime as i128 * 1_000_000_000 + st.st_mtime_nsec as i128;
        let size = st.st_size as u64;
        if self.step > 0 {
            // Keeps more than half a step reserved past the end of file.
            let (need, to) = (size + self.step / 2 + 1, (size / self.step + 2) * self.step);
            self.file.reserve(fd.as_fd(), need, size, to);
        }
        if let Some((m, s, at)) = self.last {
            if m == mtime && s == size && m + MTIME_SLACK_NS < at {
                return;
            }
        }
        match core.file_sync(&self.file, self.kind, &self.stats) {
            Ok(()) => self.last = Some((mtime, size, began)),
            Err(e) => tracing::error!(
                "interval sync of {} failed: {e}",
                String::from_utf8_lossy(&self.file.path())
            ),
        }
    }
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    watched: Vec<Watched>,
    stop: bool,
}

/// The flusher thread's queue.
#[derive(Default)]
pub(super) struct Flusher {
    queue: Mutex<Queue>,
    cv: Condvar,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Flusher {
    /// Queues `file` for a sync by `due`, unless it is queued already.
    pub(super) fn schedule(
        self: &Arc<Self>,
        core: &Arc<Core>,
        file: &Arc<FileState>,
        interval: Duration,
        kind: SyncKind,
        stats: &Arc<RuleStats>,
    ) {
        if file.interval_dirty.swap(true, Ordering::AcqRel) {
            return;
        }
        self.enqueue(core, |q| {
            q.pending.push(Pending {
                due: Instant::now() + interval,
                file: file.clone(),
                kind,
                stats: stats.clone(),
            })
        });
    }

    /// Watches the file of `w`, an open under `sync = { interval }` whose
    /// writes the daemon does not see (see the module docs); `step` is its
    /// preallocation step (0: none).
    pub(super) fn watch(
        self: &Arc<Self>,
        core: &Arc<Core>,
        w: &Writer,
        every: Duration,
        step: u64,
    ) {
        if w.file.watchers.fetch_add(1, Ordering::AcqRel) > 0 {
            return;
        }
        self.enqueue(core, |q| {
            q.watched.push(Watched {
                due: Instant::now() + every,
                every,
                file: w.file.clone(),
                kind: SyncKind::of(w.policy.method),
                stats: w.stats.clone(),
                step,
                last: None,
            })
        });
    }

    /// The watched open `w` closed; after the last of its file's, the
    /// file gets one more sync within the interval, as if its last write
    /// had just been seen.
    pub(super) fn unwatch(self: &Arc<Self>, core: &Arc<Core>, w: &Writer, every: Duration) {
        if w.file.watchers.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        self.queue
            .lock()
            .expect("flusher poisoned")
            .watched
            .retain(|q| !Arc::ptr_eq(&q.file, &w.file));
        self.schedule(
            core,
            &w.file,
            every,
            SyncKind::of(w.policy.method),
            &w.stats,
        );
    }

    /// Adds to the queue, starts the thread if it is not running, wakes it.
    fn enqueue(self: &Arc<Self>, core: &Arc<Core>, add: impl FnOnce(&mut Queue)) {
        add(&mut self.queue.lock().expect("flusher poisoned"));
        self.start(core);
        self.cv.notify_one();
    }

    fn start(self: &Arc<Self>, core: &Arc<Core>) {
        let mut t = self.thread.lock().expect("flusher poisoned");
        if t.is_none() {
            let (me, core) = (self.clone(), core.clone());
            *t = std::thread::Builder::new()
                .name("durafs-flusher".into())
                .spawn(move || me.run(&core))
                .ok();
        }
    }

    fn run(&self, core: &Core) {
        let mut q = self.queue.lock().expect("flusher poisoned");
        loop {
            let now = Instant::now();
            let stop = q.stop;
            if q.watched.iter().any(|w| w.due <= now || stop) {
                // Ticked outside the lock, so writers scheduling syncs do
                // not wait for these; a file unwatched meanwhile (no
                // watchers left) is dropped when they are put back.
                let mut watched = std::mem::take(&mut q.watched);
                drop(q);
                for w in watched.iter_mut().filter(|w| w.due <= now || stop) {
                    w.tick(core);
                    w.due = Instant::now() + w.every;
                }
                q = self.queue.lock().expect("flusher poisoned");
                if !stop {
                    watched.retain(|w| w.file.watchers.load(Ordering::Acquire) > 0);
                    watched.append(&mut q.watched);
                    q.watched = watched;
                }
                continue;
            }
            let due: Vec<Pending> = {
                let (due, later) = std::mem::take(&mut q.pending)
                    .into_iter()
                    .partition(|p| p.due <= now || q.stop);
                q.pending = later;
                due
            };
            if !due.is_empty() {
                drop(q);
                for p in due {
                    p.file.interval_dirty.store(false, Ordering::Release);
                    if let Err(e) = core.file_sync(&p.file, p.kind, &p.stats) {
                        tracing::error!(
                            "interval sync of {} failed: {e}",
                            String::from_utf8_lossy(&p.file.path())
                        );
                    }
                }
                q = self.queue.lock().expect("flusher poisoned");
                continue;
            }
            if q.stop {
                return;
            }
            let next = q.pending.iter().map(|p| p.due);
            q = match next.chain(q.watched.iter().map(|w| w.due)).min() {
                Some(d) => {
                    self.cv
                        .wait_timeout(q, d.saturating_duration_since(now))
                        .expect("flusher poisoned")
                        .0
                }
                None => self.cv.wait(q).expect("flusher poisoned"),
            };
        }
    }

    /// Syncs everything pending now and stops the thread.
    pub(super) fn shutdown(&self) {
        self.queue.lock().expect("flusher poisoned").stop = true;
        self.cv.notify_all();
        if let Some(t) = self.thread.lock().expect("flusher poisoned").take() {
            let _ = t.join();
        }
    }
}
