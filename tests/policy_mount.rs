//! Policies through a real mount: the daemon resolves each open's policy
//! when it is opened (observable in `durafs status`), and agrees with
//! `durafs explain`; reloads by command and by SIGHUP, good and bad;
//! `durafs check` on every shipped policy; a bad policy refuses the mount.
#![cfg(any(target_os = "linux", target_os = "macos"))]

mod common;

use std::fs::{self, File, OpenOptions};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Mount, durafs, durafs_bin, ok_stdout, policy_file, status_json, test_root};
use serde_json::Value;

fn status(m: &Mount) -> Value {
    status_json(&m.mnt)
}

/// The rule the daemon applied to each open file, by path and access.
fn applied(m: &Mount) -> Vec<(String, String, String)> {
    let v = status(m);
    let mut out: Vec<_> = v["open_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["access"].as_str().unwrap().to_string(),
                f["policy"]["rule"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// What `durafs explain --json` says each path gets.
fn explained(policy: &Path, paths: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "explain".to_string(),
        "--json".into(),
        "--policy".into(),
        policy.display().to_string(),
    ];
    args.extend(paths.iter().map(|p| p.to_string()));
    serde_json::from_str(&ok_stdout(&durafs(&args))).unwrap()
}

const POLICY: &str = r#"
version = 1
[defaults]
sync = "on-close"
dir-sync = true

[[rule]]
name = "db"
match = ["**/*.db", "**/*.db-wal"]
write = "direct"
sync = "always"
method = "full"

[[rule]]
name = "configs"
match = ["etc/**", "**/*.toml"]
write = "atomic"

[[rule]]
name = "logs"
match = "**/*.log"
write = "append"
preallocate = "1MiB"
sync = { interval = "100ms" }
"#;

#[test]
fn the_daemon_applies_what_explain_says() {
    let pf = policy_file(POLICY);
    let m = Mount::with_args(&["--policy", pf.path().to_str().unwrap()]);
    fs::create_dir_all(m.m("data/deep")).unwrap();
    fs::create_dir_all(m.m("etc/app")).unwrap();
    fs::write(m.b("data/old.db"), b"x").unwrap();
    let paths = [
        "data/old.db",
        "data/deep/new.db-wal",
        "etc/app/conf",
        "x.toml",
        "var.log",
        "notes.txt",
        "data/deep/readme",
    ];
    // Held open: existing files by open(2), new ones by create.
    let mut held = Vec::new();
    for p in paths {
        held.push(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(m.m(p))
                .unwrap(),
        );
    }
    held.push(File::open(m.m("data/old.db")).unwrap());

    let want = explained(pf.path(), &paths);
    let got = applied(&m);
    assert_eq!(got.len(), paths.len() + 1, "{got:?}");
    for (p, w) in paths.iter().zip(&want) {
        assert_eq!(w["path"], *p);
        let rules: Vec<_> = got.iter().filter(|g| g.0 == *p).map(|g| &g.2).collect();
        assert!(!rules.is_empty(), "{p} not among the open files: {got:?}");
        for r in rules {
            assert_eq!(r, w["rule"].as_str().unwrap(), "{p}");
        }
    }
    // The full decision, not just the name.
    let v = status(&m);
    let db = v["open_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "data/deep/new.db-wal")
        .unwrap();
    assert_eq!(db["policy"], want[1]["policy"]);
    assert_eq!(db["policy"]["write"], "direct");
    assert_eq!(db["policy"]["method"], "full");
    let log = v["open_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "var.log")
        .unwrap();
    assert_eq!(log["policy"]["interval_ms"], 100);
    assert_eq!(log["policy"]["preallocate"], 1 << 20);

    // An open file keeps its policy when renamed: the path follows the
    // file, the rule does not change.
    fs::rename(m.m("data/deep"), m.m("data/moved")).unwrap();
    fs::rename(m.m("x.toml"), m.m("x.txt")).unwrap();
    let got = applied(&m);
    assert!(got.contains(&("data/moved/new.db-wal".into(), "w".into(), "db".into())));
    assert!(got.contains(&("x.txt".into(), "w".into(), "configs".into())));
    drop(held);
    assert!(applied(&m).is_empty());
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn reload_applies_to_new_opens_and_refuses_a_bad_policy() {
    let pf = policy_file(POLICY);
    let m = Mount::with_args(&["--policy", pf.path().to_str().unwrap()]);
    let _a = File::create(m.m("a.db")).unwrap();

    // A good policy: new opens get it, the open file keeps its own.
    fs::write(
        pf.path(),
        "version = 1\n[[rule]]\nname = \"everything\"\nmatch = \"**\"\nsync = \"always\"\n",
    )
    .unwrap();
    let out = ok_stdout(&durafs(&["reload".as_ref(), m.mnt.as_os_str()]));
    assert!(out.contains("policy reloaded (1 rule)"), "{out}");
    let _b = File::create(m.m("b.db")).unwrap();
    assert_eq!(
        applied(&m),
        [
            ("a.db".into(), "w".into(), "db".into()),
            ("b.db".into(), "w".into(), "everything".into())
        ]
    );
    assert_eq!(status(&m)["policy"]["reloads"], 1);

    // A bad one: refused with its position, the old one stays in force.
    fs::write(
        pf.path(),
        "version = 1\n[[rule]]\nname = \"x\"\nmatch = \"**\"\nsync = \"sometimes\"\n",
    )
    .unwrap();
    let o = durafs(&["reload".as_ref(), m.mnt.as_os_str()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("reload refused, the old policy stays in force"),
        "{err}"
    );
    assert!(err.contains("unknown value \"sometimes\""), "{err}");
    assert!(
        err.contains(&format!("{}:5:8", pf.path().display())),
        "{err}"
    );
    let _c = File::create(m.m("c.db")).unwrap();
    let got = applied(&m);
    assert!(got.contains(&("c.db".into(), "w".into(), "everything".into())));
    let v = status(&m);
    assert_eq!(v["policy"]["reloads"], 1);
    assert!(
        v["policy"]["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("sometimes")
    );

    // SIGHUP re-reads the file too.
    fs::write(
        pf.path(),
        "version = 1\n[[rule]]\nname = \"hup\"\nmatch = \"**/*.db\"\n",
    )
    .unwrap();
    let pid = v["pid"].as_u64().unwrap();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    wait_for("SIGHUP reload", || status(&m)["policy"]["reloads"] == 2);
    assert!(status(&m)["policy"]["last_reload_error"].is_null());
    let _d = File::create(m.m("d.db")).unwrap();
    assert!(applied(&m).contains(&("d.db".into(), "w".into(), "hup".into())));
}

#[test]
fn without_a_policy_file_the_built_in_one_applies_and_reload_says_why_not() {
    let m = Mount::new();
    let _f = File::create(m.m("f")).unwrap();
    let v = status(&m);
    assert!(v["policy"]["file"].is_null());
    let f = &v["open_files"][0]["policy"];
    assert_eq!(
        (&f["rule"], &f["sync"], &f["method"], &f["dir_sync"]),
        (
            &Value::from("defaults"),
            &Value::from("on-close"),
            &Value::from("full"),
            &Value::from(true)
        )
    );
    let o = durafs(&["reload".as_ref(), m.mnt.as_os_str()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("built-in default policy"));
    // The human form names the policy and the open file.
    let human = ok_stdout(&durafs(&["status".as_ref(), m.mnt.as_os_str()]));
    assert!(human.contains("built-in default policy"), "{human}");
    assert!(human.contains("f  (w) rule defaults"), "{human}");
    // And `status` alone lists this mount among all of them (other tests'
    // mounts come and go meanwhile: one that cannot answer is listed with
    // its error, not fatal).
    let all: Value = serde_json::from_str(&ok_stdout(&durafs(&["status", "--json"]))).unwrap();
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|s| s["mountpoint"] == m.mnt.to_str().unwrap())
    );
}

#[test]
fn a_bad_policy_refuses_the_mount_and_touches_nothing() {
    let pf = policy_file("version = 1\n[defaults]\nwrite = \"atomic\"\nsync = \"never\"\n");
    let dir = tempfile::tempdir_in(test_root()).unwrap();
    let (b, mnt) = (dir.path().join("b"), dir.path().join("m"));
    fs::create_dir(&b).unwrap();
    fs::create_dir(&mnt).unwrap();
    for fg in [true, false] {
        let mut args = vec!["mount".to_string()];
        if fg {
            args.push("--foreground".into());
        }
        args.extend([
            "--policy".to_string(),
            pf.path().display().to_string(),
            b.display().to_string(),
            mnt.display().to_string(),
        ]);
        let o = durafs(&args);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("write = \"atomic\" with sync = \"never\" cannot keep its promise"),
            "{err}"
        );
        assert!(
            err.contains(&format!("{}:4:8", pf.path().display())),
            "{err}"
        );
        assert_eq!(common::mount_type(&mnt), None, "mounted anyway");
    }
    let o = durafs(&[
        "mount",
        "--policy",
        "/nonexistent/policy.toml",
        b.to_str().unwrap(),
        mnt.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read the policy file"));
}

#[test]
fn check_accepts_every_shipped_policy_and_prints_its_rules() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut n = 0;
    for e in fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        n += 1;
        let o = durafs(&["check".as_ref(), p.as_os_str()]);
        let out = ok_stdout(&o);
        assert!(
            o.stderr.is_empty(),
            "{}: warnings:\n{}",
            p.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains("valid (version 1"), "{out}");
        let (policy, _) = durafs::policy::Policy::load(&p).unwrap();
        for r in policy.rules() {
            assert!(
                out.contains(&*r.name),
                "{}: rule {} missing:\n{out}",
                p.display(),
                r.name
            );
        }
        assert!(out.contains("(every other path)"));
    }
    assert!(n >= 7, "policies/ should hold the shipped policies");
    let bad = policy_file("version = 1\n[[rule]]\nmatch = \"**/*.db\"\nsync = \"alwas\"\n");
    let o = durafs(&["check".as_ref(), bad.path().as_os_str()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{}:4:8", bad.path().display())),
        "{err}"
    );
    assert!(err.contains("did you mean \"always\"?"), "{err}");
}

#[test]
fn explain_speaks_plainly() {
    let pf = policy_file(POLICY);
    let out = ok_stdout(&durafs(&[
        "explain",
        "--policy",
        pf.path().to_str().unwrap(),
        "etc/app/x.toml",
        "scratch.bin",
    ]));
    assert!(
        out.contains("etc/app/x.toml\n  rule `configs` (rule 2,"),
        "{out}"
    );
    assert!(out.contains("matched by \"etc/**\""), "{out}");
    assert!(
        out.contains("complete old or the complete new contents"),
        "{out}"
    );
    assert!(
        out.contains("scratch.bin\n  no rule matches: [defaults]"),
        "{out}"
    );
    assert!(out.contains("durable when close(2) returns"), "{out}");
    // Without --policy: the built-in one.
    let out = ok_stdout(&durafs(&["explain", "a/b"]));
    assert!(out.contains("<built-in default policy>"), "{out}");
}

#[test]
fn only_the_owner_or_root_reaches_the_control_socket() {
    let m = Mount::new();
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            durafs_bin(),
            "status",
        ])
        .arg(&m.mnt)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
    assert!(err.contains("permission denied"), "{err}");
}
