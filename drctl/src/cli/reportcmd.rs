//! `report`, `report --compare`, `report verify`: reports from journals,
//! and the check that a report still matches its journal.

use std::path::Path;

use super::{ui, CliError, ReportFormat};
use crate::engine::run::{load_report_view, load_view_only};
use crate::engine::view::RunView;
use crate::exit;
use crate::immudb::action::ImmudbServer;
use crate::journal::format_ms;
use crate::report::anchor::{self, Anchor, AnchorError, AnchoredHead};
use crate::report::evidence::{self, Evidence, EvidenceError};
use crate::report::{self, Format, Inputs, Previous};
use crate::store::Store;

impl From<ReportFormat> for Format {
    fn from(f: ReportFormat) -> Self {
        match f {
            ReportFormat::Md => Format::Md,
            ReportFormat::Json => Format::Json,
            ReportFormat::Html => Format::Html,
        }
    }
}

fn evidence_error(e: EvidenceError) -> CliError {
    let code = match &e {
        EvidenceError::OtherKey { .. }
        | EvidenceError::SignatureInvalid
        | EvidenceError::Unsigned => exit::SIGNATURE_REJECTED,
        EvidenceError::PublicKeyFile { .. } => exit::NOT_FOUND,
        _ => exit::INVALID_INPUT,
    };
    let hint = match &e {
        EvidenceError::BadKey(_) => Some("e.g. `openssl genpkey -algorithm ed25519` (PKCS#8 PEM), referenced as env:NAME or file:PATH"),
        EvidenceError::BadPublicKey(_) => Some("e.g. `openssl pkey -in KEY -pubout`"),
        EvidenceError::Unsigned => Some("sign when rendering: `drctl report RUN --sign-key env:NAME`"),
        _ => None,
    };
    let c = CliError::from_error(code, &e);
    match hint {
        Some(h) => c.hint(h),
        None => c,
    }
}

fn anchor_error(e: AnchorError) -> CliError {
    let code = match &e {
        AnchorError::Unavailable(_) => exit::IMMUDB_UNAVAILABLE,
        AnchorError::Rejected(_) | AnchorError::NotStored { .. } => exit::VERIFY_REJECTED,
        AnchorError::JournalChanged(_) => exit::ANCHOR_MISMATCH,
        AnchorError::Trust(_) => exit::INTERNAL,
        _ => exit::INVALID_INPUT,
    };
    let hint = match &e {
        AnchorError::Unavailable(_) => Some("immudb could not be asked, so nothing was anchored or checked (no report was written): an outage or a configuration problem (URL, credentials, TLS), not evidence of tampering".to_string()),
        AnchorError::NoTrust { region, .. } => Some(format!("run `drctl immudb trust --env FILE --region {region}` first: the anchor is proven against the trusted state it keeps")),
        AnchorError::JournalChanged(_) => Some("the ledger, which drctl cannot rewrite, holds the head the journal had when the report was anchored: the journal was edited since".to_string()),
        _ => None,
    };
    let c = CliError::from_error(code, &e);
    match hint {
        Some(h) => c.hint(h),
        None => c,
    }
}

/// The environment file given (`--env`), else the one the run used.
fn environment_of(
    view: &RunView,
    env_path: Option<&Path>,
) -> Result<(crate::environment::Environment, std::path::PathBuf), CliError> {
    let recorded = view.environment.as_ref().map(|e| Path::new(&e.path));
    let Some(path) = env_path.or(recorded) else {
        return Err(CliError::new(
            exit::INVALID_INPUT,
            format!(
                "run {} used no environment file: the ledger is unknown",
                view.run_id
            ),
        )
        .hint("name the environment file with --env FILE"));
    };
    let (env, d) = crate::environment::load_environment(path).map_err(CliError::invalid)?;
    if d.has_errors() {
        return Err(CliError::invalid(d));
    }
    Ok((env, path.to_path_buf()))
}

/// The immudb server of `region` in the environment.
fn ledger_server(
    env: &crate::environment::Environment,
    region: &str,
) -> Result<ImmudbServer, CliError> {
    let comp = env.component(region, "immudb").ok_or_else(|| {
        anchor_error(AnchorError::NoLedger {
            env: env.name.clone(),
            region: region.to_string(),
        })
    })?;
    crate::action::decode_resolved("immudb", comp, |c, n| ImmudbServer::decode(c, n, "immudb"))
        .map_err(|e| CliError::new(exit::INVALID_INPUT, e.to_string()))
}

/// The newest trusted state drctl keeps of that ledger.
async fn trusted(
    store: &dyn Store,
    env: &str,
    region: &str,
    db: &str,
) -> Result<Option<crate::immudb::TrustedState>, CliError> {
    let cps = crate::immudb::custody::load_checkpoints(store, env, region, db)
        .await
        .map_err(|e| anchor_error(AnchorError::Trust(e)))?;
    Ok(cps.into_iter().max_by_key(|c| c.tx_id))
}

/// `--anchor`: writes the head to the ledger of the region that is active
/// now (where `drctl immudb trust` keeps custody) and proves the tx.
async fn write_anchor(
    store: &dyn Store,
    view: &RunView,
    env_path: Option<&Path>,
) -> Result<Anchor, CliError> {
    let (env, path) = environment_of(view, env_path)?;
    // Where the last failover, switchover or failback put the primary.
    let region = super::plan::recorded_active(store, Some(&path))
        .await
        .filter(|a| env.regions.contains_key(a))
        .unwrap_or_else(|| env.active_region.clone());
    let server = ledger_server(&env, &region)?;
    let Some(t) = trusted(store, &env.name, &region, &server.database).await? else {
        return Err(anchor_error(AnchorError::NoTrust {
            env: env.name.clone(),
            region,
            db: server.database.clone(),
        }));
    };
    let head = AnchoredHead {
        run_id: view.run_id.clone(),
        records: view.records,
        head: view.head.clone(),
    };
    anchor::write(&server, &env.name, &region, &t, &head)
        .await
        .map_err(anchor_error)
}

/// `report verify` of an anchored report: the ledger's value, proven,
/// against the journal as it is now. Returns the trusted tx it was proven
/// against.
async fn check_anchor(
    store: &dyn Store,
    view: &RunView,
    a: &Anchor,
    env_path: Option<&Path>,
) -> Result<u64, CliError> {
    let (env, _) = environment_of(view, env_path)?;
    if env.name != a.environment {
        return Err(anchor_error(AnchorError::OtherEnvironment {
            anchored: a.environment.clone(),
            given: env.name,
        }));
    }
    let server = ImmudbServer {
        database: a.database.clone(),
        ..ledger_server(&env, &a.region)?
    };
    let t = trusted(store, &env.name, &a.region, &a.database).await?;
    let (held, proven) = anchor::read(&server, t.as_ref(), a)
        .await
        .map_err(anchor_error)?;
    anchor::compare(a, &held, &view.run_id, view.records, &view.head).map_err(anchor_error)?;
    Ok(proven)
}

/// The drill history's entries, read only when the report needs them.
async fn history(store: &dyn Store, needed: bool) -> Result<Vec<serde_json::Value>, CliError> {
    if !needed {
        return Ok(Vec::new());
    }
    Ok(store.read_history(crate::drill::HISTORY).await?)
}

/// The last drill of the same runbook and environment that started
/// before this run (by time, so a later drill never changes it).
async fn previous(
    store: &dyn Store,
    view: &RunView,
    history: &[serde_json::Value],
) -> Result<Option<Previous>, CliError> {
    let env = view.environment.as_ref().map(|e| e.name.as_str());
    let before = format_ms(view.started_ms);
    let prev = history.iter().rev().find(|h| {
        h.get("runbook").and_then(|v| v.as_str()) == Some(view.runbook.name.as_str())
            && h.get("environment").and_then(|v| v.as_str()) == env
            && h.get("run_id").and_then(|v| v.as_str()) != Some(view.run_id.as_str())
            && h.get("failed_at")
                .and_then(|v| v.as_str())
                .is_some_and(|f| f < before.as_str())
    });
    let Some(id) = prev.and_then(|h| h.get("run_id")).and_then(|v| v.as_str()) else {
        return Ok(None);
    };
    // Only its step durations are used.
    match load_report_view(store, id, true).await {
        Ok(v) => Ok(Some(Previous::of(&v))),
        // A pruned previous drill: nothing to compare with.
        Err(crate::engine::EngineError::Store(crate::store::StoreError::RunNotFound(_))) => {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Everything besides the journal a report is rendered from.
async fn inputs(
    store: &dyn Store,
    view: &RunView,
    format: Format,
    postmortem: bool,
    trend_window: usize,
    signature: Option<evidence::Signature>,
    anchor: Option<Anchor>,
) -> Result<Inputs, CliError> {
    let trend_window = if view.mode == crate::runbook::Mode::Drill {
        trend_window
    } else {
        0
    };
    let postmortem = postmortem && format == Format::Md;
    let h = history(store, trend_window > 0 || postmortem).await?;
    let previous = if postmortem {
        previous(store, view, &h).await?
    } else {
        None
    };
    let trend = report::trend::select(view, &h, trend_window);
    Ok(Inputs {
        format,
        postmortem,
        // Recorded as drawn: a run not in the history shows no trend.
        trend_window: if trend.is_empty() { 0 } else { trend_window },
        trend,
        previous,
        signature,
        anchor,
    })
}

pub struct ReportRequest<'a> {
    pub run_id: &'a str,
    pub format: Format,
    pub postmortem: bool,
    pub trend_window: usize,
    pub sign_key: Option<&'a str>,
    /// Write the journal head to the environment's immudb ledger.
    pub anchor: bool,
    pub env: Option<&'a Path>,
}

pub async fn cmd_report(store: &dyn Store, req: ReportRequest<'_>) -> Result<i32, CliError> {
    if req.postmortem && req.format != Format::Md {
        return Err(CliError::new(
            exit::USAGE,
            "--postmortem is a Markdown skeleton: use it with --format md",
        ));
    }
    let id = super::inspect::resolve_run_id(store, req.run_id).await?;
    let v = load_report_view(store, &id, req.format != Format::Json).await?;
    let signature = req
        .sign_key
        .map(|k| evidence::sign(k, &v.run_id, v.records, &v.head))
        .transpose()
        .map_err(evidence_error)?;
    // Last before printing: a ledger that fails leaves no report behind.
    let anchor = if req.anchor {
        Some(write_anchor(store, &v, req.env).await?)
    } else {
        None
    };
    let inputs = inputs(
        store,
        &v,
        req.format,
        req.postmortem,
        req.trend_window,
        signature,
        anchor,
    )
    .await?;
    // Everything that can refuse the report (the journal's check, the
    // signing key, the ledger, the history) has run: from here on the
    // report is written as it is rendered.
    print_report(&v, &inputs)?;
    Ok(exit::OK)
}

/// Prints the report as it is rendered, masked like all output, through
/// one buffer (the page is never held whole). A reader that stops reading
/// (`| head`) ends it quietly, as with any printed text.
fn print_report(v: &RunView, inputs: &Inputs) -> Result<(), CliError> {
    let stdout = std::io::stdout().lock();
    let mut w = report::stream::Masked::new(std::io::BufWriter::with_capacity(
        report::stream::PIECE,
        stdout,
    ));
    let done = report::render_to(v, inputs, &mut w).and_then(|()| w.finish().map(drop));
    match done {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::from_error(exit::INTERNAL, &e)
                .hint("the report could not be written to standard output"))
        }
        _ => Ok(()),
    }
}

pub async fn cmd_compare(
    store: &dyn Store,
    a: &str,
    b: &str,
    format: Format,
) -> Result<i32, CliError> {
    let a = super::inspect::resolve_run_id(store, a).await?;
    let b = super::inspect::resolve_run_id(store, b).await?;
    let va = load_view_only(store, &a).await?;
    let vb = load_view_only(store, &b).await?;
    let c = report::compare::compare(&va, &vb);
    ui::out(&report::compare::render(&c, format));
    Ok(exit::OK)
}

fn mismatch(msg: String) -> CliError {
    CliError::new(exit::REPORT_MISMATCH, msg)
}

/// Re-renders the report from the journal with the options its evidence
/// block records and compares; then checks the signature when a public
/// key is given.
pub async fn cmd_verify(
    store: &dyn Store,
    file: &Path,
    run: &str,
    public_key: Option<&Path>,
    env_path: Option<&Path>,
    output: super::OutputFormat,
) -> Result<i32, CliError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        CliError::from_error(
            if e.kind() == std::io::ErrorKind::NotFound {
                exit::NOT_FOUND
            } else {
                exit::INVALID_INPUT
            },
            &e,
        )
        .hint(format!("cannot read {}", file.display()))
    })?;
    let ev: Evidence = evidence::extract(&text).map_err(evidence_error)?;
    let id = super::inspect::resolve_run_id(store, run).await?;
    if ev.run_id != id {
        return Err(mismatch(format!(
            "the report is of run {}, not of run {id}",
            ev.run_id
        )));
    }
    let v = load_report_view(store, &id, ev.format != Format::Json).await?;
    // The ledger first: for an anchored report it proves what the journal
    // held, whatever the report and the journal say now.
    let anchor_proven = match &ev.anchor {
        Some(a) => Some(check_anchor(store, &v, a, env_path).await?),
        None => None,
    };
    if v.records != ev.records || v.head != ev.head {
        let hint = if v.records > ev.records {
            "the run continued after the report was rendered: render it again"
        } else {
            "the journal the report quotes is not this one"
        };
        return Err(mismatch(format!(
            "the report quotes a journal of {} records with head {}; run {id}'s journal has {} records, head {}",
            ev.records, ev.head, v.records, v.head
        ))
        .hint(hint));
    }
    let inputs = inputs(
        store,
        &v,
        ev.format,
        ev.postmortem,
        ev.trend_window,
        ev.signature.clone(),
        ev.anchor.clone(),
    )
    .await?;
    let expected = report::render(&v, &inputs);
    if let Some((line, want, found)) =
        evidence::first_difference(expected.trim_end(), text.trim_end())
    {
        let mut e = mismatch(format!(
            "the report differs from its journal at line {line}: the journal gives `{want}`, the report says `{found}`"
        ));
        if ev.rendered_by != env!("CARGO_PKG_VERSION") {
            e = e.hint(format!(
                "the report was rendered by drctl {}, this is {}: verify with that version",
                ev.rendered_by,
                env!("CARGO_PKG_VERSION")
            ));
        }
        return Err(e);
    }
    let mut said = format!(
        "report {} matches run {id}: {} records, head {}",
        file.display(),
        v.records,
        v.head
    );
    let mut checked: Option<String> = None;
    match (public_key, &ev.signature) {
        (Some(pk), _) => {
            let key = evidence::read_public_key(pk).map_err(evidence_error)?;
            let fp = evidence::check_signature(&ev, &key).map_err(evidence_error)?;
            said.push_str(&format!("; journal head signature verified with key {fp}"));
            checked = Some(fp);
        }
        (None, Some(s)) => said.push_str(&format!(
            "; signed by key {} (not checked: give --public-key FILE)",
            s.key_fingerprint
        )),
        (None, None) => said.push_str("; not signed"),
    }
    if let (Some(a), Some(t)) = (&ev.anchor, anchor_proven) {
        said.push_str(&format!(
            "; journal head anchored in immudb tx {} of {}/{}/{}, proven against trusted tx {t}",
            a.tx, a.environment, a.region, a.database
        ));
    }
    if output == super::OutputFormat::Json {
        said = serde_json::json!({
            "matches": true,
            "run_id": id,
            "records": v.records,
            "head": v.head,
            "format": ev.format,
            "signed": ev.signature.is_some(),
            "signature_verified_with": checked,
            "anchor": ev.anchor.as_ref().map(|a| serde_json::json!({
                "ledger": a.ledger, "tx": a.tx, "environment": a.environment,
                "region": a.region, "database": a.database, "key": a.key,
                "proven_against_tx": anchor_proven,
            })),
        })
        .to_string();
    }
    ui::out(&said);
    Ok(exit::OK)
}
