//! Group commit: concurrent waiters for durability on one file (or one
//! directory) share one flush.
//!
//! A caller needs a flush that *starts after* its own write completed. If
//! none is running it runs one itself; if one is running (it may have
//! started before the caller's write) the caller waits for it and then for
//! the next, which whoever gets there first starts on behalf of everyone
//! waiting. So no caller waits for more than one flush that began after its
//! write, and N waiters arriving while a flush runs cost one more flush,
//! not N.

use std::io;
use std::sync::{Condvar, Mutex};

#[derive(Debug, Default)]
struct State {
    /// flushes started so far (the generation of the newest)
    started: u64,
    /// the newest generation that has finished
    done: u64,
    running: bool,
    /// callers waiting for the flush not yet started (the next batch)
    pending: u64,
    /// the newest generation that failed, and its errno
    failed: u64,
    failed_errno: i32,
}

/// One file's (or directory's) flush schedule.
#[derive(Debug, Default)]
pub struct GroupCommit {
    state: Mutex<State>,
    cv: Condvar,
}

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
    /// Returns once a flush that started after this call has finished,
    /// running `flush` itself if it has to. The result is that flush's: a
    /// failed flush fails every caller it covered.
    pub fn sync(&self, flush: impl FnOnce() -> io::Result<()>) -> (io::Result<()>, Covered) {
        let mut s = self.state.lock().expect("group commit poisoned");
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
            if !s.running {
                s.started += 1;
                let generation = s.started;
                s.running = true;
                let batch = std::mem::take(&mut s.pending);
                drop(s);
                let res = flush();
                let mut s = self.state.lock().expect("group commit poisoned");
                s.running = false;
                s.done = generation;
                if let Err(e) = &res {
                    s.failed = generation;
                    s.failed_errno = e.raw_os_error().unwrap_or(libc::EIO);
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
        let gc = Arc::new(GroupCommit::default());
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
        let gc = Arc::new(GroupCommit::default());
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
}
