//! `-o` mount options: the usual FUSE ones plus durafs's own.
//!
//! Options are parsed into a typed [`MountOptions`]; an unknown option is an
//! error that lists the known ones, never silently passed to the kernel.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// Every option `-o` accepts, with its meaning, for `--help` and errors.
pub const OPTION_HELP: &[(&str, &str)] = &[
    (
        "allow_other",
        "let every user use the mount (requests run with the caller's ids)",
    ),
    ("allow_root", "let the mounting user and root use the mount"),
    (
        "default_permissions",
        "let the kernel check permissions from the file modes",
    ),
    ("ro / rw", "mount read-only / read-write (default rw)"),
    ("nonempty", "allow mounting over a non-empty directory"),
    ("suid / nosuid", "honour set-user-id bits (default nosuid)"),
    ("dev / nodev", "allow device files (default nodev)"),
    ("exec / noexec", "allow executing programs (default exec)"),
    ("atime / noatime", "update access times (default atime)"),
    (
        "fsname=NAME",
        "the source shown in /proc/mounts (default: the backing path)",
    ),
    (
        "threads=N",
        "request worker threads (default: twice the online CPUs, at least 8)",
    ),
    (
        "attr-timeout=SECS",
        "how long the kernel caches attributes (default 1)",
    ),
    (
        "entry-timeout=SECS",
        "how long the kernel caches name lookups (default 1)",
    ),
    (
        "passthrough=on|off",
        "kernel FUSE passthrough where the policy allows (default on)",
    ),
    (
        "policy=FILE",
        "the durability policy (as --policy; for fstab and mount -t fuse.durafs)",
    ),
    ("crash-sim", "simulate crashes (as --crash-sim)"),
    ("faults=FILE", "faults to set at mount (as --faults)"),
    (
        "metrics=ADDR",
        "serve Prometheus metrics over HTTP on a loopback address, e.g. 127.0.0.1:9464",
    ),
    (
        "log=FILTER",
        "log level or filter, e.g. debug or durafs=debug (default: RUST_LOG, else info)",
    ),
    (
        "log-format=text|json",
        "log lines as text (default) or one JSON object each (as --log-format)",
    ),
    (
        "defaults, auto, noauto, nofail, _netdev, user, users, nouser, x-*, comment=",
        "fstab options for mount(8) and systemd; accepted and ignored",
    ),
];

/// Parsed mount options.
#[derive(Debug, Clone, PartialEq)]
pub struct MountOptions {
    /// allow_other
    pub allow_other: bool,
    /// allow_root
    pub allow_root: bool,
    /// default_permissions
    pub default_permissions: bool,
    /// read-only
    pub read_only: bool,
    /// mount over a non-empty directory
    pub nonempty: bool,
    /// honour suid bits
    pub suid: bool,
    /// allow device nodes
    pub dev: bool,
    /// forbid execution
    pub noexec: bool,
    /// do not update atime
    pub noatime: bool,
    /// source name in /proc/mounts
    pub fsname: Option<String>,
    /// worker threads
    pub threads: usize,
    /// attribute cache TTL
    pub attr_timeout: Duration,
    /// entry cache TTL
    pub entry_timeout: Duration,
    /// kernel passthrough allowed
    pub passthrough: bool,
    /// inodes held by fd before switching to file handles
    pub max_inode_fds: Option<usize>,
    /// track what is not durable, for `durafs crash` (`--crash-sim`)
    pub crash_sim: bool,
    /// faults to set at mount, from a TOML file (`--faults`)
    pub faults: Vec<String>,
    /// `policy=FILE`
    pub policy: Option<PathBuf>,
    /// `faults=FILE`
    pub faults_file: Option<PathBuf>,
    /// `metrics=ADDR`: the loopback HTTP endpoint for Prometheus
    pub metrics: Option<SocketAddr>,
    /// `log=FILTER`
    pub log: Option<String>,
    /// `log-format=json`
    pub log_json: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            allow_root: false,
            default_permissions: false,
            read_only: false,
            nonempty: false,
            suid: false,
            dev: false,
            noexec: false,
            noatime: false,
            fsname: None,
            // Workers block in the backing store's syscalls (fsync above all):
            // with only one per CPU, concurrent fsyncs queue behind each other.
            threads: default_threads(),
            attr_timeout: Duration::from_secs(1),
            entry_timeout: Duration::from_secs(1),
            passthrough: true,
            max_inode_fds: None,
            crash_sim: false,
            faults: Vec::new(),
            policy: None,
            faults_file: None,
            metrics: None,
            log: None,
            log_json: false,
        }
    }
}

/// Twice the online CPUs, at least 8: measured with 4 fdatasync writers on
/// 2 CPUs, 2 threads gave 0.6x native and 8 gave 0.95x.
fn default_threads() -> usize {
    (2 * std::thread::available_parallelism().map_or(2, |n| n.get())).max(8)
}

fn bad(opt: &str, why: impl Into<String>) -> Error {
    Error::BadOption(opt.to_string(), why.into())
}

fn seconds(opt: &str, v: &str) -> Result<Duration> {
    let secs: f64 = v
        .parse()
        .map_err(|_| bad(opt, "expected a number of seconds, such as 1 or 0.5"))?;
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(bad(opt, "seconds must be between 0 and 86400"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl MountOptions {
    /// Parses `-o` values (each may hold several comma-separated options).
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self> {
        let mut o = MountOptions::default();
        for value in values {
            for opt in value
                .as_ref()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                o.apply(opt)?;
            }
        }
        if o.allow_other && o.allow_root {
            return Err(bad("allow_root", "cannot be combined with allow_other"));
        }
        Ok(o)
    }

    fn apply(&mut self, opt: &str) -> Result<()> {
        let (key, val) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        let flag = |v: Option<&str>| -> Result<()> {
            match v {
                None => Ok(()),
                Some(_) => Err(bad(opt, "takes no value")),
            }
        };
        match key {
            "allow_other" => self.allow_other = flag(val).map(|_| true)?,
            "allow_root" => self.allow_root = flag(val).map(|_| true)?,
            "default_permissions" => self.default_permissions = flag(val).map(|_| true)?,
            "ro" => self.read_only = flag(val).map(|_| true)?,
            "rw" => self.read_only = flag(val).map(|_| false)?,
            "nonempty" => self.nonempty = flag(val).map(|_| true)?,
            "suid" => self.suid = flag(val).map(|_| true)?,
            "nosuid" => self.suid = flag(val).map(|_| false)?,
            "dev" => self.dev = flag(val).map(|_| true)?,
            "nodev" => self.dev = flag(val).map(|_| false)?,
            "exec" => self.noexec = flag(val).map(|_| false)?,
            "noexec" => self.noexec = flag(val).map(|_| true)?,
            "atime" => self.noatime = flag(val).map(|_| false)?,
            "noatime" => self.noatime = flag(val).map(|_| true)?,
            "fsname" => {
                let v = val.ok_or_else(|| bad(opt, "needs a value: fsname=NAME"))?;
                if v.is_empty() || v.contains([',', ' ']) {
                    return Err(bad(
                        opt,
                        "the name must be non-empty, without commas or spaces",
                    ));
                }
                self.fsname = Some(v.to_string());
            }
            "threads" => {
                let n: usize = val
                    .ok_or_else(|| bad(opt, "needs a value: threads=N"))?
                    .parse()
                    .map_err(|_| bad(opt, "expected a whole number"))?;
                if !(1..=256).contains(&n) {
                    return Err(bad(opt, "threads must be between 1 and 256"));
                }
                self.threads = n;
            }
            "attr-timeout" | "attr_timeout" => {
                self.attr_timeout = seconds(
                    opt,
                    val.ok_or_else(|| bad(opt, "needs a value in seconds"))?,
                )?
            }
            "entry-timeout" | "entry_timeout" => {
                self.entry_timeout = seconds(
                    opt,
                    val.ok_or_else(|| bad(opt, "needs a value in seconds"))?,
                )?
            }
            "max-inode-fds" | "max_inode_fds" => {
                let n: usize = val
                    .ok_or_else(|| bad(opt, "needs a value: max-inode-fds=N"))?
                    .parse()
                    .map_err(|_| bad(opt, "expected a whole number"))?;
                if n < 16 {
                    return Err(bad(opt, "must be at least 16"));
                }
                self.max_inode_fds = Some(n);
            }
            "passthrough" => {
                self.passthrough = match val {
                    Some("on") => true,
                    Some("off") => false,
                    _ => return Err(bad(opt, "expected passthrough=on or passthrough=off")),
                }
            }
            "policy" | "faults" => {
                let v = val
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| bad(opt, "needs a file: policy=FILE or faults=FILE"))?;
                let v = Some(PathBuf::from(v));
                if key == "policy" {
                    self.policy = v;
                } else {
                    self.faults_file = v;
                }
            }
            "crash-sim" | "crash_sim" => self.crash_sim = flag(val).map(|_| true)?,
            "metrics" => {
                let v = val.ok_or_else(|| bad(opt, "needs an address: metrics=127.0.0.1:9464"))?;
                self.metrics = Some(crate::metrics::parse_addr(v).map_err(|e| bad(opt, e))?);
            }
            "log" => {
                let v = val.ok_or_else(|| bad(opt, "needs a level or filter: log=debug"))?;
                tracing_subscriber::EnvFilter::try_new(v)
                    .map_err(|e| bad(opt, format!("not a log filter ({e}); try log=debug")))?;
                self.log = Some(v.to_string());
            }
            "log-format" | "log_format" => {
                self.log_json = match val {
                    Some("json") => true,
                    Some("text") => false,
                    _ => return Err(bad(opt, "expected log-format=text or log-format=json")),
                }
            }
            // fstab and systemd options meant for mount(8), not the filesystem.
            "defaults" | "auto" | "noauto" | "nofail" | "_netdev" | "user" | "users" | "nouser"
            | "owner" | "group" | "comment" => {}
            _ if key.starts_with("x-") => {}
            _ => {
                let known: Vec<&str> = OPTION_HELP.iter().map(|(k, _)| *k).collect();
                return Err(bad(
                    opt,
                    format!("unknown option; known options: {}", known.join(", ")),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fuse_and_durafs_options() {
        let o = MountOptions::parse(&[
            "allow_other,default_permissions",
            "threads=3,attr-timeout=0.5",
            "passthrough=off,ro",
        ])
        .unwrap();
        assert!(o.allow_other && o.default_permissions && o.read_only);
        assert_eq!(o.threads, 3);
        assert_eq!(o.attr_timeout, Duration::from_millis(500));
        assert!(!o.passthrough);
        assert_eq!(o.entry_timeout, Duration::from_secs(1));
    }

    #[test]
    fn rejects_bad_options_with_reasons() {
        let e = MountOptions::parse(&["bogus"]).unwrap_err().to_string();
        assert!(
            e.contains("bogus") && e.contains("known options") && e.contains("allow_other"),
            "{e}"
        );
        let e = MountOptions::parse(&["threads=0"]).unwrap_err().to_string();
        assert!(e.contains("between 1 and 256"), "{e}");
        let e = MountOptions::parse(&["attr-timeout=x"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("seconds"), "{e}");
        let e = MountOptions::parse(&["passthrough=maybe"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("passthrough=on"), "{e}");
        let e = MountOptions::parse(&["ro=1"]).unwrap_err().to_string();
        assert!(e.contains("takes no value"), "{e}");
        assert!(MountOptions::parse(&["allow_other,allow_root"]).is_err());
    }

    #[test]
    fn takes_an_fstab_line_as_mount_fuse3_passes_it() {
        // What mount(8) and mount.fuse3 hand over for
        // `/srv/b /srv/m fuse.durafs defaults,nofail,x-systemd.automount,policy=/etc/durafs/strict.toml 0 0`
        let o = MountOptions::parse(&[
            "rw,nofail,x-systemd.automount,policy=/etc/durafs/strict.toml,dev,suid",
            "metrics=127.0.0.1:9464,log=debug,log-format=json,crash-sim",
        ])
        .unwrap();
        assert_eq!(o.policy, Some(PathBuf::from("/etc/durafs/strict.toml")));
        assert!(o.dev && o.suid && o.crash_sim && o.log_json);
        assert_eq!(o.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(o.log.as_deref(), Some("debug"));
        let e = MountOptions::parse(&["metrics=0.0.0.0:9464"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("loopback"), "{e}");
        let e = MountOptions::parse(&["policy="]).unwrap_err().to_string();
        assert!(e.contains("needs a file"), "{e}");
        let e = MountOptions::parse(&["log-format=xml"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("log-format=json"), "{e}");
    }
}
