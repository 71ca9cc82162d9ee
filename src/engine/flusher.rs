//! The interval flusher: syncs each file written under `sync = { interval }`
//! at most that long after its first unsynced write, and everything still
//! pending when the mount ends.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use super::file::FileState;
use super::stats::RuleStats;
use super::{Core, SyncKind};

struct Pending {
    due: Instant,
    file: Arc<FileState>,
    kind: SyncKind,
    stats: Arc<RuleStats>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
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
        interval: std::time::Duration,
        kind: SyncKind,
        stats: &Arc<RuleStats>,
    ) {
        if file.interval_dirty.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut q = self.queue.lock().expect("flusher poisoned");
        q.pending.push(Pending {
            due: Instant::now() + interval,
            file: file.clone(),
            kind,
            stats: stats.clone(),
        });
        let mut t = self.thread.lock().expect("flusher poisoned");
        if t.is_none() {
            let (me, core) = (self.clone(), core.clone());
            *t = std::thread::Builder::new()
                .name("durafs-flusher".into())
                .spawn(move || me.run(&core))
                .ok();
        }
        drop(t);
        self.cv.notify_one();
    }

    fn run(&self, core: &Core) {
        let mut q = self.queue.lock().expect("flusher poisoned");
        loop {
            let now = Instant::now();
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
                            String::from_utf8_lossy(&p.file.path)
                        );
                    }
                }
                q = self.queue.lock().expect("flusher poisoned");
                continue;
            }
            if q.stop {
                return;
            }
            q = match q.pending.iter().map(|p| p.due).min() {
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
