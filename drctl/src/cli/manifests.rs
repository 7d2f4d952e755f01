//! `drctl manifests cronjobs`: one Kubernetes CronJob per drill definition,
//! with the definition's schedule and time zone, so the cluster runs drills
//! at exactly the times `drctl daemon` and `drctl drills list` compute.

use std::path::Path;

use serde_json::{json, Value};

use crate::drill::DrillDef;

/// What the generated pods need that the definitions do not say.
pub struct CronJobOptions<'a> {
    pub namespace: &'a str,
    pub image: &'a str,
    /// Where the environment files are mounted in the pod.
    pub env_dir: &'a str,
}

/// Kubernetes object names: lowercase alphanumerics and `-`, ≤ 52 chars
/// for a CronJob (its Jobs append 11).
fn k8s_name(drill: &str) -> String {
    crate::kube::dns_label("drctl-drill-", drill, 52)
}

/// The CronJob for one definition; `rel` is the definition's path as the
/// image holds it (relative to its working directory, like the runbooks).
pub fn cronjob(def: &DrillDef, rel: &Path, o: &CronJobOptions<'_>) -> Option<Value> {
    let sched = def.schedule.as_ref().filter(|_| def.kubernetes)?;
    let mut args = vec![
        "drill".to_string(),
        rel.display().to_string(),
        "--yes".into(),
        "--log-format".into(),
        "json".into(),
    ];
    if let Some(env) = def.environment.as_ref().and_then(|e| e.file_name()) {
        args.splice(
            2..2,
            [
                "--env".to_string(),
                format!(
                    "{}/{}",
                    o.env_dir.trim_end_matches('/'),
                    env.to_string_lossy()
                ),
            ],
        );
    }
    let labels = json!({
        "app.kubernetes.io/name": "drctl",
        "app.kubernetes.io/component": "drill",
        "drctl.example.com/drill": k8s_name(&def.name).trim_start_matches("drctl-drill-"),
    });
    let mut job_spec = json!({
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": 7 * 24 * 3600,
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "restartPolicy": "Never",
                "serviceAccountName": "drctl",
                "automountServiceAccountToken": true,
                "securityContext": {
                    "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
                    "seccompProfile": {"type": "RuntimeDefault"}
                },
                "containers": [{
                    "name": "drctl",
                    "image": o.image,
                    "args": args,
                    "envFrom": [{"secretRef": {"name": "drctl-secrets"}}],
                    "env": [
                        {"name": "DRCTL_STATE", "valueFrom": {"secretKeyRef": {"name": "drctl-state", "key": "url"}}},
                        {"name": "DRCTL_STATE_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "drctl-state", "key": "password"}}}
                    ],
                    "securityContext": {
                        "allowPrivilegeEscalation": false,
                        "readOnlyRootFilesystem": true,
                        "capabilities": {"drop": ["ALL"]}
                    },
                    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                    "volumeMounts": [
                        {"name": "env", "mountPath": o.env_dir, "readOnly": true},
                        {"name": "kubeconfig", "mountPath": "/etc/drctl/kubeconfig", "readOnly": true},
                        {"name": "immudb-key", "mountPath": "/etc/drctl/immudb", "readOnly": true},
                        {"name": "tmp", "mountPath": "/tmp"}
                    ]
                }],
                "volumes": [
                    {"name": "env", "configMap": {"name": "drctl-env"}},
                    {"name": "kubeconfig", "secret": {"secretName": "drctl-kubeconfig"}},
                    {"name": "immudb-key", "secret": {"secretName": "drctl-immudb-key"}},
                    {"name": "tmp", "emptyDir": {}}
                ]
            }
        }
    });
    // The drill's time budget: Kubernetes stops the pod (SIGTERM: the
    // engine journals an interrupt; `drctl resume` continues).
    if let Some(m) = def.max_runtime {
        job_spec["activeDeadlineSeconds"] = json!(m.as_secs().max(1));
    }
    let mut annotations = serde_json::Map::new();
    if let Some(d) = &def.description {
        annotations.insert("drctl.example.com/description".into(), json!(d));
    }
    annotations.insert(
        "drctl.example.com/generated-by".into(),
        json!(format!("drctl manifests cronjobs (from {})", rel.display())),
    );
    Some(json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": k8s_name(&def.name),
            "namespace": o.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "schedule": sched.cron.expr(),
            "timeZone": sched.cron.tz_name(),
            "suspend": sched.suspend,
            "concurrencyPolicy": "Forbid",
            // The missed-run policy: run once late (within a day) or skip.
            "startingDeadlineSeconds": match sched.missed {
                crate::schedule::MissedPolicy::RunOnce => 24 * 3600,
                crate::schedule::MissedPolicy::Skip => crate::schedule::ON_TIME.num_seconds(),
            },
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 5,
            "jobTemplate": {"spec": job_spec},
        }
    }))
}

/// All CronJobs, as one YAML stream.
pub fn render(defs: &[DrillDef], drills_dir: &Path, o: &CronJobOptions<'_>) -> String {
    let mut out = String::from(
        "# Generated by `drctl manifests cronjobs`; edit the drill definitions, not this file.\n",
    );
    let mut first = true;
    for d in defs {
        let rel = drills_dir.join(d.file.file_name().unwrap_or_default());
        if let Some(cj) = cronjob(d, &rel, o) {
            if !first {
                out.push_str("---\n");
            }
            first = false;
            emit(&cj, 0, &mut out);
        }
    }
    out
}

/// A small YAML emitter for JSON values: block mappings and sequences,
/// every string value double-quoted (JSON escapes are valid YAML), so no
/// value can be misread as another type; keys plain where that is safe.
fn emit(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                out.push_str(&format!("{pad}{}:", key(k)));
                nested(val, indent + 2, out);
            }
        }
        Value::Array(a) => {
            for val in a {
                match val {
                    // `- first: …` with the rest of the mapping below it.
                    Value::Object(m) if !m.is_empty() => {
                        let mut inner = String::new();
                        emit(val, indent + 2, &mut inner);
                        out.push_str(&format!("{pad}- "));
                        out.push_str(&inner[indent + 2..]);
                    }
                    _ => {
                        out.push_str(&format!("{pad}-"));
                        nested(val, indent + 2, out);
                    }
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

fn nested(val: &Value, indent: usize, out: &mut String) {
    match val {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            emit(val, indent, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            emit(val, indent, out);
        }
        Value::Object(_) => out.push_str(" {}\n"),
        Value::Array(_) => out.push_str(" []\n"),
        other => out.push_str(&format!(" {}\n", scalar(other))),
    }
}

fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && !k.starts_with('-')
        && !matches!(
            k.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n" | "~"
        )
        && k.parse::<f64>().is_err();
    if plain {
        k.to_string()
    } else {
        scalar(&Value::String(k.to_string()))
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_kubernetes() {
        assert_eq!(k8s_name("Lab_Failover"), "drctl-drill-lab-failover");
        assert!(k8s_name(&"x".repeat(100)).len() <= 52);
    }

    #[test]
    fn emitted_yaml_parses_back_to_the_same_json() {
        let v = json!({"a": {"b": [1, "two", {"c": true, "d": null, "h": [{"i": 1}]}, []], "e": {}, "f": []}, "g": "x: y # z", "true": 1, "a b": "c"});
        let mut text = String::new();
        emit(&v, 0, &mut text);
        let src = crate::yaml::SourceFile::new("t", text.clone());
        let mut d = crate::diag::Diagnostics::default();
        let node = crate::yaml::parse(&src, &mut d).expect("parses");
        assert_eq!(node.to_json(), v, "{text}");
    }
}
