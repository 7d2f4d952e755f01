//! Prometheus metrics out of drctl's batch jobs: the text exposition
//! format, push-add to a Pushgateway, and an atomic textfile for
//! node_exporter's textfile collector. Generic (names, labels, values), so
//! any job can report through it; `postgres.verify_backup` is the first.
//!
//! Push-add (HTTP POST) replaces only the metric names it sends within
//! its grouping key, so a job that fails can leave its last success
//! timestamp in place by not sending it. The textfile does the same by
//! carrying over the series of names it does not send.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("push to the Pushgateway {url}")]
    Push {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the Pushgateway {url} answered {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
    #[error("bad Pushgateway URL {0}")]
    BadUrl(String),
    #[error("write the metrics textfile {path}")]
    Textfile {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Labels = BTreeMap<String, String>;

/// One gauge with its samples.
#[derive(Debug, Clone)]
pub struct Gauge {
    pub name: String,
    pub help: String,
    pub samples: Vec<(Labels, f64)>,
}

impl Gauge {
    pub fn new(name: &str, help: &str) -> Gauge {
        Gauge {
            name: name.into(),
            help: help.into(),
            samples: Vec::new(),
        }
    }

    pub fn sample(mut self, labels: &Labels, value: f64) -> Gauge {
        self.samples.push((labels.clone(), value));
        self
    }
}

/// A label value as the exposition format writes it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn series(name: &str, labels: &Labels) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let l: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{name}{{{}}}", l.join(","))
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// The text exposition format (version 0.0.4). Gauges without samples
/// are left out: an unmeasured figure is absent, never 0.
pub fn render(gauges: &[Gauge]) -> String {
    let mut out = String::new();
    for g in gauges.iter().filter(|g| !g.samples.is_empty()) {
        out.push_str(&format!(
            "# HELP {} {}\n# TYPE {} gauge\n",
            g.name,
            g.help.replace('\n', " "),
            g.name
        ));
        for (labels, v) in &g.samples {
            out.push_str(&format!("{} {}\n", series(&g.name, labels), number(*v)));
        }
    }
    out
}

/// POSTs `gauges` to `base/metrics/job/<job>/<k>/<v>…` (push-add), bounded.
pub async fn push_add(
    base: &str,
    job: &str,
    grouping: &Labels,
    gauges: &[Gauge],
    limit: Duration,
) -> Result<(), MetricsError> {
    let mut url = reqwest::Url::parse(base).map_err(|_| MetricsError::BadUrl(base.into()))?;
    {
        let mut p = url
            .path_segments_mut()
            .map_err(|_| MetricsError::BadUrl(base.into()))?;
        p.pop_if_empty().extend(["metrics", "job", job]);
        for (k, v) in grouping {
            p.push(k);
            p.push(v);
        }
    }
    let shown = url.to_string();
    let client = reqwest::Client::builder()
        .timeout(limit)
        .build()
        .map_err(|source| MetricsError::Push {
            url: shown.clone(),
            source,
        })?;
    let resp = client
        .post(url)
        .header("content-type", "text/plain; version=0.0.4")
        .body(render(gauges))
        .send()
        .await
        .map_err(|source| MetricsError::Push {
            url: shown.clone(),
            source,
        })?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        let body = resp.text().await.unwrap_or_default();
        return Err(MetricsError::Refused {
            url: shown,
            status,
            body: body.chars().take(300).collect(),
        });
    }
    Ok(())
}

/// Writes `gauges` to `path` atomically (a temporary file beside it,
/// fsync, rename), keeping the series of the previous file that this
/// write does not replace: samples of a name this write leaves out (a
/// success timestamp after a failure), and samples of the names it sends
/// whose labels it does not send (another source's).
pub fn write_textfile(path: &Path, gauges: &[Gauge]) -> Result<(), MetricsError> {
    let err = |source| MetricsError::Textfile {
        path: path.display().to_string(),
        source,
    };
    let mut merged: Vec<Gauge> = gauges.to_vec();
    if let Ok(old) = std::fs::read_to_string(path) {
        for g in parse(&old) {
            match merged.iter_mut().find(|m| m.name == g.name) {
                Some(m) => {
                    for (l, v) in g.samples {
                        if !m.samples.iter().any(|(ml, _)| *ml == l) {
                            m.samples.push((l, v));
                        }
                    }
                }
                None => merged.push(g),
            }
        }
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        std::process::id()
    ));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(render(&merged).as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)
}

/// Reads back what [`render`] writes (gauges, simple label values).
pub fn parse(text: &str) -> Vec<Gauge> {
    let mut out: Vec<Gauge> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push(Gauge::new(name, help));
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((s, v)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = v.parse::<f64>() else { continue };
        let (name, labels) = match s.split_once('{') {
            Some((n, l)) => (n, parse_labels(l.trim_end_matches('}'))),
            None => (s, Labels::new()),
        };
        match out.iter_mut().find(|g| g.name == name) {
            Some(g) => g.samples.push((labels, v)),
            None => out.push(Gauge::new(name, "").sample(&labels, v)),
        }
    }
    out
}

fn parse_labels(s: &str) -> Labels {
    let mut out = Labels::new();
    let mut rest = s;
    while let Some((k, r)) = rest.split_once("=\"") {
        let mut val = String::new();
        let mut chars = r.char_indices();
        let mut end = r.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => val.push('\n'),
                    Some((_, o)) => val.push(o),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                o => val.push(o),
            }
        }
        out.insert(k.trim_start_matches(',').trim().to_string(), val);
        rest = &r[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(src: &str) -> Labels {
        Labels::from([
            ("environment".to_string(), "lab".to_string()),
            ("source".to_string(), src.to_string()),
        ])
    }

    #[test]
    fn render_and_parse_round_trip_with_escapes() {
        let mut l = labels("a\"b\\c");
        l.insert("check".into(), "x\ny".into());
        let g = vec![
            Gauge::new("m_one", "help").sample(&l, 1.5),
            Gauge::new("m_none", "absent"),
        ];
        let text = render(&g);
        assert!(!text.contains("m_none"), "{text}");
        let back = parse(&text);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].samples, vec![(l, 1.5)]);
    }

    #[test]
    fn the_textfile_keeps_what_this_write_does_not_replace() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("m.prom");
        let ok = vec![
            Gauge::new("s", "success").sample(&labels("a"), 1.0),
            Gauge::new("ts", "last success").sample(&labels("a"), 100.0),
        ];
        write_textfile(&p, &ok).unwrap();
        write_textfile(&p, &[Gauge::new("s", "success").sample(&labels("b"), 1.0)]).unwrap();
        let failed = vec![Gauge::new("s", "success").sample(&labels("a"), 0.0)];
        write_textfile(&p, &failed).unwrap();
        let back = parse(&std::fs::read_to_string(&p).unwrap());
        let get = |n: &str, s: &str| {
            back.iter()
                .find(|g| g.name == n)
                .and_then(|g| g.samples.iter().find(|(l, _)| *l == labels(s)).map(|x| x.1))
        };
        assert_eq!(get("s", "a"), Some(0.0));
        assert_eq!(get("s", "b"), Some(1.0));
        assert_eq!(
            get("ts", "a"),
            Some(100.0),
            "the success timestamp survives a failure"
        );
    }
}
