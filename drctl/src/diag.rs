//! Located diagnostics for runbooks and environment files.
//!
//! An operator fixing a runbook at 3 a.m. wants every problem at once, each
//! with the file, line and column, the offending line and a hint. Validation
//! therefore pushes into a [`Diagnostics`] list instead of returning early.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::yaml::{SourceFile, Span};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem at one place. `code` is stable so it can be searched for.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: &'static str,
    pub file: Arc<SourceFile>,
    pub span: Span,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(
        code: &'static str,
        file: &Arc<SourceFile>,
        span: Span,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            file: file.clone(),
            span,
            message: message.into(),
            hint: None,
        }
    }

    pub fn warning(
        code: &'static str,
        file: &Arc<SourceFile>,
        span: Span,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, file, span, message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// `path:line:col`, the form editors and terminals turn into links;
    /// just `path` for a problem with the whole file (it has no line).
    pub fn location(&self) -> String {
        if self.span.start.line == 0 {
            return self.file.path.clone();
        }
        format!(
            "{}:{}:{}",
            self.file.path, self.span.start.line, self.span.start.col
        )
    }

    /// Renders in the style of rustc: message, location, the source line
    /// with a caret underline, and the hint.
    pub fn render(&self) -> String {
        self.render_masked(&Masks::of(std::slice::from_ref(self)))
    }

    /// Like [`Diagnostic::render`], with the source text under `masks` (the
    /// spans of literal secrets found in the same pass, in any file) shown
    /// as `*`: a line quoted for another problem must not echo a password
    /// written on it either.
    pub fn render_masked(&self, masks: &Masks<'_>) -> String {
        let mut out = String::new();
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let literals = &masks.literals;
        let _ = writeln!(
            out,
            "{sev}[{}]: {}",
            self.code,
            scrub(&self.message, literals)
        );
        let line_no = self.span.start.line;
        let gutter = line_no.to_string().len().max(2);
        let _ = writeln!(out, "{:gutter$}--> {}", "", self.location());
        if let Some(text) = self.file.line_text(line_no) {
            // Never echo a secret someone wrote in plain text.
            let ranges: Vec<(usize, usize)> = masks
                .spans
                .iter()
                .copied()
                .filter(|(f, _)| *f == self.file.path)
                .filter_map(|(_, s)| mask_range(s, line_no))
                .collect();
            let masked: String = text
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if ranges.iter().any(|(a, b)| i >= *a && i < *b) {
                        '*'
                    } else {
                        c
                    }
                })
                .collect();
            let col = self.span.start.col.max(1) as usize;
            let width = self.span.width_on_first_line() as usize;
            let (shown, caret_at, room) = window(&masked, col - 1);
            let _ = writeln!(out, "{:gutter$} |", "");
            let _ = writeln!(out, "{line_no:>gutter$} | {shown}");
            let _ = writeln!(
                out,
                "{:gutter$} | {}{}",
                "",
                " ".repeat(caret_at),
                "^".repeat(width.min(room).max(1))
            );
        }
        if let Some(h) = &self.hint {
            let _ = writeln!(out, "{:gutter$} = hint: {}", "", scrub(h, literals));
        }
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        self.to_json_masked(&Masks::of(std::slice::from_ref(self)))
    }

    /// [`Diagnostic::to_json`], with the text of literal secrets (`masks`)
    /// masked in the message and hint.
    pub fn to_json_masked(&self, masks: &Masks<'_>) -> serde_json::Value {
        let literals = &masks.literals;
        serde_json::json!({
            "severity": match self.severity { Severity::Error => "error", Severity::Warning => "warning" },
            "code": self.code,
            "file": self.file.path,
            "line": self.span.start.line,
            "column": self.span.start.col,
            "message": scrub(&self.message, literals),
            "hint": self.hint.as_deref().map(|h| scrub(h, literals)),
        })
    }
}

/// The code of a literal secret in a document: its span is masked wherever
/// a source line is quoted, and the same span is reported once.
pub const SECRET_LITERAL: &str = "E-SECRET-LITERAL";

/// What to hide when rendering diagnostics: the spans of literal secrets
/// (each quoted source line is masked under them), and their source text
/// (quotes trimmed), masked in messages and hints that quote a value back
/// (`quote the value: "12345678"`). Texts shorter than 4 characters are
/// not masked in messages: they would mask ordinary words.
pub struct Masks<'a> {
    spans: Vec<(&'a str, Span)>,
    literals: Vec<String>,
}

impl<'a> Masks<'a> {
    pub fn of(items: &'a [Diagnostic]) -> Masks<'a> {
        let secret = || items.iter().filter(|d| d.code == SECRET_LITERAL);
        let spans = secret().map(|d| (d.file.path.as_str(), d.span)).collect();
        let mut literals: Vec<String> = secret()
            .filter_map(|d| {
                let line = d.file.line_text(d.span.start.line)?;
                let (a, b) = mask_range(d.span, d.span.start.line)?;
                let text: String = line.chars().skip(a).take(b.saturating_sub(a)).collect();
                let text = text.trim().trim_matches(['"', '\'']).to_string();
                (text.chars().count() >= 4).then_some(text)
            })
            .collect();
        literals.sort_by_key(|l| std::cmp::Reverse(l.len()));
        Masks { spans, literals }
    }
}

fn scrub(text: &str, literals: &[String]) -> String {
    let mut out = text.to_string();
    for l in literals {
        out = out.replace(l.as_str(), "***");
    }
    out
}

/// The 0-based character range `span` covers on `line` (a multi-line span
/// covers the rest of its first line and whole middle lines).
fn mask_range(span: Span, line: u32) -> Option<(usize, usize)> {
    if line < span.start.line || line > span.end.line.max(span.start.line) {
        return None;
    }
    let a = if line == span.start.line {
        span.start.col.max(1) as usize - 1
    } else {
        0
    };
    let b = if line == span.end.line && span.end.col > 0 {
        (span.end.col as usize - 1).max(a + 1)
    } else {
        usize::MAX
    };
    Some((a, b))
}

/// Longest source line quoted whole; longer ones are cut around the
/// column (a 200 KB line of brackets once printed whole).
const MAX_QUOTED: usize = 160;

/// The part of `line` to quote for a problem at character `at`: the text,
/// where the caret goes in it, and how many characters follow the caret.
fn window(line: &str, at: usize) -> (String, usize, usize) {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= MAX_QUOTED {
        return (line.to_string(), at, chars.len().saturating_sub(at));
    }
    let at = at.min(chars.len());
    let start = at.saturating_sub(MAX_QUOTED / 3);
    let end = (start + MAX_QUOTED).min(chars.len());
    let mut shown = String::new();
    let mut caret = at - start;
    if start > 0 {
        shown.push('…');
        caret += 1;
    }
    shown.extend(&chars[start..end]);
    if end < chars.len() {
        shown.push('…');
    }
    (shown, caret, end.saturating_sub(at))
}

/// The code of a diagnostic for a file that does not exist.
pub const NOT_FOUND: &str = "E-NOT-FOUND";

#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Adds `d` unless the same problem (code, file, place) is already
    /// there: two decoders that look at one field report it once.
    pub fn push(&mut self, d: Diagnostic) {
        let dup = self
            .items
            .iter()
            .any(|x| x.code == d.code && x.span == d.span && x.file.path == d.file.path);
        if !dup {
            self.items.push(d);
        }
    }

    pub fn extend(&mut self, other: Diagnostics) {
        for d in other.items {
            self.push(d);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn error_count(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// Every diagnostic as JSON, literal secrets masked (see [`Masks`]).
    pub fn to_json(&self) -> Vec<serde_json::Value> {
        let masks = Masks::of(&self.items);
        self.items
            .iter()
            .map(|d| d.to_json_masked(&masks))
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }

    /// Orders by file and position so output reads top to bottom.
    pub fn sorted(mut self) -> Self {
        self.items.sort_by(|a, b| {
            (a.file.path.as_str(), a.span.start).cmp(&(b.file.path.as_str(), b.span.start))
        });
        self
    }

    /// Renders every diagnostic; the spans of all literal secrets among
    /// them are masked in every quoted line.
    pub fn render(&self) -> String {
        let masks = Masks::of(&self.items);
        self.items
            .iter()
            .map(|d| d.render_masked(&masks))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Suggests the closest known word for a typo (`timout` -> `timeout`).
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(&str, usize)> = None;
    for c in candidates {
        let d = edit_distance(word, c);
        let limit = (c.len().max(word.len()) / 3).max(1);
        if d <= limit && best.is_none_or(|(_, bd)| d < bd) {
            best = Some((c, d));
        }
    }
    best.map(|(c, _)| c)
}

/// Optimal-string-alignment distance: a swapped pair (`wiat`) is one edit,
/// as it is one slip of the fingers.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// An error and its causes on one line, each cause once: reqwest and
/// kube-rs keep the useful part (connection refused, timed out) in the
/// source chain, and the top-level message alone says only "error sending".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("timout", ["timeout", "retry", "needs"]),
            Some("timeout")
        );
        assert_eq!(did_you_mean("zzz", ["timeout", "retry"]), None);
        assert_eq!(did_you_mean("wiat", ["wait", "exec"]), Some("wait"));
        assert_eq!(did_you_mean("ulr", ["url", "region"]), Some("url"));
    }

    #[test]
    fn a_long_line_is_quoted_around_the_column() {
        let line = "x".repeat(10_000) + "BAD" + &"y".repeat(10_000);
        let (shown, caret, room) = super::window(&line, 10_000);
        assert!(
            shown.chars().count() <= super::MAX_QUOTED + 2,
            "{}",
            shown.len()
        );
        assert!(shown.starts_with('…') && shown.ends_with('…'));
        assert_eq!(shown.chars().skip(caret).take(3).collect::<String>(), "BAD");
        assert!(room >= 3);
        let (short, at, _) = super::window("abc", 1);
        assert_eq!((short.as_str(), at), ("abc", 1));
    }
}
