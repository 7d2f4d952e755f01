//! `dns.check`: assert that every authoritative server answers a region's
//! values now (smoke checks; `plan --check` shows current answers).

use std::time::Instant;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::switch::{decode_params, setup, Params};
use crate::action::{ActionError, ActionKind, Outputs, Preflight, StepContext, Verdict};
use crate::decode::Ctx;
use crate::dnsquery::answers;
use crate::yaml::Node;

#[derive(Clone, Copy)]
pub struct DnsCheck;

async fn run(p: &Params, ctx: &StepContext) -> Result<(Vec<String>, bool), ActionError> {
    let (cfg, region) = setup(p, ctx)?;
    let mut lines = Vec::new();
    let mut ok = true;
    if cfg.nameservers.is_empty() {
        let want = cfg.desired(&region);
        let got = super::provider::build(&cfg, ctx.remaining())?
            .current(&want)
            .await?;
        for (w, g) in want.iter().zip(&got) {
            let good = g.as_ref().map(|g| &g.values) == Some(&w.values);
            ok &= good;
            lines.push(format!(
                "{} (provider read-back): {} {} = {:?} ({})",
                cfg.provider.name(),
                w.name,
                w.rtype,
                g.as_ref().map(|g| g.values.join(",")),
                if good { "ok" } else { "WRONG" }
            ));
        }
        return Ok((lines, ok));
    }
    for s in cfg.desired(&region) {
        for ns in &cfg.nameservers {
            let got = answers(ns, &s.name, &s.rtype, cfg.timeout)
                .await
                .map_err(super::DnsError::from)?;
            let good = got == s.values;
            ok &= good;
            lines.push(format!(
                "{ns}: {} {} = {} ({})",
                s.name,
                s.rtype,
                got.join(","),
                if good { "ok" } else { "WRONG" }
            ));
        }
    }
    Ok((lines, ok))
}

#[async_trait]
impl ActionKind for DnsCheck {
    type Params = Params;

    fn kind(&self) -> &'static str {
        "dns.check"
    }
    fn read_only(&self, _params: &Value) -> bool {
        // Queries the authoritative servers.
        true
    }
    fn summary(&self) -> &'static str {
        "Assert the authoritative servers answer a region's values"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["answers", "summary"]
    }
    /// Authoritative answers with the wanted values show clients are sent to the service.
    fn proves_recovery(&self, _params: &Value) -> bool {
        true
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        decode_params(ctx, with, "dns.check")
    }
    fn describe(&self, params: &Value) -> String {
        format!(
            "dns answers point at {}",
            crate::action::param_text(params, "region", "(target)")
        )
    }
    async fn preflight(
        &self,
        p: &Self::Params,
        _raw: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        let (lines, ok) = run(p, ctx).await?;
        // DNS not pointing at the region yet is what a check before
        // `dns.switch` sees: the plan decides whether that is expected.
        Ok(Preflight::new(
            lines,
            if ok {
                Verdict::Passes
            } else {
                Verdict::FailsNow
            },
        ))
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let t = Instant::now();
        let (lines, ok) = run(p, ctx).await?;
        if !ok {
            return Err(ActionError::failed(format!(
                "DNS does not point at the region yet: {}",
                lines.join("; ")
            )));
        }
        let mut o = Outputs::new();
        o.insert("answers".into(), json!(lines));
        o.insert(
            "summary".into(),
            json!(format!(
                "{} answers ok in {:.1} ms",
                lines.len(),
                t.elapsed().as_secs_f64() * 1000.0
            )),
        );
        Ok(o)
    }
}
