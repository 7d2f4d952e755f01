//! Secrets by reference, and redaction of their values everywhere.
//!
//! Runbooks and environment files hold only references (`env:NAME`,
//! `file:PATH`); values are resolved when a step executes. Every resolved
//! value is registered with a process-wide redactor that the journal writer,
//! the log writer, command output capture and the CLI printer all pass text
//! through, so a secret a command happens to print is masked too.

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use std::sync::RwLock;

use thiserror::Error;

pub const MASK: &str = "***";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

#[derive(Debug, Error)]
pub enum SecretError {
    #[error("secret `{reference}`: environment variable is not set")]
    EnvMissing { reference: String },
    #[error("secret `{reference}`: cannot read file")]
    FileUnreadable {
        reference: String,
        #[source]
        source: std::io::Error,
    },
    #[error("secret `{reference}` is empty")]
    Empty { reference: String },
}

impl SecretRef {
    /// Parses `env:NAME` or `file:PATH`; anything else is not a reference.
    pub fn parse(s: &str) -> Option<SecretRef> {
        if let Some(name) = s.strip_prefix("env:") {
            let ok =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            return ok.then(|| SecretRef::Env(name.to_string()));
        }
        if let Some(path) = s.strip_prefix("file:") {
            return (!path.is_empty()).then(|| SecretRef::File(PathBuf::from(path)));
        }
        None
    }

    /// Resolves the value and registers it for redaction before returning,
    /// so no code path can print it unmasked.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        let value = match self {
            SecretRef::Env(name) => std::env::var(name).map_err(|_| SecretError::EnvMissing {
                reference: self.to_string(),
            })?,
            SecretRef::File(path) => {
                let raw = std::fs::read_to_string(path).map_err(|source| {
                    SecretError::FileUnreadable {
                        reference: self.to_string(),
                        source,
                    }
                })?;
                // Files written by editors and `echo` end with a newline
                // that is never part of the secret.
                raw.trim_end_matches(['\n', '\r']).to_string()
            }
        };
        if value.is_empty() {
            return Err(SecretError::Empty {
                reference: self.to_string(),
            });
        }
        register(&value);
        Ok(Secret(value))
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// A resolved secret. Its Debug and Display never show the value.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Adds a value to the redaction set. Longest values are masked first so a
/// secret that contains another is masked whole.
pub fn register(value: &str) {
    if value.is_empty() {
        return;
    }
    let mut g = match SECRETS.write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if !g.iter().any(|v| v == value) {
        g.push(value.to_string());
        g.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }
}

/// Masks every registered secret value in `text`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let g = match SECRETS.read() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if g.is_empty() || !g.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in g.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    Cow::Owned(out)
}

/// Masks secrets inside a JSON value (strings only; keys are not secret).
pub fn redact_json(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::String(s) => {
            if let Cow::Owned(r) = redact(s) {
                *s = r;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_json),
        Value::Object(o) => o.values_mut().for_each(redact_json),
        _ => {}
    }
}

/// Whether a field name conventionally holds a secret; such fields in an
/// environment file must be references, never literal values.
pub fn is_secret_field(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "token",
        "secret",
        "api_key",
        "apikey",
        "routing_key",
        "webhook_url",
        "private_key",
        "access_key",
        "credentials",
    ]
    .iter()
    .any(|s| k == *s || k.ends_with(&format!("_{s}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_refs() {
        assert_eq!(
            SecretRef::parse("env:PG_PASS"),
            Some(SecretRef::Env("PG_PASS".into()))
        );
        assert_eq!(
            SecretRef::parse("file:/run/s"),
            Some(SecretRef::File("/run/s".into()))
        );
        assert_eq!(SecretRef::parse("env:"), None);
        assert_eq!(SecretRef::parse("hunter2"), None);
    }

    #[test]
    fn redaction_masks_registered_values() {
        register("s3cr3t-sentinel-value");
        assert_eq!(redact("pw=s3cr3t-sentinel-value;"), "pw=***;");
        let mut j = serde_json::json!({"a": ["x s3cr3t-sentinel-value"]});
        redact_json(&mut j);
        assert_eq!(j["a"][0], "x ***");
    }

    #[test]
    fn secret_field_names() {
        assert!(is_secret_field("password"));
        assert!(is_secret_field("tsig_secret"));
        assert!(!is_secret_field("public_key_pem"));
        assert!(!is_secret_field("user"));
    }
}
