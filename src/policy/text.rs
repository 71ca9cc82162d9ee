//! Policies as text: canonical TOML, sizes and durations, and what each
//! setting does in plain words.

use std::fmt::Write as _;
use std::time::Duration;

use super::{FilePolicy, Policy, SyncMethod, SyncTrigger, WriteStrategy};

/// A duration in the largest unit that states it exactly ("100ms", "2s").
pub fn duration(d: Duration) -> String {
    let ns = d.as_nanos();
    for (unit, per) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if ns >= per && ns % per == 0 {
            return format!("{}{unit}", ns / per);
        }
    }
    format!("{ns}ns")
}

/// A size in the largest binary unit that states it exactly ("64MiB").
pub fn size(n: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n >= 1 << shift && n % (1 << shift) == 0 {
            return format!("{}{unit}", n >> shift);
        }
    }
    format!("{n}B")
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn sync_toml(s: SyncTrigger) -> String {
    match s {
        SyncTrigger::Interval(d) => format!("{{ interval = \"{}\" }}", duration(d)),
        other => format!("\"{other}\""),
    }
}

fn settings(out: &mut String, f: &FilePolicy) {
    let _ = writeln!(out, "write = \"{}\"", f.write.as_str());
    let _ = writeln!(out, "sync = {}", sync_toml(f.sync));
    let _ = writeln!(out, "method = \"{}\"", f.method.as_str());
    let _ = writeln!(out, "dir-sync = {}", f.dir_sync);
    let _ = writeln!(out, "preallocate = \"{}\"", size(f.preallocate));
    if let Some(h) = f.hint {
        let _ = writeln!(out, "hint = \"{}\"", h.as_str());
    }
    if let Some(a) = f.advise {
        let _ = writeln!(out, "advise = \"{}\"", a.as_str());
    }
}

pub(super) fn to_toml(p: &Policy) -> String {
    let mut out = String::from("version = 1\n\n[defaults]\n");
    settings(&mut out, &p.defaults);
    for r in &p.rules {
        let globs: Vec<String> = r.globs.iter().map(|g| quote(g)).collect();
        let _ = write!(
            out,
            "\n[[rule]]\nname = {}\nmatch = [{}]\n",
            quote(&r.name),
            globs.join(", ")
        );
        settings(&mut out, &r.file);
    }
    out
}

fn method_words(m: SyncMethod) -> &'static str {
    match m {
        SyncMethod::Data => "fdatasync: the data and the metadata needed to read it back",
        SyncMethod::Full => "full fsync: data and all metadata (F_FULLFSYNC on macOS)",
        SyncMethod::Barrier => "barrier: fdatasync on Linux, F_BARRIERFSYNC on macOS",
    }
}

pub(super) fn describe(f: &FilePolicy) -> Vec<String> {
    let mut v = Vec::new();
    v.push(match f.write {
        WriteStrategy::Passthrough => "writes go straight to the backing file".to_string(),
        WriteStrategy::Direct => "writes go to the backing file with direct IO (O_DIRECT), sector-aligned; unaligned edges are read-modify-written under a per-file lock".to_string(),
        WriteStrategy::Atomic => "writes go to a hidden staging file beside it; on close or fsync the stage is synced, renamed over the file and the directory synced, so after a power cut the file holds the complete old or the complete new contents".to_string(),
        WriteStrategy::Append => format!(
            "space is preallocated ahead of the end of file in steps of {} (the unused tail released at close)",
            size(f.preallocate)
        ),
    });
    let m = method_words(f.method);
    v.push(match f.sync {
        SyncTrigger::Never => "fsync and fdatasync are acknowledged and dropped: nothing written is durable until the kernel writes it back on its own (scratch data only)".to_string(),
        SyncTrigger::OnFsync => format!("durable when the app asks and only then; each of its fsync/fdatasync calls is a {m}"),
        SyncTrigger::OnClose => format!("its data is durable when close(2) returns, and whenever the app syncs; each sync is a {m}"),
        SyncTrigger::Always => format!("every write is durable before it returns; each sync is a {m}"),
        SyncTrigger::Interval(d) => format!(
            "at most the last {} of acknowledged writes can be lost, and the app's own syncs are honoured; each sync is a {m}",
            duration(d)
        ),
    });
    v.push(if f.dir_sync {
        "creating, renaming or removing it is durable when the call returns (its directory is synced)".to_string()
    } else {
        "creating, renaming or removing it is durable only once the app syncs the directory".to_string()
    });
    if let Some(h) = f.hint {
        v.push(format!(
            "write-lifetime hint \"{}\" is passed to the device (advisory)",
            h.as_str()
        ));
    }
    if let Some(a) = f.advise {
        v.push(format!(
            "access advice \"{}\" is given to the kernel (posix_fadvise, advisory)",
            a.as_str()
        ));
    }
    if f.write != WriteStrategy::Append && f.preallocate != 0 {
        v.push(format!(
            "(preallocate {} is ignored: it applies to append only)",
            size(f.preallocate)
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_print_exactly() {
        assert_eq!(duration(Duration::from_millis(100)), "100ms");
        assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration(Duration::from_secs(120)), "2m");
        assert_eq!(duration(Duration::from_nanos(7)), "7ns");
        assert_eq!(size(64 << 20), "64MiB");
        assert_eq!(size(4096), "4KiB");
        assert_eq!(size(1000), "1000B");
        assert_eq!(size(0), "0B");
    }
}
