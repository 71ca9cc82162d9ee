//! Diagnostics: errors and warnings about a policy file, each with the file,
//! line and column of the offending value and, where one helps, a hint.

use std::fmt;
use std::ops::Range;

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// the policy is refused
    Error,
    /// the policy is accepted, but probably not what was meant
    Warning,
}

/// One error or warning about a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// error or warning
    pub severity: Severity,
    /// the policy file (or the built-in policy's name)
    pub origin: String,
    /// 1-based line, 0 when the problem has no position (an unreadable file)
    pub line: usize,
    /// 1-based column in characters, 0 when there is no position
    pub column: usize,
    /// what is wrong
    pub message: String,
    /// what to do about it
    pub hint: Option<String>,
    /// the source line and the width of the marked span
    snippet: Option<(String, usize)>,
}

/// A policy that was refused: every diagnostic found (at least one error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// errors and warnings, in file order
    pub diagnostics: Vec<Diagnostic>,
}

impl std::error::Error for PolicyError {}

impl PolicyError {
    pub(super) fn unreadable(origin: &str, e: &std::io::Error) -> Self {
        PolicyError {
            diagnostics: vec![Diagnostic {
                severity: Severity::Error,
                origin: origin.to_string(),
                line: 0,
                column: 0,
                message: format!("cannot read the policy file: {e}"),
                hint: Some("give the path of a readable TOML file (see policies/)".into()),
                snippet: None,
            }],
        }
    }

    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.diagnostics {
            writeln!(f, "{d}")?;
        }
        let n = self.errors().count();
        write!(
            f,
            "policy refused: {n} error{}",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl fmt::Display for Diagnostic {
    /// Rendered like a compiler message:
    ///
    /// ```text
    /// error: unknown key `syncc`
    ///   --> strict.toml:7:1
    ///    |
    ///  7 | syncc = "always"
    ///    | ^^^^^
    ///    = hint: did you mean `sync`?
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        writeln!(f, "{sev}: {}", self.message)?;
        if self.line == 0 {
            write!(f, "  --> {}", self.origin)?;
        } else {
            write!(f, "  --> {}:{}:{}", self.origin, self.line, self.column)?;
        }
        let gutter = self.line.to_string().len();
        if let Some((src, width)) = &self.snippet {
            let pad = " ".repeat(gutter);
            write!(
                f,
                "\n{pad} |\n{} | {src}\n{pad} | {}{}",
                self.line,
                " ".repeat(self.column.saturating_sub(1)),
                "^".repeat((*width).max(1))
            )?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n{} = hint: {h}", " ".repeat(gutter.max(1)))?;
        }
        Ok(())
    }
}

/// Builds diagnostics for one source text.
pub(super) struct Reporter<'a> {
    pub origin: &'a str,
    pub text: &'a str,
    pub out: Vec<Diagnostic>,
}

impl<'a> Reporter<'a> {
    pub fn new(origin: &'a str, text: &'a str) -> Self {
        Reporter {
            origin,
            text,
            out: Vec::new(),
        }
    }

    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>, hint: Option<String>) {
        self.push(Severity::Error, span, message.into(), hint);
    }

    pub fn warn(&mut self, span: Range<usize>, message: impl Into<String>, hint: Option<String>) {
        self.push(Severity::Warning, span, message.into(), hint);
    }

    pub fn has_errors(&self) -> bool {
        self.out.iter().any(|d| d.severity == Severity::Error)
    }

    fn push(
        &mut self,
        severity: Severity,
        span: Range<usize>,
        message: String,
        hint: Option<String>,
    ) {
        let (line, column, snippet) = locate(self.text, span);
        self.out.push(Diagnostic {
            severity,
            origin: self.origin.to_string(),
            line,
            column,
            message,
            hint,
            snippet,
        });
    }

    /// Diagnostics in file order (errors before warnings on one line).
    pub fn finish(mut self) -> Vec<Diagnostic> {
        self.out
            .sort_by_key(|d| (d.line, d.column, matches!(d.severity, Severity::Warning)));
        self.out
    }
}

/// The 1-based line of byte offset `at`.
pub(super) fn line_of(text: &str, at: usize) -> usize {
    text[..floor_char(text, at.min(text.len()))]
        .matches('\n')
        .count()
        + 1
}

/// 1-based line and column (in characters) of a byte span's start, with
/// the source line and the span's width on that line.
fn locate(text: &str, span: Range<usize>) -> (usize, usize, Option<(String, usize)>) {
    let start = floor_char(text, span.start.min(text.len()));
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = line_of(text, start);
    let column = text[line_start..start].chars().count() + 1;
    let src = text[line_start..line_end].trim_end_matches('\r');
    let end = floor_char(text, span.end.clamp(start, line_end.max(start)));
    let width = text[start..end.min(line_start + src.len()).max(start)]
        .chars()
        .count();
    (line, column, Some((src.replace('\t', " "), width)))
}

fn floor_char(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The closest of `candidates` to `word`, if close enough to be a likely
/// typo.
pub(super) fn nearest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let sub = prev[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The words in backticks of a serde message ("unknown field `x`, expected
/// one of `a`, `b`"): the first is the offending word, the rest the valid
/// ones.
pub(super) fn backticked(msg: &str) -> Vec<&str> {
    msg.split('`').skip(1).step_by(2).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_finds_typos_only() {
        let keys = ["write", "sync", "method", "dir-sync", "preallocate"];
        assert_eq!(nearest("syncc", &keys), Some("sync"));
        assert_eq!(nearest("dir_sync", &keys), Some("dir-sync"));
        assert_eq!(nearest("prealocate", &keys), Some("preallocate"));
        assert_eq!(nearest("Write", &keys), Some("write"));
        assert_eq!(nearest("colour", &keys), None);
    }

    #[test]
    fn locate_counts_lines_and_chars() {
        let text = "a = 1\nbé = \"x\"\n";
        let at = text.find('=').unwrap();
        assert_eq!(locate(text, at..at + 1).0, 1);
        let at = text.find("\"x\"").unwrap();
        let (line, col, snip) = locate(text, at..at + 3);
        assert_eq!((line, col), (2, 6));
        assert_eq!(snip, Some(("bé = \"x\"".to_string(), 3)));
    }

    #[test]
    fn rendering_points_at_the_value() {
        let text = "version = 1\n[defaults]\nsyncc = \"always\"\n";
        let mut r = Reporter::new("p.toml", text);
        let at = text.find("syncc").unwrap();
        r.error(
            at..at + 5,
            "unknown key `syncc`",
            Some("did you mean `sync`?".into()),
        );
        let d = &r.finish()[0];
        assert_eq!(
            d.to_string(),
            "error: unknown key `syncc`\n  --> p.toml:3:1\n  |\n3 | syncc = \"always\"\n  | ^^^^^\n  = hint: did you mean `sync`?"
        );
    }

    #[test]
    fn backticks() {
        assert_eq!(
            backticked("unknown field `syncc`, expected one of `sync`, `write`"),
            ["syncc", "sync", "write"]
        );
    }
}
