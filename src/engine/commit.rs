//! Group commit: concurrent waiters for durability on one file (or one
//! directory) share one flush.
//!
//! A caller needs a flush that *starts after* its own write completed. If
//! fewer than `overlap` flushes are running it starts one itself at once;
//! otherwise (the running ones may have started before its write) it waits,
//! and the next flush, which whoever gets a free slot first starts on
//! behalf of everyone waiting, covers it — as does any flush started later,
//! so a caller is released by the first of them to finish. So no caller
//! waits for more than one flush that began after its write, and N waiters
//! arriving while the slots are taken cost one more flush, not N.

use std::io;
use std::sync::{Condvar, Mutex};

#[derive(Debug, Default)]
struct State {
    /// flushes started so far (the generation of the newest)
    started: u64,
    /// the newest generation that has finished: every flush started
    /// before it covers less, so its finishing covers their callers too
    done: u64,
    /// flushes running now
    running: usize,
    /// callers waiting for the flush not yet started (the next batch)
    pending: u64,
    /// the newest generation that failed, and its errno
    failed: u64,
    failed_errno: i32,
}

/// One file's (or directory's) flush schedule.
#[derive(Debug)]
pub struct GroupCommit {
    state: Mutex<State>,
    cv: Condvar,
    /// how many flushes may run at once
    overlap: usize,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self::with_overlap(DEFAULT_OVERLAP)
    }
}

/// Flushes of one file that may run at once. With one, a caller arriving
/// during a flush waits for it to end before its own starts, so the data it
/// wrote goes to the disk only after a whole flush; with more, its fdatasync
/// starts at once, writes its data while the earlier cache flush is in
/// flight, and the block layer merges the cache flushes queued meanwhile.
/// Measured under `always`, 4 writers on one file (fio, 4 KiB, ext4 on
/// virtio): 11.6k IOPS with 1, 13.6k with 2, 16.2k with 4.
pub const DEFAULT_OVERLAP: usize = 4;

/// How a caller's durability was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Covered {
    /// the caller ran the flush, which covered this many callers
    /// (itself included): the group-commit batch
    Led(u64),
    /// a flush another caller ran covered it
    Joined,
}

impl GroupCommit {
    /// A schedule on which at most `overlap` (at least 1) flushes run at once.
    pub fn with_overlap(overlap: usize) -> Self {
        GroupCommit {
            state: Mutex::default(),
            cv: Condvar::new(),
            overlap: overlap.max(1),
        }
    }

    /// Returns once a flush that started after this call has finished,
    /// running `flush` itself if it has to. The result is that flush's: a
    /// failed flush fails every caller it covered.
    pub fn sync(&self, flush: impl FnOnce() -> io::Result<()>) -> (io::Result<()>, Covered) {
        let mut s = self.state.lock().expect("group commit poisoned");
        // Any flush started from now on covers this caller's writes.
        let target = s.started + 1;
        s.pending += 1;
        loop {
            if s.done >= target {
                let res = if s.failed >= target {
                    Err(io::Error::from_raw_os_error(s.failed_errno))
                } else {
                    Ok(())
                };
                return (res, Covered::Joined);
            }
            if s.started < target && s.running < self.overlap {
                s.started += 1;
                let generation = s.started;
                s.running += 1;
                let batch = std::mem::take(&mut s.pending);
                drop(s);
                let res = flush();
                let mut s = self.state.lock().expect("group commit poisoned");
                s.running -= 1;
                s.done = s.done.max(generation);
                if let Err(e) = &res {
                    s.failed = s.failed.max(generation);
                    s.failed_errno = e.raw_os_error().unwrap_or(crate::platform::EIO);
                }
                self.cv.notify_all();
                return (res, Covered::Led(batch));
            }
            s = self.cv.wait(s).expect("group commit poisoned");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    #[test]
    fn a_lone_caller_runs_its_own_flush() {
        let gc = GroupCommit::default();
        let n = AtomicU64::new(0);
        for _ in 0..3 {
            let (r, how) = gc.sync(|| {
                n.fetch_add(1, Ordering::SeqCst);
                Ok(())
            });
            assert!(r.is_ok());
            assert_eq!(how, Covered::Led(1));
        }
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn waiters_during_a_flush_share_the_next_one() {
        let gc = Arc::new(GroupCommit::with_overlap(1));
        let flushes = Arc::new(AtomicU64::new(0));
        // A slow flush in progress...
        let (g, f) = (gc.clone(), flushes.clone());
        let first = std::thread::spawn(move || {
            g.sync(|| {
                f.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(200));
                Ok(())
            })
        });
        std::thread::sleep(Duration::from_millis(50));
        // ...and eight callers arriving during it.
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let (g, f) = (gc.clone(), flushes.clone());
                std::thread::spawn(move || {
                    g.sync(|| {
                        f.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(50));
                        Ok(())
                    })
                })
            })
            .collect();
        first.join().unwrap().0.unwrap();
        let led = waiters
            .into_iter()
            .map(|w| w.join().unwrap())
            .filter(|(r, how)| {
                assert!(r.is_ok());
                matches!(how, Covered::Led(_))
            })
            .inspect(|(_, how)| assert_eq!(*how, Covered::Led(8)))
            .count();
        // None of them may be satisfied by the flush that began before
        // they arrived; one more flush covers all eight.
        assert_eq!(led, 1);
        assert_eq!(flushes.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_failed_flush_fails_everyone_it_covered_and_not_later_callers() {
        let gc = Arc::new(GroupCommit::with_overlap(1));
        let g = gc.clone();
        let first = std::thread::spawn(move || {
            g.sync(|| {
                std::thread::sleep(Duration::from_millis(150));
                Ok(())
            })
        });
        std::thread::sleep(Duration::from_millis(30));
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let g = gc.clone();
                std::thread::spawn(move || {
                    g.sync(|| {
                        std::thread::sleep(Duration::from_millis(30));
                        Err(io::Error::from_raw_os_error(libc::EIO))
                    })
                    .0
                })
            })
            .collect();
        first.join().unwrap().0.unwrap();
        for w in waiters {
            assert_eq!(
                w.join().unwrap().unwrap_err().raw_os_error(),
                Some(libc::EIO)
            );
        }
        assert!(gc.sync(|| Ok(())).0.is_ok());
    }

    #[test]
    fn overlapping_flushes_start_at_once_until_the_slots_are_taken() {
        let gc = Arc::new(GroupCommit::with_overlap(2));
        let flushes = Arc::new(AtomicU64::new(0));
        let running = Arc::new(AtomicU64::new(0));
        let most = Arc::new(AtomicU64::new(0));
        let caller = |delay: u64, hold: u64| {
            let (g, f, r, m) = (gc.clone(), flushes.clone(), running.clone(), most.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(delay));
                g.sync(|| {
                    f.fetch_add(1, Ordering::SeqCst);
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(hold));
                    r.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                })
            })
        };
        // One slow flush; a second caller does not wait for it...
        let first = caller(0, 300);
        let second = caller(50, 300);
        // ...and six more, arriving while both slots are taken, share one.
        let rest: Vec<_> = (0..6).map(|_| caller(120, 50)).collect();
        assert_eq!(first.join().unwrap().1, Covered::Led(1));
        assert_eq!(second.join().unwrap().1, Covered::Led(1));
        let led: Vec<_> = rest
            .into_iter()
            .map(|w| w.join().unwrap())
            .inspect(|(r, _)| assert!(r.is_ok()))
            .filter_map(|(_, how)| match how {
                Covered::Led(n) => Some(n),
                Covered::Joined => None,
            })
            .collect();
        assert_eq!(led, vec![6]);
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!(flushes.load(Ordering::SeqCst), 3);
    }
}
