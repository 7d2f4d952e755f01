//! Approvals, aborts and signals through the real binary: aborting a
//! parked or live run, Ctrl-C / SIGTERM while an approval is pending (and
//! a second signal escalating), `distinct_approver`, and commands refused
//! on runs that already ended. Exec steps append to a witness file `w`, so
//! a step that ran when it must not have is caught.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use drctl_tests::regex_escape;
use drctl_tests::{block_on, wait_until, Out, Work};
use serde_json::Value;

/// A gate between two witnessed exec steps.
fn gated(w: &Work, approval_with: &str, timeout: &str) -> String {
    w.write(
        "rb.yaml",
        &format!(
            "name: gated\nsteps:\n  - id: before\n    action: exec\n    with: {{argv: [sh, -c, 'echo before >> w'], unless: [grep, -qx, before, w]}}\n  - id: gate\n    action: approval\n    needs: [before]\n    timeout: {timeout}\n    with: {{message: 'fence now?'{approval_with}}}\n  - id: fence\n    action: exec\n    needs: [gate]\n    with: {{argv: [sh, -c, 'echo fence >> w'], unless: [grep, -qx, fence, w]}}\n"
        ),
    )
    .display()
    .to_string()
}

/// Placeholders for what differs between runs, machines and store kinds.
fn settings(w: &Work) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(&regex_escape(&w.state_arg()), "[STATE]");
    s.add_filter(&regex_escape(&w.path().display().to_string()), "[WORK]");
    s.add_filter(r"\d{8}T\d{9}Z-[0-9a-f]{6}", "[RUN_ID]");
    s
}

fn last(j: &[Value]) -> Value {
    j.last().cloned().unwrap_or(Value::Null)
}

/// Starts a run in the background and waits until its approval is pending.
fn spawn_until_pending(w: &Work, rb: &str) -> (Child, String) {
    let child = w
        .cmd(&["run", rb, "--yes"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn drctl run");
    assert!(
        wait_until(Duration::from_secs(15), || w.runs().first().is_some_and(
            |r| w
                .journal(r)
                .iter()
                .any(|x| x["type"] == "step_started" && x["step"] == "gate")
        )),
        "the approval never became pending"
    );
    // The step polls the store every 200 ms; let it print its prompt.
    std::thread::sleep(Duration::from_millis(300));
    let run = w.runs()[0].clone();
    (child, run)
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, sig) };
}

fn wait_out(child: Child, limit: Duration) -> (Out, Duration) {
    let start = Instant::now();
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(limit);
        // SAFETY: a last resort for a hung child; harmless if it is gone.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let out = Out::from(child.wait_with_output().expect("wait"));
    drop(watchdog);
    (out, start.elapsed())
}

#[test]
fn abort_of_a_parked_run_ends_it_at_once_and_nothing_runs_after() {
    let w = Work::new();
    let rb = gated(&w, "", "1s");
    let o = w.run(&["run", &rb, "--yes"]);
    assert_eq!(o.code, 8, "{o:?}");
    let run = w.runs()[0].clone();
    assert_eq!(w.read("w"), "before\n");

    let a = w.run(&["abort", &run]);
    assert_eq!(a.code, 0, "{a:?}");
    settings(&w).bind(|| insta::assert_snapshot!("abort_parked", a.stdout));
    let j = w.journal(&run);
    assert_eq!(last(&j)["type"], "run_finished");
    assert_eq!(last(&j)["status"], "aborted");
    assert_eq!(
        last(&j)["reason"],
        "aborted by test-operator while waiting-approval"
    );
    let st = w.run(&["status", &run]);
    assert_eq!(st.code, 0, "the journal verifies: {st:?}");
    assert!(st.stdout.contains("aborted"), "{st:?}");
    assert!(!w.leases("default").iter().any(|l| l.holder.run_id == run));

    // Resume refuses before any step; approving and aborting again write nothing.
    let before = w.journal_bytes(&run);
    let r = w.run(&["resume", &run]);
    assert_eq!(r.code, 20, "{r:?}");
    settings(&w).bind(|| insta::assert_snapshot!("resume_aborted", r.stderr));
    let ap = w.run(&["approve", &run, "gate", "--as", "alice"]);
    assert_eq!(ap.code, 20, "{ap:?}");
    let again = w.run(&["abort", &run]);
    assert_eq!(again.code, 20, "{again:?}");
    assert_eq!(w.journal_bytes(&run), before, "nothing appended");
    let store = w.store();
    assert!(block_on(store.get_approval(&run, "gate"))
        .unwrap()
        .is_none());
    assert!(block_on(store.abort_requested(&run)).unwrap().is_none());
    assert_eq!(w.read("w"), "before\n", "no step ran after the abort");
}

#[test]
fn abort_of_a_live_run_cuts_a_pending_approval_short() {
    let w = Work::new();
    let rb = gated(&w, "", "1h");
    let (child, run) = spawn_until_pending(&w, &rb);
    let t = Instant::now();
    let a = w.run(&["abort", &run]);
    assert_eq!(a.code, 0, "{a:?}");
    assert!(
        a.stdout.contains("its process stopped"),
        "abort waits for the live run to stop: {a:?}"
    );
    let (o, _) = wait_out(child, Duration::from_secs(20));
    assert_eq!(o.code, 7, "{o:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let j = w.journal(&run);
    assert_eq!(last(&j)["status"], "aborted");
    assert_eq!(w.finished(&run, "gate")["error"]["kind"], "interrupted");
    assert_eq!(w.run(&["status", &run]).code, 0);
    assert_eq!(w.run(&["resume", &run]).code, 20);
    assert_eq!(w.read("w"), "before\n");
}

/// The first Ctrl-C or SIGTERM while an approval is pending ends the run
/// `interrupted` at once (exit 7): the approval is journaled as cut short
/// and the run resumes.
#[test]
fn a_signal_while_an_approval_is_pending_parks_the_run_resumably() {
    for (sig, name) in [(libc::SIGINT, "Ctrl-C"), (libc::SIGTERM, "SIGTERM")] {
        let w = Work::new();
        let rb = gated(&w, "", "1h");
        let (child, run) = spawn_until_pending(&w, &rb);
        signal(&child, sig);
        let (o, took) = wait_out(child, Duration::from_secs(20));
        assert_eq!(o.code, 7, "{name}: {o:?}");
        assert!(took < Duration::from_secs(3), "{name} took {took:?}");
        let j = w.journal(&run);
        assert_eq!(last(&j)["status"], "interrupted", "{name}");
        assert_eq!(
            last(&j)["reason"],
            format!("interrupted by {name}; approval still pending for gate")
        );
        assert_eq!(w.finished(&run, "gate")["error"]["kind"], "interrupted");
        if sig == libc::SIGTERM {
            let tail: String = o
                .stderr
                .lines()
                .skip_while(|l| !l.starts_with("run ") || !l.contains("interrupted"))
                .collect::<Vec<_>>()
                .join("\n");
            settings(&w).bind(|| insta::assert_snapshot!("signal_pending_approval", tail));
        }
        assert_eq!(w.run(&["status", &run]).code, 0, "{name}: journal verifies");
        assert_eq!(w.read("w"), "before\n");
        let ap = w.run(&["approve", &run, "gate", "--as", "alice"]);
        assert_eq!(ap.code, 0, "{ap:?}");
        let r = w.run(&["resume", &run]);
        assert_eq!(r.code, 0, "{name}: {r:?}");
        assert_eq!(w.read("w"), "before\nfence\n", "{name}");
    }
}

/// A second signal escalates: an in-flight step beside the pending
/// approval is cut off (its process killed) and the run ends at once.
#[test]
fn a_second_signal_stops_in_flight_steps_at_once() {
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "Ctrl-C")] {
        let w = Work::new();
        let rb = w.write(
            "rb.yaml",
            "name: two\nsteps:\n  - id: gate\n    action: approval\n    timeout: 1h\n    with: {message: go?}\n  - id: slow\n    action: exec\n    with: {argv: [sh, -c, 'sleep 3; echo slow >> w'], unless: [grep, -qx, slow, w]}\n",
        );
        let (child, run) = spawn_until_pending(&w, rb.to_str().unwrap());
        signal(&child, sig);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            w.finished(&run, "gate")["error"]["kind"],
            "interrupted",
            "{name}: the approval is cut short by the first signal"
        );
        assert!(
            w.finished(&run, "slow").is_null(),
            "{name}: slow is still running"
        );
        signal(&child, sig);
        let (o, took) = wait_out(child, Duration::from_secs(20));
        assert_eq!(o.code, 7, "{name}: {o:?}");
        assert!(took < Duration::from_secs(2), "{name} took {took:?}");
        let j = w.journal(&run);
        assert_eq!(
            last(&j)["reason"],
            format!(
                "stopped by a second {name}; in-flight steps re-run on resume; approval still pending for gate"
            )
        );
        std::thread::sleep(Duration::from_millis(3000));
        assert_eq!(w.read("w"), "", "{name}: the killed step never wrote");
        assert_eq!(w.run(&["status", &run]).code, 0, "{name}: journal verifies");
        assert_eq!(w.run(&["approve", &run, "gate", "--as", "alice"]).code, 0);
        let r = w.run(&["resume", &run]);
        assert_eq!(r.code, 0, "{name}: {r:?}");
        assert_eq!(w.read("w"), "slow\n", "{name}");
    }
}

#[test]
fn distinct_approver_refuses_the_operator_who_started_the_run() {
    let w = Work::new();
    let rb = gated(&w, ", distinct_approver: true", "1s");
    let o = w.run(&["run", &rb, "--yes"]);
    assert_eq!(o.code, 8, "{o:?}");
    assert!(
        o.stderr.contains(
            "approve from another terminal (someone other than test-operator: distinct_approver)"
        ),
        "{o:?}"
    );
    let run = w.runs()[0].clone();
    let me = w.run(&["approve", &run, "gate"]);
    assert_eq!(me.code, 16, "{me:?}");
    settings(&w).bind(|| insta::assert_snapshot!("distinct_approver_refused", me.stderr));
    // Naming someone else does not make the starter someone else.
    let alias = w.run(&["approve", &run, "gate", "--as", "bob"]);
    assert_eq!(alias.code, 16, "{alias:?}");
    let store = w.store();
    assert!(block_on(store.get_approval(&run, "gate"))
        .unwrap()
        .is_none());

    // An approval by the starter that reached the store anyway is ignored.
    block_on(store.put_approval(
        &run,
        "gate",
        &drctl::store::Approval::now("test-operator", "drctl approve"),
    ))
    .unwrap();
    let r = w.run(&["resume", &run]);
    assert_eq!(r.code, 8, "{r:?}");
    assert!(
        r.stderr.contains("approval by test-operator ignored"),
        "{r:?}"
    );
    assert_eq!(w.read("w"), "before\n");

    let mut c = w.cmd(&["approve", &run, "gate"]);
    c.env("DRCTL_OPERATOR", "bob");
    let bob = Out::from(c.output().unwrap());
    assert_eq!(bob.code, 0, "{bob:?}");
    let r = w.run(&["resume", &run]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(w.read("w"), "before\nfence\n");
    let approval = w
        .journal(&run)
        .into_iter()
        .find(|x| x["type"] == "approval")
        .expect("an approval record");
    assert_eq!(approval["by"], "bob");
}

#[test]
fn distinct_approver_is_validated_and_in_the_schema() {
    let w = Work::new();
    let rb = gated(&w, ", distinct_approver: yes-please", "1s");
    let v = w.run(&["validate", &rb]);
    assert_eq!(v.code, 3, "{v:?}");
    assert!(
        v.stderr.contains("distinct_approver") && v.stderr.contains("rb.yaml:"),
        "{v:?}"
    );
    let s = w.run(&["schema"]);
    assert_eq!(s.code, 0);
    let schema: Value = serde_json::from_str(&s.stdout).unwrap();
    let all = schema
        .pointer("/$defs/StepDoc/allOf")
        .and_then(Value::as_array)
        .expect("per-kind `with` schemas");
    let approval = all
        .iter()
        .find(|x| x["if"]["properties"]["action"]["const"] == "approval")
        .expect("the approval kind's schema");
    assert_eq!(
        approval["then"]["properties"]["with"]["properties"]["distinct_approver"]["type"],
        "boolean"
    );
}

#[test]
fn approve_and_abort_of_a_finished_run_are_refused_writing_nothing() {
    let w = Work::new();
    let rb = gated(&w, "", "1s");
    // In a drill the gate is skipped: the run succeeds.
    let o = w.run(&["run", &rb, "--yes", "--mode", "drill"]);
    assert_eq!(o.code, 0, "{o:?}");
    let run = w.runs()[0].clone();
    let before = w.journal_bytes(&run);
    let ap = w.run(&["approve", &run, "gate", "--as", "alice"]);
    assert_eq!(ap.code, 20, "{ap:?}");
    settings(&w).bind(|| insta::assert_snapshot!("approve_finished", ap.stderr));
    let ab = w.run(&["abort", &run]);
    assert_eq!(ab.code, 20, "{ab:?}");
    let r = w.run(&["resume", &run]);
    assert_eq!(r.code, 20, "{r:?}");
    assert_eq!(w.journal_bytes(&run), before);
    let store = w.store();
    assert!(block_on(store.get_approval(&run, "gate"))
        .unwrap()
        .is_none());
    assert!(block_on(store.abort_requested(&run)).unwrap().is_none());
    assert_eq!(w.read("w"), "before\nfence\n");
}

/// Runs drctl on a pseudo-terminal (stdin and stderr are a TTY, so the
/// ticker and the approval prompt are live), answering `yes` to the
/// plan's confirmation, then waiting `linger` seconds at the approval
/// prompt before answering `answer` (none: never). Prints JSON: the exit
/// code, what the terminal showed while the prompt waited, and the rest.
const PTY: &str = r#"
import json, os, pty, select, sys, time
linger, answer, argv = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
buf, marks = b"", {}
def pump(until, stop=None):
    global buf
    while time.time() < until:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return False
            if not chunk:
                return False
            buf += chunk
        if stop is not None and stop in buf[marks.get("from", 0):]:
            return True
    return None
pump(time.time() + 20, b"Type 'yes' to proceed: ")
os.write(fd, b"yes\n")
marks["from"] = len(buf)
shown = pump(time.time() + 20, b"Type 'yes' to approve here: ")
at_prompt = len(buf)
if shown:
    pump(time.time() + linger)
waited = buf[at_prompt:]
if shown and answer != "none":
    os.write(fd, answer.encode() + b"\n")
pump(time.time() + 20)
_, status = os.waitpid(pid, 0)
print(json.dumps({"code": os.waitstatus_to_exitcode(status), "prompt": bool(shown),
                  "waited": waited.decode("utf-8", "replace"), "all": buf.decode("utf-8", "replace")}))
"#;

fn on_pty(w: &Work, linger: f64, answer: &str, args: &[&str]) -> Value {
    let o = std::process::Command::new("python3")
        .arg("-c")
        .arg(PTY)
        .arg(linger.to_string())
        .arg(answer)
        .arg(drctl_tests::drctl_bin())
        .args(args)
        .current_dir(w.path())
        .env_remove("DRCTL_STATE_DIR")
        .env("DRCTL_STATE", w.state_arg())
        .env("DRCTL_OPERATOR", "test-operator")
        .output()
        .expect("python3 (pty)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("pty helper JSON")
}

/// At a TTY the prompt stays readable while it waits: the progress ticker
/// (which starts after 2 s) never rewrites its line. Typing `yes` approves.
/// Under `distinct_approver` the starter's terminal is not offered it.
#[test]
fn the_tty_approval_prompt_is_not_overwritten_by_the_ticker() {
    let w = Work::new();
    let rb = gated(&w, "", "1h");
    let t = on_pty(&w, 3.5, "yes", &["run", &rb]);
    assert_eq!(t["prompt"], true, "{t}");
    assert_eq!(t["code"], 0, "{t}");
    let waited = t["waited"].as_str().unwrap();
    assert!(
        !waited.contains("waiting:") && !waited.contains("\x1b[2K"),
        "the ticker wrote over the prompt: {waited:?}"
    );
    let run = w.runs()[0].clone();
    let approval = w
        .journal(&run)
        .into_iter()
        .find(|x| x["type"] == "approval")
        .expect("an approval record");
    assert_eq!(
        (approval["by"].as_str(), approval["via"].as_str()),
        (Some("test-operator"), Some("tty"))
    );
    assert_eq!(w.read("w"), "before\nfence\n");

    let w = Work::new();
    let rb = gated(&w, ", distinct_approver: true", "1s");
    let t = on_pty(&w, 0.0, "none", &["run", &rb]);
    assert_eq!(t["prompt"], false, "{t}");
    assert_eq!(t["code"], 8, "{t}");
    assert!(
        t["all"]
            .as_str()
            .unwrap()
            .contains("test-operator started this run, so this terminal cannot approve it"),
        "{t}"
    );
}

/// An abort asked of a live run that parked before its loop saw it is
/// honoured by the next resume, before any step.
#[test]
fn resume_honours_an_abort_the_run_did_not_see() {
    let w = Work::new();
    let rb = gated(&w, "", "1s");
    assert_eq!(w.run(&["run", &rb, "--yes"]).code, 8);
    let run = w.runs()[0].clone();
    block_on(w.store().request_abort(&run, "carol")).unwrap();
    assert_eq!(w.run(&["approve", &run, "gate", "--as", "alice"]).code, 0);
    let r = w.run(&["resume", &run]);
    assert_eq!(r.code, 20, "{r:?}");
    let j = w.journal(&run);
    assert_eq!(last(&j)["status"], "aborted");
    assert!(
        last(&j)["reason"]
            .as_str()
            .unwrap()
            .starts_with("aborted by carol"),
        "{}",
        last(&j)
    );
    assert_eq!(w.run(&["status", &run]).code, 0);
    assert_eq!(w.read("w"), "before\n", "no step ran");
}

/// A parked run whose journal ends in a torn line (a crash mid-write) is
/// aborted cleanly: the torn bytes are cut and the cut is journaled, as
/// resume does, and the journal verifies.
#[test]
fn abort_cuts_a_torn_tail_and_says_so() {
    if drctl_tests::pg_mode() {
        return; // PostgreSQL rows are never torn.
    }
    let w = Work::new();
    let rb = gated(&w, "", "1s");
    assert_eq!(w.run(&["run", &rb, "--yes"]).code, 8);
    let run = w.runs()[0].clone();
    let mut bytes = w.journal_bytes(&run);
    let torn = b"{\"v\":1,\"seq\":99,\"torn";
    bytes.extend_from_slice(torn);
    w.rewrite_journal(&run, &bytes);
    let a = w.run(&["abort", &run]);
    assert_eq!(a.code, 0, "{a:?}");
    let j = w.journal(&run);
    assert_eq!(last(&j)["status"], "aborted");
    let note = &j[j.len() - 2];
    assert_eq!(note["type"], "note", "{note}");
    assert_eq!(note["data"]["repaired_tail_bytes"], torn.len(), "{note}");
    assert_eq!(w.run(&["status", &run]).code, 0, "the journal verifies");
    assert_eq!(w.read("w"), "before\n");
}
