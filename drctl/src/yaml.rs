//! A YAML tree that remembers where every node came from.
//!
//! Runbook errors must point at `file:line:column`, and parsing YAML into an
//! untyped value first loses that. So we build our own small tree from the
//! parser's events, keeping the span of every scalar, sequence and mapping,
//! and resolving plain scalars with YAML 1.2's core schema. Duplicate keys are
//! reported here, since a later decoder would silently keep only one of them.

use std::fmt;
use std::sync::Arc;

use saphyr_parser::{Event, Parser, ScalarStyle, Span as YSpan};

use crate::diag::{Diagnostic, Diagnostics};

/// A source file kept in memory so diagnostics can show the offending line.
#[derive(Debug)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

impl SourceFile {
    pub fn new(path: impl Into<String>, text: impl Into<String>) -> Arc<Self> {
        Arc::new(SourceFile {
            path: path.into(),
            text: text.into(),
        })
    }

    /// The text of 1-based line `line`, without its newline.
    pub fn line_text(&self, line: u32) -> Option<&str> {
        self.text.lines().nth((line as usize).checked_sub(1)?)
    }
}

/// Reads a file for parsing: its text, and the SHA-256 of its bytes (what
/// journals record, so resume can tell the file changed). An unreadable
/// file becomes a diagnostic at 1:1, so output stays uniform.
pub fn load_source(
    path: &std::path::Path,
    what: &str,
    hint: &str,
) -> Result<(Arc<SourceFile>, String), Diagnostics> {
    use sha2::{Digest, Sha256};
    let display = path.display().to_string();
    let fail_as = |code: &'static str, msg: String| {
        let file = SourceFile::new(display.clone(), "");
        let mut d = Diagnostics::default();
        d.push(Diagnostic::error(code, &file, Span::default(), msg).with_hint(hint));
        d
    };
    let fail = |msg: String| fail_as("E-IO", msg);
    // A file that is not there is its own code: the CLI exits not-found
    // (17) when that is the only problem, as for a run that is not there.
    let bytes = std::fs::read(path).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound {
            crate::diag::NOT_FOUND
        } else {
            "E-IO"
        };
        fail_as(code, format!("cannot read {what}: {e}"))
    })?;
    let hash = hex::encode(Sha256::digest(&bytes));
    let text = String::from_utf8(bytes).map_err(|_| fail(format!("{what} is not valid UTF-8")))?;
    Ok((SourceFile::new(display, text), hash))
}

/// A 1-based line and column position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

/// Where a node starts and ends (end exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: Pos,
    pub end: Pos,
}

impl Span {
    fn from_yaml(s: YSpan) -> Self {
        Span {
            start: Pos {
                line: s.start.line() as u32,
                col: s.start.col() as u32 + 1,
            },
            end: Pos {
                line: s.end.line() as u32,
                col: s.end.col() as u32 + 1,
            },
        }
    }

    /// The width to underline on the start line (at least one column).
    pub fn width_on_first_line(&self) -> u32 {
        if self.end.line == self.start.line && self.end.col > self.start.col {
            self.end.col - self.start.col
        } else {
            1
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A string; `plain` tells whether it was written without quotes, so a
    /// hint can suggest quoting when a plain scalar resolved unexpectedly.
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: Kind,
    pub span: Span,
}

impl Node {
    pub fn new(kind: Kind, span: Span) -> Self {
        Node { kind, span }
    }

    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            Kind::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            Kind::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// Looks a key up in a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// Converts to JSON, dropping locations (used once a node is validated).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Int(i) => Value::from(*i),
            Kind::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Kind::Str(s) => Value::String(s.clone()),
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.key_text(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// A mapping key rendered as text (keys are almost always strings).
    pub fn key_text(&self) -> String {
        match &self.kind {
            Kind::Str(s) => s.clone(),
            Kind::Int(i) => i.to_string(),
            Kind::Bool(b) => b.to_string(),
            Kind::Float(f) => f.to_string(),
            Kind::Null => "null".into(),
            Kind::Seq(_) | Kind::Map(_) => "<complex key>".into(),
        }
    }

    /// Builds a node from JSON with a synthetic location, so values computed
    /// at run time can go through the same decoders as written ones.
    pub fn from_json(v: &serde_json::Value, span: Span) -> Node {
        use serde_json::Value;
        let kind = match v {
            Value::Null => Kind::Null,
            Value::Bool(b) => Kind::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Kind::Int(i),
                None => Kind::Float(n.as_f64().unwrap_or(0.0)),
            },
            Value::String(s) => Kind::Str(s.clone()),
            Value::Array(a) => Kind::Seq(a.iter().map(|x| Node::from_json(x, span)).collect()),
            Value::Object(o) => Kind::Map(
                o.iter()
                    .map(|(k, x)| {
                        (
                            Node::new(Kind::Str(k.clone()), span),
                            Node::from_json(x, span),
                        )
                    })
                    .collect(),
            ),
        };
        Node::new(kind, span)
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Str(s) => write!(f, "{s}"),
            _ => write!(f, "{}", self.to_json()),
        }
    }
}

/// Resolves a plain scalar with YAML 1.2's core schema.
fn resolve_plain(text: &str) -> Kind {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        "true" | "True" | "TRUE" => return Kind::Bool(true),
        "false" | "False" | "FALSE" => return Kind::Bool(false),
        _ => {}
    }
    if let Ok(i) = text.parse::<i64>() {
        return Kind::Int(i);
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Kind::Int(i);
        }
    }
    let looks_numeric = text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
        && text.chars().any(|c| c.is_ascii_digit());
    if looks_numeric {
        if let Ok(f) = text.parse::<f64>() {
            return Kind::Float(f);
        }
    }
    Kind::Str(text.to_string())
}

enum Frame {
    Seq(Vec<Node>, Span, usize),
    Map(Vec<(Node, Node)>, Option<Node>, Span, usize),
}

/// At most this many nodes may be produced by expanding aliases, in total.
/// A runbook needs a handful; a "billion laughs" file (nested aliases that
/// double at each level) needs billions, and would exhaust memory.
pub const MAX_ALIAS_NODES: usize = 100_000;
/// At most this many nodes in one file (text that large is not a runbook).
pub const MAX_NODES: usize = 5_000_000;

impl Node {
    /// Nodes in this subtree, itself included.
    fn count(&self) -> usize {
        1 + match &self.kind {
            Kind::Seq(items) => items.iter().map(Node::count).sum(),
            Kind::Map(entries) => entries.iter().map(|(k, v)| k.count() + v.count()).sum(),
            _ => 0,
        }
    }
}

/// Parses one YAML document into a located tree. Syntax errors and
/// duplicate keys go into `diags`; `None` means the text is not usable.
pub fn parse(file: &Arc<SourceFile>, diags: &mut Diagnostics) -> Option<Node> {
    let mut parser = Parser::new_from_str(&file.text);
    let mut stack: Vec<Frame> = Vec::new();
    // Anchored nodes with their subtree sizes (counted once, when defined).
    let mut anchors: std::collections::HashMap<usize, (Node, usize)> = Default::default();
    let mut root: Option<Node> = None;
    let mut documents = 0;
    let mut nodes = 0usize;
    let mut alias_nodes = 0usize;

    loop {
        let (event, yspan) = match parser.next_event() {
            None => break,
            Some(Ok(ev)) => ev,
            Some(Err(e)) => {
                let m = e.marker();
                let pos = Pos {
                    line: m.line() as u32,
                    col: m.col() as u32 + 1,
                };
                diags.push(
                    Diagnostic::error(
                        "E-YAML",
                        file,
                        Span {
                            start: pos,
                            end: pos,
                        },
                        format!("YAML syntax error: {}", e.info()),
                    )
                    .with_hint("check indentation and quoting around this position"),
                );
                return None;
            }
        };
        let span = Span::from_yaml(yspan);
        let finished: Option<(Node, usize)> = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => None,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    diags.push(
                        Diagnostic::error(
                            "E-YAML",
                            file,
                            span,
                            "a file holds exactly one YAML document",
                        )
                        .with_hint("split the documents into separate files"),
                    );
                    return None;
                }
                None
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some((n, size)) => {
                    alias_nodes = alias_nodes.saturating_add(*size);
                    if alias_nodes > MAX_ALIAS_NODES {
                        diags.push(
                            Diagnostic::error(
                                "E-YAML",
                                file,
                                span,
                                format!("aliases expand to more than {MAX_ALIAS_NODES} nodes; refusing to expand further"),
                            )
                            .with_hint("nested aliases multiply (\"billion laughs\"); write the values out, or use fewer levels of aliases"),
                        );
                        return None;
                    }
                    let mut n = n.clone();
                    n.span = span;
                    Some((n, 0))
                }
                None => {
                    diags.push(Diagnostic::error(
                        "E-YAML",
                        file,
                        span,
                        "alias refers to an unknown anchor",
                    ));
                    return None;
                }
            },
            Event::Scalar(text, style, anchor, _tag) => {
                let is_key = matches!(stack.last(), Some(Frame::Map(_, None, _, _)));
                if is_key && style == ScalarStyle::Plain && text == "<<" {
                    diags.push(
                        Diagnostic::error(
                            "E-YAML",
                            file,
                            span,
                            "merge keys (`<<`) are not supported",
                        )
                        .with_hint(
                            "write the keys out (an alias of a whole value, `key: *anchor`, works)",
                        ),
                    );
                    return None;
                }
                let kind = match style {
                    ScalarStyle::Plain => resolve_plain(&text),
                    _ => Kind::Str(text.into_owned()),
                };
                Some((Node::new(kind, span), anchor))
            }
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq(Vec::new(), span, anchor));
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map(Vec::new(), None, span, anchor));
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(items, start, anchor)) => Some((
                    Node::new(
                        Kind::Seq(items),
                        Span {
                            start: start.start,
                            end: span.end,
                        },
                    ),
                    anchor,
                )),
                _ => None,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(entries, _, start, anchor)) => Some((
                    Node::new(
                        Kind::Map(entries),
                        Span {
                            start: start.start,
                            end: span.end,
                        },
                    ),
                    anchor,
                )),
                _ => None,
            },
        };
        let Some((node, anchor)) = finished else {
            continue;
        };
        nodes += 1;
        if nodes > MAX_NODES {
            diags.push(Diagnostic::error(
                "E-YAML",
                file,
                span,
                format!("the file has more than {MAX_NODES} YAML nodes"),
            ));
            return None;
        }
        if anchor != 0 {
            let size = node.count();
            anchors.insert(anchor, (node.clone(), size));
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq(items, _, _)) => items.push(node),
            Some(Frame::Map(entries, pending, _, _)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => {
                    if let Some((first, _)) = entries.iter().find(|(k, _)| k.kind == key.kind) {
                        diags.push(
                            Diagnostic::error(
                                "E-DUPLICATE-KEY",
                                file,
                                key.span,
                                format!("duplicate key `{}`", key.key_text()),
                            )
                            .with_hint(format!(
                                "`{}` is already set at line {}; keep one of them",
                                key.key_text(),
                                first.span.start.line
                            )),
                        );
                    } else {
                        entries.push((key, node));
                    }
                }
            },
        }
    }
    Some(root.unwrap_or_else(|| Node::new(Kind::Null, Span::default())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Node {
        let f = SourceFile::new("t.yaml", text);
        let mut d = Diagnostics::default();
        let n = parse(&f, &mut d).expect("parses");
        assert!(d.is_empty(), "{}", d.render());
        n
    }

    #[test]
    fn keeps_locations_and_types() {
        let n = parse_ok("a: 1\nb:\n  - x\n  - 'true'\nc: true\nd: 2s\n");
        let b = n.get("b").unwrap();
        assert_eq!(b.as_seq().unwrap()[1].kind, Kind::Str("true".into()));
        assert_eq!(b.as_seq().unwrap()[1].span.start, Pos { line: 4, col: 5 });
        assert_eq!(n.get("a").unwrap().kind, Kind::Int(1));
        assert_eq!(n.get("c").unwrap().kind, Kind::Bool(true));
        assert_eq!(n.get("d").unwrap().kind, Kind::Str("2s".into()));
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let f = SourceFile::new("t.yaml", "a: 1\nb: 2\na: 3\n");
        let mut d = Diagnostics::default();
        parse(&f, &mut d);
        assert_eq!(d.len(), 1);
        assert!(d.render().contains("t.yaml:3:1"), "{}", d.render());
    }

    #[test]
    fn syntax_error_has_position() {
        let f = SourceFile::new("t.yaml", "a: [1, 2\nb: 3\n");
        let mut d = Diagnostics::default();
        assert!(parse(&f, &mut d).is_none());
        assert!(d.render().contains("t.yaml:"), "{}", d.render());
    }

    #[test]
    fn an_alias_bomb_is_refused_quickly_and_located() {
        // 9 levels of 9 aliases each: 9^9 ≈ 387 million nodes if expanded.
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let f = SourceFile::new("bomb.yaml", text);
        let mut d = Diagnostics::default();
        let start = std::time::Instant::now();
        assert!(parse(&f, &mut d).is_none());
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        let r = d.render();
        assert!(
            r.contains("aliases expand to more than") && r.contains("bomb.yaml:"),
            "{r}"
        );
    }

    #[test]
    fn merge_keys_are_refused_with_a_reason() {
        let f = SourceFile::new("m.yaml", "base: &b {x: 1}\nuse:\n  <<: *b\n  y: 2\n");
        let mut d = Diagnostics::default();
        assert!(parse(&f, &mut d).is_none());
        assert!(d.render().contains("m.yaml:3:3"), "{}", d.render());
        assert!(d.render().contains("merge keys"), "{}", d.render());
        // A quoted "<<" is an ordinary key.
        let f = SourceFile::new("q.yaml", "'<<': 1\n");
        let mut d = Diagnostics::default();
        assert!(parse(&f, &mut d).is_some());
    }

    #[test]
    fn anchors_are_expanded() {
        let n = parse_ok("x: &a {k: 1}\ny: *a\n");
        assert_eq!(n.get("y").unwrap().get("k").unwrap().kind, Kind::Int(1));
    }
}
