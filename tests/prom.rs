//! Prometheus' real tools for the metrics tests: `promtool` (Debian's
//! `prometheus`) and a Pushgateway (`prometheus-pushgateway`) on loopback.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `promtool ARGS` in `dir`; success and its output.
pub fn promtool(args: &[&str], dir: &Path) -> (bool, String) {
    let o = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (apt-get install prometheus; scripts/install-deps.sh)");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Each `(from, to)` edit of the rules file in `dir` must make its
/// `promtool test rules` file fail: the unit tests pin the thresholds.
pub fn unit_tests_catch(dir: &Path, rules: &str, tests: &str, edits: &[(&str, &str)]) {
    for (from, to) in edits {
        let t = tempfile::tempdir().expect("tempdir");
        let text = std::fs::read_to_string(dir.join(rules)).expect("rules");
        assert!(text.contains(from), "{from}");
        std::fs::write(t.path().join(rules), text.replace(from, to)).expect("write");
        std::fs::copy(dir.join(tests), t.path().join(tests)).expect("copy");
        let (ok, out) = promtool(&["test", "rules", tests], t.path());
        assert!(
            !ok,
            "changing `{from}` to `{to}` must fail the unit tests: {out}"
        );
    }
}

/// A real Pushgateway on a free loopback port, stopped on drop.
pub struct Pushgateway {
    child: std::process::Child,
    pub port: u16,
    pub url: String,
}

impl Pushgateway {
    pub fn start() -> Pushgateway {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("prometheus-pushgateway")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-pushgateway (apt-get install prometheus-pushgateway)");
        let url = format!("http://127.0.0.1:{port}");
        let g = Pushgateway { child, port, url };
        assert!(
            crate::wait_until(Duration::from_secs(10), || g.metrics().is_some()),
            "pushgateway up"
        );
        g
    }

    /// Its `/metrics` page.
    pub fn metrics(&self) -> Option<String> {
        let o = Command::new("curl")
            .args(["-sf", &format!("{}/metrics", self.url)])
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).to_string())
    }

    /// The value of the series `name{…}` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[&str]) -> Option<f64> {
        let m = self.metrics()?;
        m.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .find(|l| labels.iter().all(|x| l.contains(x)))
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse().ok())
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
