//! `exec`: run a program (no shell) and check its exit code.
//!
//! drctl cannot know whether an arbitrary command is safe to repeat, so an
//! `exec` step is idempotent only when the runbook says how to tell it is
//! already done (`unless`: a command whose success means "skip") or declares
//! `idempotent: true`. Otherwise a resume after a crash mid-step stops and
//! asks the operator. The child runs in its own process group, dies with
//! drctl (PDEATHSIG) so an orphan cannot race a resumed run, and is killed
//! as a group on timeout. Output is kept in the journal with secrets masked.
//!
//! The child does not inherit drctl's environment: drctl's own variables
//! include the secrets every later step resolves (`env:NAME`), and a
//! command has no business seeing them. It gets [`BASE_ENV`] (when set),
//! the names the step lists in `inherit_env`, and the step's `env`.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use crate::action::{resolve_secret, ActionError, ActionKind, Outputs, Preflight, StepContext};
use crate::decode::{Ctx, MapReader};
use crate::secret::{redact, SecretRef};
use crate::yaml::{Kind, Node};

#[derive(Clone, Copy)]
pub struct Exec;

/// Output kept per stream in the journal; the rest is summarised.
const KEEP_BYTES: usize = 16 * 1024;

/// What every child gets from drctl's environment, when drctl has it:
/// enough to find programs, a home and a locale, nothing else.
pub const BASE_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ"];

pub struct ExecParams {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Names of drctl's variables passed on as they are (names only).
    pub inherit_env: Vec<String>,
    pub dir: Option<String>,
    pub unless: Option<Vec<String>>,
    pub verify: Option<Vec<String>>,
    pub idempotent: bool,
    pub expect_exit: Vec<i32>,
}

fn argv(ctx: &mut Ctx<'_>, n: &Node, what: &str) -> Option<Vec<String>> {
    let items = ctx.string_list(n, what)?;
    if items.is_empty() {
        ctx.error(
            "E-VALUE",
            n,
            format!("{what}: needs at least the program"),
            Some("e.g. [pg_dump, --version]".into()),
        );
        return None;
    }
    Some(items.into_iter().map(|(s, _)| s).collect())
}

pub struct CommandResult {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Kills the whole process group if the step is cancelled or times out.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: kill(2) with a negative pid signals a process group we
            // created; it has no memory-safety preconditions.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// Whether `s` can name an environment variable (`[A-Za-z_][A-Za-z0-9_]*`).
fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Runs `argv` bounded by `limit`, in a minimal environment: [`BASE_ENV`],
/// then the `inherit` names, then `env` (references resolved).
pub async fn run_command(
    argv: &[String],
    p: &ExecParams,
    limit: Duration,
) -> Result<CommandResult, ActionError> {
    let (env, inherit, dir) = (&p.env, &p.inherit_env, p.dir.as_deref());
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| ActionError::failed("empty argv"))?;
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0)
        .env_clear();
    for name in BASE_ENV
        .iter()
        .copied()
        .chain(inherit.iter().map(String::as_str))
    {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    for (k, v) in env {
        let value = match SecretRef::parse(v) {
            Some(r) => resolve_secret(&r)?.expose().to_string(),
            None => v.clone(),
        };
        cmd.env(k, value);
    }
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no
    // memory; it makes the child die if drctl is killed, so an orphaned
    // command can never run concurrently with a resumed run.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| {
        ActionError::failed_hint(
            format!("cannot start `{prog}`: {e}"),
            "is the program installed and on PATH? argv[0] is not looked up by a shell",
        )
    })?;
    let guard = GroupGuard(child.id().map(|p| p as i32));
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let io = async {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let read_o = async {
            if let Some(s) = out.as_mut() {
                let _ = s.read_to_end(&mut o).await;
            }
        };
        let read_e = async {
            if let Some(s) = err.as_mut() {
                let _ = s.read_to_end(&mut e).await;
            }
        };
        tokio::join!(read_o, read_e);
        let status = child.wait().await;
        (o, e, status)
    };
    let (o, e, status) = match tokio::time::timeout(limit, io).await {
        Ok(v) => v,
        Err(_) => {
            drop(guard);
            return Err(ActionError::failed(format!(
                "`{}` did not finish within {}; its process group was killed",
                argv.join(" "),
                crate::duration::format_duration(limit)
            )));
        }
    };
    let mut guard = guard;
    guard.0 = None;
    let status = status.map_err(|e| ActionError::failed(format!("waiting for `{prog}`: {e}")))?;
    Ok(CommandResult {
        code: status.code(),
        stdout: keep(&o),
        stderr: keep(&e),
        elapsed: started.elapsed(),
    })
}

fn keep(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = redact(&text).into_owned();
    if text.len() <= KEEP_BYTES {
        return text;
    }
    let mut cut = KEEP_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}\n[... {} more bytes not kept]",
        &text[..cut],
        text.len() - cut
    )
}

#[async_trait]
impl ActionKind for Exec {
    type Params = ExecParams;

    fn kind(&self) -> &'static str {
        "exec"
    }
    fn summary(&self) -> &'static str {
        "Run a program without a shell; check its exit code"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[
            "exit_code",
            "stdout",
            "stderr",
            "already_done",
            "duration_ms",
        ]
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "exec")?;
        let argv_node = r.req(ctx, "argv");
        if let Some(Kind::Str(s)) = argv_node.map(|n| &n.kind) {
            let n = argv_node?;
            ctx.error(
                "E-TYPE",
                n,
                "exec: argv must be a list (drctl runs no shell)",
                Some(format!(
                    "write argv: [{}]",
                    s.split_whitespace().collect::<Vec<_>>().join(", ")
                )),
            );
            return None;
        }
        let argv_v = argv_node.and_then(|n| argv(ctx, n, "argv"));
        let mut env = BTreeMap::new();
        if let Some(e) = r.opt("env") {
            match e.as_map() {
                Some(entries) => {
                    for (k, v) in entries {
                        if let Some(s) = ctx.string(v, &format!("env.{}", k.key_text())) {
                            env.insert(k.key_text(), s);
                        }
                    }
                }
                None => ctx.expected(e, "a mapping of variable names to values", "env"),
            }
        }
        let mut inherit_env = Vec::new();
        if let Some(n) = r.opt("inherit_env") {
            for (name, node) in ctx.string_list(n, "inherit_env").unwrap_or_default() {
                if is_env_name(&name) {
                    inherit_env.push(name);
                    continue;
                }
                // Only the part before `=` is echoed: what follows may be
                // a value, and values do not belong here.
                let shown = name.split('=').next().unwrap_or_default();
                let (msg, hint) = if name.contains('=') {
                    (
                        format!("inherit_env: `{shown}=…` gives a value; list variable names only"),
                        format!("write `{shown}` here; a value set by the step goes in `env:`"),
                    )
                } else {
                    (
                        format!("inherit_env: `{shown}` is not a variable name"),
                        "names are letters, digits and `_`, not starting with a digit".to_string(),
                    )
                };
                // A value here may be a secret: reported as one, so the
                // quoted line is masked.
                let code = if name.contains('=') {
                    crate::diag::SECRET_LITERAL
                } else {
                    "E-VALUE"
                };
                ctx.error(code, &node, msg, Some(hint));
            }
        }
        let dir = r.opt("dir").and_then(|n| ctx.string(n, "dir"));
        let unless = r.opt("unless").and_then(|n| argv(ctx, n, "unless"));
        let verify = r.opt("verify").and_then(|n| argv(ctx, n, "verify"));
        let idempotent = r
            .opt("idempotent")
            .and_then(|n| ctx.boolean(n, "idempotent"))
            .unwrap_or(false);
        let expect_exit = match r.opt("expect_exit") {
            None => vec![0],
            Some(n) => match &n.kind {
                Kind::Seq(items) => items
                    .iter()
                    .filter_map(|i| ctx.uint(i, "expect_exit"))
                    .map(|v| v as i32)
                    .collect(),
                _ => ctx
                    .uint(n, "expect_exit")
                    .map(|v| vec![v as i32])
                    .unwrap_or_default(),
            },
        };
        r.finish(ctx);
        Some(ExecParams {
            argv: argv_v?,
            env,
            inherit_env,
            dir,
            unless,
            verify,
            idempotent,
            expect_exit,
        })
    }
    fn idempotent(&self, params: &Value) -> bool {
        params.get("unless").is_some() || params.get("idempotent") == Some(&Value::Bool(true))
    }
    fn read_only(&self, _params: &Value) -> bool {
        // Not read-only: it runs an arbitrary command: drctl cannot know it changes nothing.
        false
    }
    fn describe(&self, params: &Value) -> String {
        let argv: Vec<String> = params
            .get("argv")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(crate::action::short).collect())
            .unwrap_or_default();
        format!("run {}", argv.join(" "))
    }
    async fn preflight(
        &self,
        p: &Self::Params,
        params: &Value,
        _ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        // Runs nothing, not even `unless`: drctl cannot know that a command
        // changes nothing, and a preflight must not change anything.
        Ok(Preflight::ok(match &p.unless {
            Some(unless) => format!(
                "{} (not run by the preflight; skipped at run time if `{}` succeeds)",
                self.describe(params),
                unless.join(" ")
            ),
            None => format!("{} (not run by the preflight)", self.describe(params)),
        }))
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let mut out = Outputs::new();
        if let Some(unless) = &p.unless {
            let r = run_command(unless, p, ctx.remaining()).await?;
            if r.code == Some(0) {
                out.insert("already_done".into(), json!(true));
                out.insert("exit_code".into(), Value::Null);
                return Ok(out);
            }
        }
        let r = run_command(&p.argv, p, ctx.remaining()).await?;
        out.insert("exit_code".into(), json!(r.code));
        out.insert("stdout".into(), json!(r.stdout));
        out.insert("stderr".into(), json!(r.stderr));
        out.insert("already_done".into(), json!(false));
        out.insert("duration_ms".into(), json!(r.elapsed.as_millis() as u64));
        let ok = r.code.is_some_and(|c| p.expect_exit.contains(&c));
        if !ok {
            let code = r.code.map_or("a signal".to_string(), |c| c.to_string());
            let tail: String = r
                .stderr
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            return Err(ActionError::failed(format!(
                "`{}` exited with {code}, expected {:?}{}",
                p.argv.join(" "),
                p.expect_exit,
                if tail.is_empty() {
                    String::new()
                } else {
                    format!("; stderr:\n{tail}")
                }
            )));
        }
        if let Some(verify) = &p.verify {
            let v = run_command(verify, p, ctx.remaining()).await?;
            if v.code != Some(0) {
                return Err(ActionError::failed(format!(
                    "verification `{}` failed after `{}` succeeded",
                    verify.join(" "),
                    p.argv.join(" ")
                )));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Diagnostics;
    use crate::yaml::SourceFile;

    fn decode(text: &str) -> (Option<ExecParams>, Diagnostics) {
        let f = SourceFile::new("w.yaml", text);
        let mut d = Diagnostics::default();
        let root = crate::yaml::parse(&f, &mut d).expect("yaml");
        let mut ctx = Ctx::new(&f, &mut d);
        let p = <Exec as ActionKind>::decode(&mut ctx, &root);
        (p, d)
    }

    /// The JSON Schema (`ExecWithDoc`) and the decoder know the same fields.
    #[test]
    fn schema_and_decoder_agree() {
        let (_, d) = decode("argv: [x]\nzzz: 1\n");
        let hint = d.iter().find_map(|d| d.hint.clone()).unwrap_or_default();
        let mut known: Vec<String> = hint
            .trim_start_matches("known fields: ")
            .split(", ")
            .map(str::to_string)
            .collect();
        known.sort();
        let schema =
            serde_json::to_value(schemars::schema_for!(crate::runbook::model::ExecWithDoc))
                .unwrap();
        let mut props: Vec<String> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        props.sort();
        assert_eq!(known, props);
    }

    #[test]
    fn inherit_env_takes_names_only() {
        let (p, d) = decode("argv: [x]\ninherit_env: [HOME, MY_VAR]\n");
        assert!(d.is_empty(), "{}", d.render());
        assert_eq!(p.unwrap().inherit_env, ["HOME", "MY_VAR"]);
        let (_, d) = decode("argv: [x]\ninherit_env: [\"TOKEN=s3cr3t-value\", 9X]\n");
        let text = d.render();
        assert_eq!(d.error_count(), 2, "{text}");
        assert!(!text.contains("s3cr3t-value"), "{text}");
        assert!(text.contains("`TOKEN=…` gives a value"), "{text}");
    }
}
