//! `${...}` expressions: references to params, the environment and earlier
//! steps' outputs, and the small conditions `wait.until` evaluates.
//!
//! Deliberately tiny: a DR runbook should be readable by a tired human, so
//! there is no arithmetic and no function calls; only dotted references,
//! string interpolation and one comparison per condition.
//!
//! Roots: `params.NAME`, `regions.REGION...`, `target...` (the region being
//! failed over to), `source...` (the environment's active region),
//! `env.name`, `env.active_region`, `dns...` (the environment's dns section), `run.id`, `run.mode`,
//! `run.target_region`, `run.operator`, `steps.ID.outputs.KEY`.

use serde_json::Value;
use thiserror::Error;

pub const ROOTS: &[&str] = &[
    "params", "regions", "target", "source", "env", "dns", "run", "steps",
];

#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Lit(String),
    /// A reference; `offset` is its byte position in the template, so errors
    /// can point inside a long string.
    Ref {
        path: Vec<String>,
        offset: usize,
    },
}

#[derive(Debug, Error, Clone, PartialEq)]
pub enum ExprError {
    #[error("unterminated `${{` at byte {0}")]
    Unterminated(usize),
    #[error("empty reference `${{}}`")]
    Empty,
    #[error("invalid reference `{0}`: use dotted names like params.region")]
    Invalid(String),
    #[error("unknown reference `{0}`")]
    Unknown(String),
    #[error("invalid condition `{0}`: expected `LEFT OP RIGHT` with OP one of == != < <= > >=")]
    BadCondition(String),
}

/// Splits a string into literal text and references. `$${` escapes `${`.
pub fn parse_template(s: &str) -> Result<Vec<Segment>, ExprError> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < s.len() {
        if s[i..].starts_with("$${") {
            lit.push_str("${");
            i += 3;
            continue;
        }
        if s[i..].starts_with("${") {
            let start = i;
            let end = s[i + 2..].find('}').ok_or(ExprError::Unterminated(start))? + i + 2;
            let inner = s[i + 2..end].trim();
            if inner.is_empty() {
                return Err(ExprError::Empty);
            }
            let path: Vec<String> = inner.split('.').map(|p| p.trim().to_string()).collect();
            let valid = path.iter().all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
            if !valid {
                return Err(ExprError::Invalid(inner.to_string()));
            }
            if !lit.is_empty() {
                out.push(Segment::Lit(std::mem::take(&mut lit)));
            }
            out.push(Segment::Ref {
                path,
                offset: start,
            });
            i = end + 1;
            continue;
        }
        let ch_len = s[i..].chars().next().map_or(1, char::len_utf8);
        lit.push_str(&s[i..i + ch_len]);
        i += ch_len;
        let _ = bytes;
    }
    if !lit.is_empty() {
        out.push(Segment::Lit(lit));
    }
    Ok(out)
}

/// Whether `s` is exactly one reference, so its value keeps its JSON type.
pub fn is_pure_ref(s: &str) -> bool {
    matches!(parse_template(s).as_deref(), Ok([Segment::Ref { .. }]))
}

pub fn has_refs(s: &str) -> bool {
    s.contains("${")
}

/// Every reference a value contains (for validation).
pub fn refs_in(s: &str) -> Result<Vec<(Vec<String>, usize)>, ExprError> {
    Ok(parse_template(s)?
        .into_iter()
        .filter_map(|seg| match seg {
            Segment::Ref { path, offset } => Some((path, offset)),
            Segment::Lit(_) => None,
        })
        .collect())
}

/// What references resolve against. Built by the engine from the run's
/// params, environment and the journaled outputs of finished steps.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub root: serde_json::Map<String, Value>,
}

impl Scope {
    pub fn lookup(&self, path: &[String]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        let mut cur = self.root.get(first)?;
        for p in rest {
            cur = match cur {
                Value::Object(o) => o.get(p)?,
                Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// Resolves a string: a pure reference keeps the referenced JSON value,
    /// anything else interpolates into a string.
    pub fn resolve_str(&self, s: &str) -> Result<Value, ExprError> {
        let segs = parse_template(s)?;
        if let [Segment::Ref { path, .. }] = segs.as_slice() {
            return self
                .lookup(path)
                .cloned()
                .ok_or_else(|| ExprError::Unknown(path.join(".")));
        }
        let mut out = String::new();
        for seg in segs {
            match seg {
                Segment::Lit(l) => out.push_str(&l),
                Segment::Ref { path, .. } => {
                    let v = self
                        .lookup(&path)
                        .ok_or_else(|| ExprError::Unknown(path.join(".")))?;
                    match v {
                        Value::String(s) => out.push_str(s),
                        Value::Null => {}
                        other => out.push_str(&other.to_string()),
                    }
                }
            }
        }
        Ok(Value::String(out))
    }

    /// Resolves every string inside a JSON value.
    pub fn resolve_value(&self, v: &Value) -> Result<Value, ExprError> {
        Ok(match v {
            Value::String(s) if has_refs(s) => self.resolve_str(s)?,
            Value::String(s) if s.contains("$${") => self.resolve_str(s)?,
            Value::Array(a) => Value::Array(
                a.iter()
                    .map(|x| self.resolve_value(x))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| Ok((k.clone(), self.resolve_value(x)?)))
                    .collect::<Result<_, ExprError>>()?,
            ),
            other => other.clone(),
        })
    }

    /// Evaluates `LEFT OP RIGHT`; numbers compare numerically, everything
    /// else as text.
    pub fn eval_condition(&self, cond: &str) -> Result<bool, ExprError> {
        let (l, op, r) = split_condition(cond)?;
        let lv = self.resolve_str(l.trim())?;
        let rv = self.resolve_str(r.trim())?;
        let as_num = |v: &Value| match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        let as_text = |v: &Value| match v {
            Value::String(s) => s.trim().to_string(),
            other => other.to_string(),
        };
        if let (Some(a), Some(b)) = (as_num(&lv), as_num(&rv)) {
            return Ok(compare(op, a, b));
        }
        Ok(compare(op, as_text(&lv), as_text(&rv)))
    }
}

fn compare<T: PartialOrd>(op: &str, a: T, b: T) -> bool {
    match op {
        "==" => a == b,
        "!=" => a != b,
        "<" => a < b,
        "<=" => a <= b,
        ">" => a > b,
        _ => a >= b,
    }
}

/// Splits a condition at its operator (outside `${...}`).
pub fn split_condition(cond: &str) -> Result<(&str, &'static str, &str), ExprError> {
    let mut depth = 0;
    let b = cond.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' => depth += 1,
            b'}' => depth -= 1,
            _ if depth == 0 => {
                for op in ["==", "!=", "<=", ">=", "<", ">"] {
                    if cond[i..].starts_with(op) {
                        let (l, r) = (&cond[..i], &cond[i + op.len()..]);
                        if l.trim().is_empty() || r.trim().is_empty() {
                            return Err(ExprError::BadCondition(cond.to_string()));
                        }
                        return Ok((l, op, r));
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(ExprError::BadCondition(cond.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        let v = json!({
            "params": {"region": "dr", "n": 3},
            "steps": {"a": {"outputs": {"timeline": 2}}},
        });
        Scope {
            root: v.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn templates() {
        let s = scope();
        assert_eq!(
            s.resolve_str("${steps.a.outputs.timeline}").unwrap(),
            json!(2)
        );
        assert_eq!(
            s.resolve_str("to ${params.region}!").unwrap(),
            json!("to dr!")
        );
        assert_eq!(s.resolve_str("$${x}").unwrap(), json!("${x}"));
        assert!(matches!(
            s.resolve_str("${params.nope}"),
            Err(ExprError::Unknown(_))
        ));
        assert!(parse_template("${a").is_err());
        assert!(parse_template("${a b}").is_err());
    }

    #[test]
    fn conditions() {
        let s = scope();
        assert!(s.eval_condition("${params.n} >= 3").unwrap());
        assert!(!s.eval_condition("${params.n} < 3").unwrap());
        assert!(s.eval_condition("${params.region} == dr").unwrap());
        assert!(s.eval_condition("nonsense").is_err());
    }
}
