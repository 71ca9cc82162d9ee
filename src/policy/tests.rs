//! Parsing, every diagnostic (text, line and column), matching order,
//! shadowing, inheritance.

use std::time::Duration;

use super::*;

fn ok(text: &str) -> (Policy, Vec<Diagnostic>) {
    match Policy::parse(text, "t.toml") {
        Ok(p) => p,
        Err(e) => panic!("refused:\n{e}"),
    }
}

/// The one error of a refused policy: (line, column, message, hint).
fn err(text: &str) -> (usize, usize, String, Option<String>) {
    let e = Policy::parse(text, "t.toml").expect_err("accepted");
    let errors: Vec<_> = e.errors().collect();
    assert_eq!(errors.len(), 1, "{e}");
    let d = errors[0];
    assert_eq!(d.origin, "t.toml");
    (d.line, d.column, d.message.clone(), d.hint.clone())
}

/// The warnings of an accepted policy: (line, column, message).
fn warnings(text: &str) -> Vec<(usize, usize, String)> {
    ok(text)
        .1
        .into_iter()
        .map(|d| {
            assert_eq!(d.severity, Severity::Warning);
            (d.line, d.column, d.message)
        })
        .collect()
}

fn rule_of(p: &Policy, path: &str) -> String {
    p.resolve(path.as_bytes()).rule.to_string()
}

#[test]
fn a_full_policy_parses_with_inheritance() {
    let (p, w) = ok(r#"
version = 1
[defaults]
sync = "on-close"
method = "full"
dir-sync = true

[[rule]]
name = "sqlite"
match = ["**/*.db", "**/*.db-wal"]
write = "direct"
sync = "always"

[[rule]]
match = "**/*.log"
write = "append"
sync = { interval = "200ms" }
hint = "short"
advise = "sequential"
"#);
    assert!(w.is_empty(), "{w:?}");
    let d = p.defaults();
    assert_eq!(&*d.rule, "defaults");
    assert_eq!(
        (d.write, d.sync, d.method, d.dir_sync, d.preallocate),
        (
            WriteStrategy::Passthrough,
            SyncTrigger::OnClose,
            SyncMethod::Full,
            true,
            0
        )
    );
    let db = p.resolve(b"data/app.db");
    assert_eq!(&*db.rule, "sqlite");
    assert_eq!(
        (db.write, db.sync),
        (WriteStrategy::Direct, SyncTrigger::Always)
    );
    // inherited from [defaults]
    assert_eq!((db.method, db.dir_sync), (SyncMethod::Full, true));
    let log = p.resolve(b"var/app.log");
    assert_eq!(&*log.rule, "rule-2");
    assert_eq!(log.sync, SyncTrigger::Interval(Duration::from_millis(200)));
    assert_eq!(log.preallocate, 16 << 20, "append's default step");
    assert_eq!(log.hint, Some(WriteHint::Short));
    assert_eq!(log.advise, Some(Advice::Sequential));
    assert_eq!(rule_of(&p, "notes.txt"), "defaults");
    assert_eq!(p.rules()[0].line, 8);
}

#[test]
fn the_built_in_base_when_nothing_is_set() {
    let (p, _) = ok("version = 1\n");
    assert!(p.is_uniform());
    let f = p.resolve(b"any/thing");
    assert_eq!(
        (
            f.write,
            f.sync,
            f.method,
            f.dir_sync,
            f.preallocate,
            f.hint,
            f.advise
        ),
        (
            WriteStrategy::Passthrough,
            SyncTrigger::OnFsync,
            SyncMethod::Data,
            false,
            0,
            None,
            None
        )
    );
}

#[test]
fn first_match_wins_in_file_order() {
    let (p, _) = ok(r#"
version = 1
[[rule]]
name = "etc"
match = "etc/**"
[[rule]]
name = "json"
match = "**/*.json"
[[rule]]
name = "top-txt"
match = "*.txt"
"#);
    assert_eq!(rule_of(&p, "etc/app.json"), "etc");
    assert_eq!(rule_of(&p, "srv/app.json"), "json");
    assert_eq!(rule_of(&p, "app.json"), "json");
    assert_eq!(rule_of(&p, "a.txt"), "top-txt");
    // `*` does not cross `/`
    assert_eq!(rule_of(&p, "d/a.txt"), "defaults");
    // a leading / is the mount root
    assert_eq!(rule_of(&p, "/etc/x"), "etc");
    let e = p.explain(b"etc/app.json");
    assert_eq!(e.rule.map(|r| &*r.name), Some("etc"));
    assert_eq!(e.glob, Some("etc/**"));
    assert_eq!(e.also_matched, ["json"]);
    let e = p.explain(b"x.bin");
    assert!(e.rule.is_none() && e.glob.is_none());
    assert_eq!(&*e.file.rule, "defaults");
}

#[test]
fn non_utf8_paths_match() {
    let (p, _) = ok("version = 1\n[[rule]]\nname = \"db\"\nmatch = \"**/*.db\"\n");
    assert_eq!(&*p.resolve(b"caf\xe9/x.db").rule, "db");
}

#[test]
fn unknown_keys_with_the_nearest_valid_one() {
    let (l, c, m, h) = err("version = 1\n[defaults]\nsyncc = \"always\"\n");
    assert_eq!((l, c, m.as_str()), (3, 1, "unknown key `syncc`"));
    assert_eq!(h.as_deref(), Some("did you mean `sync`?"));
    let (l, c, m, h) = err("version = 1\n[[rule]]\nmatch = \"a\"\ndir_sync = true\n");
    assert_eq!((l, c, m.as_str()), (4, 1, "unknown key `dir_sync`"));
    assert_eq!(h.as_deref(), Some("did you mean `dir-sync`?"));
    let (l, c, m, h) = err("version = 1\n[[rules]]\nmatch = \"a\"\n");
    assert_eq!((l, c, m.as_str()), (2, 3, "unknown key `rules`"));
    assert_eq!(h.as_deref(), Some("did you mean `rule`?"));
    let (_, _, m, h) = err("version = 1\ncolour = 3\n");
    assert_eq!(m, "unknown key `colour`");
    assert_eq!(
        h.as_deref(),
        Some("valid keys here: `version`, `defaults`, `rule`")
    );
}

#[test]
fn unknown_values_with_the_nearest_valid_one() {
    let (l, c, m, h) = err("version = 1\n[[rule]]\nmatch = \"a\"\nwrite = \"dirct\"\n");
    assert_eq!((l, c, m.as_str()), (4, 9, "unknown value \"dirct\""));
    assert_eq!(h.as_deref(), Some("did you mean \"direct\"?"));
    let (_, _, m, h) = err("version = 1\n[defaults]\nsync = \"on_close\"\n");
    assert_eq!(m, "unknown value \"on_close\"");
    assert_eq!(h.as_deref(), Some("did you mean \"on-close\"?"));
    let (_, _, m, h) = err("version = 1\n[defaults]\nmethod = \"paranoid\"\n");
    assert_eq!(m, "unknown value \"paranoid\"");
    assert_eq!(
        h.as_deref(),
        Some("valid values: `data`, `full`, `barrier`")
    );
    let (l, c, m, h) = err("version = 1\n[defaults]\nsync = { intervl = \"1s\" }\n");
    assert_eq!((l, c, m.as_str()), (3, 8, "unknown key `intervl`"));
    assert_eq!(h.as_deref(), Some("did you mean `interval`?"));
    let (_, _, m, _) = err("version = 1\n[defaults]\nsync = \"interval\"\n");
    assert!(m.contains("sync = { interval = \"100ms\" }"), "{m}");
    let (l, c, m, _) = err("version = 1\n[defaults]\ndir-sync = \"yes\"\n");
    assert_eq!((l, c), (3, 12));
    assert!(m.contains("expected a boolean"), "{m}");
}

#[test]
fn bad_sizes_and_durations_point_at_the_value() {
    let (l, c, m, _) =
        err("version = 1\n[[rule]]\nmatch = \"a\"\nwrite = \"append\"\npreallocate = \"4 lb\"\n");
    assert_eq!((l, c), (5, 15));
    assert!(
        m.starts_with("bad size \"4 lb\": unknown unit \"lb\""),
        "{m}"
    );
    let (_, _, m, _) = err("version = 1\n[defaults]\npreallocate = -1\n");
    assert_eq!(m, "bad size -1: a size cannot be negative");
    let (l, c, m, _) = err("version = 1\n[defaults]\nsync = { interval = \"1.5s\" }\n");
    assert_eq!((l, c), (3, 21));
    assert!(m.contains("whole numbers only"), "{m}");
    let (_, _, m, _) = err("version = 1\n[defaults]\nsync = { interval = 100 }\n");
    assert!(
        m.contains("a duration is a string with a unit, such as \"100ms\""),
        "{m}"
    );
    let (l, c, m, _) = err("version = 1\n[defaults]\nsync = { interval = \"0s\" }\n");
    assert_eq!((l, c), (3, 8));
    assert!(m.starts_with("an interval of zero"), "{m}");
}

#[test]
fn version_is_required_and_must_be_1() {
    let (l, c, m, h) = err("[defaults]\nsync = \"always\"\n");
    assert_eq!((l, c, m.as_str()), (1, 1, "missing `version`"));
    assert_eq!(h.as_deref(), Some("start the policy with `version = 1`"));
    let (l, c, m, _) = err("# a policy\nversion = 2\n");
    assert_eq!((l, c, m.as_str()), (2, 11, "unsupported policy version 2"));
}

#[test]
fn toml_syntax_errors_have_positions() {
    let (l, _, _, _) = err("version = 1\n[defaults\nsync = \"always\"\n");
    assert_eq!(l, 2);
    let (l, _, m, _) = err("version = 1\n[defaults]\nsync = \"always\"\nsync = \"never\"\n");
    assert_eq!(l, 4);
    assert!(m.contains("duplicate key"), "{m}");
}

#[test]
fn bad_globs() {
    let (l, c, m, h) = err("version = 1\n[[rule]]\nmatch = [\"**/*.db\", \"a/[b\"]\n");
    assert_eq!((l, c), (3, 21));
    assert!(m.starts_with("bad glob \"a/[b\""), "{m}");
    assert!(h.unwrap().contains("`**` (any depth)"));
    let (_, _, m, _) = err("version = 1\n[[rule]]\nmatch = \"a/{b,c\"\n");
    assert!(m.starts_with("bad glob \"a/{b,c\""), "{m}");
    let (l, c, m, _) = err("version = 1\n[[rule]]\nmatch = \"\"\n");
    assert_eq!((l, c, m.as_str()), (3, 9, "empty glob"));
    let (_, _, m, h) = err("version = 1\n[[rule]]\nmatch = \"a/../b\"\n");
    assert_eq!(m, "glob \"a/../b\" can never match");
    assert!(h.unwrap().contains("without `.`, `..`"));
    let (_, _, m, _) = err("version = 1\n[[rule]]\nmatch = \"a//b\"\n");
    assert_eq!(m, "glob \"a//b\" can never match");
}

#[test]
fn rule_structure_errors() {
    let (l, c, m, _) = err("version = 1\n[[rule]]\nname = \"x\"\nsync = \"always\"\n");
    assert_eq!((l, c, m.as_str()), (2, 1, "rule `x` has no `match`"));
    let (_, _, m, _) = err("version = 1\n[[rule]]\nname = \"x\"\nmatch = []\n");
    assert_eq!(m, "rule `x` has an empty `match` list");
    let (l, c, m, h) = err(
        "version = 1\n[[rule]]\nname = \"a\"\nmatch = \"x\"\n[[rule]]\nname = \"a\"\nmatch = \"y\"\n",
    );
    assert_eq!((l, c, m.as_str()), (6, 8, "duplicate rule name `a`"));
    assert!(
        h.unwrap()
            .starts_with("rule 1 (line 2) already has this name")
    );
    let (_, _, m, _) = err("version = 1\n[[rule]]\nname = \"defaults\"\nmatch = \"x\"\n");
    assert_eq!(m, "the rule name `defaults` is reserved");
    let (l, c, m, _) = err("version = 1\n[defaults]\nmatch = \"**\"\n");
    assert_eq!((l, c, m.as_str()), (3, 9, "`match` in [defaults]"));
    let (_, _, m, _) = err("version = 1\n[defaults]\nname = \"d\"\n");
    assert_eq!(m, "`name` in [defaults]");
}

#[test]
fn contradictory_combinations_are_errors() {
    let (l, c, m, h) = err(
        "version = 1\n[[rule]]\nname = \"cfg\"\nmatch = \"**/*.json\"\nwrite = \"atomic\"\nsync = \"never\"\n",
    );
    assert_eq!((l, c), (6, 8));
    assert_eq!(
        m,
        "rule `cfg`: write = \"atomic\" with sync = \"never\" cannot keep its promise"
    );
    assert!(h.unwrap().contains("use sync = \"on-close\""));
    let (_, _, m, _) = err("version = 1\n[defaults]\nwrite = \"atomic\"\nsync = \"always\"\n");
    assert_eq!(
        m,
        "[defaults]: write = \"atomic\" with sync = \"always\" is contradictory"
    );
    let (_, _, m, _) =
        err("version = 1\n[defaults]\nwrite = \"atomic\"\nsync = { interval = \"1s\" }\n");
    assert_eq!(
        m,
        "[defaults]: write = \"atomic\" with an interval sync is contradictory"
    );
    // inherited: reported on the rule that sets the other half, once
    let (l, c, m, _) = err(
        "version = 1\n[defaults]\nsync = \"never\"\n[[rule]]\nname = \"c\"\nmatch = \"*.ini\"\nwrite = \"atomic\"\n",
    );
    assert_eq!((l, c), (7, 9));
    assert_eq!(
        m,
        "rule `c`: write = \"atomic\" with sync = \"never\" cannot keep its promise"
    );
}

#[test]
fn dubious_combinations_are_warnings() {
    let w = warnings(
        "version = 1\n[[rule]]\nname = \"d\"\nmatch = \"**/*.db\"\nwrite = \"direct\"\nsync = \"never\"\nmethod = \"full\"\n",
    );
    assert_eq!(w.len(), 2, "{w:?}");
    assert_eq!(
        w[0],
        (
            6,
            8,
            "rule `d`: write = \"direct\" with sync = \"never\" is not durable".to_string()
        )
    );
    assert_eq!(
        w[1],
        (
            7,
            10,
            "rule `d`: `method` has no effect with sync = \"never\"".to_string()
        )
    );
    let w =
        warnings("version = 1\n[[rule]]\nname = \"p\"\nmatch = \"**\"\npreallocate = \"1MiB\"\n");
    assert_eq!(
        w,
        [(
            5,
            15,
            "`preallocate` has no effect on rule `p`: it applies only to write = \"append\""
                .to_string()
        )]
    );
    // zero is no preallocation: nothing to warn of
    assert!(warnings("version = 1\n[[rule]]\nmatch = \"**\"\npreallocate = 0\n").is_empty());
    let w = warnings("version = 1\n[[rule]]\nname = \"r\"\nmatch = \"/etc/**\"\n");
    assert_eq!(
        w[0].2,
        "glob \"/etc/**\" starts with `/`: globs match paths relative to the mount root"
    );
}

#[test]
fn shadowed_rules_and_globs_are_warned_of() {
    let text = r#"version = 1
[[rule]]
name = "all-db"
match = "**/*.db"
[[rule]]
name = "data-db"
match = ["data/*.db", "data/x.db", "**/*.db"]
[[rule]]
name = "mixed"
match = ["cache.db", "cache/**"]
"#;
    let w = warnings(text);
    assert_eq!(w.len(), 2, "{w:?}");
    assert_eq!((w[0].0, w[0].1), (6, 8));
    assert_eq!(
        w[0].2,
        "rule `data-db` can never match: rule `all-db` comes first and takes every path it matches (\"**/*.db\")"
    );
    assert_eq!((w[1].0, w[1].1), (10, 10));
    assert_eq!(
        w[1].2,
        "glob \"cache.db\" of rule `mixed` never applies: rule `all-db` comes first and matches every path it does (\"**/*.db\")"
    );
    // the shadowed rule really never wins
    let (p, _) = ok(text);
    assert_eq!(rule_of(&p, "data/x.db"), "all-db");
    assert_eq!(rule_of(&p, "cache/x"), "mixed");
}

#[test]
fn subsumption_is_sound_on_the_common_forms() {
    use super::validate::subsumes;
    for (a, b) in [
        ("**", "x/**/*.y"),
        ("**/*", "a"),
        ("etc/**", "etc/ssl/*.pem"),
        ("etc/**", "etc/x"),
        ("**/*.db", "data/*.db"),
        ("**/*.db", "a.db"),
        ("**/*.db", "**/*.sqlite.db"),
        ("**/CURRENT", "db/CURRENT"),
        ("*.txt", "a.txt"),
        ("a/*/c", "a/b/c"),
    ] {
        assert!(subsumes(a, b), "{a} should cover {b}");
    }
    for (a, b) in [
        ("etc/**", "etcx/a"),
        ("etc/**", "etc"),
        ("**/*.db", "data/*.dbx"),
        ("**/*.db", "data/**"),
        ("*.txt", "d/a.txt"),
        ("**/*.db", "x/[ab].db"),
        ("a/*/c", "a/**/c"),
    ] {
        assert!(!subsumes(a, b), "{a} should not cover {b}");
    }
}

#[test]
fn every_error_is_collected_not_just_the_first() {
    let e = Policy::parse(
        "version = 3\n[[rule]]\nmatch = \"a/[\"\n[[rule]]\nname = \"x\"\n",
        "t.toml",
    )
    .unwrap_err();
    let lines: Vec<usize> = e.errors().map(|d| d.line).collect();
    assert_eq!(lines, [1, 3, 4]);
    assert!(e.to_string().ends_with("policy refused: 3 errors"));
}

#[test]
fn canonical_toml_round_trips() {
    for f in [
        DEFAULT_POLICY,
        include_str!("../../policies/database.toml"),
        include_str!("../../policies/logs.toml"),
        include_str!("../../policies/config-files.toml"),
    ] {
        let (p, _) = ok(f);
        let (q, _) = ok(&p.to_toml());
        assert_eq!(p, q, "{}", p.to_toml());
        assert_eq!(p.to_toml(), q.to_toml());
    }
}

#[test]
fn the_built_in_policy_is_what_the_docs_promise() {
    let p = Policy::builtin();
    assert!(p.is_uniform());
    let f = p.resolve(b"anything");
    assert_eq!(
        (f.write, f.sync, f.method, f.dir_sync),
        (
            WriteStrategy::Passthrough,
            SyncTrigger::OnClose,
            SyncMethod::Full,
            true
        )
    );
}

#[test]
fn an_unreadable_file_is_a_clear_error() {
    let e = Policy::load(std::path::Path::new("/nonexistent/p.toml")).unwrap_err();
    let s = e.to_string();
    assert!(
        s.starts_with("error: cannot read the policy file: No such file"),
        "{s}"
    );
    assert!(s.contains("--> /nonexistent/p.toml"), "{s}");
}
