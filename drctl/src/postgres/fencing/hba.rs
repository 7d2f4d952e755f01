//! The `hba` fence: a marked `reject` block at the top of pg_hba.conf.
//!
//! pg_hba.conf is read with `pg_read_file(current_setting('hba_file'))`
//! and written back by the server itself (`COPY … TO 'file'`, so drctl
//! needs no shell on the database host), with the original content kept
//! verbatim below drctl's block: unfencing is deleting the block and
//! reloading. `host all all all reject` matches every TCP connection that
//! is not a physical replication connection (`all` does not match
//! `replication`), so standbys keep streaming. Unix-socket connections on
//! the host itself are left alone (the operator's way back in).
//!
//! Check, act, verify: if the block is already there it is not written
//! again; the reload, the rule check, the "a fresh session is rejected"
//! check and the session cut always run.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::{current_lsn, outcome, FenceCheckpoint, FenceOutcome, Method};
use crate::action::{ActionError, StepContext};
use crate::postgres::conn::{execute, query, PgError, PgServer};

/// First line of drctl's block; a file starting with it is fenced.
pub const BEGIN: &str = "# drctl fence BEGIN";
pub const END: &str = "# drctl fence END";
const RULE: &str = "host all all all reject";

fn block(ctx: &StepContext) -> String {
    format!(
        "{BEGIN}: written by drctl (run {}, step {}, {}). To unfence, delete through the END line and reload.\n{RULE}\n{END}\n",
        ctx.run_id,
        ctx.step_id,
        crate::journal::now_rfc3339()
    )
}

/// The content below drctl's block, if the file has one.
pub fn below_block(content: &str) -> Option<&str> {
    if !content.starts_with(BEGIN) {
        return None;
    }
    let end = content.find(&format!("\n{END}\n"))?;
    Some(&content[end + END.len() + 2..])
}

/// A SQL string literal (standard_conforming_strings: only `'` doubles).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Characters the COPY round trip below would not write back verbatim.
fn unwritable(content: &str) -> Option<&'static str> {
    if content.contains(['\r', '\u{1}', '\u{2}', '\u{3}']) {
        return Some("carriage returns or control characters");
    }
    if content.lines().any(|l| l == "\\.") {
        return Some("a line `\\.`");
    }
    None
}

/// Writes `content` to `path` on the server, byte for byte: one row per
/// line, CSV with delimiter, quote and NULL set to control characters the
/// content does not hold, so nothing is quoted or escaped.
async fn write_file(
    c: &Client,
    addr: &str,
    path: &str,
    content: &str,
    limit: Duration,
) -> Result<(), PgError> {
    let body = content.strip_suffix('\n').unwrap_or(content);
    let sql = format!(
        "COPY (SELECT line FROM regexp_split_to_table(convert_from(decode('{}', 'hex'), 'UTF8'), E'\\n') WITH ORDINALITY AS t(line, n) ORDER BY n) \
         TO {} WITH (FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02', NULL E'\\x03')",
        hex::encode(body.as_bytes()),
        literal(path)
    );
    execute(c, addr, "fence: write pg_hba.conf", &sql, limit).await
}

async fn read_file(c: &Client, addr: &str, path: &str, limit: Duration) -> Result<String, PgError> {
    let rows = query(
        c,
        addr,
        "fence: read pg_hba.conf",
        &format!("select pg_read_file({})", literal(path)),
        limit,
    )
    .await?;
    Ok(rows
        .first()
        .map(|r| r.get::<_, String>(0))
        .unwrap_or_default())
}

fn failed(addr: &str, what: String) -> ActionError {
    ActionError::failed_hint(
        format!("fence (hba) on {addr}: {what}"),
        "check pg_hba.conf and the server log on the database host; the original file is in this step's checkpoint in the journal",
    )
}

pub(super) async fn fence(
    server: &PgServer,
    c: &Client,
    ctx: &StepContext,
    saved: Option<FenceCheckpoint>,
    limit: Duration,
) -> Result<FenceOutcome, ActionError> {
    let addr = server.addr();
    let deadline = Instant::now() + limit;
    let left = || deadline.saturating_duration_since(Instant::now());
    let rows = query(
        c,
        &addr,
        "fence: hba_file",
        "select current_setting('hba_file')",
        left(),
    )
    .await?;
    let path: String = rows.first().map(|r| r.get(0)).unwrap_or_default();
    let content = read_file(c, &addr, &path, left()).await?;
    let already = below_block(&content).is_some();
    if !already {
        if let Some(what) = unwritable(&content) {
            return Err(failed(&addr, format!("{path} holds {what}, which drctl cannot write back verbatim; fence with method stop, or edit the file")));
        }
        // Pre-effect: the original file, so it can be restored whatever
        // happens next.
        let cp = FenceCheckpoint {
            method: Some(Method::Hba),
            hba_file: Some(path.clone()),
            original_hba: Some(content.clone()),
            ..saved.clone().unwrap_or_default()
        };
        ctx.checkpoint(&cp).await?;
        let mut original = content.clone();
        if !original.is_empty() && !original.ends_with('\n') {
            original.push('\n');
        }
        let wanted = format!("{}{original}", block(ctx));
        write_file(c, &addr, &path, &wanted, left()).await?;
        let back = read_file(c, &addr, &path, left()).await?;
        if back != wanted {
            // Put the original back before saying anything else.
            let restored = write_file(c, &addr, &path, &original, left()).await;
            return Err(failed(
                &addr,
                format!(
                    "{path} did not read back as written ({} bytes expected, {} read); original {}",
                    wanted.len(),
                    back.len(),
                    if restored.is_ok() {
                        "restored"
                    } else {
                        "NOT restored: restore it from the checkpoint"
                    }
                ),
            ));
        }
    }
    // Test hook: die with the block written but not yet in force.
    crate::journal::test_crash_at("fence-hba");
    query(c, &addr, "fence: reload", "select pg_reload_conf()", left()).await?;
    let rows = query(
        c,
        &addr,
        "fence: pg_hba_file_rules",
        "select count(*) filter (where error is not null), \
         (array_agg(type || ' ' || array_to_string(database, ',') || ' ' || array_to_string(user_name, ',') || ' ' || coalesce(address, '') || ' ' || auth_method order by line_number))[1] \
         from pg_hba_file_rules",
        left(),
    )
    .await?;
    let (errors, first): (i64, Option<String>) = rows
        .first()
        .map(|r| (r.get(0), r.get(1)))
        .unwrap_or((0, None));
    if errors > 0 || first.as_deref() != Some(RULE) {
        return Err(failed(&addr, format!(
            "pg_hba_file_rules shows {errors} error(s) and first rule {:?}, not `{RULE}`: the reject rule is not in force",
            first.unwrap_or_default()
        )));
    }
    // The postmaster applies the reload asynchronously: a fresh session
    // must be turned away before anything else is trusted.
    let verified = loop {
        match server.connect(left().max(Duration::from_millis(100))).await {
            Err(e @ PgError::Rejected { .. }) => break crate::diag::error_chain(&e),
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Ok(_) => {
                return Err(failed(
                    &addr,
                    "a new session is still accepted after the reload".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        }
    };
    // Now cut every client session, superusers' too; new ones cannot come.
    let ms = left().as_millis().clamp(100, 5000) as i64;
    let rows = query(
        c,
        &addr,
        "fence: terminate sessions",
        &format!(
            "select count(*) filter (where t) from (select pg_terminate_backend(pid, {ms}) as t from pg_stat_activity \
             where backend_type = 'client backend' and pid <> pg_backend_pid()) x"
        ),
        left(),
    )
    .await?;
    let terminated: i64 = rows.first().map(|r| r.get(0)).unwrap_or(0);
    let rows = query(
        c,
        &addr,
        "fence: sessions left",
        "select count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()",
        left(),
    )
    .await?;
    let left_over: i64 = rows.first().map(|r| r.get(0)).unwrap_or(0);
    if left_over > 0 {
        return Err(failed(
            &addr,
            format!("{left_over} client session(s) still alive after termination"),
        ));
    }
    let final_lsn = current_lsn(c, &addr, left()).await?;
    let mut cp: FenceCheckpoint = ctx.saved()?.unwrap_or_default();
    cp.method = Some(Method::Hba);
    cp.final_lsn = final_lsn;
    cp.done = true;
    ctx.checkpoint(&cp).await?;
    let mut o = outcome(Method::Hba, true, already);
    o.final_lsn = final_lsn;
    o.terminated_backends = terminated;
    o.verified = format!("{path} starts with `{RULE}`; a new session is rejected ({verified}); no client session left");
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_is_found_and_what_follows_is_the_original() {
        let original = "local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n";
        let fenced = format!("{BEGIN}: by drctl\n{RULE}\n{END}\n{original}");
        assert_eq!(below_block(&fenced), Some(original));
        assert_eq!(below_block(original), None);
        assert!(unwritable("a\r\nb").is_some());
        assert!(unwritable(original).is_none());
        assert_eq!(literal("/x/it's"), "'/x/it''s'");
    }
}
