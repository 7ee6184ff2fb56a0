//! Harness: starts the real `keysentry` binary with a test config, reads its
//! JSON alerts from stdout and its log from stderr, and waits on events
//! (alerts, log lines) with deadlines, never on fixed sleeps.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError, channel},
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod lab;

/// How long a test waits for an event (a log line, an alert) before it
/// fails: 30 s, or `$KEYSENTRY_TEST_DEADLINE_SECS` (the VM runner raises it:
/// under software emulation the verifier alone takes a minute or more).
pub fn deadline() -> Duration {
    std::env::var("KEYSENTRY_TEST_DEADLINE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(30), Duration::from_secs)
}

pub fn keysentry_bin() -> PathBuf {
    PathBuf::from(std::env::var("KEYSENTRY_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/keysentry").to_string()
    }))
}

pub fn actor_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ks-actor"))
}

/// A copy of `bin` that any uid can execute: the build tree may sit under
/// a directory only root can enter (a CI checkout under /root, say).
pub fn world_executable(bin: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("keysentry-test-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join(bin.file_name().unwrap());
    if !copy.exists() {
        let tmp = dir.join(format!(
            ".{}.tmp",
            bin.file_name().unwrap().to_string_lossy()
        ));
        std::fs::copy(bin, &tmp).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &copy).unwrap();
    }
    copy
}

/// The C library this test process runs with (a harmless LD_PRELOAD).
pub fn libc_path() -> String {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("/libc.so") || p.contains("/libc-"))
        .expect("libc mapped")
        .to_string()
}

/// A copy of ks-actor at `dir/name`, executable by everyone: a program of
/// its own that a config names by path (protected, allowlisted).
pub fn actor_copy(dir: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::copy(actor_bin(), &p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// `root/keys` with its marker file `zz-marker` (the barrier
/// `Sensor::alerts_until_marker` opens): the marker's path.
pub fn keys_with_marker(root: &Path) -> PathBuf {
    let keys = root.join("keys");
    std::fs::create_dir(&keys).unwrap();
    let marker = keys.join("zz-marker");
    std::fs::write(&marker, b"m").unwrap();
    marker
}

/// Fails the test unless it runs as root (the suite needs it; `cargo xtask
/// test` checks this up front).
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "integration tests load eBPF programs and must run as root (cargo xtask test)"
    );
}

/// What `keysentry probes` prints (as root); panics when it fails.
pub fn probes_report() -> String {
    require_root();
    let out = Command::new(keysentry_bin())
        .arg("probes")
        .output()
        .expect("run keysentry probes");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "keysentry probes failed: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// None when BPF LSM is available, else why not (from `keysentry probes`).
pub fn lsm_unavailable() -> Option<String> {
    let text = probes_report();
    let line = text
        .lines()
        .find(|l| l.starts_with("BPF LSM: "))
        .unwrap_or_else(|| panic!("no BPF LSM line in keysentry probes: {text}"));
    if line.starts_with("BPF LSM: available") {
        None
    } else {
        Some(line.trim_start_matches("BPF LSM: unavailable ").to_string())
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub struct Sensor {
    child: Child,
    alerts: Receiver<Value>,
    incidents: Receiver<Value>,
    logs: Receiver<String>,
    /// Log lines `wait_log` read so far.
    seen: Vec<String>,
    pub metrics_port: u16,
}

impl Sensor {
    /// Starts keysentry with `[metrics]`/`[alerts]` set for the test and
    /// `body` as the rest of the config; returns once it logs "ready".
    pub fn start(dir: &Path, body: &str) -> Sensor {
        Self::start_with(dir, body, &[])
    }

    /// Starts keysentry on the embedded default config (`keysentry
    /// default-config` of the binary under test) with only `[metrics]` set
    /// for the test, and `extra` (TOML) appended to it.
    pub fn start_default(dir: &Path, extra: &str) -> Sensor {
        Self::start(dir, &format!("{}\n{extra}", default_config_body()))
    }

    /// As `start`, with extra `keysentry run` arguments.
    pub fn start_with(dir: &Path, body: &str, args: &[&str]) -> Sensor {
        Self::start_env(dir, body, args, &[])
    }

    /// As `start_with`, with extra environment variables.
    pub fn start_env(dir: &Path, body: &str, args: &[&str], env: &[(&str, &Path)]) -> Sensor {
        Self::launch(dir, body, args, env, free_port(), &[], "")
    }

    /// As `start`, with the metrics listener on `port` (which may be taken).
    pub fn start_on_port(dir: &Path, body: &str, port: u16) -> Sensor {
        Self::launch(dir, body, &[], &[], port, &[], "")
    }

    /// As `start`, run through `wrapper` (a command that then execs
    /// keysentry: `setpriv ...`).
    pub fn start_wrapped(dir: &Path, body: &str, wrapper: &[&str]) -> Sensor {
        Self::launch(dir, body, &[], &[], free_port(), wrapper, "")
    }

    /// As `start`, with `metrics` (TOML keys) added to its `[metrics]`.
    pub fn start_metrics(dir: &Path, body: &str, metrics: &str) -> Sensor {
        Self::launch(dir, body, &[], &[], free_port(), &[], metrics)
    }

    fn launch(
        dir: &Path,
        body: &str,
        args: &[&str],
        env: &[(&str, &Path)],
        port: u16,
        wrapper: &[&str],
        metrics: &str,
    ) -> Sensor {
        require_root();
        // cargo runs tests with LD_LIBRARY_PATH set; an allowlisted program
        // started with it loses its allowance (tests/allow.rs), so the
        // programs the tests start must not inherit it. The tests run one
        // at a time (--test-threads=1): no other thread reads the
        // environment meanwhile.
        if std::env::var_os("LD_LIBRARY_PATH").is_some() {
            // SAFETY: single-threaded here (see above).
            unsafe { std::env::remove_var("LD_LIBRARY_PATH") };
        }
        let cfg = dir.join("keysentry.toml");
        std::fs::write(
            &cfg,
            format!(
                "[metrics]\nlisten = \"127.0.0.1:{port}\"\n{metrics}\n[alerts]\nstdout = true\n\n{body}"
            ),
        )
        .unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((w, wargs)) => {
                let mut c = Command::new(w);
                c.args(wargs).arg(keysentry_bin());
                c
            }
            None => Command::new(keysentry_bin()),
        };
        let mut child = cmd
            .args(["run", "--config"])
            .arg(&cfg)
            .args(args)
            // info, or the caller's filter (e.g. `info,sensor::kernel::loader=debug`
            // for the verifier's work per program).
            .env(
                "KEYSENTRY_LOG",
                std::env::var("KEYSENTRY_LOG").unwrap_or_else(|_| "info".to_string()),
            )
            .envs(env.iter().map(|(k, v)| (k, v.as_os_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keysentry");
        let (atx, alerts) = channel();
        let (itx, incidents) = channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    // Incident records (docs/alerts.md) have their own
                    // channel: the tests here read alerts.
                    Ok(v) if v["type"] == "incident" => {
                        let _ = itx.send(v);
                    }
                    Ok(v) => {
                        if atx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(e) => panic!("keysentry printed a non-JSON line on stdout ({e}): {line}"),
                }
            }
        });
        let (ltx, logs) = channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[keysentry] {line}");
                let _ = ltx.send(line);
            }
        });
        let mut s = Sensor {
            child,
            alerts,
            incidents,
            logs,
            seen: Vec::new(),
            metrics_port: port,
        };
        s.wait_log("ready");
        s
    }

    /// Incident records received so far (without waiting).
    pub fn incidents_now(&self) -> Vec<Value> {
        self.incidents.try_iter().collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Rewrites the config file `start` wrote (same `[metrics]`; `alerts`:
    /// extra lines of `[alerts]`; `body`: the rest) and sends SIGHUP.
    pub fn reload(&mut self, dir: &Path, alerts: &str, body: &str) {
        std::fs::write(
            dir.join("keysentry.toml"),
            format!(
                "[metrics]\nlisten = \"127.0.0.1:{}\"\n[alerts]\nstdout = true\n{alerts}\n\n{body}",
                self.metrics_port
            ),
        )
        .unwrap();
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_log(&mut self, needle: &str) -> String {
        let deadline = deadline();
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no log line with {needle:?} within {deadline:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let st = self.child.wait().ok();
                    panic!("keysentry exited ({st:?}) before logging {needle:?}")
                }
            }
        }
    }

    /// A log line already read (by `wait_log`, start-up's included) with
    /// `needle`.
    pub fn logged(&self, needle: &str) -> Option<&str> {
        self.seen
            .iter()
            .find(|l| l.contains(needle))
            .map(String::as_str)
    }

    /// Alerts received until (not including) the first alert about
    /// `marker`, a watched key file the test opens itself as a barrier:
    /// every event the kernel queued before it has then been processed.
    pub fn alerts_until_marker(&mut self, marker: &Path) -> Vec<Value> {
        let ino = std::fs::metadata(marker).unwrap().ino();
        let st = Command::new(actor_bin())
            .arg("open")
            .arg(marker)
            .status()
            .unwrap();
        assert!(st.success(), "marker open failed");
        let deadline = deadline();
        let end = Instant::now() + deadline;
        let mut seen = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.alerts.recv_timeout(left) {
                Ok(a) if a["target"]["inode"] == ino => return seen,
                Ok(a) => seen.push(a),
                Err(e) => panic!(
                    "marker alert for {} not seen ({e:?}); got {seen:#?}",
                    marker.display()
                ),
            }
        }
    }

    /// Alerts until one satisfies `pred` (returned last), for alerts that
    /// come from a thread of their own (the scanner) rather than in ring
    /// order.
    pub fn alerts_until(&mut self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let end = Instant::now() + deadline();
        let mut seen = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.alerts.recv_timeout(left) {
                Ok(a) => {
                    let done = pred(&a);
                    seen.push(a);
                    if done {
                        return seen;
                    }
                }
                Err(e) => panic!("expected alert not seen ({e:?}); got {seen:#?}"),
            }
        }
    }

    /// GET /metrics over real HTTP.
    pub fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        ureq::get(&url)
            .call()
            .expect("GET /metrics")
            .into_body()
            .read_to_string()
            .expect("metrics body")
    }

    /// Value of one sample, e.g. `keysentry_events_total{kind="key_open"}`.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        self.metrics().lines().find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    /// SIGINT, then every alert and incident record not read yet (the
    /// fold reports and closed incidents written at shutdown included).
    pub fn stop_and_drain(mut self) -> (Vec<Value>, Vec<Value>) {
        assert_eq!(self.stop_with(nix::sys::signal::Signal::SIGINT), Some(0));
        // The reader threads end at EOF; the channels then disconnect.
        let alerts: Vec<Value> = self.alerts.iter().collect();
        let incidents: Vec<Value> = self.incidents.iter().collect();
        (alerts, incidents)
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.terminate()
    }

    /// `signal`, then the exit code.
    pub fn stop_with(&mut self, signal: nix::sys::signal::Signal) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
        self.child.wait().expect("wait keysentry").code()
    }

    fn terminate(&mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.child.wait().expect("wait keysentry")
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// Stops process `pid` (SIGSTOP) and returns once every one of its
/// threads is stopped: kill() only queues the signal, and a thread that is
/// running (keysentry's ring reader mid-round) goes on until it next
/// enters the kernel.
pub fn stop_and_wait(pid: nix::unistd::Pid) {
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let end = Instant::now() + deadline();
    loop {
        let stopped = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .all(|t| {
                std::fs::read_to_string(t.path().join("stat"))
                    .ok()
                    .and_then(|s| {
                        s.rfind(')')
                            .and_then(|i| s[i + 1..].trim_start().chars().next())
                    })
                    .is_none_or(|state| state == 'T' || state == 't')
            });
        if stopped {
            return;
        }
        assert!(Instant::now() < end, "process {pid} did not stop");
        std::thread::yield_now();
    }
}

/// Makes `cmd`'s process (and what it runs) run on CPU 0 only: the
/// kernel's open verdict cache is per CPU.
pub fn pin_to_cpu0(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs `cmd` with its output discarded; returns (pid, exit status).
pub fn run_quiet(cmd: &mut Command) -> (u32, ExitStatus) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    (pid, child.wait().unwrap())
}

/// Runs ks-actor with `args` (optionally as `uid`, in `cwd`) and returns
/// (pid, exit status).
pub fn actor(args: &[&str], cwd: Option<&Path>, uid: Option<u32>) -> (u32, ExitStatus) {
    let bin = match uid {
        Some(_) => world_executable(&actor_bin()),
        None => actor_bin(),
    };
    let mut c = Command::new(bin);
    c.args(args);
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    if let Some(u) = uid {
        c.uid(u).gid(u);
    }
    let mut child = c.spawn().expect("spawn ks-actor");
    let pid = child.id();
    (pid, child.wait().unwrap())
}

pub fn ino(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().ino()
}

/// Is `tool` on the PATH (tests that need it SKIP without it)?
/// `sh -c CMD`'s trimmed stdout, or None (its stderr printed) when it
/// fails.
pub fn shell(cmd: &str) -> Option<String> {
    let o = Command::new("sh").args(["-c", cmd]).output().ok()?;
    if !o.status.success() {
        println!("({cmd}: {})", String::from_utf8_lossy(&o.stderr).trim_end());
        return None;
    }
    Some(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The alerts of `rule` about `path` (their target).
pub fn about<'a>(alerts: &'a [Value], rule: &str, path: &Path) -> Vec<&'a Value> {
    alerts
        .iter()
        .filter(|a| a["rule"] == rule && a["target"]["path"] == path.to_str().unwrap())
        .collect()
}

/// The alerts of `rule` by process `pid`.
pub fn by_pid<'a>(alerts: &'a [Value], rule: &str, pid: u32) -> Vec<&'a Value> {
    alerts
        .iter()
        .filter(|a| a["rule"] == rule && a["process"]["pid"] == pid)
        .collect()
}

/// The one alert of `rule` by process `pid` (the test fails otherwise).
pub fn one_by_pid<'a>(alerts: &'a [Value], rule: &str, pid: u32) -> &'a Value {
    let got = by_pid(alerts, rule, pid);
    assert_eq!(got.len(), 1, "one {rule} alert by pid {pid}: {alerts:#?}");
    got[0]
}

/// No alert of `rule` by process `pid`; `what` names it in the failure.
pub fn none_by_pid(alerts: &[Value], rule: &str, pid: u32, what: &str) {
    let got = by_pid(alerts, rule, pid);
    assert!(
        got.is_empty(),
        "{what} (pid {pid}) must not alert: {got:#?}"
    );
}

/// A world-traversable temporary directory (the tests also act as nobody).
pub fn tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::Builder::new()
        .prefix("keysentry-test-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// `keysentry replay FILE [args]` (no kernel, no root): its stdout as JSON
/// values; panics with its stderr when it fails.
pub fn replay(file: &Path, args: &[&str]) -> Vec<Value> {
    let out = Command::new(keysentry_bin())
        .arg("replay")
        .arg(file)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A 127.0.0.1 listener that reads every connection to its end; its port.
pub fn listener() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut c, &mut sink);
        }
    });
    port
}

/// The embedded default config as `keysentry default-config` prints it,
/// without its `[metrics]` and `[alerts]` tables (which `Sensor::start`
/// writes for the test: a free metrics port, alerts on stdout).
pub fn default_config_body() -> String {
    let out = Command::new(keysentry_bin())
        .arg("default-config")
        .output()
        .expect("run keysentry default-config");
    assert!(
        out.status.success(),
        "keysentry default-config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    without_tables(
        &String::from_utf8(out.stdout).unwrap(),
        &["metrics", "alerts"],
    )
}

/// `toml` without the (plain, not array) tables named in `drop`: their
/// header and every line up to the next header.
fn without_tables(toml: &str, drop: &[&str]) -> String {
    let mut skipping = false;
    let mut out = String::new();
    for line in toml.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            let array = t.starts_with("[[");
            let name = t
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim();
            skipping = !array && drop.contains(&name);
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Asserts that `s` received `kind` records (at least one), each no
/// longer than the compact form of a `path_max`-byte path: the kernel
/// sent them compact (the bytes their path uses), not whole.
pub fn assert_sent_compact(s: &Sensor, kind: &str, path_max: usize) {
    use sensor_common::EventKind;
    let k = EventKind::ALL
        .into_iter()
        .find(|k| k.name() == kind)
        .unwrap();
    let most = k.compaction().unwrap().size(path_max as u32).unwrap();
    let m = |name: &str| {
        s.metric(&format!("{name}{{kind=\"{kind}\"}}"))
            .unwrap_or(0.0)
    };
    let (n, bytes) = (
        m("keysentry_events_total"),
        m("keysentry_event_bytes_total"),
    );
    assert!(n >= 1.0, "no {kind} record");
    assert!(
        bytes <= n * most as f64,
        "{bytes} bytes in {n} {kind} records: not compact (at most {most} each; whole {})",
        k.record_size()
    );
}

/// `ks-actor ARGS` with piped stdin and stdout, and the first line it
/// printed (empty when it exited first).
pub fn spawn_first_line(args: &[&str]) -> (Child, String) {
    let mut c = Command::new(actor_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn ks-actor");
    let mut line = String::new();
    BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    (c, line)
}

/// `ks-actor ARGS` once it printed "ready" (it then waits for its stdin
/// to close: `release`).
pub fn spawn_ready(args: &[&str]) -> Child {
    let (c, line) = spawn_first_line(args);
    assert_eq!(line.trim(), "ready", "{args:?}");
    c
}

pub fn release(mut c: Child) {
    drop(c.stdin.take());
    assert!(c.wait().unwrap().success());
}

/// An ed25519 private key made by openssl at `path`; false (and SKIPPED
/// printed) where openssl is not installed.
pub fn openssl_ed25519(path: &Path) -> bool {
    if !have("openssl") {
        println!("SKIPPED: openssl (to make a key at test time) is not installed");
        return false;
    }
    let st = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
    true
}
