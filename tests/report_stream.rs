//! Reports written as they are rendered (issue #16's performance work):
//! on a journal large enough that it is read in several chunks and the
//! HTML and JSON go out in many pieces, the bytes `drctl report` prints
//! are exactly the in-memory rendering `report verify` compares against,
//! and verify accepts them; a journal that fails its hash chain, early or
//! only at its last record, prints no report byte in any format.
//! Directory store only: the benchmark's journal is written in place.

use drctl::engine::view::fold_bytes;
use drctl::report::{render, Format, Inputs};
use drctl_tests::Work;

const RUN: &str = "bench-report";

/// The benchmark's drill journal (6,000 records, about 2 MB: two store
/// chunks), written into the workspace's directory store.
fn journal(w: &Work) -> Vec<u8> {
    drctl::store::DirStore::open(w.state()).expect("store");
    let dir = w.state().join("runs").join(RUN);
    std::fs::create_dir_all(&dir).expect("run dir");
    let mut bytes = Vec::new();
    drctl::bench::report::write_journal(6_000, &mut bytes).expect("journal");
    assert!(bytes.len() > 1 << 20, "{} bytes: one chunk", bytes.len());
    std::fs::write(dir.join("journal.jsonl"), &bytes).expect("write journal");
    bytes
}

fn report(w: &Work, format: &str) -> std::process::Output {
    w.cmd(&["report", RUN, "--format", format])
        .output()
        .expect("spawn drctl report")
}

#[test]
fn printed_reports_are_the_rendered_bytes_and_verify() {
    let w = Work::dir_store();
    let bytes = journal(&w);
    let view = fold_bytes(&bytes).expect("the journal verifies");
    for (name, format) in [
        ("md", Format::Md),
        ("html", Format::Html),
        ("json", Format::Json),
    ] {
        let out = report(&w, name);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut want = render(&view, &Inputs::plain(format)).into_bytes();
        if want.last() != Some(&b'\n') {
            want.push(b'\n');
        }
        if format != Format::Md {
            // Many pieces of the stream, not one.
            assert!(
                want.len() > 10 * drctl::report::stream::PIECE,
                "{name}: {} bytes",
                want.len()
            );
        }
        assert!(
            out.stdout == want,
            "{name}: the printed report differs from the rendered one ({} vs {} bytes)",
            out.stdout.len(),
            want.len()
        );
        let file = w.write(
            &format!("report.{name}"),
            &String::from_utf8(out.stdout).expect("utf-8"),
        );
        let v = w.run(&[
            "report",
            "verify",
            &file.display().to_string(),
            "--run",
            RUN,
        ]);
        assert_eq!(v.code, 0, "{name}: {v:?}");
    }
}

#[test]
fn a_journal_that_fails_verification_prints_no_report_bytes() {
    let w = Work::dir_store();
    let good = journal(&w);
    let text = String::from_utf8(good).expect("utf-8");
    let path = w.state().join("runs").join(RUN).join("journal.jsonl");
    // A changed figure in the first chunk, and a changed final record (the
    // chain breaks only after every step was read and folded).
    let early = text.replacen("connection refused", "connection refusal", 1);
    let end = text.rfind("\"succeeded\"").expect("the run's end");
    let late = format!(
        "{}\"failed\"{}",
        &text[..end],
        &text[end + "\"succeeded\"".len()..]
    );
    for (what, journal) in [("early", early), ("last record", late)] {
        std::fs::write(&path, &journal).expect("tamper");
        for format in ["md", "html", "json"] {
            let out = report(&w, format);
            assert_eq!(
                out.status.code(),
                Some(drctl::exit::JOURNAL_CORRUPT),
                "{what}, {format}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.stdout.is_empty(),
                "{what}, {format}: {} report bytes printed",
                out.stdout.len()
            );
            assert!(!out.stderr.is_empty(), "{what}, {format}: no reason given");
        }
    }
}
