//! `status`, `metrics`, `reload`, `crash` and `fault`: the commands that
//! talk to a running mount's daemon over its control socket.

use std::fmt::Write as _;
use std::path::Path;

use super::{plural, rule_table};
use crate::control;
use crate::daemon::{SUBTYPE, mounts};
use crate::error::{Error, Result};
use crate::platform;
use crate::policy::Policy;

/// The durafs mounts to report on: `mountpoint`, or all of them, each with
/// its owner.
pub(crate) fn targets(mountpoint: Option<&Path>) -> Result<Vec<(std::path::PathBuf, u32)>> {
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
    if let Some(io) = v["io_uring"].as_str() {
        let _ = writeln!(out, "  durable IO   {io}");
    }
    if let Some(m) = v["metrics"].as_str() {
        let _ = writeln!(out, "  metrics      {m}");
    }
    if v["crash_sim"] == true {
        let _ = writeln!(
            out,
            "  crash sim    on (`durafs crash --report {}` shows what a power cut would lose)",
            s("mountpoint")
        );
    }
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
    if let Some(rules) = v["rules"].as_object().filter(|r| !r.is_empty()) {
        let _ = writeln!(out, "  counters since mount, per rule");
        let _ = writeln!(
            out,
            "    {:<14} {:>9} {:>11} {:>9} {:>9} {:>8} {:>7} {:>9} {:>7} {:>6}  sync latency p50/p99/max",
            "rule",
            "writes",
            "bytes",
            "syncs",
            "app syncs",
            "dropped",
            "atomic",
            "dir syncs",
            "errors",
            "batch"
        );
        for (name, r) in rules {
            let n = |k: &str| r[k].to_string();
            let lat = |k: &str| micros(r["sync_latency_us"][k].as_u64().unwrap_or(0));
            let _ = writeln!(
                out,
                "    {:<14} {:>9} {:>11} {:>9} {:>9} {:>8} {:>7} {:>9} {:>7} {:>6}  {}/{}/{}",
                name,
                n("writes"),
                n("bytes"),
                n("durafs_syncs"),
                n("app_syncs"),
                n("dropped_syncs"),
                n("atomic_commits"),
                n("dir_syncs"),
                n("errors"),
                n("group_commit_batch"),
                lat("p50"),
                lat("p99"),
                lat("max"),
            );
        }
    }
    out
}

/// A latency in µs, in the unit that reads best.
fn micros(us: u64) -> String {
    match us {
        0..1000 => format!("{us}µs"),
        1000..1_000_000 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

/// `durafs metrics MOUNTPOINT`: the Prometheus text exposition.
pub fn metrics(mountpoint: &Path) -> Result<String> {
    let targets = targets(Some(mountpoint))?;
    let (mp, owner) = &targets[0];
    let v = ask(mp, *owner, "metrics")?;
    match v["text"].as_str() {
        Some(t) if v["ok"] == true => Ok(t.to_string()),
        _ => Err(refused(mp, &v)),
    }
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

fn refused(mp: &Path, v: &serde_json::Value) -> Error {
    Error::Refused(
        mp.to_path_buf(),
        v["error"].as_str().unwrap_or("refused").to_string(),
    )
}

/// `durafs crash MOUNTPOINT [--torn SEED] [--keep-mounted]` and
/// `durafs crash --report MOUNTPOINT`.
pub fn crash(
    mountpoint: &Path,
    torn: Option<u64>,
    keep: bool,
    report: bool,
    json: bool,
) -> Result<String> {
    let targets = targets(Some(mountpoint))?;
    let (mp, owner) = &targets[0];
    if report {
        let v = ask(mp, *owner, "crash-report")?;
        if v["ok"] != true {
            return Err(refused(mp, &v));
        }
        let r = &v["report"];
        if json {
            return Ok(format!(
                "{}\n",
                serde_json::to_string_pretty(r).unwrap_or_default()
            ));
        }
        let mut out = String::new();
        let files = r["files"].as_array().map_or(&[][..], |a| a.as_slice());
        let dirs = r["dir_changes"]
            .as_array()
            .map_or(&[][..], |a| a.as_slice());
        if files.is_empty() && dirs.is_empty() {
            let _ = writeln!(
                out,
                "{}: everything is durable; a power cut now loses nothing",
                mp.display()
            );
            return Ok(out);
        }
        let _ = writeln!(out, "a power cut now would lose:");
        for f in files {
            let _ = writeln!(
                out,
                "  {}: {} unsynced bytes (size {} now, {} durable; {} durable pages overwritten)",
                f["path"].as_str().unwrap_or("?"),
                f["unsynced_bytes"],
                f["size"],
                f["durable_size"],
                f["overwritten_pages"]
            );
        }
        for d in dirs {
            match d["op"].as_str() {
                Some("rename") => {
                    let _ = writeln!(
                        out,
                        "  rename {} -> {} (directory not fsynced)",
                        d["from"].as_str().unwrap_or("?"),
                        d["path"].as_str().unwrap_or("?")
                    );
                }
                op => {
                    let _ = writeln!(
                        out,
                        "  {} {} (directory not fsynced)",
                        op.unwrap_or("?"),
                        d["path"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        return Ok(out);
    }
    let mut cmd = String::from("crash");
    if let Some(seed) = torn {
        let _ = write!(cmd, " torn={seed}");
    }
    if keep {
        cmd.push_str(" keep");
    }
    let v = ask(mp, *owner, &cmd)?;
    if v["ok"] != true {
        return Err(refused(mp, &v));
    }
    if !keep {
        // The daemon unmounts once it has answered: wait for that.
        for _ in 0..200 {
            let still = crate::daemon::mounts()
                .map(|m| m.iter().any(|e| &e.mountpoint == mp))
                .unwrap_or(false);
            if !still {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
    }
    let o = &v["outcome"];
    if json {
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        ));
    }
    Ok(format!(
        "{}: simulated power cut: {} file(s) rolled back ({} pages restored, {} kept), {} directory change(s) undone{}{}\n",
        mp.display(),
        o["files"],
        o["pages_restored"],
        o["pages_kept"],
        o["dir_changes_undone"],
        if o["errors"].as_u64().unwrap_or(0) > 0 {
            format!(", {} error(s) (see the daemon log)", o["errors"])
        } else {
            String::new()
        },
        if keep {
            "; still mounted"
        } else {
            "; unmounted"
        }
    ))
}

/// `durafs fault add|list|clear MOUNTPOINT ...`.
pub fn fault(mountpoint: &Path, verb: &str, rest: &str) -> Result<String> {
    let targets = targets(Some(mountpoint))?;
    let (mp, owner) = &targets[0];
    let v = ask(mp, *owner, &format!("fault {verb} {rest}"))?;
    if v["ok"] != true {
        return Err(refused(mp, &v));
    }
    Ok(match verb {
        "add" => {
            let mut out = format!("fault {} set on {}\n", v["id"], mp.display());
            let unreached: Vec<&str> = v["unreached"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str())
                .collect();
            if !unreached.is_empty() {
                let _ = writeln!(
                    out,
                    "warning: it cannot reach the reads and writes of these files while their current opens last \
                     (the kernel does their IO itself, FUSE passthrough); opens made from now on see it. \
                     Mount with -o passthrough=off to have every open reach the daemon:"
                );
                for p in unreached {
                    let _ = writeln!(out, "  {p}");
                }
            }
            out
        }
        "clear" => format!("{} fault(s) cleared on {}\n", v["cleared"], mp.display()),
        _ => {
            let mut out = String::new();
            for f in v["faults"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "{:>3}  {}  (hits {}{})",
                    f["id"],
                    f["spec"].as_str().unwrap_or(""),
                    f["hits"],
                    if f["left"].is_null() {
                        String::new()
                    } else {
                        format!(", {} left", f["left"])
                    }
                );
            }
            if out.is_empty() {
                out = format!("no faults set on {}\n", mp.display());
            }
            out
        }
    })
}

/// The faults of a TOML file (`[[fault]]` tables of the `durafs fault add`
/// keys), as `key=value` specs.
pub fn load_faults(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading fault file {}", path.display()), e))?;
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        Error::Daemon(format!("fault file {}: {}", path.display(), e.message()))
    })?;
    let mut specs = Vec::new();
    for (k, v) in &doc {
        if k != "fault" {
            return Err(Error::Daemon(format!(
                "fault file {}: unknown key `{k}` (expected [[fault]] tables)",
                path.display()
            )));
        }
        for t in v.as_array().into_iter().flatten() {
            let Some(t) = t.as_table() else {
                return Err(Error::Daemon(format!(
                    "fault file {}: each [[fault]] must be a table",
                    path.display()
                )));
            };
            let words: Vec<String> = t
                .iter()
                .map(|(k, v)| match v {
                    toml::Value::String(s) => format!("{k}={s}"),
                    toml::Value::Boolean(true) => k.clone(),
                    other => format!("{k}={other}"),
                })
                .collect();
            let spec = words.join(" ");
            crate::engine::Faults::default()
                .add(&spec)
                .map_err(|e| Error::Daemon(format!("fault file {}: {e}", path.display())))?;
            specs.push(spec);
        }
    }
    Ok(specs)
}
