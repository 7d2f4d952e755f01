//! Reading located YAML into typed values while collecting every problem.
//!
//! Serde stops at the first error and can't say "did you mean"; a DR
//! runbook deserves better. [`MapReader`] tracks which keys a decoder asked
//! for, so unknown keys (typos) are reported with a suggestion, and missing
//! or mistyped values are reported where they are, all in one pass.

use std::sync::Arc;
use std::time::Duration;

use crate::diag::{did_you_mean, Diagnostic, Diagnostics};
use crate::duration::parse_duration;
use crate::yaml::{Kind, Node, SourceFile};

/// Shared decoding context: the file and where problems go.
pub struct Ctx<'a> {
    pub file: &'a Arc<SourceFile>,
    pub diags: &'a mut Diagnostics,
    /// During validation a typed field may hold a `${...}` reference whose
    /// type is only known at run time; such fields are checked then.
    pub defer_refs: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(file: &'a Arc<SourceFile>, diags: &'a mut Diagnostics) -> Self {
        Ctx {
            file,
            diags,
            defer_refs: false,
        }
    }

    /// True when `node` is a reference to be checked after resolution.
    pub fn deferred(&self, node: &Node) -> bool {
        self.defer_refs && node.as_str().is_some_and(crate::expr::is_pure_ref)
    }

    /// A field that takes a secret: it must be an `env:`/`file:` reference
    /// (or, while validating, a `${...}` that will resolve to one).
    pub fn secret_ref(&mut self, node: &Node, context: &str) -> Option<crate::secret::SecretRef> {
        if self.deferred(node) {
            return None;
        }
        // A number is a literal secret too; `expected` would quote it back.
        let parsed = node.as_str().and_then(crate::secret::SecretRef::parse);
        match parsed {
            Some(r) => Some(r),
            None => {
                self.error(
                    "E-SECRET-LITERAL",
                    node,
                    format!("{context}: secrets must be references"),
                    Some(
                        "use `env:NAME` or `file:PATH`; never write a secret's value in a runbook"
                            .into(),
                    ),
                );
                None
            }
        }
    }

    pub fn error(
        &mut self,
        code: &'static str,
        node: &Node,
        msg: impl Into<String>,
        hint: Option<String>,
    ) {
        let mut d = Diagnostic::error(code, self.file, node.span, msg);
        d.hint = hint;
        self.diags.push(d);
    }

    pub fn expected(&mut self, node: &Node, what: &str, context: &str) {
        let hint = match (&node.kind, what) {
            (Kind::Int(_) | Kind::Float(_) | Kind::Bool(_) | Kind::Null, "a string") => {
                Some(format!("quote the value: \"{node}\""))
            }
            (_, "a duration") => Some("use a number with a unit: 500ms, 30s, 5m, 1h, 1h30m".into()),
            _ => None,
        };
        self.error(
            "E-TYPE",
            node,
            format!("{context}: expected {what}, found {}", node.type_name()),
            hint,
        );
    }

    pub fn string(&mut self, node: &Node, context: &str) -> Option<String> {
        match &node.kind {
            Kind::Str(s) => Some(s.clone()),
            _ => {
                self.expected(node, "a string", context);
                None
            }
        }
    }

    pub fn boolean(&mut self, node: &Node, context: &str) -> Option<bool> {
        if self.deferred(node) {
            return None;
        }
        match node.kind {
            Kind::Bool(b) => Some(b),
            _ => {
                self.expected(node, "true or false", context);
                None
            }
        }
    }

    pub fn uint(&mut self, node: &Node, context: &str) -> Option<u64> {
        if self.deferred(node) {
            return None;
        }
        match node.kind {
            Kind::Int(i) if i >= 0 => Some(i as u64),
            _ => {
                self.expected(node, "a non-negative integer", context);
                None
            }
        }
    }

    /// A TCP port, 1 to 65535, located at the value when wrong.
    pub fn port(&mut self, node: &Node, context: &str) -> Option<u16> {
        if self.deferred(node) {
            return None;
        }
        let hint = Some("a TCP port is a number from 1 to 65535".to_string());
        match node.kind {
            Kind::Int(i) if (1..=65535).contains(&i) => Some(i as u16),
            Kind::Int(i) => {
                self.error(
                    "E-VALUE",
                    node,
                    format!("{context}: port {i} is out of range"),
                    hint,
                );
                None
            }
            _ => {
                self.error(
                    "E-TYPE",
                    node,
                    format!(
                        "{context}: expected a port number, found {}",
                        node.type_name()
                    ),
                    hint,
                );
                None
            }
        }
    }

    pub fn float(&mut self, node: &Node, context: &str) -> Option<f64> {
        if self.deferred(node) {
            return None;
        }
        match node.kind {
            Kind::Int(i) => Some(i as f64),
            Kind::Float(f) => Some(f),
            _ => {
                self.expected(node, "a number", context);
                None
            }
        }
    }

    pub fn duration(&mut self, node: &Node, context: &str) -> Option<Duration> {
        if self.deferred(node) {
            return None;
        }
        match &node.kind {
            Kind::Str(s) => match parse_duration(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.error(
                        "E-DURATION",
                        node,
                        format!("{context}: invalid duration `{s}`: {e}"),
                        Some("use a number with a unit: 500ms, 30s, 5m, 1h, 1h30m".into()),
                    );
                    None
                }
            },
            Kind::Int(i) => {
                self.error(
                    "E-DURATION",
                    node,
                    format!("{context}: a duration needs a unit"),
                    Some(format!(
                        "write `{i}s` for seconds or `{i}ms` for milliseconds"
                    )),
                );
                None
            }
            _ => {
                self.expected(node, "a duration", context);
                None
            }
        }
    }

    pub fn string_list(&mut self, node: &Node, context: &str) -> Option<Vec<(String, Node)>> {
        match &node.kind {
            Kind::Seq(items) => {
                let mut out = Vec::new();
                for it in items {
                    if let Some(s) = self.string(it, context) {
                        out.push((s, it.clone()));
                    }
                }
                Some(out)
            }
            _ => {
                self.expected(node, "a list of strings", context);
                None
            }
        }
    }

    /// One of a fixed set of words, with a suggestion when misspelt.
    pub fn one_of(
        &mut self,
        node: &Node,
        choices: &[&'static str],
        context: &str,
    ) -> Option<&'static str> {
        if self.deferred(node) {
            return None;
        }
        let s = self.string(node, context)?;
        if let Some(c) = choices.iter().find(|c| **c == s) {
            return Some(c);
        }
        let hint = match did_you_mean(&s, choices.iter().copied()) {
            Some(c) => format!("did you mean `{c}`? (one of: {})", choices.join(", ")),
            None => format!("one of: {}", choices.join(", ")),
        };
        self.error(
            "E-VALUE",
            node,
            format!("{context}: unknown value `{s}`"),
            Some(hint),
        );
        None
    }
}

/// Reads a mapping key by key; call [`MapReader::finish`] to report keys
/// that no decoder asked for.
pub struct MapReader<'n> {
    node: &'n Node,
    what: String,
    known: Vec<&'static str>,
}

impl<'n> MapReader<'n> {
    /// `None` (with an error reported) when `node` is not a mapping.
    pub fn new(ctx: &mut Ctx<'_>, node: &'n Node, what: impl Into<String>) -> Option<Self> {
        let what = what.into();
        if node.as_map().is_none() {
            ctx.expected(node, "a mapping", &what);
            return None;
        }
        Some(MapReader {
            node,
            what,
            known: Vec::new(),
        })
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    pub fn node(&self) -> &'n Node {
        self.node
    }

    /// An optional key. Explicit `null` counts as absent.
    pub fn opt(&mut self, key: &'static str) -> Option<&'n Node> {
        self.known.push(key);
        self.node.get(key).filter(|n| n.kind != Kind::Null)
    }

    /// A required key; reports a missing-field error at the mapping.
    pub fn req(&mut self, ctx: &mut Ctx<'_>, key: &'static str) -> Option<&'n Node> {
        let v = self.opt(key);
        if v.is_none() {
            ctx.error(
                "E-MISSING-FIELD",
                self.node,
                format!("{}: missing required field `{key}`", self.what),
                Some(format!("add `{key}:` to this {}", self.what)),
            );
        }
        v
    }

    /// Marks keys as known without reading them (read elsewhere).
    pub fn allow(&mut self, keys: &[&'static str]) {
        self.known.extend_from_slice(keys);
    }

    /// Reports every key that was not asked for, with a suggestion.
    pub fn finish(self, ctx: &mut Ctx<'_>) {
        let Some(entries) = self.node.as_map() else {
            return;
        };
        for (k, _) in entries {
            let key = k.key_text();
            if self.known.contains(&key.as_str()) {
                continue;
            }
            let hint = match did_you_mean(&key, self.known.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("known fields: {}", self.known.join(", ")),
            };
            ctx.error(
                "E-UNKNOWN-FIELD",
                k,
                format!("{}: unknown field `{key}`", self.what),
                Some(hint),
            );
        }
    }
}
