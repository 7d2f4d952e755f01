//! The command line's own behaviour: closed pipes, the exit-code table.

use std::io::Read;
use std::process::Stdio;

use drctl_tests::{repo_root, Work};

/// `drctl completions bash | head -1`: the reader goes away early; drctl
/// must exit cleanly instead of panicking on the broken pipe.
#[test]
fn a_closed_pipe_never_panics() {
    let w = Work::new();
    for args in [
        &["completions", "bash"][..],
        &["exit-codes"][..],
        &["schema"][..],
    ] {
        let mut child = w
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut first = [0u8; 8];
        out.read_exact(&mut first).unwrap();
        drop(out);
        let o = child.wait_with_output().unwrap();
        assert_ne!(
            o.status.code(),
            Some(101),
            "{args:?} panicked: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            !String::from_utf8_lossy(&o.stderr).contains("panicked"),
            "{args:?}"
        );
    }
}

/// The README's exit-code table is the one `drctl exit-codes` prints.
#[test]
fn the_readme_exit_code_table_matches_the_binary() {
    let w = Work::new();
    let o = w.run(&["exit-codes"]);
    assert_eq!(o.code, 0);
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let table: Vec<(String, String)> = readme
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells.len() >= 4 && cells[1].parse::<i32>().is_ok())
                .then(|| (cells[1].to_string(), cells[2].to_string()))
        })
        .collect();
    let printed: Vec<(String, String)> = o
        .stdout
        .lines()
        .map(|l| {
            let mut it = l.split_whitespace();
            (
                it.next().unwrap().to_string(),
                it.next().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        table, printed,
        "README's table and `drctl exit-codes` differ"
    );
}

/// Every option and argument of every command says what it is for
/// (`--help` is what an SRE reads at 3 a.m.).
#[test]
fn every_option_has_help_text() {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            if a.is_hide_set() || ["help", "version"].contains(&a.get_id().as_str()) {
                continue;
            }
            if a.get_help().is_none() && a.get_long_help().is_none() {
                missing.push(format!("{path} {}", a.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() && sub.get_name() != "help" {
                missing.push(format!("{path} {} (command)", sub.get_name()));
            }
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(&drctl::cli::Cli::command(), "drctl", &mut missing);
    assert!(missing.is_empty(), "no help text:\n{}", missing.join("\n"));
}

/// Commands that only read state never create the state location: a
/// typo in `--state` must not go unnoticed as a fresh, empty store.
#[test]
fn read_only_commands_never_create_state() {
    let w = drctl_tests::Work::new();
    let rb = w.write(
        "rb.yaml",
        "name: x\nsteps:\n  - id: a\n    action: wait\n    with: {duration: 1ms}\n",
    );
    let typo = w.path().join("sttae");
    let rb = rb.to_str().unwrap();
    for args in [
        vec!["plan", rb],
        vec!["plan", rb, "--check"],
        vec!["validate", rb],
        vec!["status", "latest"],
        vec!["runs"],
        vec!["report", "latest"],
        vec!["state", "check"],
    ] {
        let mut c = w.cmd(&args);
        c.arg("--state").arg(&typo);
        let o = drctl_tests::Out::from(c.output().unwrap());
        assert!(!typo.exists(), "{args:?} created {}: {o:?}", typo.display());
        if args[0] == "plan" {
            assert_eq!(o.code, 0, "{o:?}");
            assert!(o.stderr.contains("no drctl state at"), "{o:?}");
        } else if args[0] != "validate" {
            assert_eq!(o.code, 19, "{args:?}: {o:?}");
        }
    }
}
