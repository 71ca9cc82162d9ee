//! Fault injection: errors, delays and torn writes on chosen operations of
//! chosen files, set and cleared at run time (`durafs fault`).
//!
//! A fault is written as `key=value` words: `op=fsync errno=EIO
//! glob=**/*.db count=1`, `op=write errno=ENOSPC probability=0.1 seed=7`,
//! `op=write tear`, `op=fsync delay=50ms`. Faults act at the backing store:
//! an injected fsync error is what the disk said, so the engine's handling
//! of it (the error reaches the app, the file is marked failed) is what a
//! real one gets.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use globset::{Candidate, GlobBuilder, GlobMatcher};

/// The operations a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// a write to a file (by the app, or the engine's own)
    Write,
    /// a sync of a file or directory, whoever asked for it
    Fsync,
    /// a read
    Read,
    /// an open or create
    Open,
    /// any of them
    Any,
}

impl FaultOp {
    fn parse(s: &str) -> Result<FaultOp, String> {
        Ok(match s {
            "write" => FaultOp::Write,
            "fsync" | "sync" => FaultOp::Fsync,
            "read" => FaultOp::Read,
            "open" | "create" => FaultOp::Open,
            "any" | "*" => FaultOp::Any,
            _ => {
                return Err(format!(
                    "unknown op `{s}` (expected write, fsync, read, open or any)"
                ));
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            FaultOp::Write => "write",
            FaultOp::Fsync => "fsync",
            FaultOp::Read => "read",
            FaultOp::Open => "open",
            FaultOp::Any => "any",
        }
    }
}

/// What an operation hit by a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    /// fail with this errno
    Errno(i32),
    /// (writes) write the first half, then fail with EIO
    Tear,
}

const ERRNOS: &[(&str, i32)] = &[
    ("EIO", libc::EIO),
    ("ENOSPC", libc::ENOSPC),
    ("EDQUOT", libc::EDQUOT),
    ("EROFS", libc::EROFS),
    ("EACCES", libc::EACCES),
    ("EPERM", libc::EPERM),
    ("ENOMEM", libc::ENOMEM),
    ("EINTR", libc::EINTR),
    ("EAGAIN", libc::EAGAIN),
    ("EFBIG", libc::EFBIG),
];

fn parse_errno(s: &str) -> Result<i32, String> {
    if let Some((_, n)) = ERRNOS.iter().find(|(name, _)| name.eq_ignore_ascii_case(s)) {
        return Ok(*n);
    }
    s.parse::<i32>().ok().filter(|n| *n > 0).ok_or_else(|| {
        let names: Vec<&str> = ERRNOS.iter().map(|(n, _)| *n).collect();
        format!(
            "unknown errno `{s}` (use a number or one of {})",
            names.join(", ")
        )
    })
}

fn errno_name(n: i32) -> String {
    ERRNOS
        .iter()
        .find(|(_, v)| *v == n)
        .map_or_else(|| n.to_string(), |(name, _)| name.to_string())
}

/// One fault.
#[derive(Debug)]
struct Fault {
    id: u64,
    spec: String,
    op: FaultOp,
    glob: Option<GlobMatcher>,
    errno: Option<i32>,
    tear: bool,
    delay: Option<Duration>,
    /// hits left (None: unlimited)
    left: Option<u64>,
    probability: f64,
    rng: super::SeededRng,
    hits: u64,
}

impl Fault {
    fn parse(id: u64, spec: &str) -> Result<Fault, String> {
        let mut f = Fault {
            id,
            spec: spec.trim().to_string(),
            op: FaultOp::Any,
            glob: None,
            errno: None,
            tear: false,
            delay: None,
            left: None,
            probability: 1.0,
            rng: super::SeededRng::new(1),
            hits: 0,
        };
        let mut op_given = false;
        for word in spec.split_whitespace() {
            let (k, v) = word.split_once('=').unwrap_or((word, ""));
            match k {
                "op" => {
                    f.op = FaultOp::parse(v)?;
                    op_given = true;
                }
                "glob" | "path" => {
                    let g = GlobBuilder::new(v)
                        .literal_separator(true)
                        .build()
                        .map_err(|e| format!("bad glob `{v}`: {e}"))?;
                    f.glob = Some(g.compile_matcher());
                }
                "errno" => f.errno = Some(parse_errno(v)?),
                "tear" => f.tear = true,
                "delay" => {
                    let d = crate::policy::parse_duration(v)
                        .map_err(|e| format!("bad delay `{v}`: {e}"))?;
                    f.delay = Some(d);
                }
                "count" => {
                    f.left = Some(v.parse().map_err(|_| format!("bad count `{v}`"))?);
                }
                "probability" | "p" => {
                    let p: f64 = v.parse().map_err(|_| format!("bad probability `{v}`"))?;
                    if !(0.0..=1.0).contains(&p) {
                        return Err(format!("probability {p} is not between 0 and 1"));
                    }
                    f.probability = p;
                }
                "seed" => {
                    let s: u64 = v.parse().map_err(|_| format!("bad seed `{v}`"))?;
                    f.rng = super::SeededRng::new(s);
                }
                _ => {
                    return Err(format!(
                        "unknown fault key `{k}` (expected op, glob, errno, tear, delay, count, probability, seed)"
                    ));
                }
            }
        }
        if !op_given {
            return Err("a fault needs op=write|fsync|read|open|any".into());
        }
        if f.errno.is_none() && !f.tear && f.delay.is_none() {
            return Err("a fault needs errno=E..., tear or delay=DURATION".into());
        }
        if f.tear && f.op != FaultOp::Write {
            return Err("tear applies to op=write only".into());
        }
        Ok(f)
    }

    /// Whether this fault is set on `op` of the file at `path`.
    fn targets(&self, op: FaultOp, path: &Candidate<'_>) -> bool {
        (self.op == op || self.op == FaultOp::Any)
            && self
                .glob
                .as_ref()
                .is_none_or(|g| g.is_match_candidate(path))
    }

    fn roll(&mut self) -> bool {
        if self.probability >= 1.0 {
            return true;
        }
        // reproducible for a given seed
        let x = self.rng.next() >> 11;
        (x as f64 / (1u64 << 53) as f64) < self.probability
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "spec": self.spec,
            "op": self.op.name(),
            "errno": self.errno.map(errno_name),
            "hits": self.hits,
            "left": self.left,
        })
    }
}

/// The faults of a mount.
#[derive(Debug, Default)]
pub struct Faults {
    active: AtomicBool,
    list: Mutex<(u64, Vec<Fault>)>,
}

impl Faults {
    /// Whether any fault is set (the engine skips path lookups otherwise).
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Adds a fault from its `key=value` words; returns its id.
    pub fn add(&self, spec: &str) -> Result<u64, String> {
        let mut l = self.list.lock().expect("faults poisoned");
        let id = l.0 + 1;
        let f = Fault::parse(id, spec)?;
        tracing::info!("fault {id} set: {}", f.spec);
        l.0 = id;
        l.1.push(f);
        self.active.store(true, Ordering::Relaxed);
        Ok(id)
    }

    /// Whether fault `id` can hit a read or a write of `path`: what an open
    /// whose IO bypasses the daemon (kernel passthrough) cannot honour.
    pub fn hits_data(&self, id: u64, path: &[u8]) -> bool {
        let l = self.list.lock().expect("faults poisoned");
        let cand = Candidate::from_bytes(path);
        l.1.iter().any(|f| {
            f.id == id && (f.targets(FaultOp::Write, &cand) || f.targets(FaultOp::Read, &cand))
        })
    }

    /// Removes every fault (or the one with `id`); returns how many went.
    pub fn clear(&self, id: Option<u64>) -> usize {
        let mut l = self.list.lock().expect("faults poisoned");
        let before = l.1.len();
        l.1.retain(|f| id.is_some_and(|id| f.id != id));
        self.active.store(!l.1.is_empty(), Ordering::Relaxed);
        let gone = before - l.1.len();
        match id {
            Some(id) => tracing::info!("fault {id} cleared ({gone} removed)"),
            None => tracing::info!("faults cleared ({gone} removed)"),
        }
        gone
    }

    /// The faults, for `durafs fault list`.
    pub fn to_json(&self) -> serde_json::Value {
        let l = self.list.lock().expect("faults poisoned");
        serde_json::Value::Array(l.1.iter().map(Fault::to_json).collect())
    }

    /// Whether `op` on `path` (relative to the mount root) is hit: sleeps
    /// out any delay, and returns what the operation must do instead.
    pub fn check(&self, op: FaultOp, path: &[u8]) -> Option<Hit> {
        if !self.active() {
            return None;
        }
        let mut delay = Duration::ZERO;
        let mut hit = None;
        {
            let mut l = self.list.lock().expect("faults poisoned");
            let cand = Candidate::from_bytes(path);
            for f in l.1.iter_mut() {
                if !f.targets(op, &cand) || f.left == Some(0) || !f.roll() {
                    continue;
                }
                f.hits += 1;
                if let Some(n) = &mut f.left {
                    *n -= 1;
                }
                if let Some(d) = f.delay {
                    delay += d;
                }
                if hit.is_none() {
                    hit = if f.tear {
                        Some(Hit::Tear)
                    } else {
                        f.errno.map(Hit::Errno)
                    };
                }
                if hit.is_some() {
                    tracing::info!(
                        "fault {} hit {} on {}",
                        f.id,
                        op.name(),
                        String::from_utf8_lossy(path)
                    );
                }
            }
        }
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        hit
    }
}
