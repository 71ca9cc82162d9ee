//! The commands that inspect policies and talk to running mounts: `check`,
//! `explain`, `status` and `reload`. Each returns what to print; `main`
//! only parses arguments.

use std::fmt::Write as _;
use std::path::Path;

use crate::control;
use crate::daemon::{SUBTYPE, mounts};
use crate::error::{Error, Result};
use crate::platform;
use crate::policy::{FilePolicy, Policy};

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

/// The durafs mounts to report on: `mountpoint`, or all of them.
fn targets(mountpoint: Option<&Path>) -> Result<Vec<(std::path::PathBuf, u32)>> {
    let all = mounts()?;
    let ours = format!("fuse.{SUBTYPE}");
    let me = platform::geteuid();
    match mountpoint {
        Some(mp) => {
            let mp = std::fs::canonicalize(mp).unwrap_or_else(|_| mp.to_path_buf());
            match all.iter().find(|m| m.mountpoint == mp && m.fstype == ours) {
                Some(m) => Ok(vec![(mp, m.owner.unwrap_or(me))]),
                None => Err(Error::NotMounted(mp)),
            }
        }
        None => Ok(all
            .iter()
            .filter(|m| m.fstype == ours)
            .map(|m| (m.mountpoint.clone(), m.owner.unwrap_or(me)))
            .collect()),
    }
}

fn ask(mp: &Path, owner: u32, command: &str) -> Result<serde_json::Value> {
    let v = control::request(mp, owner, command)
        .map_err(|e| Error::io(format!("asking the daemon of {}", mp.display()), e))?;
    if v["ok"] == false && command == "status" {
        return Err(Error::Daemon(
            v["error"].as_str().unwrap_or("refused").to_string(),
        ));
    }
    Ok(v)
}

/// `durafs status [MOUNTPOINT] [--json]`.
pub fn status(mountpoint: Option<&Path>, json: bool) -> Result<String> {
    let targets = targets(mountpoint)?;
    let mut answers = Vec::new();
    for (mp, owner) in &targets {
        match ask(mp, *owner, "status") {
            Ok(v) => answers.push(v),
            // One mount: its error is the answer.
            Err(e) if mountpoint.is_some() => return Err(e),
            // All mounts: one that cannot answer (its daemon died, or it is
            // being unmounted) is listed as such, the others still shown.
            Err(e) => answers.push(serde_json::json!({
                "ok": false,
                "mountpoint": mp.display().to_string(),
                "error": e.to_string(),
            })),
        }
    }
    if json {
        let v = if mountpoint.is_some() {
            answers.pop().expect("one target")
        } else {
            serde_json::Value::Array(answers)
        };
        return Ok(serde_json::to_string_pretty(&v).expect("json") + "\n");
    }
    if answers.is_empty() {
        return Ok("no durafs mounts\n".into());
    }
    let mut out = String::new();
    for v in &answers {
        out += &render_status(v);
    }
    Ok(out)
}

fn render_status(v: &serde_json::Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("?").to_string();
    let mut out = String::new();
    if v["ok"] == false {
        let _ = writeln!(out, "{}: no answer: {}", s("mountpoint"), s("error"));
        return out;
    }
    let up = v["uptime_secs"].as_u64().unwrap_or(0);
    let _ = writeln!(
        out,
        "{}: durafs {}, pid {}, up {}h{:02}m{:02}s",
        s("mountpoint"),
        s("version"),
        v["pid"],
        up / 3600,
        up / 60 % 60,
        up % 60
    );
    let _ = writeln!(out, "  backing      {}", s("backing"));
    let p = &v["policy"];
    let file = p["file"]
        .as_str()
        .map_or("built-in default policy".to_string(), str::to_string);
    let _ = writeln!(
        out,
        "  policy       {file} ({} reload{})",
        p["reloads"],
        plural(p["reloads"].as_u64().unwrap_or(0) as usize)
    );
    if let Some(e) = p["last_reload_error"].as_str() {
        let _ = writeln!(
            out,
            "  last reload  refused, the policy above stays in force:"
        );
        for l in e.lines() {
            let _ = writeln!(out, "    {l}");
        }
    }
    let _ = writeln!(out, "  control      {}", s("control_socket"));
    let _ = writeln!(
        out,
        "  kernel       FUSE {}, passthrough {}",
        v["fuse_protocol"].as_str().unwrap_or("?"),
        if v["kernel_passthrough"] == true {
            "on"
        } else {
            "off"
        }
    );
    let open = v["open_files"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "  open files   {}", open.len());
    for f in &open {
        let fp = &f["policy"];
        let _ = writeln!(
            out,
            "    {}  ({}) rule {}: write {}, sync {}, method {}{}",
            f["path"].as_str().unwrap_or("?"),
            f["access"].as_str().unwrap_or("?"),
            fp["rule"].as_str().unwrap_or("?"),
            fp["write"].as_str().unwrap_or("?"),
            fp["sync"].as_str().unwrap_or("?"),
            fp["method"].as_str().unwrap_or("?"),
            if fp["dir_sync"] == true {
                ", dir-sync"
            } else {
                ""
            }
        );
    }
    if let Some(t) = p["toml"].as_str() {
        if let Ok((pol, _)) = Policy::parse(t, "status") {
            let _ = writeln!(out, "  rules");
            for l in rule_table(&pol).lines() {
                let _ = writeln!(out, "  {l}");
            }
        }
    }
    out
}

/// `durafs reload MOUNTPOINT`: the daemon re-reads its policy file.
pub fn reload(mountpoint: &Path) -> Result<String> {
    let targets = targets(Some(mountpoint))?;
    let (mp, owner) = &targets[0];
    let v = ask(mp, *owner, "reload")?;
    if v["ok"] == true {
        let mut out = String::new();
        for w in v["warnings"].as_array().into_iter().flatten() {
            eprintln!("{}", w.as_str().unwrap_or_default());
        }
        let _ = writeln!(
            out,
            "{}: policy reloaded ({} rule{}); it applies to files opened from now on",
            mp.display(),
            v["rules"],
            plural(v["rules"].as_u64().unwrap_or(0) as usize)
        );
        Ok(out)
    } else {
        Err(Error::Reload(
            mp.clone(),
            v["error"].as_str().unwrap_or("refused").to_string(),
        ))
    }
}
