//! Every secret reference in an environment must resolve before anything
//! runs: an unset `env:` variable or a missing `file:` would otherwise be
//! found by the step that needs it, after the standby was promoted. Only
//! whether a value is there is checked; no value is read into output.

use std::io::ErrorKind;

use super::Environment;
use crate::decode::Ctx;
use crate::diag::Diagnostics;
use crate::secret::SecretRef;
use crate::yaml::{Kind, Node};

/// Reports every `env:`/`file:` reference in `env` that cannot resolve.
pub fn check_references(env: &Environment) -> Diagnostics {
    let mut diags = Diagnostics::default();
    let mut ctx = Ctx::new(&env.file, &mut diags);
    walk(&mut ctx, &env.root, "");
    diags
}

fn walk(ctx: &mut Ctx<'_>, node: &Node, path: &str) {
    match &node.kind {
        Kind::Str(s) => {
            if let Some(r) = SecretRef::parse(s) {
                if let Err((msg, hint)) = resolvable(&r) {
                    ctx.error(
                        "E-SECRET-UNRESOLVED",
                        node,
                        format!("{path}: {msg}"),
                        Some(hint),
                    );
                }
            }
        }
        Kind::Seq(items) => {
            for (i, it) in items.iter().enumerate() {
                walk(ctx, it, &format!("{path}[{i}]"));
            }
        }
        Kind::Map(entries) => {
            for (k, v) in entries {
                let key = k.key_text();
                let here = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                walk(ctx, v, &here);
            }
        }
        _ => {}
    }
}

/// Whether `r` would resolve, without reading a file's content.
pub fn resolvable(r: &SecretRef) -> Result<(), (String, String)> {
    match r {
        SecretRef::Env(name) => match std::env::var_os(name) {
            None => Err((
                format!("`{r}`: environment variable {name} is not set"),
                format!("export {name} where drctl runs (shell, Deployment, CronJob); its value is never printed"),
            )),
            Some(v) if v.is_empty() => Err((
                format!("`{r}`: environment variable {name} is empty"),
                format!("set {name} to the secret's value"),
            )),
            Some(_) => Ok(()),
        },
        SecretRef::File(p) => {
            let fail = |what: String| {
                (
                    format!("`{r}`: {what}"),
                    "create the file (mode 0600, readable by the user drctl runs as) or fix the path; a relative path is relative to the file it is written in".to_string(),
                )
            };
            match std::fs::metadata(p) {
                Err(e) if e.kind() == ErrorKind::NotFound => Err(fail("the file does not exist".into())),
                Err(e) => Err(fail(format!("cannot read the file: {e}"))),
                Ok(m) if m.is_dir() => Err(fail("is a directory, not a file".into())),
                Ok(m) if m.len() == 0 => Err(fail("the file is empty".into())),
                Ok(_) => std::fs::File::open(p)
                    .map(drop)
                    .map_err(|e| fail(format!("the file is not readable: {e}"))),
            }
        }
    }
}
