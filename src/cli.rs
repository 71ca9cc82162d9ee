//! The commands that inspect policies (`check`, `explain`: on every OS)
//! and talk to running mounts (`status`, `reload`, `crash`, `fault`: in
//! `cli/mounts.rs`, where the mount is FUSE). Each returns what to print;
//! `main` only parses arguments.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Error, Result};
use crate::policy::{FilePolicy, Policy};

#[cfg(any(target_os = "linux", target_os = "macos"))]
mod mounts;
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub use mounts::*;

/// `durafs check POLICY`: the warnings (on stderr) and the resolved rule
/// table, or the errors.
pub fn check(path: &Path) -> Result<String> {
    let (policy, warnings) = Policy::load(path).map_err(Error::Policy)?;
    for w in &warnings {
        eprintln!("{w}");
    }
    let mut out = format!(
        "{}: valid (version 1, {} rule{}, {} warning{})\n\n",
        path.display(),
        policy.rules().len(),
        plural(policy.rules().len()),
        warnings.len(),
        plural(warnings.len()),
    );
    out += &rule_table(&policy);
    Ok(out)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The rules in order, then `[defaults]`, one row each with every setting.
pub fn rule_table(p: &Policy) -> String {
    let mut rows: Vec<[String; 10]> = vec![
        [
            "#", "rule", "match", "write", "sync", "method", "dir-sync", "prealloc", "hint",
            "advise",
        ]
        .map(String::from),
    ];
    let row = |n: String, m: String, f: &FilePolicy| {
        [
            n,
            f.rule.to_string(),
            m,
            f.write.as_str().into(),
            f.sync.to_string(),
            f.method.as_str().into(),
            if f.dir_sync { "yes" } else { "no" }.into(),
            if f.preallocate == 0 {
                "-".into()
            } else {
                crate::policy::format_size(f.preallocate)
            },
            f.hint.map_or("-", |h| h.as_str()).into(),
            f.advise.map_or("-", |a| a.as_str()).into(),
        ]
    };
    for (i, r) in p.rules().iter().enumerate() {
        rows.push(row((i + 1).to_string(), r.globs.join(", "), &r.file));
    }
    rows.push(row("-".into(), "(every other path)".into(), p.defaults()));
    let mut widths = [0usize; 10];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::from(" ");
        for (c, w) in r.iter().zip(widths) {
            let _ = write!(line, " {c:<w$} ");
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}

/// `durafs explain`: which rule each path gets and what it will do.
pub fn explain(policy: &Policy, paths: &[String], json: bool) -> String {
    if json {
        let v: Vec<serde_json::Value> = paths
            .iter()
            .map(|path| {
                let e = policy.explain(path.as_bytes());
                serde_json::json!({
                    "path": path,
                    "rule": &*e.file.rule,
                    "glob": e.glob,
                    "line": e.rule.map(|r| r.line),
                    "also_matched": e.also_matched,
                    "policy": e.file.to_json(),
                })
            })
            .collect();
        return serde_json::to_string_pretty(&v).expect("json") + "\n";
    }
    let mut out = String::new();
    for path in paths {
        let e = policy.explain(path.as_bytes());
        let _ = writeln!(out, "{path}");
        match (e.rule, e.glob) {
            (Some(r), Some(g)) => {
                let idx = policy
                    .rules()
                    .iter()
                    .position(|x| x.name == r.name)
                    .unwrap_or(0);
                let _ = writeln!(
                    out,
                    "  rule `{}` (rule {}, {}:{}), matched by \"{g}\"",
                    r.name,
                    idx + 1,
                    policy.origin(),
                    r.line
                );
                if !e.also_matched.is_empty() {
                    let _ = writeln!(
                        out,
                        "  later rules match too but the first match wins: {}",
                        e.also_matched.join(", ")
                    );
                }
            }
            _ => {
                let _ = writeln!(out, "  no rule matches: [defaults] of {}", policy.origin());
            }
        }
        for line in e.file.describe() {
            let _ = writeln!(out, "  - {line}");
        }
    }
    out
}
