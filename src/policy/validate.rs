//! Raw policy -> validated [`Policy`]: every check, every message.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use globset::{Glob, GlobBuilder, GlobSetBuilder};
use toml::Spanned;

use super::diag::{Reporter, backticked, line_of, nearest};
use super::raw::{RawPolicy, RawSection};
use super::{
    Advice, DEFAULTS_NAME, Diagnostic, FilePolicy, Policy, PolicyError, Rule, SyncMethod,
    SyncTrigger, WriteHint, WriteStrategy,
};

/// The preallocation step of `append` when the policy gives none.
pub(super) const DEFAULT_APPEND_STEP: u64 = 16 << 20;

/// Settings as inherited: `[defaults]` over the built-in base, a rule over
/// `[defaults]`. `preallocate` stays optional because its default depends
/// on the final write strategy.
#[derive(Clone)]
struct Settings {
    write: WriteStrategy,
    sync: SyncTrigger,
    method: SyncMethod,
    dir_sync: bool,
    preallocate: Option<u64>,
    hint: Option<WriteHint>,
    advise: Option<Advice>,
}

/// What a policy without `[defaults]` keys gives: the app's own syncs,
/// nothing added.
const BASE: Settings = Settings {
    write: WriteStrategy::Passthrough,
    sync: SyncTrigger::OnFsync,
    method: SyncMethod::Data,
    dir_sync: false,
    preallocate: None,
    hint: None,
    advise: None,
};

fn get<T: Copy>(v: &Option<Spanned<T>>) -> Option<T> {
    v.as_ref().map(|s| *s.get_ref())
}

impl Settings {
    fn over(&self, s: &RawSection) -> Settings {
        Settings {
            write: get(&s.write).unwrap_or(self.write),
            sync: get(&s.sync).unwrap_or(self.sync),
            method: get(&s.method).unwrap_or(self.method),
            dir_sync: get(&s.dir_sync).unwrap_or(self.dir_sync),
            preallocate: get(&s.preallocate).map(|s| s.0).or(self.preallocate),
            hint: get(&s.hint).or(self.hint),
            advise: get(&s.advise).or(self.advise),
        }
    }

    fn file_policy(&self, rule: Arc<str>) -> FilePolicy {
        FilePolicy {
            rule,
            write: self.write,
            sync: self.sync,
            method: self.method,
            dir_sync: self.dir_sync,
            preallocate: match (self.preallocate, self.write) {
                (Some(n), _) => n,
                (None, WriteStrategy::Append) => DEFAULT_APPEND_STEP,
                (None, _) => 0,
            },
            hint: self.hint,
            advise: self.advise,
        }
    }
}

pub(super) fn parse(text: &str, origin: &str) -> Result<(Policy, Vec<Diagnostic>), PolicyError> {
    let mut r = Reporter::new(origin, text);
    let raw: RawPolicy = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let (msg, hint) = explain_toml_error(e.message());
            r.error(e.span().unwrap_or(0..0), msg, hint);
            return Err(PolicyError {
                diagnostics: r.finish(),
            });
        }
    };
    match check(&mut r, raw, origin) {
        Some(p) if !r.has_errors() => Ok((p, r.finish())),
        _ => Err(PolicyError {
            diagnostics: r.finish(),
        }),
    }
}

/// Rewrites serde's messages in the policy's terms, with a hint.
fn explain_toml_error(msg: &str) -> (String, Option<String>) {
    let msg = msg.trim_end();
    let words = backticked(msg);
    // serde: "unknown field `x`, expected one of `a`, `b`" (a key) or
    // "unknown variant `x`, ..." (a value); keys are shown in backticks,
    // values in quotes, as they are written in the file.
    let kind = if msg.starts_with("unknown field") {
        Some(("key", "valid keys here", '`'))
    } else if msg.starts_with("unknown variant") {
        Some(("value", "valid values", '"'))
    } else {
        None
    };
    if let (Some((noun, valid_words, q)), [bad, valid @ ..]) = (kind, &words[..]) {
        let hint = match nearest(bad, valid) {
            Some(n) => format!("did you mean {q}{n}{q}?"),
            None => format!("{valid_words}: {}", list(valid)),
        };
        return (format!("unknown {noun} {q}{bad}{q}"), Some(hint));
    }
    if msg.contains("duplicate key") {
        return (
            msg.to_string(),
            Some("each key may appear once per table".into()),
        );
    }
    (msg.to_string(), None)
}

fn list(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("`{w}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn span_of<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
    v.as_ref().map(|s| s.span())
}

/// Whether a glob has any special character (so it is not one literal path).
fn is_literal(g: &str) -> bool {
    !g.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

fn compile(g: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(g)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

fn check(r: &mut Reporter<'_>, raw: RawPolicy, origin: &str) -> Option<Policy> {
    match &raw.version {
        None => r.error(
            0..0,
            "missing `version`",
            Some("start the policy with `version = 1`".into()),
        ),
        Some(v) if *v.get_ref() != 1 => r.error(
            v.span(),
            format!("unsupported policy version {}", v.get_ref()),
            Some("this durafs reads `version = 1`".into()),
        ),
        Some(_) => {}
    }

    let mut defaults = BASE.clone();
    if let Some(d) = &raw.defaults {
        let sec = d.get_ref();
        if let Some(n) = &sec.name {
            r.error(
                n.span(),
                "`name` in [defaults]",
                Some("[defaults] has no name: it applies where no rule matches".into()),
            );
        }
        if let Some(m) = &sec.globs {
            r.error(
                m.span(),
                "`match` in [defaults]",
                Some(
                    "[defaults] applies to every path no rule matches; put globs in a [[rule]]"
                        .into(),
                ),
            );
        }
        defaults = defaults.over(sec);
        combinations(r, sec, d.span(), &defaults, "[defaults]");
    }

    let mut rules: Vec<Rule> = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut compiled: Vec<Vec<(String, Range<usize>)>> = Vec::new();
    for (i, rs) in raw.rule.iter().enumerate() {
        let sec = rs.get_ref();
        let header = rs.span();
        let name = match &sec.name {
            Some(n) => {
                let s = n.get_ref().trim().to_string();
                if s.is_empty() {
                    r.error(
                        n.span(),
                        "empty rule name",
                        Some("give the rule a name, or leave `name` out".into()),
                    );
                } else if s == DEFAULTS_NAME {
                    r.error(
                        n.span(),
                        format!("the rule name `{DEFAULTS_NAME}` is reserved"),
                        Some("it names what paths no rule matches get; pick another name".into()),
                    );
                }
                s
            }
            None => format!("rule-{}", i + 1),
        };
        let name_span = span_of(&sec.name).unwrap_or(header.clone());
        if let Some(&prev) = names.get(&name) {
            r.error(
                name_span.clone(),
                format!("duplicate rule name `{name}`"),
                Some(format!(
                    "rule {} (line {}) already has this name; names identify rules in `durafs status` and `explain`",
                    prev + 1,
                    rules[prev].line
                )),
            );
        } else {
            names.insert(name.clone(), i);
        }

        let mut globs = Vec::new();
        match &sec.globs {
            None => r.error(
                header.clone(),
                format!("rule `{name}` has no `match`"),
                Some("add the paths it applies to, e.g. match = \"**/*.db\"".into()),
            ),
            Some(m) if m.get_ref().0.is_empty() => r.error(
                m.span(),
                format!("rule `{name}` has an empty `match` list"),
                Some("list at least one glob, e.g. match = [\"**/*.db\"]".into()),
            ),
            Some(m) => {
                for g in &m.get_ref().0 {
                    let span = if g.span().is_empty() {
                        m.span()
                    } else {
                        g.span()
                    };
                    if let Some(g) = check_glob(r, g.get_ref(), span.clone()) {
                        globs.push((g, span));
                    }
                }
            }
        }

        let eff = defaults.over(sec);
        combinations(r, sec, header.clone(), &eff, &format!("rule `{name}`"));
        if let (Some(p), false) = (&sec.preallocate, eff.write == WriteStrategy::Append) {
            if p.get_ref().0 != 0 {
                r.warn(
                    p.span(),
                    format!(
                        "`preallocate` has no effect on rule `{name}`: it applies only to write = \"append\""
                    ),
                    Some("remove it, or set write = \"append\"".into()),
                );
            }
        }
        let line = line_of(r.text, header.start);
        rules.push(Rule {
            name: Arc::from(name.as_str()),
            globs: globs.iter().map(|(g, _)| g.clone()).collect(),
            file: eff.file_policy(Arc::from(name.as_str())),
            line,
        });
        compiled.push(globs);
    }

    shadowing(r, &rules, &compiled, &raw);

    if r.has_errors() {
        return None;
    }
    let mut b = GlobSetBuilder::new();
    let mut glob_rule = Vec::new();
    let mut glob_index = Vec::new();
    for (ri, rule) in rules.iter().enumerate() {
        for (gi, g) in rule.globs.iter().enumerate() {
            b.add(compile(g).expect("checked above"));
            glob_rule.push(ri as u32);
            glob_index.push(gi as u32);
        }
    }
    let set = match b.build() {
        Ok(s) => s,
        Err(e) => {
            r.error(
                0..0,
                format!("the globs could not be compiled together: {e}"),
                None,
            );
            return None;
        }
    };
    Some(Policy {
        origin: origin.to_string(),
        defaults: defaults.file_policy(Arc::from(DEFAULTS_NAME)),
        rules,
        set,
        glob_rule,
        glob_index,
    })
}

/// Checks one glob; returns it normalised (leading `/` removed) if usable.
fn check_glob(r: &mut Reporter<'_>, g: &str, span: Range<usize>) -> Option<String> {
    if g.is_empty() {
        r.error(
            span,
            "empty glob",
            Some("write the paths to match, e.g. \"**/*.db\"".into()),
        );
        return None;
    }
    let mut norm = g;
    if norm.starts_with('/') {
        norm = norm.trim_start_matches('/');
        r.warn(
            span.clone(),
            format!("glob \"{g}\" starts with `/`: globs match paths relative to the mount root"),
            Some(format!(
                "it is read as \"{norm}\"; write it that way to silence this"
            )),
        );
        if norm.is_empty() {
            r.error(
                span,
                "the glob \"/\" matches no file",
                Some("use \"**\" for every path".into()),
            );
            return None;
        }
    }
    if norm
        .split('/')
        .any(|c| c == "." || c == ".." || c.is_empty())
    {
        r.error(
            span,
            format!("glob \"{g}\" can never match"),
            Some("paths are matched without `.`, `..` or empty components, e.g. \"etc/**\"".into()),
        );
        return None;
    }
    if let Err(e) = compile(norm) {
        r.error(
            span,
            format!("bad glob \"{g}\": {}", e.kind()),
            Some(
                "globs use `*` (within one directory), `**` (any depth), `?`, `[abc]` and `{a,b}`"
                    .into(),
            ),
        );
        return None;
    }
    Some(norm.to_string())
}

/// Unsafe or contradictory settings of one section. `parent` is what the
/// section inherits, `eff` its effective settings; a problem is reported
/// where the section itself sets one of the keys involved, so a bad
/// `[defaults]` is reported once, not again on every rule.
fn combinations(
    r: &mut Reporter<'_>,
    sec: &RawSection,
    header: Range<usize>,
    eff: &Settings,
    what: &str,
) {
    let sets = |a: &Option<Range<usize>>, b: &Option<Range<usize>>| a.is_some() || b.is_some();
    let (ws, ss) = (span_of(&sec.write), span_of(&sec.sync));
    let at = ss.clone().or(ws.clone()).unwrap_or(header);
    if eff.write == WriteStrategy::Atomic && sets(&ws, &ss) {
        match eff.sync {
            SyncTrigger::Never => r.error(
                at.clone(),
                format!("{what}: write = \"atomic\" with sync = \"never\" cannot keep its promise"),
                Some("without a sync the rename can reach the disk before the data, leaving an empty or torn file after a power cut; use sync = \"on-close\" (atomic files commit on close), or write = \"passthrough\" for scratch data".into()),
            ),
            SyncTrigger::Always => r.error(
                at.clone(),
                format!("{what}: write = \"atomic\" with sync = \"always\" is contradictory"),
                Some("\"always\" makes each write durable as it returns, \"atomic\" changes the file only as a whole on close or fsync; use sync = \"on-close\"".into()),
            ),
            SyncTrigger::Interval(_) => r.error(
                at.clone(),
                format!("{what}: write = \"atomic\" with an interval sync is contradictory"),
                Some("an atomic file changes only as a whole on close or fsync, so no interval can bound what is lost; use sync = \"on-close\"".into()),
            ),
            _ => {}
        }
    }
    if eff.write == WriteStrategy::Direct && eff.sync == SyncTrigger::Never && sets(&ws, &ss) {
        r.warn(
            at.clone(),
            format!("{what}: write = \"direct\" with sync = \"never\" is not durable"),
            Some("direct IO skips the page cache but not the device's volatile cache, so this costs speed and promises nothing; use sync = \"on-fsync\" or stronger, or write = \"passthrough\"".into()),
        );
    }
    if let (Some(m), SyncTrigger::Never) = (&sec.method, eff.sync) {
        r.warn(
            m.span(),
            format!("{what}: `method` has no effect with sync = \"never\""),
            Some("no sync is ever issued for these files; remove `method`".into()),
        );
    }
}

/// Whether every path glob `b` matches is matched by glob `a`. Sound, not
/// complete: it recognises the common cases (same glob, `**`, a literal
/// path, a directory prefix `dir/**`, a suffix `**/*.ext`, a basename
/// `**/name`).
pub(super) fn subsumes(a: &str, b: &str) -> bool {
    if a == b || a == "**" || a == "**/*" {
        return true;
    }
    if is_literal(b) {
        return compile(a).is_ok_and(|g| g.compile_matcher().is_match(b));
    }
    if let Some(prefix) = a.strip_suffix("/**") {
        if is_literal(prefix) && b.len() > prefix.len() && b.starts_with(prefix) {
            return b.as_bytes()[prefix.len()] == b'/';
        }
    }
    if let Some(last) = a.strip_prefix("**/") {
        if last.contains('/') {
            return false;
        }
        let b_last = b.rsplit('/').next().unwrap_or(b);
        if is_literal(last) {
            return b_last == last;
        }
        if let Some(suffix) = last.strip_prefix('*') {
            if !is_literal(suffix) {
                return false;
            }
            if is_literal(b_last) {
                return b_last.ends_with(suffix);
            }
            if let Some(b_suffix) = b_last.strip_prefix('*') {
                return is_literal(b_suffix) && b_suffix.ends_with(suffix);
            }
        }
    }
    false
}

/// Warns of rules (or globs) that can never apply because an earlier rule
/// takes every path they match.
fn shadowing(
    r: &mut Reporter<'_>,
    rules: &[Rule],
    globs: &[Vec<(String, Range<usize>)>],
    raw: &RawPolicy,
) {
    for (j, rule) in rules.iter().enumerate() {
        if globs[j].is_empty() {
            continue;
        }
        let mut shadowed = Vec::new();
        for (g, span) in &globs[j] {
            let by = (0..j).find_map(|i| {
                globs[i]
                    .iter()
                    .find(|(a, _)| subsumes(a, g))
                    .map(|(a, _)| (i, a.as_str()))
            });
            if let Some(by) = by {
                shadowed.push((g, span, by));
            }
        }
        if shadowed.is_empty() {
            continue;
        }
        if shadowed.len() == globs[j].len() {
            let (_, _, (i, a)) = shadowed[0];
            let at = span_of(&raw.rule[j].get_ref().name).unwrap_or(raw.rule[j].span());
            r.warn(
                at,
                format!(
                    "rule `{}` can never match: rule `{}` comes first and takes every path it matches (\"{a}\")",
                    rule.name, rules[i].name
                ),
                Some(format!(
                    "rules are tried in order and the first match wins; move `{}` above `{}`, or remove it",
                    rule.name, rules[i].name
                )),
            );
        } else {
            for (g, span, (i, a)) in shadowed {
                r.warn(
                    span.clone(),
                    format!(
                        "glob \"{g}\" of rule `{}` never applies: rule `{}` comes first and matches every path it does (\"{a}\")",
                        rule.name, rules[i].name
                    ),
                    Some("remove it, or move the rule above the one that takes its paths".into()),
                );
            }
        }
    }
}
