//! The real Prometheus server (Debian's `prometheus`, installed by `cargo
//! xtask setup`) scrapes the real sensor; a real key-file open must show in
//! keysentry_alerts_total through Prometheus's HTTP API. And promtool
//! accepts deploy/'s rules and scrape config.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::*;

fn deploy(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(p)
}

fn tool(name: &str) -> PathBuf {
    let p = PathBuf::from("/usr/bin").join(name);
    assert!(
        p.exists(),
        "{} missing: install Debian's prometheus package (cargo xtask setup does)",
        p.display()
    );
    p
}

#[test]
fn promtool_accepts_the_rules_the_scrape_config_and_the_rule_tests() {
    for (what, file) in [
        ("check rules", "prometheus/keysentry.rules.yml"),
        ("check config", "prometheus/prometheus.yml"),
        // Unit tests of the alerting rules (first alert of a new series,
        // lost events, sensor down).
        ("test rules", "prometheus/keysentry.rules.test.yml"),
    ] {
        let out = Command::new(tool("promtool"))
            .args(what.split(' '))
            .arg(deploy(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {what} {file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

struct Prometheus {
    child: Child,
    port: u16,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(dir: &Path, target_port: u16) -> Self {
        Self::start_scraping(dir, target_port, "")
    }

    /// `scrape` (YAML, indented for the job) adds to the job's config.
    fn start_scraping(dir: &Path, target_port: u16, scrape: &str) -> Self {
        let port = free_port();
        let cfg = dir.join("prometheus.yml");
        std::fs::copy(
            deploy("prometheus/keysentry.rules.yml"),
            dir.join("keysentry.rules.yml"),
        )
        .unwrap();
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - keysentry.rules.yml\n\
                 scrape_configs:\n  - job_name: keysentry\n{scrape}    static_configs:\n      - targets: [\"127.0.0.1:{target_port}\"]\n"
            ),
        )
        .unwrap();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn prometheus");
        Prometheus { child, port }
    }

    /// The value of an instant query's single sample, if any.
    fn query(&self, q: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let body = ureq::get(&url)
            .query("query", q)
            .call()
            .ok()?
            .into_body()
            .read_to_string()
            .ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        assert_eq!(v["status"], "success", "{body}");
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Polls `q` until `ok(value)` (a 250 ms interval, a generous deadline).
    fn wait(&self, q: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let end = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(v) = self.query(q).filter(|v| ok(*v)) {
                return v;
            }
            assert!(
                Instant::now() < end,
                "prometheus: {q} = {:?}",
                self.query(q)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

#[test]
fn prometheus_sees_the_alert_counter_rise_after_a_real_attack() {
    let tmp = tempdir();
    let root = tmp.path();
    let keys = root.join("keys");
    std::fs::create_dir(&keys).unwrap();
    let secret = keys.join("ca.secret");
    let marker = keys.join("zz-marker");
    std::fs::write(&secret, b"not really a key").unwrap();
    std::fs::write(&marker, b"marker").unwrap();
    let mut s = Sensor::start(
        root,
        &format!("[[key_path]]\npath = \"{}\"\n", keys.display()),
    );
    let prom_dir = root.join("prom");
    std::fs::create_dir(&prom_dir).unwrap();
    let p = Prometheus::start(&prom_dir, s.metrics_port);

    p.wait("up{job=\"keysentry\"}", |v| v == 1.0);
    let q = "sum(keysentry_alerts_total{job=\"keysentry\",rule=\"key-file-open\"}) or vector(0)";
    let before = p.wait(q, |_| true);
    assert_eq!(before, 0.0);
    // Scraped while keysentry was up: its probe gauges are there.
    assert!(p.wait("count(keysentry_probe_attached == 1)", |v| v > 0.0) > 0.0);

    // The attack: a process that is not allowlisted reads the key.
    let (pid, st) = actor(&["open", secret.to_str().unwrap()], None, None);
    assert!(st.success());
    let alerts = s.alerts_until_marker(&marker);
    assert_eq!(
        by_pid(&alerts, "key-file-open", pid).len(),
        1,
        "{alerts:#?}"
    );
    // The attack and the marker: two alerts, as the sensor itself says.
    let own = s
        .metric("keysentry_alerts_total{rule=\"key-file-open\",severity=\"high\"}")
        .expect("sensor metric");
    assert_eq!(own, 2.0);
    let after = p.wait(q, |v| v >= 2.0);
    assert_eq!(after, 2.0);
    // And the alerting rule fires on it.
    p.wait(
        "count(ALERTS{alertname=\"KeysentryAlert\",rule=\"key-file-open\"})",
        |v| v >= 1.0,
    );
    assert!(s.stop().success());
}

/// Writes `pem` to `path`, owned by root with mode 0600.
fn secret(path: &Path, pem: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, pem).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A squatter on the metrics port cannot pose as the sensor, and nobody
/// without the client certificate and the token reads it: the real
/// Prometheus scrapes keysentry over TLS with a client certificate and a
/// bearer token; a client without the token gets 401, one without a
/// certificate no handshake; a key anyone can read refuses the config.
#[test]
fn prometheus_scrapes_over_tls_with_a_client_certificate_and_a_token() {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let tmp = tempdir();
    let root = tmp.path();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf = |eku: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        p.extended_key_usages = vec![eku];
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        (cert, key)
    };
    let (server, server_key) = leaf(ExtendedKeyUsagePurpose::ServerAuth);
    let (client, client_key) = leaf(ExtendedKeyUsagePurpose::ClientAuth);
    let f = |n: &str| root.join(n);
    std::fs::write(f("ca.pem"), ca.pem()).unwrap();
    std::fs::write(f("server.pem"), server.pem()).unwrap();
    secret(&f("server.key"), &server_key.serialize_pem());
    std::fs::write(f("client.pem"), client.pem()).unwrap();
    secret(&f("client.key"), &client_key.serialize_pem());
    let token = "s3nsor-scrape-token-0123456789";
    secret(&f("token"), token);

    let metrics = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\ntls_client_ca = \"{}\"\nbearer_token_file = \"{}\"\n",
        f("server.pem").display(),
        f("server.key").display(),
        f("ca.pem").display(),
        f("token").display()
    );
    let s = Sensor::start_metrics(root, "", &metrics);
    let url = format!("https://127.0.0.1:{}/metrics", s.metrics_port);

    // A client that trusts the CA: without a certificate, no handshake;
    // with one but without the token, 401; with both, the metrics.
    let ca_cert = ureq::tls::Certificate::from_pem(ca.pem().as_bytes()).unwrap();
    let agent = |with_cert: bool| {
        let mut tls = ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::Specific(
            std::sync::Arc::new(vec![ca_cert.clone()]),
        ));
        if with_cert {
            tls = tls.client_cert(Some(ureq::tls::ClientCert::new_with_certs(
                &[ureq::tls::Certificate::from_pem(client.pem().as_bytes()).unwrap()],
                ureq::tls::PrivateKey::from_pem(client_key.serialize_pem().as_bytes()).unwrap(),
            )));
        }
        ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .build()
            .new_agent()
    };
    assert!(
        agent(false).get(&url).call().is_err(),
        "no client certificate"
    );
    let r = agent(true).get(&url).call().unwrap();
    assert_eq!(r.status(), 401);
    let mut r = agent(true)
        .get(&url)
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.body_mut()
            .read_to_string()
            .unwrap()
            .contains("keysentry_build_info")
    );
    // Plain HTTP gets no metrics.
    let plain = format!("http://127.0.0.1:{}/metrics", s.metrics_port);
    assert!(
        ureq::get(&plain)
            .call()
            .ok()
            .is_none_or(|r| r.status() != 200)
    );

    // The real Prometheus, configured as docs/configuration.md says.
    let prom_dir = root.join("prom");
    std::fs::create_dir(&prom_dir).unwrap();
    let scrape = format!(
        "    scheme: https\n    tls_config:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}\n    authorization:\n      credentials_file: {}\n",
        f("ca.pem").display(),
        f("client.pem").display(),
        f("client.key").display(),
        f("token").display()
    );
    let p = Prometheus::start_scraping(&prom_dir, s.metrics_port, &scrape);
    p.wait("up{job=\"keysentry\"}", |v| v == 1.0);
    assert_eq!(p.wait("count(keysentry_build_info)", |v| v >= 1.0), 1.0);
    assert!(s.stop().success());

    // A server key anyone can read is refused, naming the field.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(f("server.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = root.join("check.toml");
    std::fs::write(&cfg, format!("[metrics]\n{metrics}")).unwrap();
    let out = Command::new(keysentry_bin())
        .arg("check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("metrics.tls_key") && err.contains("mode 644"),
        "{err}"
    );
}
