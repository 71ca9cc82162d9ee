//! Metrics in the Prometheus text exposition format (version 0.0.4): the
//! per-rule counters of `durafs status`, named by Prometheus conventions
//! (`durafs_` prefix, `_total` counters, base units), served over the
//! control socket (`durafs metrics`) and, with `-o metrics=ADDR`, over HTTP
//! on a loopback address.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::{info, warn};

use crate::engine::{Engine, Histogram, RuleStats};
use crate::platform;

/// What the daemon knows about itself beyond the engine's counters.
#[derive(Debug, Clone, Default)]
pub struct MountFacts {
    /// the mount point, as a label
    pub mountpoint: String,
    /// the backing directory, as a label
    pub backing: String,
    /// seconds since the epoch at mount
    pub start_time: u64,
    /// open files now
    pub open_files: usize,
    /// inodes the daemon holds
    pub inodes: usize,
    /// FUSE worker threads
    pub threads: usize,
    /// negotiated FUSE protocol, e.g. "7.41"
    pub fuse_protocol: Option<String>,
    /// kernel passthrough live
    pub passthrough: bool,
    /// crash simulation on
    pub crash_sim: bool,
    /// policy reloads since mount
    pub reloads: u64,
}

/// Builds the text, one family (HELP, TYPE, samples) at a time.
struct Text(String);

/// Escapes a label value: backslash, double quote and newline.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// One histogram's buckets `lo..=hi` (bucket i holds values up to
    /// 2^i - 1), `_sum` and `_count`; with `micros`, values are µs shown
    /// as seconds.
    fn histogram(
        &mut self,
        name: &str,
        rule: &str,
        h: &Histogram,
        lo: usize,
        hi: usize,
        micros: bool,
    ) {
        let (buckets, count, sum) = h.cumulative();
        let unit = |v: u64| if micros { seconds(v) } else { v.to_string() };
        for &(le, n) in &buckets[lo..=hi] {
            self.sample(
                &format!("{name}_bucket"),
                &[("rule", rule), ("le", &unit(le))],
                n,
            );
        }
        self.sample(
            &format!("{name}_bucket"),
            &[("rule", rule), ("le", "+Inf")],
            count,
        );
        self.sample(&format!("{name}_sum"), &[("rule", rule)], unit(sum));
        self.sample(&format!("{name}_count"), &[("rule", rule)], count);
    }
}

/// Microseconds as exact decimal seconds: 255 -> 0.000255.
fn seconds(us: u64) -> String {
    let s = format!("{}.{:06}", us / 1_000_000, us % 1_000_000);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Picks one counter out of a rule's.
type Field = fn(&RuleStats) -> &AtomicU64;

/// The per-rule counters: (metric, help, field).
const RULE_COUNTERS: &[(&str, &str, Field)] = &[
    (
        "durafs_writes_total",
        "Write requests to files the rule matched.",
        |s| &s.writes,
    ),
    (
        "durafs_written_bytes_total",
        "Bytes written to files the rule matched.",
        |s| &s.bytes,
    ),
    (
        "durafs_app_syncs_total",
        "fsync/fdatasync calls made by applications.",
        |s| &s.app_syncs,
    ),
    (
        "durafs_syncs_total",
        "Syncs durafs issued to the backing store (files and directories).",
        |s| &s.durafs_syncs,
    ),
    (
        "durafs_sync_requests_total",
        "Requests for durability (writes under always, closes under on-close, app syncs) that a sync covered.",
        |s| &s.sync_requests,
    ),
    (
        "durafs_dropped_syncs_total",
        "Application syncs acknowledged without touching the disk (sync = never).",
        |s| &s.dropped_syncs,
    ),
    (
        "durafs_atomic_commits_total",
        "Atomic replaces committed (stage synced and renamed over the target).",
        |s| &s.atomic_commits,
    ),
    (
        "durafs_dir_syncs_total",
        "Directory syncs after creates, renames and removals (dir-sync).",
        |s| &s.dir_syncs,
    ),
    (
        "durafs_errors_total",
        "Errors a durability step returned to the application.",
        |s| &s.errors,
    ),
];

/// The whole exposition for one mount.
pub fn render(facts: &MountFacts, engine: &Engine) -> String {
    let mut t = Text(String::with_capacity(8192));
    let version = env!("CARGO_PKG_VERSION");
    t.family(
        "durafs_info",
        "gauge",
        "The mount: version, mount point, backing directory, FUSE protocol, live kernel features.",
    );
    t.sample(
        "durafs_info",
        &[
            ("version", version),
            ("mountpoint", &facts.mountpoint),
            ("backing", &facts.backing),
            (
                "fuse_protocol",
                facts.fuse_protocol.as_deref().unwrap_or(""),
            ),
            (
                "kernel_passthrough",
                if facts.passthrough { "1" } else { "0" },
            ),
            (
                "io_uring",
                if platform::io_uring_live() { "1" } else { "0" },
            ),
            ("crash_sim", if facts.crash_sim { "1" } else { "0" }),
        ],
        1,
    );
    let gauges: [(&str, &str, &str, u64); 5] = [
        (
            "durafs_start_time_seconds",
            "gauge",
            "When the mount started, seconds since the epoch.",
            facts.start_time,
        ),
        (
            "durafs_open_files",
            "gauge",
            "Files open through the mount.",
            facts.open_files as u64,
        ),
        (
            "durafs_inodes",
            "gauge",
            "Inodes the daemon holds for the kernel.",
            facts.inodes as u64,
        ),
        (
            "durafs_threads",
            "gauge",
            "FUSE worker threads.",
            facts.threads as u64,
        ),
        (
            "durafs_policy_reloads_total",
            "counter",
            "Policy reloads since the mount.",
            facts.reloads,
        ),
    ];
    for (name, kind, help, v) in gauges {
        t.family(name, kind, help);
        t.sample(name, &[], v);
    }
    let counts = platform::sync_counts();
    t.family(
        "durafs_backing_syncs_total",
        "counter",
        "fsync and fdatasync system calls the daemon made on the backing store.",
    );
    t.sample(
        "durafs_backing_syncs_total",
        &[("call", "fsync")],
        counts.fsync,
    );
    t.sample(
        "durafs_backing_syncs_total",
        &[("call", "fdatasync")],
        counts.fdatasync,
    );

    let rules = engine.stats().each();
    for (name, help, field) in RULE_COUNTERS {
        t.family(name, "counter", help);
        for (rule, s) in &rules {
            t.sample(name, &[("rule", rule)], field(s).load(Ordering::Relaxed));
        }
    }
    t.family(
        "durafs_sync_duration_seconds",
        "histogram",
        "Time each sync durafs issued took (a group commit counts once).",
    );
    for (rule, s) in &rules {
        // 15µs .. 33.5s
        t.histogram(
            "durafs_sync_duration_seconds",
            rule,
            &s.latency,
            4,
            25,
            true,
        );
    }
    t.family(
        "durafs_group_commit_batch",
        "histogram",
        "Callers covered by each group-commit flush.",
    );
    for (rule, s) in &rules {
        // 1 .. 1023 callers
        t.histogram("durafs_group_commit_batch", rule, &s.batch, 1, 10, false);
    }

    let faults = engine.faults().to_json();
    t.family(
        "durafs_fault_hits_total",
        "counter",
        "Times each injected fault fired.",
    );
    for f in faults.as_array().into_iter().flatten() {
        let id = f["id"].to_string();
        let op = f["op"].as_str().unwrap_or("");
        t.sample(
            "durafs_fault_hits_total",
            &[("id", &id), ("op", op)],
            f["hits"].as_u64().unwrap_or(0),
        );
    }
    t.0
}

/// Checks a `metrics=` address: it must parse and be loopback, since the
/// endpoint has no authentication.
pub fn parse_addr(v: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = v.parse().map_err(|_| {
        "expected an address and port, such as 127.0.0.1:9464 or [::1]:9464".to_string()
    })?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{} is not a loopback address: the metrics endpoint has no authentication, so it \
             listens on 127.0.0.1 or ::1 only (put a proxy in front to expose it)",
            addr.ip()
        ));
    }
    Ok(addr)
}

/// Serves `GET /metrics` on `listener` (bound before the mount, so a taken
/// port fails the mount before anything is mounted) from `render`, on a
/// thread of its own; returns the address it listens on.
pub fn serve_http(
    listener: TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> std::io::Result<SocketAddr> {
    let local = listener.local_addr()?;
    info!("metrics on http://{local}/metrics");
    std::thread::Builder::new()
        .name("durafs-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(c) => {
                        if let Err(e) = answer(c, &*render) {
                            warn!("metrics request: {e}");
                        }
                    }
                    Err(e) => warn!("metrics endpoint: accept failed: {e}"),
                }
            }
        })?;
    Ok(local)
}

fn answer(conn: TcpStream, render: &dyn Fn() -> String) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(&conn);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // The headers are read and ignored.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut words = request.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, kind, body) = match (method, target.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render(),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "durafs serves /metrics only\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "GET only\n".to_string(),
        ),
    };
    let mut w = &conn;
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(label("x\ny"), "x\\ny");
    }

    #[test]
    fn microseconds_print_as_exact_seconds() {
        assert_eq!(seconds(255), "0.000255");
        assert_eq!(seconds(1_500_000), "1.5");
        assert_eq!(seconds(2_000_000), "2");
        assert_eq!(seconds(0), "0");
    }

    #[test]
    fn metrics_addresses_must_be_loopback() {
        assert!(parse_addr("127.0.0.1:9464").is_ok());
        assert!(parse_addr("[::1]:9464").is_ok());
        assert!(parse_addr("0.0.0.0:9464").unwrap_err().contains("loopback"));
        assert!(parse_addr("9464").unwrap_err().contains("address and port"));
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_sum_and_count() {
        let stats = crate::engine::Stats::default();
        let r = stats.rule(&Arc::from("db"));
        for b in [1, 1, 3, 8] {
            r.batched(b);
        }
        let mut t = Text(String::new());
        t.histogram("x", "db", &r.batch, 1, 4, false);
        let text = t.0;
        assert!(
            text.contains("x_bucket{rule=\"db\",le=\"1\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("x_bucket{rule=\"db\",le=\"3\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("x_bucket{rule=\"db\",le=\"15\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("x_bucket{rule=\"db\",le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("x_sum{rule=\"db\"} 13\n"), "{text}");
        assert!(text.contains("x_count{rule=\"db\"} 4\n"), "{text}");
    }
}
