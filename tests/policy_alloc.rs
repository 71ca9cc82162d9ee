//! `Policy::resolve` allocates nothing per call: a counting global
//! allocator watches a warm loop of resolutions over a policy whose globs
//! take every matching strategy (extension, literal, prefix, suffix, regex).

use durafs::platform::alloc::{CountingAlloc, count_allocations};
use durafs::policy::Policy;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[test]
fn resolve_does_not_allocate() {
    let mut text = String::from("version = 1\n");
    let globs = [
        "**/*.db",
        "etc/**",
        "**/CURRENT",
        "logs/*.log",
        "*.txt",
        "a/b/c",
        "{src,lib}/**/*.rs",
        "**/pg_wal/**",
        "[ab]*/q?",
    ];
    for (i, g) in globs.iter().enumerate() {
        text += &format!("[[rule]]\nname = \"r{i}\"\nmatch = \"{g}\"\n");
    }
    let (p, _) = Policy::parse(&text, "alloc.toml").unwrap();
    let paths: [&[u8]; 10] = [
        b"x/y.db",
        b"etc/hosts",
        b"db/CURRENT",
        b"logs/a.log",
        b"a.txt",
        b"a/b/c",
        b"src/x/m.rs",
        b"var/pg_wal/0001",
        b"aa/q1",
        b"nothing/matches/this",
    ];
    // Warm up: the thread's match buffer and the regex pools fill once.
    let mut rules = Vec::new();
    for path in paths {
        rules.push(p.resolve(path).rule);
    }
    assert_eq!(
        rules.iter().map(|r| &**r).collect::<Vec<_>>(),
        [
            "r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "defaults"
        ]
    );
    let mut matched = 0;
    let allocs = count_allocations(|| {
        for _ in 0..1000 {
            for path in paths {
                matched += usize::from(&*p.resolve(path).rule != "defaults");
            }
        }
    });
    assert_eq!(matched, 9000);
    assert_eq!(allocs, 0, "resolve() allocated");
    // The counter itself works: an allocation is seen.
    assert!(count_allocations(|| drop(std::hint::black_box(vec![1u8; 64]))) >= 1);
}
