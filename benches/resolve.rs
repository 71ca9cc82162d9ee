//! Policy::resolve() time for policies of 10, 100 and 1,000 rules, next to
//! the naive way (each rule's globs tried in order), on a mix of paths that
//! hit early rules, late rules and no rule.
//!
//! cargo bench --bench resolve

use std::hint::black_box;
use std::time::Instant;

use durafs::policy::Policy;
use globset::{GlobBuilder, GlobMatcher};

/// A policy of `n` rules in the shapes real policies use.
fn policy(n: usize) -> String {
    let mut t = String::from("version = 1\n[defaults]\nsync = \"on-close\"\n");
    for i in 0..n {
        let globs = match i % 5 {
            0 => format!("[\"**/*.ext{i}\"]"),
            1 => format!("[\"dir{i}/**\"]"),
            2 => format!("[\"**/name{i}\", \"**/name{i}.bak\"]"),
            3 => format!("[\"a{i}/*/x.{i}\"]"),
            _ => format!("[\"{{src,lib}}{i}/**/*.rs\"]"),
        };
        t += &format!("[[rule]]\nname = \"r{i}\"\nmatch = {globs}\nsync = \"always\"\n");
    }
    t
}

fn paths(n: usize) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for i in [0, 1, 2, 3, 4, n / 2, n.saturating_sub(3), n - 1] {
        v.push(format!("p/q/file.ext{i}").into_bytes());
        v.push(format!("dir{i}/sub/file").into_bytes());
        v.push(format!("x/y/name{i}").into_bytes());
        v.push(format!("a{i}/m/x.{i}").into_bytes());
        v.push(format!("src{i}/deep/er/mod.rs").into_bytes());
    }
    v.push(b"home/user/documents/report-final.odt".to_vec());
    v.push(b"no/rule/matches/this/path.bin".to_vec());
    v
}

fn time_per_call(paths: &[Vec<u8>], mut f: impl FnMut(&[u8]) -> usize) -> f64 {
    let mut iters = 1usize;
    loop {
        let t = Instant::now();
        let mut acc = 0;
        for _ in 0..iters {
            for p in paths {
                acc += f(p);
            }
        }
        black_box(acc);
        let el = t.elapsed();
        if el.as_millis() >= 300 {
            return el.as_nanos() as f64 / (iters * paths.len()) as f64;
        }
        iters *= 2;
    }
}

fn main() {
    println!("resolve() per path: durafs (one compiled glob set) vs naive (rule by rule)");
    println!(
        "{:>6}  {:>12}  {:>12}  {:>7}",
        "rules", "durafs ns", "naive ns", "speedup"
    );
    for n in [10, 100, 1000] {
        let (p, _) = Policy::parse(&policy(n), "bench.toml").expect("bench policy");
        let paths = paths(n);
        let naive: Vec<Vec<GlobMatcher>> = p
            .rules()
            .iter()
            .map(|r| {
                r.globs
                    .iter()
                    .map(|g| {
                        GlobBuilder::new(g)
                            .literal_separator(true)
                            .build()
                            .unwrap()
                            .compile_matcher()
                    })
                    .collect()
            })
            .collect();
        // Both agree on every path.
        for path in &paths {
            let s = std::str::from_utf8(path).unwrap();
            let want = naive
                .iter()
                .position(|ms| ms.iter().any(|m| m.is_match(s)))
                .map_or("defaults".to_string(), |i| format!("r{i}"));
            assert_eq!(&*p.resolve(path).rule, want, "{s}");
        }
        let ours = time_per_call(&paths, |path| p.resolve(path).rule.len());
        let theirs = time_per_call(&paths, |path| {
            let s = std::str::from_utf8(path).unwrap();
            naive
                .iter()
                .position(|ms| ms.iter().any(|m| m.is_match(s)))
                .unwrap_or(usize::MAX)
        });
        println!(
            "{n:>6}  {ours:>12.0}  {theirs:>12.0}  {:>6.1}x",
            theirs / ours
        );
    }
}
