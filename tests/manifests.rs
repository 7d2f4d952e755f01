//! The Kubernetes manifests in deploy/kubernetes/ and the Dockerfile: every
//! document must be a valid Kubernetes API object (k8s-openapi types,
//! round-tripped so a misspelt field cannot be silently dropped), RBAC must
//! grant exactly what drctl's kube actions request, pods must run
//! unprivileged, and every command line must parse with drctl's own CLI
//! and name runbooks that validate. (No Docker engine runs on these
//! machines, so the image itself is not built here.)

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::Parser;
use drctl_tests::{repo_root, Work};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, PodSpec, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn documents() -> Vec<(String, Value)> {
    let dir = repo_root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, doc) in text.split("\n---\n").enumerate() {
            let name = format!("{}#{i}", f.display());
            let src = drctl::yaml::SourceFile::new(name.clone(), doc.to_string());
            let mut diags = drctl::diag::Diagnostics::default();
            let node = drctl::yaml::parse(&src, &mut diags)
                .unwrap_or_else(|| panic!("{name}: {}", diags.render()));
            assert!(!diags.has_errors(), "{name}: {}", diags.render());
            out.push((name, node.to_json()));
        }
    }
    out
}

/// Deserializes as `T` and serializes back: equal JSON means every field
/// was understood by the Kubernetes API types.
fn typed<T: DeserializeOwned + Serialize>(name: &str, v: &Value) -> T {
    let t: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{name}: not a valid {}: {e}", v["kind"]));
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(
        &back, v,
        "{name}: fields were dropped or changed by the API types"
    );
    t
}

fn pod_specs() -> Vec<(String, PodSpec)> {
    let mut out = Vec::new();
    for (name, v) in documents() {
        match v["kind"].as_str() {
            Some("CronJob") => {
                let c: CronJob = typed(&name, &v);
                let spec = c.spec.unwrap();
                assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"), "{name}");
                let pod = spec.job_template.spec.unwrap().template.spec.unwrap();
                out.push((name, pod));
            }
            Some("Deployment") => {
                let d: Deployment = typed(&name, &v);
                out.push((name, d.spec.unwrap().template.spec.unwrap()));
            }
            Some("Job") => {
                let j: Job = typed(&name, &v);
                out.push((name, j.spec.unwrap().template.spec.unwrap()));
            }
            _ => {}
        }
    }
    out
}

#[test]
fn every_document_is_a_valid_kubernetes_object() {
    let mut kinds = BTreeSet::new();
    for (name, v) in documents() {
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        match kind.as_str() {
            "Namespace" => drop(typed::<Namespace>(&name, &v)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(&name, &v)),
            "ClusterRole" => drop(typed::<ClusterRole>(&name, &v)),
            "RoleBinding" => drop(typed::<RoleBinding>(&name, &v)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(&name, &v)),
            "Secret" => drop(typed::<Secret>(&name, &v)),
            "Job" => drop(typed::<Job>(&name, &v)),
            "CronJob" => drop(typed::<CronJob>(&name, &v)),
            "Deployment" => drop(typed::<Deployment>(&name, &v)),
            other => panic!("{name}: unexpected kind {other:?}"),
        }
        kinds.insert(kind);
    }
    for k in [
        "ServiceAccount",
        "ClusterRole",
        "RoleBinding",
        "CronJob",
        "Deployment",
    ] {
        assert!(kinds.contains(k), "missing a {k}: {kinds:?}");
    }
}

type Rule = (String, String, String);

/// `(group, resource, verb)` of each permission in a code table.
fn rules(table: &[(&str, &str, &[&str])]) -> BTreeSet<Rule> {
    table
        .iter()
        .flat_map(|(g, r, verbs)| {
            verbs
                .iter()
                .map(move |v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect()
}

/// `(group, resource, verb)` of each rule a ClusterRole grants; no wildcards.
fn granted_by(name: &str, v: &Value) -> BTreeSet<Rule> {
    let role: ClusterRole = typed(name, v);
    let mut out = BTreeSet::new();
    for rule in role.rules.unwrap_or_default() {
        for g in rule.api_groups.clone().unwrap_or_default() {
            for r in rule.resources.clone().unwrap_or_default() {
                for verb in &rule.verbs {
                    assert_ne!(verb, "*", "{name}: no wildcards");
                    out.insert((g.clone(), r.clone(), verb.clone()));
                }
            }
        }
    }
    out
}

/// The opt-in drill RBAC (`rbac-drills.yaml`) grants exactly what
/// `kube.drill_copies` and its cleanup request, bound to drctl's service
/// account, and nothing with a wildcard.
#[test]
fn drill_rbac_grants_exactly_what_the_drill_step_uses() {
    let want = rules(drctl::kube::drillcopy::DRILL_PERMISSIONS);
    let mut granted = BTreeSet::new();
    let mut bound = false;
    for (name, v) in documents() {
        match v["kind"].as_str() {
            Some("ClusterRole") if v["metadata"]["name"] == "drctl-drills" => {
                granted.extend(granted_by(&name, &v));
            }
            Some("ClusterRoleBinding") => {
                let b: ClusterRoleBinding = typed(&name, &v);
                assert_eq!(b.role_ref.name, "drctl-drills", "{name}");
                let s = &b.subjects.unwrap()[0];
                assert_eq!(
                    (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()),
                    ("ServiceAccount", "drctl", Some("drctl"))
                );
                bound = true;
            }
            _ => {}
        }
    }
    assert_eq!(
        granted, want,
        "deploy/kubernetes/rbac-drills.yaml vs drctl::kube::drillcopy::DRILL_PERMISSIONS"
    );
    assert!(bound, "rbac-drills.yaml binds the role");
}

#[test]
fn rbac_grants_exactly_what_the_actions_use() {
    let want = rules(drctl::kube::PERMISSIONS);
    let mut granted = BTreeSet::new();
    let mut bound_namespaces = BTreeSet::new();
    for (name, v) in documents() {
        match v["kind"].as_str() {
            Some("ClusterRole") if v["metadata"]["name"] == "drctl-workloads" => {
                granted.extend(granted_by(&name, &v));
            }
            Some("RoleBinding") => {
                let b: RoleBinding = typed(&name, &v);
                assert_eq!(b.role_ref.name, "drctl-workloads", "{name}");
                let s = &b.subjects.unwrap()[0];
                assert_eq!(
                    (s.kind.as_str(), s.name.as_str()),
                    ("ServiceAccount", "drctl")
                );
                bound_namespaces.insert(b.metadata.namespace.unwrap());
            }
            _ => {}
        }
    }
    assert_eq!(
        granted, want,
        "deploy/kubernetes/rbac.yaml vs drctl::kube::PERMISSIONS"
    );
    // A RoleBinding in every namespace the example environment manages.
    let env =
        std::fs::read_to_string(repo_root().join("runbooks/environments/production.example.yaml"))
            .unwrap();
    for ns in ["shop", "billing"] {
        assert!(env.contains(ns));
        assert!(bound_namespaces.contains(ns), "{bound_namespaces:?}");
    }
}

#[test]
fn pods_run_unprivileged_with_drctl_command_lines_that_parse() {
    let specs = pod_specs();
    assert!(
        specs.len() >= 6,
        "4 CronJobs, the heartbeat and the state init Job"
    );
    let w = Work::new();
    for (name, pod) in specs {
        assert_eq!(pod.service_account_name.as_deref(), Some("drctl"), "{name}");
        let psc = pod.security_context.clone().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true), "{name}");
        assert!(psc.run_as_user.unwrap() > 0, "{name}");
        // State lives in the shared PostgreSQL store, never on a volume
        // (flock across nodes on ReadWriteMany storage is not a lease); a
        // claim may only be mounted read-only (the backups a restore test reads).
        assert!(
            pod.volumes.iter().flatten().all(|v| v
                .persistent_volume_claim
                .as_ref()
                .is_none_or(|c| c.read_only == Some(true))),
            "{name}: no state volume"
        );
        for c in &pod.containers {
            let env = c.env.clone().unwrap_or_default();
            for var in ["DRCTL_STATE", "DRCTL_STATE_PASSWORD"] {
                let from_secret = env.iter().any(|e| {
                    e.name == var
                        && e.value_from
                            .as_ref()
                            .and_then(|v| v.secret_key_ref.as_ref())
                            .is_some_and(|r| r.name == "drctl-state")
                });
                assert!(
                    from_secret,
                    "{name}: {var} comes from the drctl-state Secret"
                );
            }
            let sc = c.security_context.clone().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}");
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}");
            assert_eq!(
                sc.capabilities.unwrap().drop.unwrap(),
                vec!["ALL".to_string()]
            );
            let args = c.args.clone().unwrap();
            let argv: Vec<&str> = std::iter::once("drctl")
                .chain(args.iter().map(String::as_str))
                .collect();
            if let Err(e) = drctl::cli::Cli::try_parse_from(&argv) {
                panic!("{name}: `{}` does not parse: {e}", argv.join(" "));
            }
            // Runbooks named on the command line exist (the image copies
            // runbooks/ to its working directory) and validate against the
            // example production environment.
            if let Some(rb) = args.iter().find(|a| a.starts_with("runbooks/")) {
                let path = repo_root().join(rb);
                let env = w.mounted_example_env(
                    &repo_root().join("runbooks/environments/production.example.yaml"),
                );
                let mut c = w.cmd(&[
                    "validate",
                    path.to_str().unwrap(),
                    "--env",
                    env.to_str().unwrap(),
                ]);
                // Validation resolves every secret reference; in the pod the
                // variables come from Secrets.
                for var in drctl_tests::EXAMPLE_SECRET_VARS {
                    c.env(var, "not-a-real-secret-value");
                }
                let o = drctl_tests::Out::from(c.output().expect("run drctl"));
                assert_eq!(o.code, 0, "{name}: {rb}: {o:?}");
            }
        }
    }
}

/// The restore test's Job: a finding is alerted on, not retried; its
/// deadline is the restore-time budget; its scratch volume is where
/// `--scratch` points and is sized; the backups are mounted read-only.
#[test]
fn the_backup_verification_cronjob_is_bounded_and_reads_backups_read_only() {
    let (name, v) = documents()
        .into_iter()
        .find(|(_, v)| v["metadata"]["name"] == "drctl-verify-backups")
        .expect("the drctl-verify-backups CronJob");
    let c: CronJob = typed(&name, &v);
    let spec = c.spec.unwrap();
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    assert!(spec.starting_deadline_seconds.is_some());
    assert!(spec.failed_jobs_history_limit.is_some());
    let job = spec.job_template.spec.unwrap();
    assert_eq!(job.backoff_limit, Some(0));
    assert!(job.ttl_seconds_after_finished.is_some());
    let runbook =
        std::fs::read_to_string(repo_root().join("runbooks/verify-backups.yaml")).unwrap();
    assert!(runbook.contains("timeout: 2h"), "the step's timeout");
    assert_eq!(
        job.active_deadline_seconds,
        Some(7200),
        "the Job's deadline is the step's timeout"
    );
    let pod = job.template.spec.unwrap();
    let ctr = &pod.containers[0];
    let args = ctr.args.clone().unwrap();
    assert_eq!(args[0], "verify-backup");
    let scratch = &args[args.iter().position(|a| a == "--scratch").unwrap() + 1];
    let mounts = ctr.volume_mounts.clone().unwrap();
    let m = mounts
        .iter()
        .find(|m| &m.mount_path == scratch)
        .expect("--scratch is a mounted volume");
    let vol = pod
        .volumes
        .clone()
        .unwrap()
        .into_iter()
        .find(|v| v.name == m.name)
        .unwrap();
    let size = vol
        .ephemeral
        .unwrap()
        .volume_claim_template
        .unwrap()
        .spec
        .resources
        .unwrap()
        .requests
        .unwrap();
    assert!(size.contains_key("storage"), "the scratch volume is sized");
    let b = mounts
        .iter()
        .find(|m| m.mount_path == "/backups")
        .expect("backups mounted");
    assert_eq!(b.read_only, Some(true));
    assert!(args.iter().any(|a| a == "--pushgateway"));
}

#[test]
fn dockerfile_is_multi_stage_and_runs_as_non_root() {
    let d = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let froms: Vec<&str> = d.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(froms[0].contains(" AS build"), "{froms:?}");
    let last_stage = &d[d.rfind("\nFROM ").unwrap()..];
    let user = last_stage
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("numeric uid");
    assert_ne!(uid, 0);
    assert!(last_stage.contains("COPY --from=build"));
    assert!(
        last_stage.contains("COPY runbooks"),
        "runbooks ship in the image"
    );
    assert!(d.contains("--locked"), "reproducible: the lockfile is used");
}

/// The drill CronJobs are generated from the drill definitions: the file
/// in deploy/ is what `drctl manifests cronjobs --drills drills` prints
/// (no hand edits drift from the definitions), every scheduled definition
/// meant for Kubernetes has one with its schedule, time zone and suspend
/// flag, and each names a definition that exists and validates.
#[test]
fn drill_cronjobs_are_generated_from_the_definitions() {
    let w = Work::new();
    let mut c = w.cmd(&["manifests", "cronjobs", "--drills", "drills"]);
    c.current_dir(repo_root());
    let o = drctl_tests::Out::from(c.output().unwrap());
    assert_eq!(o.code, 0, "{o:?}");
    let committed =
        std::fs::read_to_string(repo_root().join("deploy/kubernetes/drills.yaml")).unwrap();
    assert_eq!(
        committed.trim_end(),
        o.stdout.trim_end(),
        "deploy/kubernetes/drills.yaml is stale: regenerate it with `drctl manifests cronjobs --drills drills > deploy/kubernetes/drills.yaml`"
    );
    let jobs: Vec<(String, CronJob)> = documents()
        .into_iter()
        .filter(|(n, _)| n.contains("/drills.yaml#"))
        .map(|(n, v)| {
            let cj: CronJob = typed(&n, &v);
            (n, cj)
        })
        .collect();
    let defs = drctl::drill::load_dir(&repo_root().join("drills")).expect("definitions");
    let scheduled: Vec<_> = defs
        .iter()
        .filter(|d| d.kubernetes && d.schedule.is_some())
        .collect();
    assert!(!scheduled.is_empty());
    assert_eq!(
        jobs.len(),
        scheduled.len(),
        "one CronJob per scheduled definition"
    );
    for d in scheduled {
        let s = d.schedule.as_ref().unwrap();
        let (name, cj) = jobs
            .iter()
            .find(|(_, cj)| {
                cj.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("drctl.example.com/drill"))
                    == Some(&d.name)
            })
            .unwrap_or_else(|| panic!("no CronJob for drill {}", d.name));
        let spec = cj.spec.as_ref().unwrap();
        assert_eq!(spec.schedule, s.cron.expr(), "{name}");
        assert_eq!(spec.time_zone.as_deref(), Some(s.cron.tz_name()), "{name}");
        assert_eq!(spec.suspend, Some(s.suspend), "{name}");
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"), "{name}");
        let job = spec.job_template.spec.as_ref().unwrap();
        assert_eq!(job.backoff_limit, Some(0), "{name}");
        assert_eq!(
            job.active_deadline_seconds,
            d.max_runtime.map(|m| m.as_secs() as i64),
            "{name}"
        );
        let args = job.template.spec.as_ref().unwrap().containers[0]
            .args
            .clone()
            .unwrap();
        let file = repo_root().join(&args[1]);
        assert_eq!(
            drctl::drill::load_definition(&file)
                .expect("the definition the CronJob runs")
                .name,
            d.name
        );
    }
}
