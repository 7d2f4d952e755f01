//! Engine behaviour that needs a registry of its own: a step's parameters
//! are decoded once when it starts (and once more by validation, with the
//! same decoder), never once per attempt.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::{silent_ui, start, RunSpec};
use crate::action::{Action, ActionError, ActionKind, Outputs, Registry, StepContext};
use crate::decode::{Ctx, MapReader};
use crate::journal::RunStatus;
use crate::runbook::{load_runbook, validate_runbook, Mode};
use crate::store::{DirStore, Store};
use crate::yaml::Node;

/// Decoder calls and attempts of [`Flaky`]; only the test below uses it.
static DECODES: AtomicU32 = AtomicU32::new(0);
static ATTEMPTS: AtomicU32 = AtomicU32::new(0);

/// Fails its first `fail_first` attempts, then succeeds.
#[derive(Clone, Copy)]
struct Flaky;

#[async_trait]
impl ActionKind for Flaky {
    type Params = u32;

    fn kind(&self) -> &'static str {
        "test.flaky"
    }
    fn summary(&self) -> &'static str {
        "fails a few attempts, then succeeds"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[]
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<u32> {
        DECODES.fetch_add(1, Ordering::SeqCst);
        let mut r = MapReader::new(ctx, with, "test.flaky")?;
        let n = r
            .req(ctx, "fail_first")
            .and_then(|n| ctx.uint(n, "fail_first"));
        r.finish(ctx);
        n.map(|n| n as u32)
    }
    fn describe(&self, _params: &Value) -> String {
        "flaky".into()
    }
    async fn execute(&self, fail_first: &u32, ctx: &StepContext) -> Result<Outputs, ActionError> {
        ATTEMPTS.fetch_add(1, Ordering::SeqCst);
        if ctx.attempt <= *fail_first {
            return Err(ActionError::failed(format!(
                "attempt {} fails",
                ctx.attempt
            )));
        }
        Ok(Outputs::new())
    }
}

#[tokio::test]
async fn parameters_are_decoded_once_per_step_not_per_attempt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("flaky.yaml");
    std::fs::write(
        &path,
        "name: flaky\nsteps:\n  - id: flaky\n    action: test.flaky\n    with: {fail_first: 2}\n    retry: {attempts: 3, initial: 1ms, max: 1ms}\n",
    )
    .expect("write runbook");
    let kinds: Vec<Box<dyn Action>> = vec![Box::new(Flaky)];
    let registry = Arc::new(Registry::new(kinds).expect("one kind"));
    let (rb, _) = load_runbook(&path).expect("runbook parses");
    let (diags, _) = validate_runbook(&rb, None, &registry);
    assert!(!diags.has_errors(), "{}", diags.render());
    assert_eq!(DECODES.load(Ordering::SeqCst), 1, "validation decodes once");

    let store: Arc<dyn Store> =
        Arc::new(DirStore::open(dir.path().join("state")).expect("state dir"));
    let spec = RunSpec {
        runbook: Arc::new(rb),
        registry,
        env: None,
        mode: Mode::Drill,
        params: Default::default(),
        target_region: None,
        operator: "test".into(),
        options: Default::default(),
        failed_at_ms: None,
        parallelism: 1,
        run_id: None,
        hooks: None,
    };
    let outcome = start(store, spec, silent_ui()).await.expect("run");
    assert_eq!(outcome.status, RunStatus::Succeeded, "{:?}", outcome.reason);
    assert_eq!(
        ATTEMPTS.load(Ordering::SeqCst),
        3,
        "two retries, then success"
    );
    assert_eq!(
        DECODES.load(Ordering::SeqCst),
        2,
        "the step start decodes once more; attempts reuse the value"
    );
}

/// The proof steps journaled at run start: the kind's declaration, unless
/// the step says otherwise (both ways).
#[test]
fn proof_steps_follow_kinds_and_step_overrides() {
    let f = crate::yaml::SourceFile::new(
        "rb.yaml",
        "name: p\nsteps:\n  - id: outage\n    action: http.check\n    with: {url: \"http://127.0.0.1:1/\", expect_failure: true}\n  - id: smoke\n    action: http.check\n    with: {url: \"http://127.0.0.1:1/\"}\n  - id: not-a-proof\n    action: http.check\n    proves_recovery: false\n    with: {url: \"http://127.0.0.1:1/\"}\n  - id: manual\n    action: wait\n    proves_recovery: true\n    with: {duration: 1ms}\n  - id: pause\n    action: wait\n    with: {duration: 1ms}\n",
    );
    let (rb, d) = crate::runbook::parse::parse_runbook(&f, String::new())
        .unwrap_or_else(|d| panic!("{}", d.render()));
    assert!(!d.has_errors(), "{}", d.render());
    assert_eq!(
        super::run::proof_steps(&rb, &crate::registry::standard()),
        vec!["smoke".to_string(), "manual".to_string()]
    );
}
