//! Backup sources as the environment declares them, per region:
//!
//! ```yaml
//! regions:
//!   primary:
//!     backups:
//!       nightly:
//!         kind: basebackup          # or pgbackrest (stanza, pgbackrest_config),
//!                                   # barman (server, barman_config), pg_dump (dump_file)
//!         backup_dir: /backups/base # pg_basebackup output (tar or plain, with backup_manifest)
//!         wal_archive: /backups/wal # what archive_command copies (optional)
//!         superuser: postgres       # a superuser of the backed-up cluster
//!         database: postgres        # where drctl_heartbeat lives
//!         max_age: 26h              # older backup: exit 33
//!         check_set: ../checks/backup.yaml
//! ```
//!
//! One decoder serves `drctl validate` (with locations) and the action (on
//! the resolved JSON), so a typo is found before the CronJob's first run.

use std::path::PathBuf;
use std::time::Duration;

use crate::decode::{Ctx, MapReader};
use crate::yaml::Node;

/// The kinds of backup drctl can restore and verify.
pub const KINDS: &[&str] = &["basebackup", "pgbackrest", "barman", "pg_dump"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `pg_basebackup` output plus, optionally, a WAL archive directory.
    BaseBackup {
        backup_dir: PathBuf,
        wal_archive: Option<PathBuf>,
    },
    /// A pgBackRest stanza (its repository as its configuration says).
    PgBackRest {
        stanza: String,
        config: Option<PathBuf>,
    },
    /// A Barman server (its catalogue as its configuration says).
    Barman {
        server: String,
        config: Option<PathBuf>,
    },
    /// A custom-format `pg_dump` archive restored with `pg_restore`.
    PgDump {
        dump_file: PathBuf,
        database: String,
    },
}

#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub kind: Kind,
    /// A superuser of the restored cluster (its roles come from the backup).
    pub superuser: String,
    /// The database holding `drctl_heartbeat` (physical backups).
    pub database: String,
    pub max_age: Option<Duration>,
    pub check_set: Option<PathBuf>,
}

impl Source {
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::BaseBackup { .. } => "basebackup",
            Kind::PgBackRest { .. } => "pgbackrest",
            Kind::Barman { .. } => "barman",
            Kind::PgDump { .. } => "pg_dump",
        }
    }
}

/// Decodes a region's `backups:` mapping, reporting every problem.
pub fn decode_backups(ctx: &mut Ctx<'_>, node: &Node, what: &str) -> Option<Vec<Source>> {
    let Some(entries) = node.as_map() else {
        ctx.expected(node, "a mapping of backup sources", what);
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (k, v) in entries {
        let name = k.key_text();
        match decode_source(ctx, v, &format!("{what}.{name}"), &name) {
            Some(s) => out.push(s),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn path_field(
    ctx: &mut Ctx<'_>,
    r: &mut MapReader<'_>,
    key: &'static str,
    what: &str,
    required: bool,
) -> Option<PathBuf> {
    let n = if required {
        r.req(ctx, key)
    } else {
        r.opt(key)
    }?;
    let s = ctx.string(n, &format!("{what}.{key}"))?;
    if s.is_empty() {
        ctx.error(
            "E-VALUE",
            n,
            format!("{what}.{key}: empty path"),
            Some("name a directory or file".into()),
        );
        return None;
    }
    Some(PathBuf::from(s))
}

fn decode_source(ctx: &mut Ctx<'_>, node: &Node, what: &str, name: &str) -> Option<Source> {
    let mut r = MapReader::new(ctx, node, what.to_string())?;
    let kind = r
        .req(ctx, "kind")
        .and_then(|n| ctx.one_of(n, KINDS, &format!("{what}.kind")));
    let superuser = r
        .opt("superuser")
        .and_then(|n| ctx.string(n, &format!("{what}.superuser")))
        .unwrap_or_else(|| "postgres".into());
    let database = r
        .opt("database")
        .and_then(|n| ctx.string(n, &format!("{what}.database")))
        .unwrap_or_else(|| "postgres".into());
    let max_age = r
        .opt("max_age")
        .and_then(|n| ctx.duration(n, &format!("{what}.max_age")));
    let check_set = path_field(ctx, &mut r, "check_set", what, false);
    r.opt("description")
        .and_then(|n| ctx.string(n, &format!("{what}.description")));
    let kind = match kind? {
        "basebackup" => {
            let backup_dir = path_field(ctx, &mut r, "backup_dir", what, true);
            let wal_archive = path_field(ctx, &mut r, "wal_archive", what, false);
            Kind::BaseBackup {
                backup_dir: backup_dir?,
                wal_archive,
            }
        }
        "pgbackrest" => {
            let stanza = r
                .req(ctx, "stanza")
                .and_then(|n| ctx.string(n, &format!("{what}.stanza")));
            let config = path_field(ctx, &mut r, "pgbackrest_config", what, false);
            Kind::PgBackRest {
                stanza: stanza?,
                config,
            }
        }
        "barman" => {
            let server = r
                .req(ctx, "server")
                .and_then(|n| ctx.string(n, &format!("{what}.server")));
            let config = path_field(ctx, &mut r, "barman_config", what, false);
            Kind::Barman {
                server: server?,
                config,
            }
        }
        _ => {
            let dump_file = path_field(ctx, &mut r, "dump_file", what, true);
            Kind::PgDump {
                dump_file: dump_file?,
                database: database.clone(),
            }
        }
    };
    r.finish(ctx);
    Some(Source {
        name: name.to_string(),
        kind,
        superuser,
        database,
        max_age,
        check_set,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Diagnostics;
    use crate::yaml::SourceFile;

    fn decode(text: &str) -> (Option<Vec<Source>>, Vec<String>) {
        let file = SourceFile::new("env.yaml", text);
        let mut diags = Diagnostics::default();
        let node = crate::yaml::parse(&file, &mut diags).expect("yaml");
        let out = {
            let mut ctx = Ctx::new(&file, &mut diags);
            decode_backups(&mut ctx, &node, "regions.a.backups")
        };
        (out, diags.iter().map(|d| d.message.clone()).collect())
    }

    #[test]
    fn a_basebackup_source_decodes() {
        let (s, errs) =
            decode("n:\n  kind: basebackup\n  backup_dir: /b\n  wal_archive: /w\n  max_age: 26h\n");
        assert!(errs.is_empty(), "{errs:?}");
        let s = s.unwrap();
        assert_eq!(s[0].name, "n");
        assert_eq!(s[0].max_age, Some(Duration::from_secs(26 * 3600)));
        assert_eq!(
            s[0].kind,
            Kind::BaseBackup {
                backup_dir: "/b".into(),
                wal_archive: Some("/w".into())
            }
        );
    }

    #[test]
    fn a_barman_source_decodes_and_needs_its_server() {
        let (s, errs) = decode("n:\n  kind: barman\n  server: pg\n  barman_config: /etc/b.conf\n");
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            s.unwrap()[0].kind,
            Kind::Barman {
                server: "pg".into(),
                config: Some("/etc/b.conf".into())
            }
        );
        let (s, errs) = decode("n:\n  kind: barman\n");
        assert!(s.is_none());
        assert!(errs.join("\n").contains("server"), "{errs:?}");
    }

    #[test]
    fn every_problem_is_reported() {
        let (s, errs) = decode("n:\n  kind: basebackp\n  wal_archiv: /w\nm:\n  kind: basebackup\n");
        assert!(s.is_none());
        let all = errs.join("\n");
        assert!(all.contains("unknown value `basebackp`"), "{all}");
        assert!(all.contains("backup_dir"), "{all}");
    }
}
