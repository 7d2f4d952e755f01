//! Human progress on stderr: one line per step transition, and on a TTY a
//! ticking status line for long waits. Everything printed passes through the
//! secret redactor.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::duration::format_duration;
use crate::engine::{Ui, UiEvent};
use crate::secret::redact;

/// Prints to stdout with secrets masked.
pub fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(redact(text).as_bytes());
    if !text.ends_with('\n') {
        let _ = o.write_all(b"\n");
    }
}

/// Prints to stderr with secrets masked.
pub fn err(text: &str) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_all(redact(text).as_bytes());
    if !text.ends_with('\n') {
        let _ = e.write_all(b"\n");
    }
}

/// The prompt a step shows on the terminal (an approval's "Type 'yes'"),
/// if any. While one is shown the ticker keeps quiet and progress lines
/// print above it and show it again, so it stays readable.
static PROMPT: Mutex<Option<String>> = Mutex::new(None);

fn prompt_slot() -> std::sync::MutexGuard<'static, Option<String>> {
    PROMPT.lock().unwrap_or_else(|p| p.into_inner())
}

/// The prompt is shown while this lives; dropping it ends the prompt line.
pub struct PromptGuard(());

impl Drop for PromptGuard {
    fn drop(&mut self) {
        let mut slot = prompt_slot();
        if slot.take().is_some() {
            let _ = std::io::stderr().write_all(b"\n");
        }
    }
}

/// Shows `text` (no newline: the answer is typed after it) as the
/// terminal's current prompt, replacing a ticker line.
pub fn show_prompt(text: &str) -> PromptGuard {
    let mut slot = prompt_slot();
    let mut e = std::io::stderr().lock();
    if e.is_terminal() {
        let _ = e.write_all(b"\r\x1b[2K");
    }
    let _ = e.write_all(redact(text).as_bytes());
    let _ = e.flush();
    *slot = Some(text.to_string());
    PromptGuard(())
}

struct Progress {
    running: BTreeMap<String, Instant>,
    line_shown: bool,
}

/// The engine's UI callback for humans. `quiet` (JSON output) prints nothing.
pub fn human_ui(quiet: bool) -> Ui {
    if quiet {
        return crate::engine::silent_ui();
    }
    let tty = std::io::stderr().is_terminal();
    let state = Arc::new(Mutex::new(Progress {
        running: BTreeMap::new(),
        line_shown: false,
    }));
    if tty {
        let st = state.clone();
        // A plain thread: it must keep ticking while the runtime is busy,
        // and it holds nothing that needs an orderly shutdown.
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            let mut g = st.lock().unwrap_or_else(|p| p.into_inner());
            let waits: Vec<String> = g
                .running
                .iter()
                .filter(|(_, t)| t.elapsed() > Duration::from_secs(2))
                .map(|(s, t)| format!("{s} {}s", t.elapsed().as_secs()))
                .collect();
            // A prompt owns the line: ticking would overwrite it.
            let prompt = prompt_slot();
            if waits.is_empty() || prompt.is_some() {
                continue;
            }
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K  … waiting: {}", waits.join(", "));
            let _ = e.flush();
            g.line_shown = true;
        });
    }
    Arc::new(move |ev: UiEvent| {
        let mut g = state.lock().unwrap_or_else(|p| p.into_inner());
        if g.line_shown {
            eprint!("\r\x1b[2K");
            g.line_shown = false;
        }
        let line = match ev {
            UiEvent::RunStarted { run_id, journal } => {
                format!("run {run_id}\n  journal: {journal}")
            }
            UiEvent::StepStarted {
                step,
                action,
                describe,
            } => {
                g.running.insert(step.clone(), Instant::now());
                format!("  ▸ {step:<22} {action:<18} {describe}")
            }
            UiEvent::StepRetry {
                step,
                attempt,
                error,
                delay,
            } => format!(
                "  ↻ {step:<22} attempt {attempt} failed: {}; retrying in {}",
                first_line(&error),
                format_duration(delay)
            ),
            UiEvent::StepFinished {
                step,
                ok,
                duration,
                detail,
            } => {
                g.running.remove(&step);
                let mark = if ok { "✓" } else { "✗" };
                let detail = if detail.is_empty() {
                    String::new()
                } else {
                    format!("  {}", first_line(&detail))
                };
                format!("  {mark} {step:<22} {}{detail}", format_duration(duration))
            }
            UiEvent::StepSkipped { step, reason } => format!("  – {step:<22} skipped: {reason}"),
            UiEvent::StepProgress { step, message } => format!("  … {step:<22} {message}"),
            UiEvent::Message(m) => format!("  ! {m}"),
        };
        let prompt = prompt_slot();
        match prompt.as_deref() {
            // Above the prompt, which is shown again after the line.
            Some(p) => {
                err(&format!("\n{line}"));
                let mut e = std::io::stderr().lock();
                let _ = e.write_all(redact(p).as_bytes());
                let _ = e.flush();
            }
            None => err(&line),
        }
    })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Asks on a TTY; without one, only `--yes` proceeds.
pub fn confirm(prompt: &str, yes: bool) -> Result<(), super::CliError> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(super::CliError::new(
            crate::exit::NOT_CONFIRMED,
            "confirmation needed, but stdin is not a terminal",
        )
        .hint("review the plan above and re-run with --yes"));
    }
    eprint!("{prompt} Type 'yes' to proceed: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    if line.trim() == "yes" {
        Ok(())
    } else {
        Err(super::CliError::new(
            crate::exit::NOT_CONFIRMED,
            "not confirmed; nothing was run",
        ))
    }
}

static STATE_ARG: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Remembers the `--state …` a printed follow-up command needs to reach the
/// same store (empty when the default lookup finds it anyway).
pub fn set_state_arg(arg: String) {
    let _ = STATE_ARG.set(arg);
}

/// `drctl` plus the state argument in use: printed follow-up commands run
/// as printed.
pub fn drctl() -> String {
    match STATE_ARG.get() {
        Some(a) if !a.is_empty() => format!("drctl {a}"),
        _ => "drctl".to_string(),
    }
}
