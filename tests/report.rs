//! Reports through the real binary: the Markdown, the postmortem
//! skeleton, the JSON and a comparison snapshot-tested (ids, times,
//! durations, hashes and paths redacted); `report verify` accepting an
//! untouched report and rejecting any changed figure, and checking a
//! signed journal head with the right and a wrong key; the HTML loaded in
//! a real headless Chromium (no network request, the timeline drawn,
//! every step in it) with a drill trend.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use drctl_tests::{regex_escape, wait_until, Out, TinyHttp, Work};
use ring::signature::KeyPair as _;

fn settings(w: &Work) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(&regex_escape(&w.path().display().to_string()), "[WORK]");
    s.add_filter(r"\d{8}T\d{9}Z-[0-9a-f]{6}", "[RUN_ID]");
    s.add_filter(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z", "[TIME]");
    // Durations and times in ms vary from run to run; their keys do not
    // (before the hash filter: a float's long fraction looks like a hash).
    s.add_filter(
        r#""([a-z_]*_ms|ts_ms|latency_ms|waited_ms)": \d+(\.\d+)?([eE][-+]?\d+)?"#,
        r#""$1": "[MS]""#,
    );
    s.add_filter(r"\b[0-9a-f]{16,64}\b", "[HASH]");
    s.add_filter(r"127\.0\.0\.\d+:\d+", "[ADDR]");
    // The runbook names the test server's port.
    s.add_filter(r"sha256 [0-9a-f]{12}", "sha256 [HASH]");
    s.add_filter(r"drctl \d+\.\d+\.\d+", "drctl [VERSION]");
    s.add_filter(
        r#""(run_drctl_version|rendered_by|drctl_version)": ?"[^"]*""#,
        r#""$1": "[VERSION]""#,
    );
    s.add_filter(r#""pid": \d+"#, r#""pid": "[PID]""#);
    s.add_filter(r"[+-]?\b\d+(\.\d+)?(ms|µs|s|m)\b", "[DUR]");
    s.add_filter(
        &format!(r"\b{}\b", regex_escape(&drctl::journal::hostname())),
        "[HOST]",
    );
    s
}

/// A runbook with a retried step, an approval, a wait and a recovery
/// proof (an HTTP check of a server on loopback).
fn runbook(w: &Work, url: &str) -> String {
    runbook_with(w, url, "{rto: 1m, rpo: 5s}")
}

fn runbook_with(w: &Work, url: &str, targets: &str) -> String {
    w.write(
        "rb.yaml",
        &format!(
            r#"name: checkout-failover
description: report tests
targets: {targets}
steps:
  - id: prepare
    action: exec
    with: {{argv: [sh, -c, "echo ready > marker"], unless: [test, -f, marker]}}
  - id: flaky
    action: exec
    needs: [prepare]
    retry: {{attempts: 3, initial: 50ms, max: 100ms}}
    with: {{argv: [sh, -c, "test -f flaky-ok || {{ touch flaky-ok; exit 1; }}"], idempotent: true}}
  - id: gate
    action: approval
    needs: [flaky]
    timeout: 30s
    with: {{message: "switch traffic?"}}
  - id: pause
    action: wait
    needs: [gate]
    with: {{duration: 20ms}}
  - id: probe
    action: http.check
    needs: [pause]
    with: {{url: "{url}"}}
"#
        ),
    )
    .display()
    .to_string()
}

/// An incident run: `--force`, a declared failure time, and the approval
/// given by `alice` from another terminal while the run waits.
fn incident(w: &Work, rb: &str) -> String {
    let failed_at = drctl::journal::now_rfc3339();
    let child = w
        .cmd(&["run", rb, "--yes", "--force", "--failed-at", &failed_at])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn drctl run");
    assert!(
        wait_until(Duration::from_secs(20), || w.runs().first().is_some_and(
            |r| w
                .journal(r)
                .iter()
                .any(|x| x["type"] == "step_started" && x["step"] == "gate")
        )),
        "the approval never became pending"
    );
    let run = w.runs()[0].clone();
    let ap = w.run(&["approve", &run, "gate", "--as", "alice"]);
    assert_eq!(ap.code, 0, "{ap:?}");
    let out = Out::from(child.wait_with_output().expect("wait"));
    assert_eq!(out.code, 0, "{out:?}");
    run
}

#[test]
fn markdown_postmortem_json_and_compare_read_as_reviewed() {
    let w = Work::new();
    let http = TinyHttp::start(200, r#"{"status":"ok"}"#);
    let rb = runbook(&w, &http.url("/health"));
    let a = incident(&w, &rb);
    let s = settings(&w);
    let _guard = s.bind_to_scope();

    let md = w.run(&["report", &a]);
    assert_eq!(md.code, 0, "{md:?}");
    // Who decided what, and when: the approval, --force at start.
    assert!(
        md.stdout.contains("| alice | approved `gate` | via"),
        "{}",
        md.stdout
    );
    assert!(
        md.stdout.contains("| test-operator | --force |"),
        "{}",
        md.stdout
    );
    insta::assert_snapshot!("report_md", md.stdout);

    let pm = w.run(&["report", &a, "--postmortem"]);
    assert_eq!(pm.code, 0, "{pm:?}");
    assert!(
        pm.stdout
            .contains("`flaky` attempt 1 failed and was retried"),
        "{}",
        pm.stdout
    );
    insta::assert_snapshot!("postmortem", pm.stdout);

    let js = w.run(&["report", &a, "--format", "json"]);
    assert_eq!(js.code, 0, "{js:?}");
    let v: serde_json::Value = serde_json::from_str(&js.stdout).expect("json");
    assert_eq!(v["evidence"]["records"], v["journal"]["records"]);
    assert_eq!(
        v["critical_path"].as_array().map(Vec::len),
        Some(5),
        "{}",
        v["critical_path"]
    );
    insta::assert_snapshot!("report_json", js.stdout);

    // The previous drill beside this run: a drill skips the approval.
    // Nothing here measures data loss: the drill cannot show its RPO
    // target met (exit 12), which is what the comparison shows too.
    let d = w.run(&["drill", &rb, "--yes"]);
    assert_eq!(d.code, 12, "{d:?}");
    let b = w.runs()[1].clone();
    let cmp = w.run(&["report", "--compare", &a, &b]);
    assert_eq!(cmp.code, 0, "{cmp:?}");
    assert!(
        cmp.stdout.contains("- mode: `incident` -> `drill`"),
        "{}",
        cmp.stdout
    );
    insta::assert_snapshot!("compare", cmp.stdout);
    for f in ["json", "html"] {
        let c = w.run(&["report", "--compare", &a, &b, "--format", f]);
        assert_eq!(c.code, 0, "{c:?}");
        assert!(c.stdout.contains(&b), "{f}: {}", c.stdout);
    }
}

/// The text between the title and the evidence section: where a changed
/// figure must be caught.
fn body_range(text: &str, format: &str) -> (usize, usize) {
    let end = match format {
        "md" => text.find("## Evidence"),
        "html" => text.find("<section class=\"evidence\""),
        _ => text.find("\"evidence\""),
    }
    .expect("evidence section");
    (text.find('\n').unwrap_or(0), end)
}

#[test]
fn verify_accepts_an_untouched_report_and_rejects_any_changed_figure() {
    let w = Work::new();
    let http = TinyHttp::start(200, r#"{"status":"ok"}"#);
    let rb = runbook(&w, &http.url("/health"));
    let run = incident(&w, &rb);
    for format in ["md", "html", "json"] {
        let r = w.run(&["report", &run, "--format", format]);
        assert_eq!(r.code, 0, "{r:?}");
        let file = w.write(&format!("report.{format}"), &r.stdout);
        let file = file.to_str().unwrap();
        let ok = w.run(&["report", "verify", file, "--run", &run]);
        assert_eq!(ok.code, 0, "{format}: {ok:?}");
        assert!(ok.stdout.contains("matches run"), "{ok:?}");
        // Every digit of the body, changed one at a time (a sample of
        // them, spread over the whole body), is caught.
        let (from, to) = body_range(&r.stdout, format);
        let digits: Vec<usize> = r.stdout[from..to]
            .char_indices()
            .filter(|(_, c)| c.is_ascii_digit())
            .map(|(i, _)| from + i)
            .collect();
        assert!(digits.len() > 20, "{format}: too few figures");
        for &i in digits.iter().step_by(digits.len() / 12) {
            let mut edited = r.stdout.clone().into_bytes();
            edited[i] = if edited[i] == b'9' {
                b'0'
            } else {
                edited[i] + 1
            };
            let f = w.write("edited", &String::from_utf8(edited).unwrap());
            let bad = w.run(&["report", "verify", f.to_str().unwrap(), "--run", &run]);
            assert_eq!(bad.code, 50, "{format}: digit at {i} changed, {bad:?}");
            assert!(bad.stderr.contains("differs from its journal"), "{bad:?}");
        }
        // A word changed, too.
        let edited = r.stdout.replacen("succeeded", "failed", 1);
        let f = w.write("edited", &edited);
        let bad = w.run(&["report", "verify", f.to_str().unwrap(), "--run", &run]);
        assert_eq!(bad.code, 50, "{format}: {bad:?}");
    }
    // The evidence itself edited (another record count): refused as not
    // this journal.
    let md = w.read("report.md").replace("\"records\":", "\"records\":1");
    let f = w.write("edited", &md);
    let bad = w.run(&["report", "verify", f.to_str().unwrap(), "--run", &run]);
    assert_eq!(bad.code, 50, "{bad:?}");
    // A file without evidence is not a report.
    let f = w.write("plain.md", "# notes\n");
    let bad = w.run(&["report", "verify", f.to_str().unwrap(), "--run", &run]);
    assert_eq!(bad.code, 3, "{bad:?}");
}

#[test]
fn a_drill_report_with_its_trend_verifies_and_is_the_stored_one() {
    let w = Work::new();
    let http = TinyHttp::start(200, r#"{"status":"ok"}"#);
    let rb = runbook_with(&w, &http.url("/health"), "{rto: 1m}");
    let mut stored = String::new();
    for _ in 0..2 {
        let d = w.run(&["drill", &rb, "--yes"]);
        assert_eq!(d.code, 0, "{d:?}");
        stored = d
            .stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("report: "))
            .expect("report path")
            .to_string();
    }
    let run = w.runs()[1].clone();
    let md = w.run(&["report", &run]);
    assert_eq!(md.code, 0, "{md:?}");
    assert!(
        md.stdout.contains("## Trend (last 2 drills)"),
        "{}",
        md.stdout
    );
    assert!(md.stdout.contains("\"trend_window\":10"), "{}", md.stdout);
    // The drill stored the same report (rendered after its history entry).
    if !drctl_tests::pg_mode() {
        let stored = w.path().join(&stored);
        assert_eq!(
            std::fs::read_to_string(&stored)
                .expect("stored report")
                .trim_end(),
            md.stdout.trim_end()
        );
    }
    for format in ["md", "html", "json"] {
        let r = w.run(&["report", &run, "--format", format]);
        let f = w.write(&format!("drill.{format}"), &r.stdout);
        let ok = w.run(&["report", "verify", f.to_str().unwrap(), "--run", &run]);
        assert_eq!(ok.code, 0, "{format}: {ok:?}");
    }
    // A shorter window is another report, recorded as such, and verifies.
    let one = w.run(&["report", &run, "--trend", "1"]);
    assert!(
        one.stdout.contains("## Trend (last 1 drills)"),
        "{}",
        one.stdout
    );
    let f = w.write("one.md", &one.stdout);
    assert_eq!(
        w.run(&["report", "verify", f.to_str().unwrap(), "--run", &run])
            .code,
        0
    );
    // The trend's figures come from the history: a report whose trend row
    // was edited is refused.
    let edited = md.stdout.replacen("| 1 | ", "| 1 | x", 1);
    let f = w.write("edited.md", &edited);
    assert_eq!(
        w.run(&["report", "verify", f.to_str().unwrap(), "--run", &run])
            .code,
        50
    );
}

/// An Ed25519 key pair: the private key as PKCS#8 PEM, the public key as
/// SubjectPublicKeyInfo PEM (what `openssl genpkey`/`pkey -pubout` write).
fn key_pair() -> (String, String) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let rng = ring::rand::SystemRandom::new();
    let der = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(der.as_ref()).expect("pair");
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());
    (
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            b64.encode(der.as_ref())
        ),
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            b64.encode(&spki)
        ),
    )
}

#[test]
fn a_signed_journal_head_verifies_with_its_key_and_fails_with_another() {
    let w = Work::new();
    let rb = w.write(
        "rb.yaml",
        "name: signed\nsteps:\n  - id: one\n    action: exec\n    with: {argv: [\"true\"], idempotent: true}\n",
    );
    let r = w.run(&["run", rb.to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    let run = w.runs()[0].clone();
    let (private, public) = key_pair();
    let (_, other) = key_pair();
    let pk = w.write("key.pub", &public);
    let other = w.write("other.pub", &other);
    for format in ["md", "html", "json"] {
        let out = Out::from(
            w.cmd(&[
                "report",
                &run,
                "--format",
                format,
                "--sign-key",
                "env:REPORT_KEY",
            ])
            .env("REPORT_KEY", &private)
            .output()
            .expect("spawn"),
        );
        assert_eq!(out.code, 0, "{out:?}");
        let body = private.lines().nth(1).unwrap();
        assert!(!out.stdout.contains(body), "the private key was printed");
        assert!(out.stdout.contains("SHA256:"), "{}", out.stdout);
        let f = w.write(&format!("signed.{format}"), &out.stdout);
        let f = f.to_str().unwrap();
        let good = w.run(&[
            "report",
            "verify",
            f,
            "--run",
            &run,
            "--public-key",
            pk.to_str().unwrap(),
        ]);
        assert_eq!(good.code, 0, "{format}: {good:?}");
        assert!(good.stdout.contains("signature verified"), "{good:?}");
        let js = w.run(&[
            "--output",
            "json",
            "report",
            "verify",
            f,
            "--run",
            &run,
            "--public-key",
            pk.to_str().unwrap(),
        ]);
        let js: serde_json::Value = serde_json::from_str(&js.stdout).expect("json");
        assert_eq!(js["matches"], true);
        assert!(
            js["signature_verified_with"]
                .as_str()
                .is_some_and(|k| k.starts_with("SHA256:")),
            "{js}"
        );
        let bad = w.run(&[
            "report",
            "verify",
            f,
            "--run",
            &run,
            "--public-key",
            other.to_str().unwrap(),
        ]);
        assert_eq!(bad.code, 51, "{format}: {bad:?}");
        // Without a key the report still matches; the signature is named unchecked.
        let unchecked = w.run(&["report", "verify", f, "--run", &run]);
        assert_eq!(unchecked.code, 0, "{unchecked:?}");
        assert!(unchecked.stdout.contains("not checked"), "{unchecked:?}");
    }
    // A forged signature value: the report still renders the same, the
    // key check fails.
    let md = w.read("signed.md");
    let at = md.find("\"value\":\"").expect("signature") + 9;
    let value = &md[at..at + md[at..].find('"').expect("end")];
    let mut forged_value = value.to_string().into_bytes();
    forged_value[0] = if forged_value[0] == b'A' { b'B' } else { b'A' };
    let forged = md.replace(value, std::str::from_utf8(&forged_value).unwrap());
    let f = w.write("forged.md", &forged);
    let bad = w.run(&[
        "report",
        "verify",
        f.to_str().unwrap(),
        "--run",
        &run,
        "--public-key",
        pk.to_str().unwrap(),
    ]);
    assert_eq!(bad.code, 51, "{bad:?}");
    // An unsigned report is refused when a key is asked for.
    let plain = w.run(&["report", &run]);
    let f = w.write("plain.md", &plain.stdout);
    let bad = w.run(&[
        "report",
        "verify",
        f.to_str().unwrap(),
        "--run",
        &run,
        "--public-key",
        pk.to_str().unwrap(),
    ]);
    assert_eq!(bad.code, 51, "{bad:?}");
}

fn chromium() -> Option<std::path::PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
}

/// Runs headless Chromium as the issue asks, with a throwaway profile.
fn chrome(bin: &Path, profile: &Path, extra: &[&str], url: &str) -> Out {
    let mut c = Command::new(bin);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-extensions",
        "--disable-sync",
        "--disable-component-update",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .stdin(Stdio::null());
    Out::from(c.output().expect("spawn chromium"))
}

#[test]
fn the_html_report_renders_offline_in_headless_chromium() {
    let Some(bin) = chromium() else {
        assert!(
            std::env::var("CI").is_err(),
            "chromium is not installed and CI is set: `scripts/install-deps.sh` installs it"
        );
        eprintln!("SKIPPED: chromium is not installed (apt-get install chromium); set CI=true to make this a failure");
        return;
    };
    let w = Work::new();
    let http = TinyHttp::start(200, r#"{"status":"ok"}"#);
    // No RPO target: nothing here measures data loss, and a drill that
    // cannot show a target met exits 12.
    let rb = runbook_with(&w, &http.url("/health"), "{rto: 1m}");
    // Three drills of the same runbook: the trend has three points.
    for _ in 0..3 {
        let d = w.run(&["drill", &rb, "--yes"]);
        assert_eq!(d.code, 0, "{d:?}");
    }
    let run = w.runs()[2].clone();
    let html = w.run(&["report", &run, "--format", "html"]);
    assert_eq!(html.code, 0, "{html:?}");
    assert!(html.stdout.contains("Trend (last 3 drills)"), "no trend");
    let file = w.write("report.html", &html.stdout);
    let url = format!("file://{}", file.display());
    let profile = w.path().join("chrome-profile");

    // The page as Chromium parsed it: every step of the run is in the
    // timeline picture.
    let dom = chrome(&bin, &profile, &["--dump-dom"], &url);
    assert_eq!(dom.code, 0, "{dom:?}");
    let gantt_at = dom.stdout.find("<svg").expect("an svg in the DOM");
    let gantt =
        &dom.stdout[gantt_at..gantt_at + dom.stdout[gantt_at..].find("</svg>").expect("end")];
    assert!(gantt.contains("class=\"gantt\""), "{gantt}");
    let steps: Vec<String> = w
        .journal(&run)
        .iter()
        .filter_map(|r| r["step"].as_str().map(str::to_string))
        .collect();
    assert!(steps.len() >= 5);
    for s in &steps {
        assert!(
            gantt.contains(&format!("data-step=\"{s}\"")),
            "step {s} not in the timeline"
        );
    }
    assert!(
        dom.stdout.matches("class=\"trend\"").count() == 2,
        "two trend charts"
    );

    // A screenshot: the right size, and drawn (the succeeded bars' green).
    let shot = w.path().join("shot.png");
    let netlog = w.path().join("net.json");
    let s = chrome(
        &bin,
        &profile,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,1600",
            &format!("--log-net-log={}", netlog.display()),
        ],
        &url,
    );
    assert_eq!(s.code, 0, "{s:?}");
    let decoder = png::Decoder::new(std::fs::File::open(&shot).expect("screenshot written"));
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("png frame");
    assert_eq!((info.width, info.height), (1200, 1600));
    let bpp = info.line_size / info.width as usize;
    assert!(bpp >= 3, "colour screenshot");
    let px: Vec<&[u8]> = buf[..info.buffer_size()].chunks(bpp).collect();
    let background = px[0];
    let drawn = px.iter().filter(|p| p[..3] != background[..3]).count();
    assert!(
        drawn > px.len() / 50,
        "the page is blank ({drawn} drawn pixels)"
    );
    let green = px
        .iter()
        .filter(|p| {
            p[0].abs_diff(0x1a) < 24 && p[1].abs_diff(0x7f) < 24 && p[2].abs_diff(0x37) < 24
        })
        .count();
    assert!(green > 200, "no timeline bars drawn ({green} green pixels)");

    // No request made by the page: Chromium's own background requests
    // (component updates, account checks) carry no initiating origin.
    let page = page_requests(&netlog);
    assert!(page.is_empty(), "the report made requests: {page:?}");

    // The check sees a page's requests: a page with an external image
    // (and no policy) shows one, and the server gets it.
    let pixel = TinyHttp::start(200, "{}");
    let control = w.write(
        "control.html",
        &format!(
            "<!DOCTYPE html><html><body><img src=\"{}\"></body></html>",
            pixel.url("/pixel.png")
        ),
    );
    let netlog2 = w.path().join("net2.json");
    let c = chrome(
        &bin,
        &profile,
        &[
            "--dump-dom",
            &format!("--log-net-log={}", netlog2.display()),
        ],
        &format!("file://{}", control.display()),
    );
    assert_eq!(c.code, 0, "{c:?}");
    let page = page_requests(&netlog2);
    assert!(
        page.iter().any(|(_, u)| u.contains("/pixel.png")),
        "the control page's request was not seen: {page:?}"
    );
}

/// Requests in a Chromium net log that a page initiated (`initiator` is
/// an origin; the browser's own requests say "not an origin").
fn page_requests(netlog: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(netlog).expect("net log written");
    // Chromium may leave the log's closing brackets off when it exits.
    let v: serde_json::Value = serde_json::from_str(&text)
        .or_else(|_| serde_json::from_str(&format!("{}]}}", text.trim_end().trim_end_matches(','))))
        .expect("net log is JSON");
    let start_job = v["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].clone();
    assert!(start_job.is_number(), "net log without event types");
    v["events"]
        .as_array()
        .expect("events")
        .iter()
        // The job's begin event carries its parameters; its end has none.
        .filter(|e| e["type"] == start_job && e["params"]["url"].is_string())
        .filter_map(|e| {
            let initiator = e["params"]["initiator"].as_str().unwrap_or("");
            (initiator != "not an origin").then(|| {
                (
                    initiator.to_string(),
                    e["params"]["url"].as_str().unwrap_or("").to_string(),
                )
            })
        })
        .collect()
}
