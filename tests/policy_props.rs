//! Property tests over the policy parser: it never panics, whatever the
//! input, and every policy it accepts round-trips through its canonical
//! TOML to an equal policy that resolves every path the same way.

use durafs::policy::Policy;
use proptest::prelude::*;

const GLOBS: &[&str] = &[
    "**/*.db",
    "etc/**",
    "*.txt",
    "a/b/c",
    "**/x?",
    "logs/**/*.log",
    "[ab]*/q",
    "{src,lib}/**/*.rs",
    "/abs/**",
    "**",
    "caf\u{e9}/*",
];
const PATHS: &[&[u8]] = &[
    b"a.db",
    b"x/y/z.db",
    b"etc/passwd",
    b"notes.txt",
    b"d/notes.txt",
    b"a/b/c",
    b"logs/2026/app.log",
    b"aa/q",
    b"src/m/lib.rs",
    b"abs/x",
    b"caf\xc3\xa9/menu",
    b"caf\xe9/x.db",
    b"",
];

fn opt(values: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::sample::select(values).prop_map(str::to_string))
}

/// One section's keys as TOML lines.
fn section() -> impl Strategy<Value = String> {
    (
        opt(&["\"passthrough\"", "\"direct\"", "\"atomic\"", "\"append\""]),
        opt(&[
            "\"never\"",
            "\"on-fsync\"",
            "\"on-close\"",
            "\"always\"",
            "{ interval = \"100ms\" }",
            "{ interval = \"2s\" }",
            "{ interval = \"0ms\" }",
        ]),
        opt(&["\"data\"", "\"full\"", "\"barrier\""]),
        opt(&["true", "false"]),
        opt(&["\"64MiB\"", "\"4k\"", "0", "4096", "\"1GB\"", "\"x\""]),
        opt(&["\"short\"", "\"none\"", "\"extreme\""]),
        opt(&["\"random\"", "\"sequential\"", "\"dontneed\""]),
    )
        .prop_map(|(w, s, m, d, p, h, a)| {
            let mut out = String::new();
            for (k, v) in [
                ("write", w),
                ("sync", s),
                ("method", m),
                ("dir-sync", d),
                ("preallocate", p),
                ("hint", h),
                ("advise", a),
            ] {
                if let Some(v) = v {
                    out += &format!("{k} = {v}\n");
                }
            }
            out
        })
}

fn rule() -> impl Strategy<Value = String> {
    (
        prop::option::of("[a-z]{1,6}"),
        prop::collection::vec(prop::sample::select(GLOBS), 1..4),
        section(),
    )
        .prop_map(|(name, globs, body)| {
            let mut out = String::from("[[rule]]\n");
            if let Some(n) = name {
                out += &format!("name = \"{n}\"\n");
            }
            let globs: Vec<String> = globs.iter().map(|g| format!("{g:?}")).collect();
            out += &format!("match = [{}]\n", globs.join(", "));
            out + &body
        })
}

fn policy_text() -> impl Strategy<Value = String> {
    (
        prop::option::of(section()),
        prop::collection::vec(rule(), 0..6),
    )
        .prop_map(|(defaults, rules)| {
            let mut out = String::from("version = 1\n");
            if let Some(d) = defaults {
                out += &format!("[defaults]\n{d}");
            }
            for r in rules {
                out += &r;
            }
            out
        })
}

fn round_trips(text: &str) {
    if let Ok((p, _)) = Policy::parse(text, "p.toml") {
        let canon = p.to_toml();
        let (q, _) = Policy::parse(&canon, "canon.toml").unwrap_or_else(|e| {
            panic!("canonical form refused:\n{e}\n---\n{canon}\n---from\n{text}")
        });
        assert_eq!(p, q, "canonical form differs:\n{canon}\n---from\n{text}");
        for path in PATHS {
            assert_eq!(p.resolve(path), q.resolve(path));
        }
        assert_eq!(canon, q.to_toml());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = Policy::parse(&text, "fuzz.toml");
    }

    #[test]
    fn toml_shaped_text_never_panics(
        lines in prop::collection::vec(
            prop::sample::select(&[
                "version = 1", "version = \"1\"", "[defaults]", "[[rule]]", "[rule]",
                "match = \"**\"", "match = []", "match = [1]", "match = \"a/[\"",
                "sync = { interval = \"\" }", "sync = { interval = \"9999999999999999999h\" }",
                "preallocate = \"18446744073709551615T\"", "preallocate = 1.5",
                "name = \"\"", "name = \"é\"", "write = \"atomic\"", "sync = \"never\"",
                "dir-sync = 1", "hint = []", "x = 1", "[defaults.sub]", "\u{0}", "\"",
            ][..]),
            0..12,
        )
    ) {
        let text = lines.join("\n");
        let _ = Policy::parse(&text, "fuzz.toml");
        round_trips(&text);
    }

    #[test]
    fn accepted_policies_round_trip(text in policy_text()) {
        round_trips(&text);
    }

    #[test]
    fn resolve_is_first_match_in_order(text in policy_text(), path in prop::sample::select(PATHS)) {
        if let Ok((p, _)) = Policy::parse(&text, "p.toml") {
            // An oracle: try each rule's globs one by one, in order.
            let expected = p.rules().iter().find(|r| {
                r.globs.iter().any(|g| {
                    globset::GlobBuilder::new(g)
                        .literal_separator(true)
                        .backslash_escape(true)
                        .build()
                        .unwrap()
                        .compile_matcher()
                        .is_match(std::path::Path::new(std::ffi::OsStr::new(
                            std::str::from_utf8(path).unwrap_or("\u{fffd}"),
                        )))
                })
            });
            let got = p.resolve(path);
            if std::str::from_utf8(path).is_ok() {
                match expected {
                    Some(r) => prop_assert_eq!(&got, &r.file),
                    None => prop_assert_eq!(&got, p.defaults()),
                }
            }
        }
    }
}
