//! `-o` mount options: the usual FUSE ones plus durafs's own.
//!
//! Options are parsed into a typed [`MountOptions`]; an unknown option is an
//! error that lists the known ones, never silently passed to the kernel.

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
}
