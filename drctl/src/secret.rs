//! Secrets by reference, and redaction of their values everywhere.
//!
//! Runbooks and environment files hold only references (`env:NAME`,
//! `file:PATH`; literals are refused by [`crate::secretscan`]); values are
//! resolved at run start (so all are masked from step 1) and again when a
//! step uses them. Every resolved
//! value is registered with a process-wide redactor that the journal writer,
//! the log writer, command output capture and the CLI printer all pass text
//! through, so a secret a command happens to print is masked too.

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use std::sync::RwLock;

use thiserror::Error;

pub const MASK: &str = "***";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
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
    /// Short values cannot be masked without masking ordinary text (a
    /// one-character "secret" would mask that character everywhere).
    #[error("secret `{reference}` is shorter than {MIN_SECRET_LEN} characters")]
    TooShort { reference: String },
}

/// Secrets shorter than this are refused.
pub const MIN_SECRET_LEN: usize = 8;

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
        if value.chars().count() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort {
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

/// Adds a value to the redaction set, with the forms it takes when a
/// program prints it encoded: JSON-escaped (`--log-format json`, a JSON
/// body), percent-encoded (URLs, form bodies) and base64 (HTTP Basic
/// credentials, Kubernetes Secrets), the latter at each of the three
/// alignments it can have inside a longer base64 text. Longest patterns
/// are masked first so a secret that contains another is masked whole.
pub fn register(value: &str) {
    if value.is_empty() {
        return;
    }
    let mut g = match SECRETS.write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    for form in encoded_forms(value) {
        if form.len() >= 4 && !g.contains(&form) {
            g.push(form);
        }
    }
    g.sort_by_key(|v| std::cmp::Reverse(v.len()));
}

/// The value and its encodings, as they appear inside larger text.
fn encoded_forms(value: &str) -> Vec<String> {
    use base64::Engine as _;
    let mut forms = vec![value.to_string()];
    if let Ok(j) = serde_json::to_string(value) {
        forms.push(j[1..j.len() - 1].to_string());
    }
    let pct = |upper: bool, plus: bool| {
        let mut o = String::new();
        for b in value.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    o.push(b as char)
                }
                b' ' if plus => o.push('+'),
                _ if upper => o.push_str(&format!("%{b:02X}")),
                _ => o.push_str(&format!("%{b:02x}")),
            }
        }
        o
    };
    forms.extend([pct(true, false), pct(false, false), pct(true, true)]);
    let bytes = value.as_bytes();
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
    ] {
        // Whole: the value encoded on its own (with and without padding).
        let whole = engine.encode(bytes);
        forms.push(whole.trim_end_matches('=').to_string());
        forms.push(whole);
        // Inside a longer text: the value starts at byte offset k mod 3.
        // Only 4-character groups made entirely of the value's bytes are
        // fixed; the characters around them depend on the neighbours.
        for k in 0..3usize {
            let mut buf = vec![0u8; k];
            buf.extend_from_slice(bytes);
            let enc = engine.encode(&buf);
            let first = k.div_ceil(3);
            let last = (k + bytes.len()) / 3;
            if last > first && (last - first) * 3 >= 6 {
                forms.push(enc[4 * first..4 * last].to_string());
            }
        }
    }
    forms.sort();
    forms.dedup();
    forms
}

/// The length in bytes of the longest registered secret form (0: none):
/// how much of a stream's tail [`redact`] must see again with the next
/// piece (`report::stream::Masked`).
pub fn longest() -> usize {
    let g = match SECRETS.read() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    g.iter().map(String::len).max().unwrap_or(0)
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

/// Whether a field name conventionally holds a secret; such fields must
/// hold references, never literal values (see [`crate::secretscan`]).
/// Names are compared case-insensitively with `-` read as `_`, so HTTP
/// header names (`Authorization`, `Proxy-Authorization`, `X-Api-Key`,
/// `X-Auth-Token`) and variable names (`PGPASSWORD`, `dbPassword`) count.
pub fn is_secret_field(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    // A list of them is as secret as one (`tokens`, `passwords`).
    let one = k.strip_suffix('s').unwrap_or(&k);
    // Words that make any name ending in them secret (`pgpassword`).
    if ["password", "passwd"]
        .iter()
        .any(|s| k.ends_with(s) || one.ends_with(s))
    {
        return true;
    }
    [
        "token",
        "secret",
        "api_key",
        "apikey",
        "routing_key",
        "webhook_url",
        "private_key",
        "access_key",
        "credentials",
        "authorization",
        "cookie",
    ]
    .iter()
    .any(|s| {
        [k.as_str(), one]
            .iter()
            .any(|k| *k == *s || k.ends_with(&format!("_{s}")))
    })
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
    fn encoded_forms_are_masked_too() {
        use base64::Engine as _;
        let s = "p@ss w\"rd/4-Ω-sentinel";
        register(s);
        let json = serde_json::to_string(&serde_json::json!({"msg": format!("x {s} y")})).unwrap();
        assert!(!redact(&json).contains("sentinel"), "{}", redact(&json));
        let b64 = base64::engine::general_purpose::STANDARD;
        for prefix in ["", "u", "us", "user:"] {
            let basic = b64.encode(format!("{prefix}{s}:tail"));
            let line = format!("Authorization: Basic {basic}");
            let r = redact(&line);
            assert!(r.contains(MASK), "prefix {prefix:?}: {r}");
            // What is left cannot be decoded back to the secret.
            assert!(!r.contains(&basic), "{r}");
        }
        let url = format!("https://h/?pw={}", "p%40ss%20w%22rd%2F4-%CE%A9-sentinel");
        assert!(!redact(&url).contains("sentinel"), "{}", redact(&url));
        let lower = "p%40ss%20w%22rd%2f4-%ce%a9-sentinel";
        assert!(!redact(lower).contains("sentinel"));
        assert!(!redact("p%40ss+w%22rd%2F4-%CE%A9-sentinel").contains("sentinel"));
    }

    #[test]
    fn short_secrets_are_refused() {
        std::env::set_var("DRCTL_TEST_SHORT_SECRET", "abc");
        let r = SecretRef::Env("DRCTL_TEST_SHORT_SECRET".into()).resolve();
        assert!(matches!(r, Err(SecretError::TooShort { .. })), "{r:?}");
    }

    #[test]
    fn secret_field_names() {
        assert!(is_secret_field("password"));
        assert!(is_secret_field("tsig_secret"));
        assert!(!is_secret_field("public_key_pem"));
        assert!(!is_secret_field("user"));
        assert!(is_secret_field("Authorization"));
        assert!(is_secret_field("Proxy-Authorization"));
        assert!(is_secret_field("X-Api-Key"));
        assert!(is_secret_field("X-Auth-Token"));
        assert!(is_secret_field("PGPASSWORD"));
        assert!(!is_secret_field("tsig_key_name"));
        assert!(!is_secret_field("token_url"));
        assert!(is_secret_field("tokens"));
        assert!(is_secret_field("db_passwords"));
        assert!(!is_secret_field("status"));
    }
}
