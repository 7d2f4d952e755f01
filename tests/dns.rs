//! DNS switching against a real PowerDNS Authoritative server (the lab's:
//! sqlite backend, API and DNS on loopback), verified by querying the
//! authoritative server directly.

use drctl_tests::{Lab, Out, Work};

const SWITCH: &str = "name: s\nsteps:\n  - id: dns\n    action: dns.switch\n    with: {region: dr}\n  - id: verify\n    action: dns.check\n    needs: [dns]\n    with: {region: dr}\n";

#[test]
fn switch_is_verified_at_the_server_and_idempotent() {
    let lab = Lab::up();
    let rb = lab.w.write("s.yaml", SWITCH);
    let env = lab.env();
    let plan = lab
        .w
        .run(&["plan", rb.to_str().unwrap(), "--env", &env, "--check"]);
    assert!(
        plan.stdout
            .contains("dns app.lab.example. A 127.0.0.1 -> 127.0.0.2"),
        "{plan:?}"
    );
    let o = lab
        .w
        .run(&["run", rb.to_str().unwrap(), "--env", &env, "--yes"]);
    assert_eq!(o.code, 0, "{o:?}");
    let run = lab.w.runs().pop().unwrap();
    let out = lab.outputs(&run, "dns");
    assert_eq!(out["changed"], true, "{out}");
    assert_eq!(
        out["previous"]["app.lab.example. A"][0], "127.0.0.1",
        "{out}"
    );
    assert!(out["convergence_ms"].as_f64().unwrap() > 0.0);
    let again = lab
        .w
        .run(&["run", rb.to_str().unwrap(), "--env", &env, "--yes"]);
    assert_eq!(again.code, 0, "{again:?}");
    let out2 = lab.outputs(&lab.w.runs().pop().unwrap(), "dns");
    assert_eq!(
        out2["changed"], false,
        "second switch must change nothing: {out2}"
    );
    let report = lab.w.run(&["report", &run]).stdout;
    assert!(
        report.contains("## DNS") && report.contains("convergence"),
        "{report}"
    );
    // The primary direction still works (failback).
    let back = lab.w.write(
        "b.yaml",
        "name: b\nsteps:\n  - id: dns\n    action: dns.switch\n    with: {region: primary}\n",
    );
    assert_eq!(
        lab.w
            .run(&["run", back.to_str().unwrap(), "--env", &env, "--yes"])
            .code,
        0
    );
}

#[test]
fn kill_mid_switch_then_resume_keeps_previous_values() {
    let lab = Lab::up();
    let rb = lab.w.write("s.yaml", SWITCH);
    let env = lab.env();
    let mut c = lab
        .w
        .cmd(&["run", rb.to_str().unwrap(), "--env", &env, "--yes"]);
    c.env("DRCTL_TEST_CRASH_AT", "dns-switch");
    let o = Out::from(c.output().unwrap());
    assert_eq!(o.code, -1, "expected SIGKILL after the PATCH: {o:?}");
    let run = lab.w.runs().pop().unwrap();
    let r = lab.w.run(&["resume", &run]);
    assert_eq!(r.code, 0, "{r:?}");
    let out = lab.outputs(&run, "dns");
    assert_eq!(
        out["changed"], false,
        "already applied before the kill: {out}"
    );
    assert_eq!(
        out["previous"]["app.lab.example. A"][0], "127.0.0.1",
        "previous survives the crash: {out}"
    );
}

#[test]
fn a_rejected_record_applies_nothing_and_says_so() {
    let lab = Lab::up();
    // A CNAME where an A record exists is illegal; PowerDNS rejects the whole
    // PATCH, so the valid A change in the same request must not apply.
    let env_text = std::fs::read_to_string(lab.env()).unwrap().replace(
        "    - {name: app.lab.example., type: A, ttl: 5, values: {primary: [127.0.0.1], dr: [127.0.0.2]}}",
        "    - {name: app.lab.example., type: A, ttl: 5, values: {primary: [127.0.0.1], dr: [127.0.0.2]}}\n    - {name: ns1.lab.example., type: CNAME, ttl: 5, values: {primary: [app.lab.example.], dr: [app.lab.example.]}}",
    );
    let env = lab.w.write("bad-env.yaml", &env_text);
    let rb = lab.w.write("s.yaml", SWITCH);
    let o = lab.w.run(&[
        "run",
        rb.to_str().unwrap(),
        "--env",
        env.to_str().unwrap(),
        "--yes",
    ]);
    assert_eq!(o.code, 5, "{o:?}");
    assert!(o.stderr.contains("rejected the change (422)"), "{o:?}");
    let check = lab.w.write(
        "c.yaml",
        "name: c\nsteps:\n  - id: verify\n    action: dns.check\n    with: {region: primary}\n",
    );
    let c = lab
        .w
        .run(&["run", check.to_str().unwrap(), "--env", &lab.env(), "--yes"]);
    assert_eq!(c.code, 0, "nothing was applied: {c:?}");
}

// ---------------------------------------------------------------- RFC 2136

const TSIG_SECRET: &str = "c2VjcmV0LWtleS1mb3ItZHJjdGwtdGVzdHMtMzItYnl0ZXMhIQ==";

/// A real BIND9 (`named`) on a loopback port, with a TSIG key allowed to
/// update `test.example.`; killed on drop.
struct Bind {
    _dir: tempfile::TempDir,
    child: std::process::Child,
    port: u16,
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Bind {
    fn start() -> Bind {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let port = free_port();
        std::fs::write(
            d.join("named.conf"),
            format!(
                "options {{ directory \"{0}\"; listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; pid-file \"{0}/named.pid\"; recursion no; dnssec-validation no; }};\n\
                 controls {{ }};\nkey \"drctl-key\" {{ algorithm hmac-sha256; secret \"{TSIG_SECRET}\"; }};\n\
                 zone \"test.example\" {{ type master; file \"{0}/test.example.zone\"; allow-update {{ key \"drctl-key\"; }}; }};\n",
                d.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("test.example.zone"),
            "$TTL 60\n@ IN SOA ns1.test.example. hostmaster.test.example. 1 3600 600 86400 60\n@ IN NS ns1.test.example.\nns1 IN A 127.0.0.1\napp IN A 10.0.0.1\n",
        )
        .unwrap();
        for f in ["named.conf", "test.example.zone"] {
            std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o666)).unwrap();
        }
        let mut cmd = std::process::Command::new("named");
        cmd.args(["-g", "-c"])
            .arg(d.join("named.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } == 0 {
            cmd.args(["-u", "bind"]);
        }
        let child = cmd.spawn().expect("named (apt-get install bind9)");
        let mut b = Bind {
            _dir: dir,
            child,
            port,
        };
        let ready = drctl_tests::wait_until(std::time::Duration::from_secs(10), || {
            std::process::Command::new("dig")
                .args([
                    "+short",
                    "+time=1",
                    "+tries=1",
                    "-p",
                    &port.to_string(),
                    "@127.0.0.1",
                    "app.test.example",
                    "A",
                ])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("10.0.0.1"))
        });
        assert!(ready, "named did not come up");
        let _ = &mut b;
        b
    }
}

fn env_for(w: &Work, provider: &str, nameservers: &str) -> String {
    let text = format!(
        "name: t\nactive_region: primary\nregions: {{primary: {{}}, dr: {{}}}}\ndns:\n{provider}  zone: test.example.\n{nameservers}  records:\n    - {{name: app.test.example., type: A, ttl: 30, values: {{primary: [10.0.0.1], dr: [10.1.0.1, 10.1.0.2]}}}}\n"
    );
    w.write("env.yaml", &text).display().to_string()
}

fn switch_and_check(w: &Work, env: &str, vars: &[(&str, &str)]) -> Out {
    let rb = w.write("s.yaml", SWITCH);
    let mut c = w.cmd(&["run", rb.to_str().unwrap(), "--env", env, "--yes"]);
    for (k, v) in vars {
        c.env(k, v);
    }
    Out::from(c.output().unwrap())
}

#[test]
fn rfc2136_with_tsig_against_bind() {
    let bind = Bind::start();
    let w = Work::new();
    let env = env_for(
        &w,
        &format!("  provider: rfc2136\n  server: \"127.0.0.1:{0}\"\n  tsig_key_name: drctl-key\n  tsig_secret: env:T_TSIG\n", bind.port),
        &format!("  nameservers: [\"127.0.0.1:{}\"]\n", bind.port),
    );
    let o = switch_and_check(&w, &env, &[("T_TSIG", TSIG_SECRET)]);
    assert_eq!(o.code, 0, "{o:?}");
    let run = w.runs().pop().unwrap();
    let out = w
        .journal(&run)
        .into_iter()
        .find(|r| r["type"] == "step_finished" && r["step"] == "dns")
        .unwrap()["outputs"]
        .clone();
    assert_eq!(out["changed"], true, "{out}");
    assert_eq!(
        out["previous"]["app.test.example. A"],
        serde_json::json!(["10.0.0.1"]),
        "{out}"
    );
    let dig = std::process::Command::new("dig")
        .args([
            "+short",
            "-p",
            &bind.port.to_string(),
            "@127.0.0.1",
            "app.test.example",
            "A",
        ])
        .output()
        .unwrap();
    let mut got: Vec<String> = String::from_utf8_lossy(&dig.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    got.sort();
    assert_eq!(got, vec!["10.1.0.1", "10.1.0.2"], "dig sees the switch");
    let again = switch_and_check(&w, &env, &[("T_TSIG", TSIG_SECRET)]);
    assert_eq!(again.code, 0, "{again:?}");
    // A wrong key is refused, with a message that names the cause.
    let bad = switch_and_check(
        &w,
        &env,
        &[("T_TSIG", "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmc=")],
    );
    let back = w.write(
        "b.yaml",
        "name: b\nsteps:\n  - id: dns\n    action: dns.switch\n    with: {region: primary}\n",
    );
    let mut c = w.cmd(&["run", back.to_str().unwrap(), "--env", &env, "--yes"]);
    c.env("T_TSIG", "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmc=");
    let bad2 = Out::from(c.output().unwrap());
    assert_eq!(bad.code, 0, "no change needed, so no update sent: {bad:?}");
    assert_eq!(bad2.code, 5, "{bad2:?}");
    assert!(
        bad2.stderr.contains("NOTAUTH") && bad2.stderr.contains("BADSIG"),
        "{bad2:?}"
    );
    assert!(
        !bad2.stderr.contains("d3Jvbmcta2V5"),
        "the secret must not be printed"
    );
}

// ---------------------------------------------------------------- Route 53

struct Moto {
    child: std::process::Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn route53_through_moto_server() {
    let port = free_port();
    let child = std::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("moto_server (pip install 'moto[server]')");
    let moto = Moto { child, port };
    let base = format!("http://127.0.0.1:{}", moto.port);
    assert!(drctl_tests::wait_until(
        std::time::Duration::from_secs(20),
        || std::net::TcpStream::connect(("127.0.0.1", moto.port)).is_ok()
    ));
    let create = std::process::Command::new("curl")
        // moto reads service and region from the Authorization header (it
        // checks no signature), so a plain request needs a nominal one.
        .args(["-sf", "-X", "POST", "-H", "Content-Type: application/xml", "-H", "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/route53/aws4_request, SignedHeaders=host, Signature=0", "--data",
            "<CreateHostedZoneRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><Name>test.example.</Name><CallerReference>drctl-test</CallerReference></CreateHostedZoneRequest>"])
        .arg(format!("{base}/2013-04-01/hostedzone"))
        .output()
        .unwrap();
    let xml = String::from_utf8_lossy(&create.stdout).to_string();
    let id = xml
        .split("<Id>")
        .nth(1)
        .and_then(|s| s.split("</Id>").next())
        .expect("hosted zone id")
        .trim_start_matches("/hostedzone/")
        .to_string();
    let w = Work::new();
    let env = env_for(
        &w,
        &format!("  provider: route53\n  hosted_zone_id: {id}\n  endpoint: \"{base}\"\n"),
        "",
    );
    let creds = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing-secret-sentinel"),
        ("AWS_SESSION_TOKEN", "t"),
    ];
    let o = switch_and_check(&w, &env, &creds);
    assert_eq!(o.code, 0, "{o:?}");
    let run = w.runs().pop().unwrap();
    let out = w
        .journal(&run)
        .into_iter()
        .find(|r| r["type"] == "step_finished" && r["step"] == "dns")
        .unwrap()["outputs"]
        .clone();
    assert_eq!(out["changed"], true, "{out}");
    let again = switch_and_check(&w, &env, &creds);
    assert_eq!(again.code, 0, "{again:?}");
    let out2 = w
        .journal(&w.runs().pop().unwrap())
        .into_iter()
        .find(|r| r["type"] == "step_finished" && r["step"] == "dns")
        .unwrap()["outputs"]
        .clone();
    assert_eq!(out2["changed"], false, "idempotent: {out2}");
    let listing = std::process::Command::new("curl").args(["-sf", "-H", "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/route53/aws4_request, SignedHeaders=host, Signature=0"]).arg(format!("{base}/2013-04-01/hostedzone/{id}/rrset")).output().unwrap();
    let l = String::from_utf8_lossy(&listing.stdout);
    assert!(l.contains("10.1.0.1") && l.contains("10.1.0.2"), "{l}");
    let journal = std::fs::read_to_string(w.journal_path(&run)).unwrap();
    assert!(!journal.contains("testing-secret-sentinel"));
}

// ---------------------------------------------------------------- Cloud DNS (fake)

#[path = "clouddns_fake.rs"]
mod clouddns_fake;

#[test]
fn clouddns_against_the_documented_fake() {
    let w = Work::new();
    let key = w.path().join("sa.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .status()
        .unwrap();
    assert!(ok.success());
    let der = std::process::Command::new("openssl")
        .args(["rsa", "-RSAPublicKey_out", "-outform", "DER", "-in"])
        .arg(&key)
        .output()
        .unwrap()
        .stdout;
    let fake = clouddns_fake::FakeCloudDns::start(
        der,
        "drctl@proj.iam.gserviceaccount.com",
        vec![
            serde_json::json!({"name": "app.test.example.", "type": "A", "ttl": 30, "rrdatas": ["10.0.0.1"]}),
        ],
    );
    let base = format!("http://127.0.0.1:{}", fake.port);
    let pem = std::fs::read_to_string(&key).unwrap();
    let sa = serde_json::json!({"type": "service_account", "client_email": "drctl@proj.iam.gserviceaccount.com", "private_key": pem, "token_uri": format!("{base}/token")});
    let sa_path = w.write("sa.json", &sa.to_string());
    let env = env_for(
        &w,
        &format!("  provider: clouddns\n  project: proj\n  managed_zone: zone\n  endpoint: \"{base}\"\n  credentials: \"file:{}\"\n", sa_path.display()),
        "",
    );
    let o = switch_and_check(&w, &env, &[]);
    assert_eq!(o.code, 0, "{o:?}");
    let now: Vec<serde_json::Value> = fake.rrsets.lock().unwrap().clone();
    assert_eq!(
        now[0]["rrdatas"],
        serde_json::json!(["10.1.0.1", "10.1.0.2"]),
        "{now:?}"
    );
    let again = switch_and_check(&w, &env, &[]);
    assert_eq!(again.code, 0, "{again:?}");
    let journal = std::fs::read_to_string(w.journal_path(&w.runs()[0])).unwrap();
    assert!(!journal.contains("PRIVATE KEY") && !journal.contains("fake-token-123"));
}

#[test]
fn lower_ttl_before_a_planned_switchover() {
    let lab = Lab::up();
    let rb = lab.w.write(
        "l.yaml",
        "name: l\nsteps:\n  - id: ttl\n    action: dns.lower_ttl\n    with: {ttl: 2}\n",
    );
    let env = lab.env();
    let o = lab
        .w
        .run(&["run", rb.to_str().unwrap(), "--env", &env, "--yes"]);
    assert_eq!(o.code, 0, "{o:?}");
    let out = lab.outputs(&lab.last_run(), "ttl");
    assert_eq!(out["changed"], true, "{out}");
    assert_eq!(out["previous_ttls"]["app.lab.example. A"], 5, "{out}");
    let dig = std::process::Command::new("dig")
        .args(["+noall", "+answer"])
        .arg("@127.0.0.1")
        .arg("-p")
        .arg(
            std::fs::read_to_string(lab.env())
                .unwrap()
                .split("nameservers: [\"127.0.0.1:")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap(),
        )
        .arg("app.lab.example")
        .arg("A")
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&dig.stdout).to_string();
    assert!(
        line.contains("\t2\tIN\tA\t127.0.0.1") || line.split_whitespace().nth(1) == Some("2"),
        "{line}"
    );
    let again = lab
        .w
        .run(&["run", rb.to_str().unwrap(), "--env", &env, "--yes"]);
    assert_eq!(again.code, 0);
    assert_eq!(lab.outputs(&lab.last_run(), "ttl")["changed"], false);
}
