//! The policy language: which durability each path of the tree gets.
//!
//! A policy is a TOML file (see `policies/` for commented examples and the
//! README for the reference). This module is a pure library: text in, a
//! validated [`Policy`] out, and [`Policy::resolve`] to get the complete
//! [`FilePolicy`] for one path. The only file it ever reads is the policy
//! itself ([`Policy::load`]).
//!
//! Three stages, as for any small language:
//! - `raw`: serde structs mirroring the file (kebab-case keys, unknown keys
//!   refused), with the source span of every value;
//! - `validate`: raw -> [`Policy`], every error and warning a [`Diagnostic`]
//!   with the file, line and column of the offending value and a hint;
//! - here: the compiled policy, one [`globset::GlobSet`] for all rules, and
//!   resolution (first matching rule wins, `[defaults]` where none does).

mod diag;
mod raw;
mod text;
mod validate;

use std::cell::RefCell;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use globset::{Candidate, GlobSet};

pub use diag::{Diagnostic, PolicyError, Severity};
pub use raw::parse_duration;
pub use text::{duration as format_duration, size as format_size};

/// The built-in default policy (policies/default.toml), used when `--policy`
/// is not given.
pub const DEFAULT_POLICY: &str = include_str!("../../policies/default.toml");

/// The origin named in diagnostics of the built-in policy.
pub const DEFAULT_ORIGIN: &str = "<built-in default policy>";

/// How a file's writes reach the backing store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteStrategy {
    /// writes go to the backing file as they come
    Passthrough,
    /// the backing file is written with direct IO, sector-aligned
    Direct,
    /// writes are staged in a hidden temp file, renamed over the target on
    /// close or fsync
    Atomic,
    /// extents are preallocated ahead of the end of file
    Append,
}

/// When durafs makes a file's data durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyncTrigger {
    /// the app's fsyncs are acknowledged and dropped
    Never,
    /// exactly when the app asks (fsync/fdatasync), with the policy's method
    OnFsync,
    /// when the file is closed (and when the app asks)
    OnClose,
    /// after every write, before it returns
    Always,
    /// at most this long after a write (and when the app asks)
    Interval(Duration),
}

/// Which sync a durability point issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncMethod {
    /// fdatasync: the data and the metadata needed to read it back
    Data,
    /// fsync: data and all metadata (F_FULLFSYNC on macOS)
    Full,
    /// a write barrier: fdatasync on Linux, F_BARRIERFSYNC on macOS
    Barrier,
}

/// Write-lifetime hint (F_SET_RW_HINT), advisory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteHint {
    /// no particular lifetime
    None,
    /// short-lived data
    Short,
    /// medium
    Medium,
    /// long-lived
    Long,
    /// very long-lived
    Extreme,
}

/// Access-pattern advice (posix_fadvise), advisory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Advice {
    /// POSIX_FADV_NORMAL
    Normal,
    /// POSIX_FADV_SEQUENTIAL
    Sequential,
    /// POSIX_FADV_RANDOM
    Random,
    /// POSIX_FADV_NOREUSE
    Noreuse,
    /// POSIX_FADV_WILLNEED
    Willneed,
    /// POSIX_FADV_DONTNEED
    Dontneed,
}

/// The complete set of decisions for one open file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePolicy {
    /// the rule that matched (`defaults` when none did)
    pub rule: Arc<str>,
    /// write strategy
    pub write: WriteStrategy,
    /// sync trigger
    pub sync: SyncTrigger,
    /// sync method
    pub method: SyncMethod,
    /// whether metadata operations sync the directories they change
    pub dir_sync: bool,
    /// preallocation step in bytes for `append` (0: none)
    pub preallocate: u64,
    /// write-lifetime hint
    pub hint: Option<WriteHint>,
    /// access-pattern advice
    pub advise: Option<Advice>,
}

/// The name [`FilePolicy::rule`] carries for paths no rule matches.
pub const DEFAULTS_NAME: &str = "defaults";

/// One rule of a validated policy.
#[derive(Clone, Debug)]
pub struct Rule {
    /// the rule's name (given, or `rule-N` for the Nth rule)
    pub name: Arc<str>,
    /// its globs, as written (a leading `/` removed)
    pub globs: Vec<String>,
    /// what a matching file gets (the rule's keys over `[defaults]`)
    pub file: FilePolicy,
    /// the line of its `[[rule]]` header in the policy file
    pub line: usize,
}

/// A validated policy, compiled for resolution.
#[derive(Clone, Debug)]
pub struct Policy {
    origin: String,
    defaults: FilePolicy,
    rules: Vec<Rule>,
    set: GlobSet,
    /// for each glob of `set`, the index of its rule
    glob_rule: Vec<u32>,
    /// for each glob of `set`, its index within its rule
    glob_index: Vec<u32>,
}

/// Why a path got its policy: the answer of [`Policy::explain`].
#[derive(Clone, Debug)]
pub struct Explanation<'a> {
    /// the winning rule, or None for `[defaults]`
    pub rule: Option<&'a Rule>,
    /// the glob of that rule that matched
    pub glob: Option<&'a str>,
    /// later rules that match too but lose to the first
    pub also_matched: Vec<&'a str>,
    /// what the file gets
    pub file: &'a FilePolicy,
}

thread_local! {
    /// Reused match buffer: resolution allocates nothing per call.
    static MATCHES: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

impl Policy {
    /// Parses and validates policy text. `origin` names it in diagnostics
    /// (usually the file path). On success returns the policy and its
    /// warnings; on failure every error and warning found.
    pub fn parse(text: &str, origin: &str) -> Result<(Policy, Vec<Diagnostic>), PolicyError> {
        validate::parse(text, origin)
    }

    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<(Policy, Vec<Diagnostic>), PolicyError> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &origin),
            Err(e) => Err(PolicyError::unreadable(&origin, &e)),
        }
    }

    /// The built-in default policy.
    pub fn builtin() -> Policy {
        match Self::parse(DEFAULT_POLICY, DEFAULT_ORIGIN) {
            Ok((p, _)) => p,
            Err(e) => panic!("the built-in policy is invalid:\n{e}"),
        }
    }

    /// Where the policy came from (its file path, or the built-in name).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// What files no rule matches get.
    pub fn defaults(&self) -> &FilePolicy {
        &self.defaults
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether every path gets the same policy (no rules), so callers need
    /// not work out paths at all.
    pub fn is_uniform(&self) -> bool {
        self.rules.is_empty()
    }

    /// The policy for `path`, relative to the mount root (`a/b.db`, no
    /// leading `/`; a leading `/` is ignored). The first rule with a
    /// matching glob wins; `[defaults]` where none matches.
    pub fn resolve(&self, path: &[u8]) -> FilePolicy {
        match self.first_match(path) {
            Some((rule, _)) => self.rules[rule].file.clone(),
            None => self.defaults.clone(),
        }
    }

    fn first_match(&self, path: &[u8]) -> Option<(usize, usize)> {
        if self.rules.is_empty() {
            return None;
        }
        let path = strip_root(path);
        let cand = Candidate::from_bytes(path);
        MATCHES.with(|m| {
            let mut m = m.borrow_mut();
            self.set.matches_candidate_into(&cand, &mut m);
            // Glob indices follow rule order, so the lowest wins.
            m.first()
                .map(|&g| (self.glob_rule[g] as usize, self.glob_index[g] as usize))
        })
    }

    /// Which rule `path` gets and why (for `durafs explain`).
    pub fn explain(&self, path: &[u8]) -> Explanation<'_> {
        let path = strip_root(path);
        let all = self.set.matches_candidate(&Candidate::from_bytes(path));
        let mut rules: Vec<usize> = all.iter().map(|&g| self.glob_rule[g] as usize).collect();
        rules.dedup();
        match all.first() {
            Some(&g) => {
                let rule = &self.rules[self.glob_rule[g] as usize];
                Explanation {
                    rule: Some(rule),
                    glob: Some(&rule.globs[self.glob_index[g] as usize]),
                    also_matched: rules[1..].iter().map(|&r| &*self.rules[r].name).collect(),
                    file: &rule.file,
                }
            }
            None => Explanation {
                rule: None,
                glob: None,
                also_matched: Vec::new(),
                file: &self.defaults,
            },
        }
    }

    /// The policy as canonical TOML: every setting of `[defaults]` and of
    /// each rule written out. Parsing it gives an equal policy.
    pub fn to_toml(&self) -> String {
        text::to_toml(self)
    }
}

impl PartialEq for Policy {
    /// Two policies are equal when they decide the same for every path:
    /// same defaults, same rules (names, globs, settings) in the same order.
    fn eq(&self, other: &Self) -> bool {
        self.defaults == other.defaults
            && self.rules.len() == other.rules.len()
            && self
                .rules
                .iter()
                .zip(&other.rules)
                .all(|(a, b)| a.name == b.name && a.globs == b.globs && a.file == b.file)
    }
}

fn strip_root(path: &[u8]) -> &[u8] {
    let mut p = path;
    while let [b'/', rest @ ..] = p {
        p = rest;
    }
    p
}

impl WriteStrategy {
    /// The name used in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteStrategy::Passthrough => "passthrough",
            WriteStrategy::Direct => "direct",
            WriteStrategy::Atomic => "atomic",
            WriteStrategy::Append => "append",
        }
    }
}

impl SyncMethod {
    /// The name used in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMethod::Data => "data",
            SyncMethod::Full => "full",
            SyncMethod::Barrier => "barrier",
        }
    }
}

impl WriteHint {
    /// The name used in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteHint::None => "none",
            WriteHint::Short => "short",
            WriteHint::Medium => "medium",
            WriteHint::Long => "long",
            WriteHint::Extreme => "extreme",
        }
    }
}

impl Advice {
    /// The name used in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Advice::Normal => "normal",
            Advice::Sequential => "sequential",
            Advice::Random => "random",
            Advice::Noreuse => "noreuse",
            Advice::Willneed => "willneed",
            Advice::Dontneed => "dontneed",
        }
    }
}

impl fmt::Display for SyncTrigger {
    /// The value as written in a policy file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncTrigger::Never => f.write_str("never"),
            SyncTrigger::OnFsync => f.write_str("on-fsync"),
            SyncTrigger::OnClose => f.write_str("on-close"),
            SyncTrigger::Always => f.write_str("always"),
            SyncTrigger::Interval(d) => write!(f, "interval {}", text::duration(*d)),
        }
    }
}

impl FilePolicy {
    /// The settings as one JSON object (for `status --json` and
    /// `explain --json`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "rule": &*self.rule,
            "write": self.write.as_str(),
            "sync": match self.sync {
                SyncTrigger::Interval(_) => "interval".to_string(),
                s => s.to_string(),
            },
            "interval_ms": match self.sync {
                SyncTrigger::Interval(d) => Some(d.as_millis() as u64),
                _ => None,
            },
            "method": self.method.as_str(),
            "dir_sync": self.dir_sync,
            "preallocate": self.preallocate,
            "hint": self.hint.map(WriteHint::as_str),
            "advise": self.advise.map(Advice::as_str),
        })
    }

    /// What these settings do, in plain words, one sentence per setting.
    pub fn describe(&self) -> Vec<String> {
        text::describe(self)
    }
}

#[cfg(test)]
mod tests;
