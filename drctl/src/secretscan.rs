//! Where secrets sit in the documents drctl reads: runbooks, check sets and
//! environment files.
//!
//! Two jobs, both over whole documents so that no action has to remember
//! them:
//!
//! - **Literal secrets are refused where they are written** ([`check_document`]):
//!   a value in a secret-shaped field (`password`, `token`, `api_key`,
//!   `Authorization`, … of any scalar type, also inside lists and nested
//!   maps) must be an `env:`/`file:` reference, and no string may carry a
//!   password inside a connection string or URL (`postgresql://u:pw@h/db`,
//!   `host=h password=pw`, `?password=pw`). Refusing at validation (which
//!   `validate`, `plan` and every run do first) is what keeps the value out
//!   of plans, journals (`step_started.inputs`) and reports: once a literal
//!   is accepted, every later output path would have to know it is secret.
//!   Messages name the field, never the value.
//! - **References are resolved at run start** ([`register_references`]), so
//!   the redactor knows every secret before step 1 and a value that only a
//!   later step uses is already masked if an earlier step prints it.

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use tracing::debug;

use crate::decode::Ctx;
use crate::environment::Environment;
use crate::runbook::Runbook;
use crate::secret::{is_secret_field, SecretRef};
use crate::yaml::{Kind, Node};

/// The hint of every literal-secret error.
const HINT_REF: &str =
    "secrets come by reference: `env:NAME` or `file:PATH`; never write the value here";

/// Reports every literal secret in a document (see the module doc), each
/// where it is written. `root` is the document's top node.
pub fn check_document(ctx: &mut Ctx<'_>, root: &Node) {
    walk(ctx, root, "");
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A list item's name in messages: its `id` when it has one (steps,
/// checks), else its index.
fn item_path(path: &str, i: usize, item: &Node) -> String {
    match item.get("id").and_then(Node::as_str) {
        Some(id) => join(path, id),
        None => format!("{path}[{i}]"),
    }
}

fn walk(ctx: &mut Ctx<'_>, node: &Node, path: &str) {
    match &node.kind {
        Kind::Map(entries) => {
            for (k, v) in entries {
                let key = k.key_text();
                let here = join(path, &key);
                if is_secret_field(&key) {
                    secret_value(ctx, v, &here);
                } else {
                    walk(ctx, v, &here);
                }
            }
        }
        Kind::Seq(items) => {
            for (i, it) in items.iter().enumerate() {
                walk(ctx, it, &item_path(path, i, it));
            }
        }
        Kind::Str(s) => {
            if let Some(what) = credentials_in(s) {
                ctx.error(
                    "E-SECRET-LITERAL",
                    node,
                    format!("`{path}` holds {what}"),
                    Some("take the password out and give it by reference in its own field, e.g. `{dsn: \"postgresql://USER@HOST/DB\", password: env:NAME}` (or `file:PATH`)".into()),
                );
            }
        }
        _ => {}
    }
}

/// Whether a string is a reference rather than a value: `env:`/`file:`,
/// or a whole `${...}` (what it resolves to is checked where it is
/// written: the environment, the parameters).
fn is_reference(s: &str) -> bool {
    SecretRef::parse(s).is_some() || crate::expr::is_pure_ref(s)
}

/// The value of a secret-shaped field. Booleans and nulls hold no secret;
/// a nested map is a structure, checked by the ordinary rules.
fn secret_value(ctx: &mut Ctx<'_>, v: &Node, here: &str) {
    let literal = match &v.kind {
        Kind::Str(s) => !is_reference(s),
        Kind::Int(_) | Kind::Float(_) => true,
        Kind::Bool(_) | Kind::Null => false,
        Kind::Seq(items) => {
            for (i, it) in items.iter().enumerate() {
                secret_value(ctx, it, &format!("{here}[{i}]"));
            }
            false
        }
        Kind::Map(_) => {
            walk(ctx, v, here);
            false
        }
    };
    if literal {
        let header = here
            .rsplit('.')
            .next()
            .is_some_and(|k| k.contains('-') || k.eq_ignore_ascii_case("authorization"));
        let hint = if header {
            format!(
                "{HINT_REF} (the variable or file holds the whole header value, e.g. `Bearer …`)"
            )
        } else {
            HINT_REF.to_string()
        };
        ctx.error(
            "E-SECRET-LITERAL",
            v,
            format!("`{here}` holds a literal secret"),
            Some(hint),
        );
    }
}

/// What kind of embedded credential `s` carries, if any: a password in a
/// URL's user info or query, or a `password=` in a key=value connection
/// string. A value starting with `$` is a reference (`$PGPW` in a shell
/// command, `${params.x}`), not a literal.
pub fn credentials_in(s: &str) -> Option<&'static str> {
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let after = &rest[i + 3..];
        let end = after
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(after.len());
        let url = &after[..end];
        let auth_end = url.find(['/', '?', '#']).unwrap_or(url.len());
        let authority = &url[..auth_end];
        if let Some(at) = authority.rfind('@') {
            if let Some((_, pw)) = authority[..at].split_once(':') {
                if !pw.is_empty() && !pw.starts_with('$') {
                    return Some("a URL with a password in it (`USER:PASSWORD@`)");
                }
            }
        }
        if let Some(q) = url.find('?') {
            let query = url[q + 1..].split('#').next().unwrap_or("");
            for pair in query.split('&') {
                if let Some((k, v)) = pair.split_once('=') {
                    if is_secret_field(k) && !v.is_empty() && !v.starts_with('$') {
                        return Some("a URL with a secret in its query");
                    }
                }
            }
        }
        rest = &after[end..];
    }
    if keyword_password(s) {
        return Some("a connection string with a password in it (`password=…`)");
    }
    None
}

/// `… password=VALUE …` (libpq key=value form, also `PGPASSWORD=…` and
/// `--password=…` in a command line): a key
/// ending in `password`, at the start of a word, followed by `=` and a
/// non-empty value.
fn keyword_password(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut from = 0;
    while let Some(i) = lower[from..].find("password") {
        let at = from + i;
        from = at + "password".len();
        // The key is the word this `password` ends.
        let mut start = at;
        while start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            start -= 1;
        }
        let word_start =
            start == 0 || matches!(bytes[start - 1], b' ' | b'\t' | b';' | b'"' | b'\'' | b'-');
        let tail = lower[from..].trim_start();
        let Some(value) = tail.strip_prefix('=') else {
            continue;
        };
        let value = value.trim_start();
        let empty = value.is_empty() || value.starts_with("''") || value.starts_with("\"\"");
        if word_start && !empty && !value.starts_with('$') {
            return true;
        }
    }
    false
}

/// Every `env:`/`file:` reference inside a JSON value.
fn collect(v: &Value, out: &mut BTreeSet<SecretRef>) {
    match v {
        Value::String(s) => {
            if let Some(r) = SecretRef::parse(s) {
                out.insert(r);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect(x, out)),
        Value::Object(o) => o.values().for_each(|x| collect(x, out)),
        _ => {}
    }
}

/// Resolves every secret reference of the runbook (its steps and the
/// run's parameters) and the environment, registering each value with the
/// redactor. Called before step 1 (and on resume), so output is masked
/// even when an earlier step prints a secret only a later step uses. A
/// reference that cannot be resolved now is left to the step that uses
/// it, which fails with the reason; nothing is printed here. Returns how
/// many values were registered.
pub fn register_references(
    rb: &Runbook,
    env: Option<&Environment>,
    params: &Map<String, Value>,
) -> usize {
    let mut refs = BTreeSet::new();
    for s in &rb.steps {
        collect(&s.with.to_json(), &mut refs);
    }
    for p in &rb.params {
        if let Some(d) = &p.default {
            collect(d, &mut refs);
        }
    }
    params.values().for_each(|v| collect(v, &mut refs));
    if let Some(e) = env {
        collect(&e.doc, &mut refs);
    }
    let mut n = 0;
    for r in &refs {
        match r.resolve() {
            Ok(_) => n += 1,
            Err(e) => debug!(reference = %r, error = %e, "secret not resolvable at run start"),
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_credentials() {
        for s in [
            "postgresql://drctl:hunter2@host/db",
            "postgres://u:p@h:5432/db?sslmode=require",
            "https://user:pass@example.com/x",
            "postgresql://u@h/db?sslmode=require&password=abc",
            "host=h port=5432 password=hunter2 dbname=x",
            "host=h password = 'hunter 2'",
            "password=hunter2",
            "PGPASSWORD=hunter2 psql",
            "--password=hunter2",
            "see https://hooks.example/x?token=abc",
        ] {
            assert!(credentials_in(s).is_some(), "{s}");
        }
        for s in [
            "postgresql://drctl@host/db",
            "https://example.com/a:b@c",
            "host=h dbname=x",
            "password:",
            "PGPASSWORD=$PGPW psql",
            "host=h password= ",
            "host=h password=''",
            "postgresql://u:${params.pw}@h/db",
            "https://h/?page=2",
        ] {
            assert!(credentials_in(s).is_none(), "{s}");
        }
    }
}
