//! The report as one self-contained HTML file: no script, no external
//! font, style or image, so it opens offline and attached to a ticket. A
//! Content-Security-Policy meta allows nothing but the page's own style
//! (by hash), so even a viewer that would fetch something cannot. Light
//! and dark schemes, print styles, real tables with header cells, and
//! pictures a screen reader can announce.

use std::fmt::Write as _;

use base64::Engine as _;
use sha2::Digest as _;

use super::stream::{Esc, Sink};
use super::{dur_ms, esc, evidence, facts, status_word, svg, trend, Report};
use crate::journal::format_ms;

const CSS: &str = r#"
:root{--bg:#fff;--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--wait:#8250df;--crit:#fff8c5;--accent:#0969da}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--muted:#9198a1;--line:#3d444d;--ok:#3fb950;--bad:#f85149;--warn:#d29922;--wait:#a371f7;--crit:#3a3000;--accent:#4493f8}}
body{background:var(--bg);color:var(--fg);font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.25rem;border-bottom:1px solid var(--line);padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}th,td{border:1px solid var(--line);padding:.25rem .6rem;text-align:left;vertical-align:top}
th{background:color-mix(in srgb,var(--line) 35%,transparent)}code{font-family:ui-monospace,monospace;font-size:.9em}
.muted{color:var(--muted)}.ok{color:var(--ok)}.bad{color:var(--bad)}
svg{max-width:100%;height:auto;display:block}svg text{fill:var(--fg);font:11px system-ui,sans-serif}
svg .tick,svg .mark-label{fill:var(--muted)}svg .grid,svg .axis{stroke:var(--line)}
svg .row.critical .label{font-weight:700}svg .row.critical .bar{stroke:var(--fg);stroke-width:1.5}
.bar.succeeded{fill:var(--ok)}.bar.failed{fill:var(--bad)}.bar.failed-attempt{fill:var(--bad);opacity:.55}
.bar.retry-wait{fill:var(--warn);opacity:.5}.bar.interrupted{fill:var(--warn)}.bar.skipped{fill:var(--muted)}
.bar.pending{fill:var(--muted)}.bar.approval,.bar.wait{fill:var(--wait)}
.mark{stroke-width:2;stroke-dasharray:4 3}.mark.failure{stroke:var(--bad)}.mark.rto{stroke:var(--accent)}
.trend .series{fill:none;stroke:var(--accent);stroke-width:2}.trend .point{fill:var(--accent)}.trend .target{stroke:var(--bad);stroke-dasharray:6 4}
.trend .unknown{fill:var(--warn);font-weight:700}
.legend span{margin-right:1rem}.evidence code{word-break:break-all}
@media print{body{margin:0;max-width:none;font-size:11pt;color:#000;background:#fff}:root{--bg:#fff;--fg:#000;--muted:#444;--line:#999}
h2{break-after:avoid}table,svg{break-inside:avoid}a{color:#000}}
"#;

/// The page's style (also the comparison page's).
pub(crate) fn css() -> &'static str {
    CSS
}

/// The CSP source for the page's one style element.
pub(crate) fn style_src() -> String {
    style_hash()
}

fn style_hash() -> String {
    let d = sha2::Sha256::digest(CSS.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(d)
    )
}

fn row(o: &mut String, th: &str, td: &str) {
    let _ = write!(
        o,
        "<tr><th scope=\"row\">{}</th><td>{td}</td></tr>",
        esc(th)
    );
}

fn head_row(o: &mut String, cols: &[&str]) {
    o.push_str("<thead><tr>");
    for c in cols {
        let _ = write!(o, "<th scope=\"col\">{}</th>", esc(c));
    }
    o.push_str("</tr></thead><tbody>");
}

/// Writes the whole page, section by section: the timeline (a row and a
/// Gantt bar per step, 20 MB for 47,000 steps) goes out in pieces.
pub fn write(r: &Report<'_>, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    let view = r.view;
    let mut o = Sink::new(w);
    let title = format!("drctl run report: {}", view.run_id);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src {}; img-src 'none'; base-uri 'none'; form-action 'none'\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta name=\"color-scheme\" content=\"light dark\"><title>{}</title><style>{CSS}</style></head><body><main>\n<h1>{}</h1>\n",
        style_hash(),
        esc(&title),
        esc(&title)
    );
    summary(&mut o, r);
    timeline(&mut o, r);
    decisions(&mut o, r);
    data_loss(&mut o, r);
    dns(&mut o, r);
    capacity(&mut o, r);
    errors(&mut o, r);
    o.piece();
    trend_section(&mut o, r);
    evidence_section(&mut o, r);
    o.push_str("</main></body></html>\n");
    o.finish()
}

fn summary(o: &mut String, r: &Report<'_>) {
    let view = r.view;
    o.push_str("<section aria-labelledby=\"summary\"><h2 id=\"summary\">Summary</h2><table>");
    let status = format!(
        "<strong>{}</strong>{}",
        esc(view.status_text()),
        view.reason
            .as_ref()
            .map(|r| format!(": {}", esc(r)))
            .unwrap_or_default()
    );
    row(o, "Status", &status);
    row(
        o,
        "Runbook",
        &format!(
            "<code>{}</code> ({}, sha256 {})",
            esc(&view.runbook.name),
            esc(&view.runbook.path),
            esc(&super::short_hash(&view.runbook.sha256))
        ),
    );
    if let Some(e) = &view.environment {
        row(
            o,
            "Environment",
            &format!("<code>{}</code> ({})", esc(&e.name), esc(&e.path)),
        );
    }
    row(o, "Mode", view.mode.as_str());
    if let (Some(s), Some(t)) = (&view.source_region, &view.target_region) {
        row(o, "Regions", &format!("{} → {}", esc(s), esc(t)));
    }
    row(
        o,
        "Operator",
        &format!("{} on {}", esc(&view.operator), esc(&view.host)),
    );
    row(o, "Started", &format_ms(view.started_ms));
    if let Some(f) = view.finished_ms {
        row(o, "Finished", &format_ms(f));
    }
    if let Some(fa) = view.failed_at_ms {
        row(o, "Declared failure time", &format_ms(fa));
    }
    if let Some(m) = &r.m {
        row(o, "RTO", &esc(&crate::measure::rto_line(m)));
        row(o, "RPO", &esc(&crate::measure::rpo_line(m)));
    }
    o.push_str("</table></section>\n");
}

fn timeline(o: &mut Sink<'_>, r: &Report<'_>) {
    let view = r.view;
    let recovery_step = r.m.as_ref().and_then(|m| m.recovery_step.clone());
    let critical = facts::critical_path(view, recovery_step.as_deref());
    let recovered =
        r.m.as_ref()
            .and_then(|m| match (m.recovered_at_ms, m.rto_ms) {
                (Some(at), Some(rto)) => Some((at, dur_ms(rto))),
                _ => None,
            });
    o.push_str("<section aria-labelledby=\"timeline\"><h2 id=\"timeline\">Timeline</h2>\n");
    svg::gantt_to(
        o,
        view,
        &svg::Marks {
            failed_at_ms: view.failed_at_ms,
            recovered,
            critical: &critical,
        },
    );
    o.push_str("\n<p class=\"legend muted\"><span>green: succeeded</span><span>red: failed</span><span>faded red: failed attempt (retried)</span><span>amber: retry wait or interrupted</span><span>violet: approval or wait</span><span>★ bold: critical path</span><span>dashed lines: declared failure, RTO end</span></p>\n");
    if !critical.is_empty() {
        let _ = writeln!(
            o,
            "<p>Critical path (from the journal's times; the journal does not record <code>needs</code>): {}.</p>",
            critical
                .iter()
                .map(|c| format!("<code>{}</code>", esc(c)))
                .collect::<Vec<_>>()
                .join(" → ")
        );
    }
    o.push_str("<table>");
    head_row(
        o,
        &[
            "Step", "Action", "Status", "Start", "End", "Duration", "Attempts",
        ],
    );
    let off = |t: Option<u64>| {
        t.map_or_else(
            || "-".to_string(),
            |t| format!("+{}", dur_ms(t.saturating_sub(view.started_ms))),
        )
    };
    for s in &view.steps {
        let _ = write!(
            o,
            "<tr><th scope=\"row\"><code>{}</code></th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            Esc(&s.id),
            Esc(&s.action),
            status_word(s.status),
            off(s.started_ms),
            off(s.finished_ms),
            s.duration_ms.map_or_else(|| "-".into(), dur_ms),
            if s.attempts == 0 {
                "-".to_string()
            } else {
                s.attempts.to_string()
            }
        );
        o.piece();
    }
    o.push_str("</tbody></table></section>\n");
}

fn decisions(o: &mut String, r: &Report<'_>) {
    let ds = facts::decisions(r.view);
    o.push_str("<section aria-labelledby=\"decisions\"><h2 id=\"decisions\">Decisions</h2>");
    if ds.is_empty() {
        o.push_str("<p>No approvals, overrides or resume decisions are journaled.</p></section>\n");
        return;
    }
    o.push_str("<table>");
    head_row(o, &["When", "Who", "Decision", "Detail"]);
    for d in ds {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><th scope=\"row\">{}</th><td>{}</td></tr>",
            esc(&d.at),
            esc(&d.who),
            esc(&d.what),
            esc(&d.detail)
        );
    }
    o.push_str("</tbody></table></section>\n");
}

fn data_loss(o: &mut String, r: &Report<'_>) {
    let discarded = facts::discarded(r.view);
    let m = r.m.as_ref();
    let has_rpo = m.is_some_and(|m| !m.rpo.is_empty() || !m.rpo_truth.is_empty());
    if !has_rpo && discarded.is_empty() {
        return;
    }
    o.push_str("<section aria-labelledby=\"loss\"><h2 id=\"loss\">Data loss</h2><ul>");
    if let Some(m) = m {
        for (step, v) in &m.rpo {
            let _ = write!(
                o,
                "<li>estimate (<code>{}</code>): {}</li>",
                esc(step),
                esc(&crate::measure::describe_rpo(v))
            );
        }
        for t in &m.rpo_truth {
            let _ = write!(
                o,
                "<li>truth (old primary restarted): {}<ul>",
                esc(&crate::measure::describe_truth(t))
            );
            for c in crate::measure::comparisons(&m.rpo, t) {
                let _ = write!(o, "<li>{}</li>", esc(&c));
            }
            o.push_str("</ul></li>");
        }
        if let Some(why) = &m.truth_missing {
            let _ = write!(
                o,
                "<li>truth: {}; the figures above are estimates</li>",
                esc(why)
            );
        }
        if has_rpo {
            let _ = write!(
                o,
                "<li>headline: {}</li>",
                esc(&crate::measure::rpo_line(m))
            );
        }
    }
    o.push_str("</ul>");
    for d in discarded {
        let _ = write!(
            o,
            "<h3>Discarded by failback</h3><p>{}: {}.</p>",
            esc(&d.at),
            esc(&d.sentence())
        );
        if !d.tables.is_empty() {
            o.push_str("<table>");
            head_row(o, &["Table", "Rows discarded", "Saved in"]);
            for t in &d.tables {
                let _ = write!(
                    o,
                    "<tr><th scope=\"row\"><code>{}</code></th><td>{}</td><td><code>{}</code></td></tr>",
                    esc(&t.table),
                    esc(&facts::known(&t.rows)),
                    esc(&t.file)
                );
            }
            o.push_str("</tbody></table>");
        }
    }
    o.push_str("</section>\n");
}

fn dns(o: &mut String, r: &Report<'_>) {
    let servers = facts::dns_servers(r.view);
    if servers.is_empty() {
        return;
    }
    o.push_str("<section aria-labelledby=\"dns\"><h2 id=\"dns\">DNS convergence</h2><table>");
    head_row(o, &["Step", "Authoritative server", "Converged after"]);
    for d in servers {
        let _ = write!(
            o,
            "<tr><td><code>{}</code></td><th scope=\"row\">{}</th><td>{}</td></tr>",
            esc(&d.step),
            esc(&d.server),
            d.ms.map_or_else(|| "unknown".to_string(), |v| format!("{v:.1} ms"))
        );
    }
    o.push_str("</tbody></table></section>\n");
}

fn capacity(o: &mut String, r: &Report<'_>) {
    let cap = facts::capacity(r.view);
    if cap.is_empty() {
        return;
    }
    o.push_str(
        "<section aria-labelledby=\"capacity\"><h2 id=\"capacity\">Kubernetes capacity</h2><table>",
    );
    head_row(
        o,
        &["Step", "Workload", "Replicas before", "Replicas after"],
    );
    for c in cap {
        let _ = write!(
            o,
            "<tr><td><code>{}</code></td><th scope=\"row\">{}</th><td>{}</td><td>{}</td></tr>",
            esc(&c.step),
            esc(&c.workload),
            facts::known(&c.before),
            facts::known(&c.after)
        );
    }
    o.push_str("</tbody></table></section>\n");
}

fn errors(o: &mut Sink<'_>, r: &Report<'_>) {
    let errs: Vec<_> = r
        .view
        .steps
        .iter()
        .filter(|s| s.error.is_some() || !s.attempt_failures.is_empty())
        .collect();
    if errs.is_empty() {
        return;
    }
    o.push_str("<section aria-labelledby=\"errors\"><h2 id=\"errors\">Errors</h2><table>");
    head_row(o, &["Step", "When", "Error", "Hint"]);
    for s in errs {
        for (n, e) in &s.attempt_failures {
            let _ = write!(
                o,
                "<tr><th scope=\"row\"><code>{}</code></th><td>attempt {n} (retried)</td><td>{}</td><td>{}</td></tr>",
                esc(&s.id),
                esc(&super::one_line(&e.message)),
                esc(e.hint.as_deref().unwrap_or(""))
            );
        }
        if let Some(e) = &s.error {
            let _ = write!(
                o,
                "<tr><th scope=\"row\"><code>{}</code></th><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&s.id),
                esc(e.kind.as_str()),
                esc(&super::one_line(&e.message)),
                esc(e.hint.as_deref().unwrap_or(""))
            );
        }
        o.piece();
    }
    o.push_str("</tbody></table></section>\n");
}

fn trend_section(o: &mut String, r: &Report<'_>) {
    let Some((rto, rpo)) = trend::charts(r) else {
        return;
    };
    let _ = write!(
        o,
        "<section aria-labelledby=\"trend\"><h2 id=\"trend\">Trend (last {} drills)</h2>{rto}\n{rpo}\n",
        r.inputs.trend.len()
    );
    o.push_str("<table>");
    head_row(
        o,
        &[
            "#",
            "Run",
            "Status",
            "RTO",
            "RTO target",
            "RPO",
            "RPO target",
        ],
    );
    let opt = |v: Option<u64>, none: &str| v.map_or_else(|| none.to_string(), dur_ms);
    for (i, p) in r.inputs.trend.iter().enumerate() {
        let _ = write!(
            o,
            "<tr><th scope=\"row\">{}</th><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            i + 1,
            esc(&p.run_id),
            esc(&p.status),
            opt(p.rto_ms, "unknown"),
            opt(p.rto_target_ms, "none"),
            opt(p.rpo_ms, "unknown"),
            opt(p.rpo_target_ms, "none"),
        );
    }
    o.push_str("</tbody></table></section>\n");
}

fn evidence_section(o: &mut String, r: &Report<'_>) {
    let e = &r.evidence;
    o.push_str(
        "<section class=\"evidence\" aria-labelledby=\"evidence\"><h2 id=\"evidence\">Evidence</h2><table>",
    );
    row(
        o,
        "Journal",
        &format!(
            "{} records, hash chain verified{}",
            e.records,
            if r.view.torn_tail > 0 {
                format!(
                    "; a torn final write of {} bytes was ignored (never acknowledged)",
                    r.view.torn_tail
                )
            } else {
                String::new()
            }
        ),
    );
    row(o, "Head", &format!("<code>{}</code>", esc(&e.head)));
    row(
        o,
        "drctl",
        &format!(
            "run started by {}; report rendered by {}",
            esc(&e.run_drctl_version),
            esc(&e.rendered_by)
        ),
    );
    if let Some(s) = &e.signature {
        row(
            o,
            "Signature",
            &format!(
                "{} over the journal head, key <code>{}</code>: <code>{}</code>",
                esc(&s.algorithm),
                esc(&s.key_fingerprint),
                esc(&s.value)
            ),
        );
    }
    if let Some(a) = &e.anchor {
        row(
            o,
            "Anchor",
            &format!(
                "journal head in the {} ledger of {} (region {}, database <code>{}</code>): tx {}, key <code>{}</code>, proven from trusted tx {}",
                esc(&a.ledger),
                esc(&a.environment),
                esc(&a.region),
                esc(&a.database),
                a.tx,
                esc(&a.key),
                a.proven_from_tx
            ),
        );
    }
    let _ = write!(
        o,
        "</table><p><code>drctl report verify FILE --run {}</code> renders this report again from the journal and compares.</p></section>\n{}\n",
        esc(&e.run_id),
        evidence::comment(e)
    );
}
