//! Runbook parameters: declarations and their types. A value given with
//! `--param` is checked against its declaration before anything runs
//! (before the lease, before step 1), so `max_lag=banana` is refused at
//! the prompt, not at `promote` after the old primary was fenced.

use serde_json::Value;

use super::model::Param;
use super::parse::is_identifier;
use crate::decode::{Ctx, MapReader};
use crate::duration::parse_duration;
use crate::yaml::{Kind, Node};

pub const TYPES: &[&str] = &["string", "duration", "integer", "boolean", "enum"];

/// The values a parameter takes.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ParamType {
    /// Undeclared and without a typed default: taken as given.
    #[default]
    Any,
    String,
    Duration,
    Integer {
        min: Option<i64>,
        max: Option<i64>,
    },
    Boolean,
    Enum(Vec<String>),
}

impl ParamType {
    /// Short description for messages: "a duration", "an integer in 1..=10".
    pub fn describe(&self) -> String {
        match self {
            ParamType::Any | ParamType::String => "a string".into(),
            ParamType::Duration => "a duration (500ms, 30s, 5m, 1h30m)".into(),
            ParamType::Integer { min, max } => match (min, max) {
                (Some(a), Some(b)) => format!("an integer from {a} to {b}"),
                (Some(a), None) => format!("an integer of at least {a}"),
                (None, Some(b)) => format!("an integer of at most {b}"),
                (None, None) => "an integer".into(),
            },
            ParamType::Boolean => "true or false".into(),
            ParamType::Enum(v) => format!("one of: {}", v.join(", ")),
        }
    }

    /// Checks `v` and returns it typed (an integer as a JSON number, a
    /// boolean as a JSON boolean). `--param` values arrive as strings.
    pub fn check(&self, v: &Value) -> Result<Value, String> {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => return Ok(Value::Null),
            other => other.to_string(),
        };
        let bad = || format!("`{text}` is not {}", self.describe());
        match self {
            ParamType::Any => Ok(match v {
                // Keep numbers and booleans typed, as if written in YAML.
                Value::String(raw) => match serde_json::from_str::<Value>(raw) {
                    Ok(t @ (Value::Number(_) | Value::Bool(_))) => t,
                    _ => v.clone(),
                },
                _ => v.clone(),
            }),
            ParamType::String => Ok(Value::String(text)),
            ParamType::Duration => parse_duration(&text)
                .map(|_| Value::String(text.clone()))
                .map_err(|e| format!("{}: {e}", bad())),
            ParamType::Integer { min, max } => {
                let i: i64 = text.trim().parse().map_err(|_| bad())?;
                if min.is_some_and(|m| i < m) || max.is_some_and(|m| i > m) {
                    return Err(format!("{i} is out of range: expected {}", self.describe()));
                }
                Ok(Value::from(i))
            }
            ParamType::Boolean => match text.as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err(bad()),
            },
            ParamType::Enum(values) => {
                if values.contains(&text) {
                    Ok(Value::String(text))
                } else {
                    let near = crate::diag::did_you_mean(&text, values.iter().map(String::as_str));
                    Err(match near {
                        Some(c) => format!("{}; did you mean `{c}`?", bad()),
                        None => bad(),
                    })
                }
            }
        }
    }
}

/// The type a default implies when none is declared.
fn inferred(default: &Node) -> ParamType {
    match &default.kind {
        Kind::Str(s) if parse_duration(s).is_ok() => ParamType::Duration,
        Kind::Int(_) => ParamType::Integer {
            min: None,
            max: None,
        },
        Kind::Bool(_) => ParamType::Boolean,
        _ => ParamType::Any,
    }
}

fn decode_type(ctx: &mut Ctx<'_>, r: &mut MapReader<'_>, name: &str) -> Option<ParamType> {
    let ty_node = r.opt("type");
    let ty = ty_node.and_then(|n| ctx.one_of(n, TYPES, &format!("parameter `{name}`: type")));
    let min_node = r.opt("min");
    let max_node = r.opt("max");
    let int = |ctx: &mut Ctx<'_>, n: Option<&Node>, what: &str| match n.map(|n| &n.kind) {
        Some(Kind::Int(i)) => Some(*i),
        Some(_) => {
            ctx.expected(n?, "an integer", &format!("parameter `{name}`: {what}"));
            None
        }
        None => None,
    };
    let min = int(ctx, min_node, "min");
    let max = int(ctx, max_node, "max");
    let values_node = r.opt("values");
    let values = values_node
        .and_then(|n| ctx.string_list(n, &format!("parameter `{name}`: values")))
        .map(|v| v.into_iter().map(|(s, _)| s).collect::<Vec<_>>());
    let ty = ty
        .or(values.as_ref().map(|_| "enum"))
        .or((min.is_some() || max.is_some()).then_some("integer"));
    if let (Some(n), false) = (min_node.or(max_node), ty == Some("integer")) {
        ctx.error(
            "E-VALUE",
            n,
            format!("parameter `{name}`: `min`/`max` apply to `type: integer` only"),
            None,
        );
    }
    if let (Some(n), false) = (values_node, ty == Some("enum")) {
        ctx.error(
            "E-VALUE",
            n,
            format!("parameter `{name}`: `values` apply to `type: enum` only"),
            None,
        );
    }
    if let (Some(a), Some(b), Some(n)) = (min, max, max_node) {
        if a > b {
            ctx.error(
                "E-VALUE",
                n,
                format!("parameter `{name}`: max {b} is below min {a}"),
                None,
            );
        }
    }
    Some(match ty? {
        "string" => ParamType::String,
        "duration" => ParamType::Duration,
        "integer" => ParamType::Integer { min, max },
        "boolean" => ParamType::Boolean,
        _ => match values {
            Some(v) if !v.is_empty() => ParamType::Enum(v),
            _ => {
                ctx.error(
                    "E-MISSING-FIELD",
                    ty_node.unwrap_or(r.node()),
                    format!("parameter `{name}`: an enum needs `values`"),
                    Some("e.g. `values: [fast, safe]`".into()),
                );
                return None;
            }
        },
    })
}

pub fn decode_params(ctx: &mut Ctx<'_>, node: &Node) -> Vec<Param> {
    let Some(entries) = node.as_map() else {
        ctx.expected(node, "a mapping of parameter names", "params");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in entries {
        let name = k.key_text();
        if !is_identifier(&name) {
            ctx.error(
                "E-NAME",
                k,
                format!("parameter name `{name}` is not an identifier"),
                Some("use letters, digits and `_`".into()),
            );
            continue;
        }
        let mut p = Param {
            name: name.clone(),
            default: None,
            description: None,
            required: false,
            secret: false,
            ty: ParamType::Any,
            span: k.span,
        };
        let mut default_node = None;
        let mut declared = None;
        match &v.kind {
            Kind::Map(_) => {
                let Some(mut r) = MapReader::new(ctx, v, format!("parameter `{name}`")) else {
                    continue;
                };
                default_node = r.opt("default");
                p.default = default_node.map(Node::to_json);
                p.description = r
                    .opt("description")
                    .and_then(|n| ctx.string(n, "description"));
                p.required = r
                    .opt("required")
                    .and_then(|n| ctx.boolean(n, "required"))
                    .unwrap_or(false);
                p.secret = r
                    .opt("secret")
                    .and_then(|n| ctx.boolean(n, "secret"))
                    .unwrap_or(false);
                declared = decode_type(ctx, &mut r, &name);
                r.finish(ctx);
                // A secret parameter, or one named like a secret, takes a
                // reference as its default: any literal (a number too) is
                // refused.
                if p.secret || crate::secret::is_secret_field(&name) {
                    let literal = default_node.is_some_and(|d| match &d.kind {
                        Kind::Str(s) => crate::secret::SecretRef::parse(s).is_none(),
                        Kind::Int(_) | Kind::Float(_) => true,
                        _ => false,
                    });
                    if let (true, Some(d)) = (literal, default_node) {
                        ctx.error(
                            "E-SECRET-LITERAL",
                            d,
                            format!(
                                "parameter `{name}` is secret but its default is a literal value"
                            ),
                            Some("use a reference: `env:NAME` or `file:PATH`".into()),
                        );
                    }
                }
            }
            Kind::Seq(_) => ctx.expected(
                v,
                "a default value or a mapping",
                &format!("parameter `{name}`"),
            ),
            _ => {
                default_node = Some(v);
                p.default = Some(v.to_json());
            }
        }
        p.ty = match (declared, default_node) {
            (Some(t), _) => t,
            (None, Some(d)) if !p.secret => inferred(d),
            _ => ParamType::Any,
        };
        if let (Some(d), Some(dv)) = (default_node, &p.default) {
            if let Err(e) = p.ty.check(dv) {
                ctx.error(
                    "E-VALUE",
                    d,
                    format!("parameter `{name}`: default {e}"),
                    Some(format!("a default must be {}", p.ty.describe())),
                );
            }
        }
        out.push(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_against_the_type() {
        let d = ParamType::Duration;
        assert!(d.check(&Value::from("30s")).is_ok());
        assert!(d.check(&Value::from("banana")).is_err());
        let i = ParamType::Integer {
            min: Some(1),
            max: Some(10),
        };
        assert_eq!(i.check(&Value::from("3")), Ok(Value::from(3)));
        assert!(i
            .check(&Value::from("11"))
            .unwrap_err()
            .contains("out of range"));
        assert!(i.check(&Value::from("x")).is_err());
        let e = ParamType::Enum(vec!["fast".into(), "safe".into()]);
        assert!(e
            .check(&Value::from("sfae"))
            .unwrap_err()
            .contains("did you mean `safe`"));
        assert_eq!(
            ParamType::Boolean.check(&Value::from("true")),
            Ok(Value::Bool(true))
        );
        assert_eq!(ParamType::Any.check(&Value::from("5")), Ok(Value::from(5)));
    }
}
