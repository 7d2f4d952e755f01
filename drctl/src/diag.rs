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
        let mut out = String::new();
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = writeln!(out, "{sev}[{}]: {}", self.code, self.message);
        let line_no = self.span.start.line;
        let gutter = line_no.to_string().len().max(2);
        let _ = writeln!(out, "{:gutter$}--> {}", "", self.location());
        if let Some(text) = self.file.line_text(line_no) {
            // Never echo a secret someone wrote in plain text.
            let masked;
            let text = if self.code == "E-SECRET-LITERAL" {
                let start = (self.span.start.col.max(1) - 1) as usize;
                let width = self.span.width_on_first_line() as usize;
                masked = text
                    .chars()
                    .enumerate()
                    .map(|(i, c)| {
                        if i >= start && i < start + width {
                            '*'
                        } else {
                            c
                        }
                    })
                    .collect::<String>();
                masked.as_str()
            } else {
                text
            };
            let _ = writeln!(out, "{:gutter$} |", "");
            let _ = writeln!(out, "{line_no:>gutter$} | {text}");
            let col = self.span.start.col.max(1) as usize;
            let width = self.span.width_on_first_line() as usize;
            let _ = writeln!(
                out,
                "{:gutter$} | {}{}",
                "",
                " ".repeat(col - 1),
                "^".repeat(width.min(text.len().saturating_sub(col - 1)).max(1))
            );
        }
        if let Some(h) = &self.hint {
            let _ = writeln!(out, "{:gutter$} = hint: {h}", "");
        }
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "severity": match self.severity { Severity::Error => "error", Severity::Warning => "warning" },
            "code": self.code,
            "file": self.file.path,
            "line": self.span.start.line,
            "column": self.span.start.col,
            "message": self.message,
            "hint": self.hint,
        })
    }
}

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
        self.items.extend(other.items);
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

    pub fn render(&self) -> String {
        self.items
            .iter()
            .map(Diagnostic::render)
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
}
