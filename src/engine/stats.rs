//! Per-rule counters: what the engine did for the files each rule matched.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Values in power-of-two buckets (bucket i holds values below 2^i),
/// enough for p50/p99 to within a factor of two: sync latencies in µs,
/// group-commit batch sizes.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; 32],
    max_us: AtomicU64,
    sum: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            max_us: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    fn record(&self, d: Duration) {
        self.add(d.as_micros().min(u64::MAX as u128) as u64);
    }

    fn add(&self, v: u64) {
        let i = (64 - v.leading_zeros() as usize).min(31);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(v, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// Cumulative counts of every bucket as (inclusive upper bound, values
    /// at or below it); then the total count and the sum.
    pub fn cumulative(&self) -> (Vec<(u64, u64)>, u64, u64) {
        let mut seen = 0;
        let mut out = Vec::with_capacity(self.buckets.len());
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            // Bucket i holds values below 2^i, i.e. at most 2^i - 1.
            out.push(((1u64 << i) - 1, seen));
        }
        (out, seen, self.sum.load(Ordering::Relaxed))
    }

    /// The upper bound (µs) of the bucket holding quantile `q`, or 0.
    fn quantile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return (1u64 << i).min(self.max_us.load(Ordering::Relaxed).max(1));
            }
        }
        self.max_us.load(Ordering::Relaxed)
    }
}

/// The counters of one rule.
#[derive(Debug, Default)]
pub struct RuleStats {
    /// write requests
    pub writes: AtomicU64,
    /// bytes written
    pub bytes: AtomicU64,
    /// fsync/fdatasync calls by the app
    pub app_syncs: AtomicU64,
    /// syncs the engine issued to the backing store (files and directories)
    pub durafs_syncs: AtomicU64,
    /// requests for durability that a sync covered (each write under
    /// `always`, each close under `on-close`, ...); over `durafs_syncs`,
    /// the mean group-commit batch
    pub sync_requests: AtomicU64,
    /// app syncs acknowledged without touching the disk (`never`)
    pub dropped_syncs: AtomicU64,
    /// atomic replaces committed
    pub atomic_commits: AtomicU64,
    /// directory syncs after metadata operations (`dir-sync`)
    pub dir_syncs: AtomicU64,
    /// errors returned to the app by a durability step
    pub errors: AtomicU64,
    /// latency of the syncs issued, µs
    pub latency: Histogram,
    /// callers each group-commit flush covered
    pub batch: Histogram,
}

impl RuleStats {
    /// Counts one sync issued, taking `d`.
    pub fn synced(&self, d: Duration) {
        self.durafs_syncs.fetch_add(1, Ordering::Relaxed);
        self.latency.record(d);
    }

    /// Counts one group-commit flush that covered `callers`.
    pub fn batched(&self, callers: u64) {
        self.batch.add(callers);
    }

    /// Adds one to `c`.
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn to_json(&self) -> serde_json::Value {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let syncs = g(&self.durafs_syncs);
        let batch = if syncs == 0 {
            0.0
        } else {
            g(&self.sync_requests) as f64 / syncs as f64
        };
        serde_json::json!({
            "writes": g(&self.writes),
            "bytes": g(&self.bytes),
            "app_syncs": g(&self.app_syncs),
            "durafs_syncs": syncs,
            "sync_requests": g(&self.sync_requests),
            "dropped_syncs": g(&self.dropped_syncs),
            "atomic_commits": g(&self.atomic_commits),
            "dir_syncs": g(&self.dir_syncs),
            "errors": g(&self.errors),
            "group_commit_batch": (batch * 100.0).round() / 100.0,
            "sync_latency_us": {
                "p50": self.latency.quantile(0.5),
                "p99": self.latency.quantile(0.99),
                "max": self.latency.max_us.load(Ordering::Relaxed),
            },
        })
    }
}

/// The counters of every rule that has matched an open since the mount.
#[derive(Debug, Default)]
pub struct Stats {
    rules: Mutex<HashMap<Arc<str>, Arc<RuleStats>>>,
}

impl Stats {
    /// The counters of `rule`.
    pub fn rule(&self, rule: &Arc<str>) -> Arc<RuleStats> {
        let mut m = self.rules.lock().expect("stats poisoned");
        if let Some(s) = m.get(rule) {
            return s.clone();
        }
        let s = Arc::new(RuleStats::default());
        m.insert(rule.clone(), s.clone());
        s
    }

    /// Every rule's counters, sorted by rule name.
    pub fn each(&self) -> Vec<(Arc<str>, Arc<RuleStats>)> {
        let m = self.rules.lock().expect("stats poisoned");
        let mut v: Vec<_> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Every rule's counters, by rule name.
    pub fn to_json(&self) -> serde_json::Value {
        let m = self.rules.lock().expect("stats poisoned");
        let mut names: Vec<&Arc<str>> = m.keys().collect();
        names.sort();
        let map: serde_json::Map<String, serde_json::Value> = names
            .into_iter()
            .map(|n| (n.to_string(), m[n].to_json()))
            .collect();
        serde_json::Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_fall_in_the_right_bucket() {
        let h = Histogram::default();
        for _ in 0..98 {
            h.record(Duration::from_micros(100));
        }
        h.record(Duration::from_millis(5));
        h.record(Duration::from_millis(9));
        assert_eq!(h.quantile(0.5), 128);
        assert_eq!(h.quantile(0.99), 8192);
        assert_eq!(h.max_us.load(Ordering::Relaxed), 9000);
        assert_eq!(Histogram::default().quantile(0.5), 0);
        let (cum, n, sum) = h.cumulative();
        assert_eq!(n, 100);
        assert_eq!(sum, 98 * 100 + 5000 + 9000);
        assert_eq!(cum[14], (16383, 100));
        assert_eq!(cum[13], (8191, 99));
        assert_eq!(cum[7], (127, 98));
        assert_eq!(cum[6], (63, 0));
    }

    #[test]
    fn batch_is_requests_over_syncs() {
        let s = Stats::default();
        let r = s.rule(&Arc::from("db"));
        for _ in 0..8 {
            RuleStats::bump(&r.sync_requests);
        }
        r.synced(Duration::from_micros(10));
        r.synced(Duration::from_micros(10));
        let j = s.to_json();
        assert_eq!(j["db"]["group_commit_batch"], 4.0);
        assert!(Arc::ptr_eq(&r, &s.rule(&Arc::from("db"))));
    }
}
