//! Paths inside an environment file are relative to that file, not to the
//! directory drctl happens to run in: `failover_runbook: ../failover.yaml`
//! and `password: file:secrets/pg` mean the same thing from any directory,
//! and so does a run resumed from elsewhere. They are made absolute once,
//! when the file is read, so every later user sees an absolute path.

use std::path::{Component, Path, PathBuf};

use crate::yaml::{Kind, Node};

/// Keys whose values are file paths (besides `file:` secret references).
pub const PATH_FIELDS: &[&str] = &[
    "failover_runbook",
    "kubeconfig",
    "pubkey_file",
    "backup_dir",
    "wal_archive",
    "dump_file",
    "check_set",
    "pgbackrest_config",
];

/// The absolute directory holding `file_path`.
pub fn base_dir(file_path: &str) -> PathBuf {
    let parent = Path::new(file_path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    absolute(parent)
}

/// `p` made absolute against the current directory, `.` and `..` removed
/// lexically (the path need not exist yet).
pub fn absolute(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    normalize(&abs)
}

/// `rel` against `base`, unless it is absolute already.
pub fn relative_to(base: &Path, rel: &str) -> PathBuf {
    normalize(&base.join(rel))
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Rewrites relative `file:` references and [`PATH_FIELDS`] values under
/// `node` to absolute paths against `base`. Values holding `${...}` are
/// left alone (they are not paths yet).
pub fn rebase(node: &mut Node, base: &Path, key: Option<&str>) {
    match &mut node.kind {
        Kind::Str(s) => {
            if crate::expr::has_refs(s) {
                return;
            }
            if let Some(rest) = s.strip_prefix("file:") {
                if !rest.is_empty() && Path::new(rest).is_relative() {
                    *s = format!("file:{}", relative_to(base, rest).display());
                }
            } else if key.is_some_and(|k| PATH_FIELDS.contains(&k))
                && !s.is_empty()
                && Path::new(s.as_str()).is_relative()
            {
                *s = relative_to(base, s).display().to_string();
            }
        }
        Kind::Seq(items) => items.iter_mut().for_each(|i| rebase(i, base, None)),
        Kind::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                let kt = k.key_text();
                rebase(v, base, Some(&kt));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let base = Path::new("/etc/drctl/envs");
        assert_eq!(
            relative_to(base, "../runbooks/failover.yaml"),
            PathBuf::from("/etc/drctl/runbooks/failover.yaml")
        );
        assert_eq!(relative_to(base, "/abs/x"), PathBuf::from("/abs/x"));
        assert!(base_dir("env.yaml").is_absolute());
    }
}
