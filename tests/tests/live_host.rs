//! The benign-host test (issue 12, "stay silent on a healthy host"): the
//! embedded default config, and an ordinary admin day done with the real
//! programs, three times in one sensor run, must raise no alert of
//! severity medium or above. The second test puts one attack (a protected
//! process dumped through /proc/PID/mem, the dump copied and sent) in the
//! middle of the day: its incident is there, and nothing else is.
//!
//! The day (each step asserts its commands exit 0, with their stderr):
//! - accounts and PAM logins: useradd -m, chpasswd, su, sudo; ssh-keygen as
//!   that user in their home, the public key into their authorized_keys,
//!   and an ssh key login (as that user) to an sshd on a local port;
//! - nginx loading Debian's snakeoil TLS key, an HTTPS request, a reload
//!   (the key loaded again), another request, a graceful stop;
//! - `apt-get install --reinstall` of a local package with a shared library,
//!   a conffile in /etc/ld.so.conf.d and an ldconfig trigger (dpkg
//!   triggers, ldconfig rewriting /etc/ld.so.cache through ld.so.cache~ and
//!   a rename), then its purge;
//! - new keys: ssh-keygen and openssl genpkey as root, a self-signed
//!   certificate from the new key;
//! - tar, rsync and logrotate (compress) of ordinary files;
//! - ps aux > FILE, top -b -n 1, pgrep -a keysentry;
//! - gdb, gcore, strace -f and strace -p of the tester's own `sleep`;
//! - gcc of a small C file, and its run;
//! - userdel -r.
//!
//! The sensor runs with the default config plus one `[[key_path]]`, the
//! test's marker directory: `alerts_until_marker` opens it as a barrier
//! after each round. Where a program is missing (the busybox VMs) the tests
//! print `SKIPPED: <why>` before starting the sensor.
//!
//! Everything waits on events (a process's exit through its pidfd, a file
//! appearing or growing through inotify), never on fixed sleeps.

mod common;

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead, BufReader, Read, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::{
            fs::{MetadataExt, PermissionsExt},
            process::CommandExt,
        },
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use common::{
    lab::{fresh_key, spawn_args},
    *,
};
use serde_json::Value;

/// The PATH every command of the day gets (an admin's root shell): apt,
/// dpkg and the account tools look for programs in the sbin directories.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Every program the day runs; any missing one skips the test.
const TOOLS: &[&str] = &[
    "useradd",
    "chpasswd",
    "userdel",
    "su",
    "sudo",
    "sshd",
    "ssh",
    "ssh-keygen",
    "nginx",
    "curl",
    "make-ssl-cert",
    "apt-get",
    "dpkg",
    "dpkg-deb",
    "ldconfig",
    "openssl",
    "tar",
    "gzip",
    "rsync",
    "logrotate",
    "ps",
    "top",
    "pgrep",
    "gdb",
    "gcore",
    "strace",
    "gcc",
    "sleep",
    "cp",
    "sh",
];

const SNAKEOIL_KEY: &str = "/etc/ssl/private/ssl-cert-snakeoil.key";
const SNAKEOIL_CERT: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
const HOST_KEYS: &[&str] = &[
    "/etc/ssh/ssh_host_rsa_key",
    "/etc/ssh/ssh_host_ecdsa_key",
    "/etc/ssh/ssh_host_ed25519_key",
];
const LD_CACHE: &str = "/etc/ld.so.cache";
/// The test package (installed and purged in each round).
const PKG: &str = "keysentry-live-host-test";
const LIB: &str = "libkslivehost.so.1";

fn tool(name: &str) -> Option<PathBuf> {
    PATH.split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// `name` from PATH as a command with the day's environment.
fn cmd(name: &str) -> Command {
    let mut c = Command::new(tool(name).unwrap_or_else(|| panic!("{name} not found")));
    c.env("PATH", PATH)
        .env("LC_ALL", "C")
        .env("HOME", "/root")
        // gdb: no debuginfod lookups (no network needed).
        .env("DEBUGINFOD_URLS", "");
    c
}

/// How long one command of the day may take before the test fails.
fn command_limit() -> Duration {
    (deadline() * 4).max(Duration::from_secs(120))
}

fn pidfd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; the result is a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a fresh descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Polls `fd` for input until `limit`; whether it became readable.
fn readable(fd: RawFd, limit: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, limit.as_millis().min(i32::MAX as u128) as i32) };
    n > 0
}

/// Waits for `pid` (any process, not only a child) to exit, on its pidfd.
fn wait_exit(pid: u32, what: &str) {
    let Some(fd) = pidfd(pid) else { return };
    assert!(
        readable(fd.as_raw_fd(), command_limit()),
        "{what} (pid {pid}) did not exit within {:?}",
        command_limit()
    );
}

/// Waits for `child` under the command limit (its pidfd), killing it and
/// failing when it does not end.
fn wait_child(child: &mut Child, what: &str) -> ExitStatus {
    if let Some(fd) = pidfd(child.id())
        && !readable(fd.as_raw_fd(), command_limit())
    {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} did not finish within {:?}", command_limit());
    }
    child.wait().unwrap()
}

/// Runs `c` to its end: `input` on its stdin, its stdout into `out_file`
/// or returned, its stderr in the failure message. Panics unless it exits 0.
fn exec(what: &str, c: &mut Command, input: Option<&[u8]>, out_file: Option<&Path>) -> String {
    let (st, out, err) = exec_status(what, c, input, out_file);
    assert!(
        st.success(),
        "{what}: {c:?} failed ({st})\nstderr:\n{err}\nstdout:\n{out}"
    );
    out
}

/// As `exec`, returning (status, stdout, stderr) whatever the status.
fn exec_status(
    what: &str,
    c: &mut Command,
    input: Option<&[u8]>,
    out_file: Option<&Path>,
) -> (ExitStatus, String, String) {
    c.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stderr(Stdio::piped());
    match out_file {
        Some(p) => c.stdout(fs::File::create(p).unwrap()),
        None => c.stdout(Stdio::piped()),
    };
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start {c:?}: {e}"));
    if let Some(bytes) = input {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let mut b = Vec::new();
                let _ = r.read_to_end(&mut b);
                s = String::from_utf8_lossy(&b).into_owned();
            }
            s
        })
    };
    let out = drain(child.stdout.take().map(|o| Box::new(o) as _));
    let err = drain(child.stderr.take().map(|e| Box::new(e) as _));
    let st = wait_child(&mut child, what);
    (st, out.join().unwrap(), err.join().unwrap())
}

fn run(what: &str, c: &mut Command) -> String {
    exec(what, c, None, None)
}

/// Waits until `cond` holds, re-checking on every inotify event in `dir`
/// (files created, written, closed, renamed), under the deadline.
fn wait_until(dir: &Path, what: &str, mut cond: impl FnMut() -> bool) {
    use inotify::WatchMask;
    let mut ino = inotify::Inotify::init().unwrap();
    ino.watches()
        .add(
            dir,
            WatchMask::CREATE | WatchMask::MODIFY | WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO,
        )
        .unwrap();
    let end = Instant::now() + command_limit();
    let mut buf = [0u8; 4096];
    while !cond() {
        let left = end.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{what}: not within {:?}", command_limit());
        if readable(ino.as_raw_fd(), left) {
            let _ = ino.read_events(&mut buf);
        }
    }
}

fn mkdir(p: &Path, mode: u32) {
    fs::create_dir_all(p).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Kills (SIGTERM) and reaps a child on drop, whatever happens in the test.
struct KillOnDrop(Child, &'static str);

impl KillOnDrop {
    /// SIGTERM, then its exit status.
    fn stop(mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        wait_child(&mut self.0, self.1)
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A test account, deleted (with its home) on drop unless the day did it.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
    deleted: bool,
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if !self.deleted {
            let _ = Command::new("/usr/sbin/userdel")
                .args(["-r", "-f", &self.name])
                .env("PATH", PATH)
                .output();
        }
    }
}

impl TestUser {
    /// `c` run as this user, in their home.
    fn run_as<'a>(&self, c: &'a mut Command) -> &'a mut Command {
        c.uid(self.uid)
            .gid(self.gid)
            .env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .current_dir(&self.home)
    }

    /// Waits for every process of the user to exit (sshd's session
    /// processes end a moment after the client): userdel refuses a user
    /// that still runs something.
    fn wait_no_processes(&self) {
        let end = Instant::now() + command_limit();
        loop {
            let pids: Vec<u32> = fs::read_dir("/proc")
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|pid: &u32| {
                    fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == self.uid)
                })
                .collect();
            if pids.is_empty() {
                return;
            }
            assert!(
                Instant::now() < end,
                "processes of {} still running: {pids:?}",
                self.name
            );
            for pid in pids {
                wait_exit(pid, &format!("a process of {}", self.name));
            }
        }
    }
}

/// Purges the test package on drop (a failed round leaves nothing).
struct PkgGuard;

impl Drop for PkgGuard {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", PKG])
            .env("PATH", PATH)
            .output();
    }
}

/// Stops an nginx master (not our child: it daemonized) on drop.
struct NginxGuard {
    pid_file: PathBuf,
}

impl Drop for NginxGuard {
    fn drop(&mut self) {
        if let Some(pid) = fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

/// An sshd in the foreground (-D) on a free 127.0.0.1 port, with the
/// host's keys and PAM, as Debian's configuration runs it; its log (-e)
/// goes to a file. Killed on drop.
struct Sshd {
    child: KillOnDrop,
    port: u16,
    log: PathBuf,
}

impl Sshd {
    fn start(dir: &Path) -> Sshd {
        // The privilege separation directory (systemd's unit makes it).
        mkdir(Path::new("/run/sshd"), 0o755);
        let port = free_port();
        let conf = dir.join("sshd_config");
        let pid_file = dir.join("sshd.pid");
        let keys: String = HOST_KEYS
            .iter()
            .filter(|k| Path::new(k).exists())
            .map(|k| format!("HostKey {k}\n"))
            .collect();
        fs::write(
            &conf,
            format!(
                "ListenAddress 127.0.0.1\n{keys}PidFile {}\nUsePAM yes\n\
                 PubkeyAuthentication yes\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nAuthorizedKeysFile .ssh/authorized_keys\n\
                 PrintMotd no\nAcceptEnv LANG LC_*\n\
                 Subsystem sftp /usr/lib/openssh/sftp-server\n",
                pid_file.display()
            ),
        )
        .unwrap();
        let log = dir.join("sshd.log");
        let mut c = cmd("sshd");
        c.arg("-D")
            .arg("-e")
            .args(["-p", &port.to_string(), "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap());
        let mut child = KillOnDrop(c.spawn().expect("start sshd"), "sshd");
        // sshd writes its pid file once it listens.
        wait_until(dir, "sshd listening (its pid file)", || {
            if let Ok(Some(st)) = child.0.try_wait() {
                panic!(
                    "sshd exited ({st}): {}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            fs::read_to_string(&pid_file).is_ok_and(|s| s.trim().parse::<u32>().is_ok())
        });
        Sshd { child, port, log }
    }

    fn stop(self) {
        // sshd exits 255 on SIGTERM ("Received signal 15; terminating.").
        let _ = self.child.stop();
    }
}

/// What the day needs from the host, or why the test cannot run here.
struct Host {
    multiarch: String,
    arch: String,
}

impl Host {
    /// None (after printing `SKIPPED: <why>`) when a program is missing;
    /// makes what Debian's postinst scripts make when it is missing (the
    /// snakeoil key, the host keys), before the sensor starts.
    fn check() -> Option<Host> {
        require_root();
        let missing: Vec<&str> = TOOLS
            .iter()
            .copied()
            .filter(|t| tool(t).is_none())
            .collect();
        if !missing.is_empty() {
            println!(
                "SKIPPED: the ordinary admin day needs programs this system lacks: {}",
                missing.join(", ")
            );
            return None;
        }
        if !Path::new("/home").is_dir() {
            println!("SKIPPED: no /home for the test user's home directory");
            return None;
        }
        if !Path::new(SNAKEOIL_KEY).exists() || !Path::new(SNAKEOIL_CERT).exists() {
            run(
                "make-ssl-cert",
                cmd("make-ssl-cert").arg("generate-default-snakeoil"),
            );
        }
        if !HOST_KEYS.iter().any(|k| Path::new(k).exists()) {
            run("ssh-keygen -A (host keys)", cmd("ssh-keygen").arg("-A"));
        }
        let multiarch = run("gcc -print-multiarch", cmd("gcc").arg("-print-multiarch"))
            .trim()
            .to_string();
        let arch = run(
            "dpkg --print-architecture",
            cmd("dpkg").arg("--print-architecture"),
        )
        .trim()
        .to_string();
        Some(Host { multiarch, arch })
    }
}

/// One round of the day: its directory and its test user.
struct Round {
    n: usize,
    dir: PathBuf,
    user: Option<TestUser>,
}

struct Day<'a> {
    host: &'a Host,
    dir: PathBuf,
    sshd_port: u16,
    sshd_log: PathBuf,
    /// (round, step, time) for the report.
    times: Vec<(usize, &'static str, Duration)>,
}

type Step = fn(&Day, &mut Round);

/// The day's steps, in order; an attack test runs its attack after
/// `MIDDLE` steps.
const STEPS: &[(&str, Step)] = &[
    ("accounts and PAM logins", accounts_and_logins),
    ("user key and ssh login", ssh_login),
    ("nginx TLS and reload", nginx_tls),
    ("apt-get reinstall, ldconfig", apt_package),
    ("new keys", new_keys),
    ("tar, rsync, logrotate", ordinary_files),
    ("ps, top, pgrep", process_tools),
    ("gdb, gcore, strace", debuggers),
    ("compiler", compiler),
    ("userdel", delete_user),
];
const MIDDLE: usize = 4;

impl<'a> Day<'a> {
    fn new(host: &'a Host, dir: &Path, sshd: &Sshd) -> Self {
        mkdir(dir, 0o755);
        Day {
            host,
            dir: dir.to_path_buf(),
            sshd_port: sshd.port,
            sshd_log: sshd.log.clone(),
            times: Vec::new(),
        }
    }

    /// Round `n` of the day; `middle` runs after the first `MIDDLE` steps.
    fn round(&mut self, n: usize, middle: &mut dyn FnMut()) {
        let dir = self.dir.join(format!("round-{n}"));
        mkdir(&dir, 0o755);
        let mut r = Round { n, dir, user: None };
        for (i, (name, step)) in STEPS.iter().enumerate() {
            if i == MIDDLE {
                middle();
            }
            let t = Instant::now();
            step(self, &mut r);
            let took = t.elapsed();
            eprintln!("[live_host] round {n}: {name}: {:.1}s", took.as_secs_f64());
            self.times.push((n, name, took));
        }
    }

    fn report_times(&self) -> String {
        let mut by_step: BTreeMap<&str, Duration> = BTreeMap::new();
        for (_, name, d) in &self.times {
            *by_step.entry(name).or_default() += *d;
        }
        by_step
            .iter()
            .map(|(n, d)| format!("  {n}: {:.1}s\n", d.as_secs_f64()))
            .collect()
    }
}

fn user(r: &Round) -> &TestUser {
    r.user.as_ref().expect("the round's user")
}

/// useradd -m, chpasswd, then PAM logins as root: su and sudo to the user.
fn accounts_and_logins(_: &Day, r: &mut Round) {
    let name = format!("kslive{}r{}", std::process::id(), r.n);
    // The guard exists before useradd: a failed step still deletes it.
    r.user = Some(TestUser {
        name: name.clone(),
        uid: 0,
        gid: 0,
        home: PathBuf::new(),
        deleted: false,
    });
    run(
        "useradd",
        cmd("useradd").args([
            "-m",
            "-s",
            "/bin/sh",
            "-c",
            "keysentry live-host test",
            &name,
        ]),
    );
    let pw = nix::unistd::User::from_name(&name)
        .unwrap()
        .unwrap_or_else(|| panic!("{name} not in the user database after useradd"));
    let u = r.user.as_mut().unwrap();
    u.uid = pw.uid.as_raw();
    u.gid = pw.gid.as_raw();
    u.home = pw.dir;
    let secret = format!("{name}:Tst-{}-{:x}\n", std::process::id(), rand_u64());
    exec(
        "chpasswd",
        &mut cmd("chpasswd"),
        Some(secret.as_bytes()),
        None,
    );
    run("su", cmd("su").args(["-s", "/bin/sh", "-c", "true", &name]));
    run("sudo", cmd("sudo").args(["-u", &name, "true"]));
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    u64::from_ne_bytes(b)
}

/// As the user: ssh-keygen in ~/.ssh, the public key appended to
/// ~/.ssh/authorized_keys, then an ssh key login to the test's sshd.
fn ssh_login(day: &Day, r: &mut Round) {
    let u = user(r);
    let ssh_dir = u.home.join(".ssh");
    run(
        "mkdir ~/.ssh",
        u.run_as(&mut cmd("sh")).args(["-c", "mkdir -m 700 ~/.ssh"]),
    );
    let key = ssh_dir.join("id_ed25519");
    run(
        "ssh-keygen (user)",
        u.run_as(&mut cmd("ssh-keygen"))
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(format!("{}@live-host", u.name))
            .arg("-f")
            .arg(&key),
    );
    run(
        "authorized_keys",
        u.run_as(&mut cmd("sh")).args([
            "-c",
            "cat ~/.ssh/id_ed25519.pub >> ~/.ssh/authorized_keys && chmod 600 ~/.ssh/authorized_keys",
        ]),
    );
    let mut ssh = cmd("ssh");
    u.run_as(&mut ssh)
        .arg("-i")
        .arg(&key)
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
            "-p",
            &day.sshd_port.to_string(),
        ])
        .arg(format!("{}@127.0.0.1", u.name))
        .arg("echo logged-in; id -un");
    let (st, out, err) = exec_status("ssh login", &mut ssh, None, None);
    assert!(
        st.success(),
        "ssh login failed ({st}): {err}{out}\nsshd log:\n{}",
        fs::read_to_string(&day.sshd_log).unwrap_or_default()
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["logged-in", u.name.as_str()],
        "ssh login output"
    );
}

/// nginx (daemon, master as root) loads the snakeoil key, serves HTTPS,
/// reloads (loads the key again), serves again and stops gracefully.
fn nginx_tls(_: &Day, r: &mut Round) {
    let dir = r.dir.join("nginx");
    mkdir(&dir, 0o755);
    let port = free_port();
    let d = dir.display();
    let conf = dir.join("nginx.conf");
    fs::write(
        &conf,
        format!(
            "user www-data;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log notice;\nevents {{ worker_connections 64; }}\n\
             http {{\n  access_log {d}/access.log;\n\
             client_body_temp_path {d}/client_body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n\
             server {{\n    listen 127.0.0.1:{port} ssl;\n\
             ssl_certificate {SNAKEOIL_CERT};\n    ssl_certificate_key {SNAKEOIL_KEY};\n\
             location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
        ),
    )
    .unwrap();
    let nginx = |extra: &[&str]| {
        let mut c = cmd("nginx");
        c.arg("-p")
            .arg(format!("{d}/"))
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .args(extra);
        c
    };
    let pid_file = dir.join("nginx.pid");
    let _guard = NginxGuard {
        pid_file: pid_file.clone(),
    };
    // The daemonizing parent exits once the master's socket listens; its
    // output goes to a file (the master keeps no pipe of ours open).
    exec(
        "nginx start",
        &mut nginx(&[]),
        None,
        Some(&dir.join("start.out")),
    );
    let url = format!("https://127.0.0.1:{port}/");
    let get = |what| {
        let body = run(what, cmd("curl").args(["-ksS", "--max-time", "30", &url]));
        assert_eq!(body, "ok\n", "{what}");
    };
    get("curl (first)");
    let log = dir.join("error.log");
    let reloads = || {
        let text = fs::read_to_string(&log).unwrap_or_default();
        // The master logs "reconfiguring", loads the config and key again,
        // then starts the new workers.
        text.rfind("reconfiguring")
            .is_some_and(|at| text[at..].contains("start worker process"))
    };
    assert!(!reloads());
    run("nginx -s reload", &mut nginx(&["-s", "reload"]));
    wait_until(&dir, "nginx reloaded (its error log)", reloads);
    get("curl (after reload)");
    let master: u32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let fd = pidfd(master).expect("nginx master pidfd");
    run("nginx -s quit", &mut nginx(&["-s", "quit"]));
    assert!(
        readable(fd.as_raw_fd(), command_limit()),
        "nginx master did not exit"
    );
}

/// A local package with a shared library and an ldconfig trigger:
/// built with gcc and dpkg-deb, installed with apt-get (dpkg, its trigger,
/// ldconfig rewriting /etc/ld.so.cache), then purged.
fn apt_package(day: &Day, r: &mut Round) {
    let h = day.host;
    let dir = r.dir.join("pkg");
    let root = dir.join("root");
    let libdir = root.join("usr/lib").join(&h.multiarch);
    mkdir(&root.join("DEBIAN"), 0o755);
    mkdir(&libdir, 0o755);
    // A conffile in the loader's search path (a code-loading path that
    // dpkg, allowed code_change, writes).
    let confdir = root.join("etc/ld.so.conf.d");
    fs::create_dir_all(&confdir).unwrap();
    fs::write(
        confdir.join(format!("{PKG}.conf")),
        "# keysentry live-host test: nothing to add
",
    )
    .unwrap();
    let src = dir.join("lib.c");
    fs::write(&src, "int ks_live_host(void) { return 42; }\n").unwrap();
    run(
        "gcc -shared",
        cmd("gcc")
            .args(["-shared", "-fPIC", "-O2"])
            .arg(format!("-Wl,-soname,{LIB}"))
            .arg("-o")
            .arg(libdir.join(LIB))
            .arg(&src),
    );
    fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {PKG}\nVersion: 1.0-{}\nArchitecture: {}\n\
             Maintainer: keysentry tests <root@localhost>\nSection: libs\nPriority: optional\n\
             Description: keysentry live-host test library\n a shared library with an ldconfig trigger\n",
            r.n, h.arch
        ),
    )
    .unwrap();
    fs::write(root.join("DEBIAN/triggers"), "activate-noawait ldconfig\n").unwrap();
    let deb = dir.join(format!("{PKG}.deb"));
    run(
        "dpkg-deb --build",
        cmd("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&root)
            .arg(&deb),
    );
    fs::set_permissions(&deb, fs::Permissions::from_mode(0o644)).unwrap();
    let _guard = PkgGuard;
    let apt = |args: &[&str], pkg: &std::ffi::OsStr| {
        let mut c = cmd("apt-get");
        c.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-y", "-o", "DPkg::Lock::Timeout=120"])
            .args(args)
            .arg(pkg);
        c
    };
    let cache_before = ino(Path::new(LD_CACHE));
    let out = run(
        "apt-get install --reinstall",
        &mut apt(&["install", "--reinstall"], deb.as_os_str()),
    );
    assert!(
        out.contains("Processing triggers for libc-bin"),
        "apt-get ran no ldconfig trigger:\n{out}"
    );
    let cache_after = ino(Path::new(LD_CACHE));
    assert_ne!(
        cache_before, cache_after,
        "ldconfig did not replace {LD_CACHE} (ld.so.cache~ + rename)"
    );
    let listed = run("ldconfig -p", cmd("ldconfig").arg("-p"));
    assert!(listed.contains(LIB), "{LIB} not in the ld.so cache");
    let out = run("apt-get purge", &mut apt(&["purge"], PKG.as_ref()));
    assert!(
        out.contains("Processing triggers for libc-bin"),
        "apt-get purge ran no ldconfig trigger:\n{out}"
    );
    let installed = Path::new("/usr/lib").join(&h.multiarch).join(LIB);
    assert!(
        !installed.exists(),
        "{} left after the purge",
        installed.display()
    );
    assert_ne!(
        ino(Path::new(LD_CACHE)),
        cache_after,
        "no ldconfig at purge"
    );
}

/// New keys as root: ssh-keygen, openssl genpkey and a self-signed
/// certificate from that key.
fn new_keys(_: &Day, r: &mut Round) {
    let dir = r.dir.join("keys");
    mkdir(&dir, 0o700);
    run(
        "ssh-keygen (root)",
        cmd("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "root@live-host",
                "-f",
            ])
            .arg(dir.join("id_ed25519")),
    );
    let key = dir.join("new.key");
    run(
        "openssl genpkey",
        cmd("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&key),
    );
    let crt = dir.join("new.crt");
    run(
        "openssl req -x509",
        cmd("openssl")
            .args(["req", "-new", "-x509", "-key"])
            .arg(&key)
            .args(["-subj", "/CN=test", "-out"])
            .arg(&crt),
    );
    assert!(
        fs::read_to_string(&crt)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
}

/// A tree of ordinary files archived with tar, copied with rsync; a log
/// rotated (and compressed) by logrotate with its own state file.
fn ordinary_files(_: &Day, r: &mut Round) {
    let tree = r.dir.join("tree");
    mkdir(&tree.join("sub"), 0o755);
    fs::write(tree.join("notes.txt"), "ordinary notes\n".repeat(200)).unwrap();
    fs::write(tree.join("sub/data.csv"), "a,b,c\n1,2,3\n".repeat(500)).unwrap();
    fs::write(tree.join("sub/app.conf"), "listen = 8080\n").unwrap();
    let tgz = r.dir.join("tree.tgz");
    run(
        "tar czf",
        cmd("tar")
            .arg("czf")
            .arg(&tgz)
            .arg("-C")
            .arg(&r.dir)
            .arg("tree"),
    );
    let list = run("tar tzf", cmd("tar").arg("tzf").arg(&tgz));
    assert!(list.contains("tree/sub/data.csv"), "{list}");
    let copy = r.dir.join("tree-copy");
    run(
        "rsync -a",
        cmd("rsync")
            .arg("-a")
            .arg(format!("{}/", tree.display()))
            .arg(format!("{}/", copy.display())),
    );
    assert!(copy.join("sub/data.csv").exists());

    let logs = r.dir.join("log");
    mkdir(&logs, 0o755);
    let log = logs.join("app.log");
    fs::write(&log, "GET / 200\n".repeat(1000)).unwrap();
    let conf = r.dir.join("logrotate.conf");
    fs::write(
        &conf,
        format!(
            "{} {{\n  rotate 2\n  compress\n  missingok\n  create 0640 root adm\n}}\n",
            log.display()
        ),
    )
    .unwrap();
    run(
        "logrotate -f",
        cmd("logrotate")
            .arg("-f")
            .arg("-s")
            .arg(r.dir.join("logrotate.state"))
            .arg(&conf),
    );
    assert!(
        logs.join("app.log.1.gz").exists(),
        "logrotate compressed nothing"
    );
}

/// ps aux into a file, top once in batch mode, pgrep of the sensor.
fn process_tools(_: &Day, r: &mut Round) {
    let ps = r.dir.join("ps.txt");
    exec("ps aux > FILE", cmd("ps").arg("aux"), None, Some(&ps));
    assert!(fs::read_to_string(&ps).unwrap().contains("keysentry"));
    let top = run("top -b -n 1", cmd("top").args(["-b", "-n", "1"]));
    assert!(top.contains("PID"), "{top}");
    let pg = run("pgrep -a keysentry", cmd("pgrep").args(["-a", "keysentry"]));
    assert!(pg.contains("keysentry run"), "{pg}");
}

/// gdb, gcore, strace -f and strace -p of a program the tester started.
fn debuggers(_: &Day, r: &mut Round) {
    let sleeper = KillOnDrop(
        cmd("sleep")
            .arg("300")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
        "sleep",
    );
    let pid = sleeper.0.id().to_string();
    let regs = run(
        "gdb -p -batch",
        cmd("gdb").args(["-p", &pid, "-batch", "-ex", "info registers"]),
    );
    assert!(regs.contains("rip"), "gdb printed no registers: {regs}");
    let prefix = r.dir.join("core");
    run("gcore", cmd("gcore").arg("-o").arg(&prefix).arg(&pid));
    assert!(
        r.dir.join(format!("core.{pid}")).exists(),
        "gcore wrote no core"
    );
    let trace = r.dir.join("strace.txt");
    run(
        "strace -f true",
        cmd("strace").arg("-f").arg("-o").arg(&trace).arg("true"),
    );
    assert!(fs::read_to_string(&trace).unwrap().contains("execve("));
    // strace -p: attached once it says so on stderr, then stopped with
    // SIGTERM: it detaches, says so, and dies of the signal it got.
    let mut c = cmd("strace");
    c.arg("-p")
        .arg(&pid)
        .arg("-o")
        .arg(r.dir.join("strace-p.txt"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut st = KillOnDrop(c.spawn().unwrap(), "strace -p");
    let mut err = BufReader::new(st.0.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("attached"), "strace -p: {line}");
    let status = st.stop();
    let mut rest = String::new();
    let _ = err.read_to_string(&mut rest);
    use std::os::unix::process::ExitStatusExt;
    assert!(
        (status.success() || status.signal() == Some(libc::SIGTERM))
            && rest.contains(&format!("Process {pid} detached")),
        "strace -p after SIGTERM: {status}: {line}{rest}"
    );
    assert!(r.dir.join("strace-p.txt").exists());
    drop(sleeper);
}

/// gcc of a small C program, and its run.
fn compiler(_: &Day, r: &mut Round) {
    let src = r.dir.join("hello.c");
    fs::write(
        &src,
        "#include <stdio.h>\nint main(void) { printf(\"hello %d\\n\", 6 * 7); return 0; }\n",
    )
    .unwrap();
    let bin = r.dir.join("hello");
    run(
        "gcc",
        cmd("gcc").args(["-O2", "-Wall", "-o"]).arg(&bin).arg(&src),
    );
    let out = run("hello", &mut Command::new(&bin));
    assert_eq!(out, "hello 42\n");
}

/// userdel -r of the round's user (once its sessions have ended).
fn delete_user(_: &Day, r: &mut Round) {
    let u = r.user.as_mut().unwrap();
    u.wait_no_processes();
    run("userdel -r", cmd("userdel").args(["-r", &u.name]));
    u.deleted = true;
    assert!(nix::unistd::User::from_name(&u.name).unwrap().is_none());
}

// ---------------------------------------------------------------------------
// Reporting

const SEVERITIES: [&str; 5] = ["info", "low", "medium", "high", "critical"];

/// Medium or above (an unknown severity counts as above).
fn loud(a: &Value) -> bool {
    let s = a["severity"].as_str().unwrap_or("");
    !matches!(s, "info" | "low")
}

fn sev_rank(s: &str) -> usize {
    SEVERITIES.iter().position(|x| *x == s).unwrap_or(9)
}

/// One line per alert: rule, severity, the actor, the target, the message.
fn line(a: &Value) -> String {
    let p = &a["process"];
    let t = &a["target"];
    let target = t["path"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("pid {} {} {}", t["pid"], t["comm"], t["exe"]));
    format!(
        "{} {} x{} | {} ({}, pid {}) -> {} | {}",
        a["rule"].as_str().unwrap_or("?"),
        a["severity"].as_str().unwrap_or("?"),
        a["count"].as_u64().unwrap_or(1),
        p["comm"].as_str().unwrap_or("?"),
        p["exe"].as_str().unwrap_or("?"),
        p["pid"],
        target,
        a["message"].as_str().unwrap_or("")
    )
}

/// Alerts by (rule, severity): alerts, events (folded repeats counted),
/// one example message each; loudest first.
fn summary(alerts: &[Value]) -> String {
    let mut groups: BTreeMap<(usize, String, String), (usize, u64, String)> = BTreeMap::new();
    for a in alerts {
        let sev = a["severity"].as_str().unwrap_or("?").to_string();
        let g = groups
            .entry((
                9 - sev_rank(&sev).min(9),
                a["rule"].as_str().unwrap_or("?").to_string(),
                sev,
            ))
            .or_insert_with(|| (0, 0, line(a)));
        g.0 += 1;
        g.1 += a["count"].as_u64().unwrap_or(1);
    }
    let mut out = format!("{} alerts\n", alerts.len());
    for ((_, rule, sev), (n, events, example)) in &groups {
        out.push_str(&format!(
            "  {rule:<20} {sev:<8} {n:>6} alerts {events:>6} events  e.g. {example}\n"
        ));
    }
    out
}

/// The metrics that show the blast radius (taint, tracked files, flow,
/// alerts, losses), not the per-probe ones.
fn blast_metrics(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            [
                "taint",
                "track",
                "flow",
                "alerts",
                "incident",
                "lost",
                "dropped",
                "process_table",
                "watched",
                "map",
                "suppressed",
                "scans",
                "core_dumps",
                "malformed",
            ]
            .iter()
            .any(|k| l.contains(k))
        })
        .map(|l| format!("  {l}\n"))
        .collect()
}

fn incidents_summary(incidents: &[Value]) -> String {
    // The last record of each incident.
    let mut last: BTreeMap<String, &Value> = BTreeMap::new();
    for i in incidents {
        last.insert(i["id"].as_str().unwrap_or("?").to_string(), i);
    }
    let mut by_sev: BTreeMap<String, usize> = BTreeMap::new();
    for i in last.values() {
        *by_sev
            .entry(i["severity"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    format!("{} incidents, by severity {by_sev:?}", last.len())
}

/// With `$KEYSENTRY_LIVE_HOST_DIR` set, writes every alert and incident
/// record of the run there as JSON lines (`NAME.alerts.jsonl`,
/// `NAME.incidents.jsonl`), for a closer look than the printed summary.
fn keep(name: &str, alerts: &[Value], incidents: &[Value]) {
    let Some(dir) = std::env::var_os("KEYSENTRY_LIVE_HOST_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    fs::create_dir_all(&dir).unwrap();
    for (kind, v) in [("alerts", alerts), ("incidents", incidents)] {
        let p = dir.join(format!("{name}.{kind}.jsonl"));
        fs::write(&p, v.iter().map(|a| format!("{a}\n")).collect::<String>()).unwrap();
        println!("wrote {}", p.display());
    }
}

/// The alerts of the harness's own barrier (the marker file) left out.
fn without_marker(alerts: Vec<Value>, marker: &Path) -> Vec<Value> {
    let m = ino(marker);
    alerts
        .into_iter()
        .filter(|a| a["target"]["inode"] != m)
        .collect()
}

/// The default config plus the test's key directory: its marker file is
/// the barrier of `alerts_until_marker`. This is the only change to the
/// default (the attack test adds its victim, below).
fn marker_key_path(l: &lab::Lab) -> String {
    format!(
        "# live_host.rs: the test's key directory (the barrier's marker file).\n\
         [[key_path]]\npath = \"{}\"\n",
        l.root.join("keys").display()
    )
}

#[test]
fn live_host_an_ordinary_admin_day_three_times_raises_nothing_above_low() {
    let Some(host) = Host::check() else { return };
    let started = Instant::now();
    let l = lab::lab();
    let mut s = Sensor::start_default(&l.root, &marker_key_path(&l));
    let sensor_up = started.elapsed();
    let mut sshd = Some(Sshd::start(&l.root));
    let mut day = Day::new(&host, &l.root.join("day"), sshd.as_ref().unwrap());
    let mut alerts = Vec::new();
    let mut per_round = String::new();
    for n in 1..=3 {
        day.round(n, &mut || {});
        if n == 3 {
            // sshd's end (the signal, its exit) before the last barrier.
            sshd.take().unwrap().stop();
        }
        let got = without_marker(s.alerts_until_marker(&l.marker), &l.marker);
        per_round.push_str(&format!("round {n}: {}", summary(&got)));
        alerts.extend(got);
    }
    let metrics = blast_metrics(&s.metrics());
    let (rest, incidents) = s.stop_and_drain();
    alerts.extend(rest);
    let alerts = without_marker(alerts, &l.marker);
    keep("benign", &alerts, &incidents);
    let quiet: Vec<String> = alerts.iter().filter(|a| !loud(a)).map(line).collect();
    let loud_lines: Vec<String> = alerts.iter().filter(|a| loud(a)).map(line).collect();
    println!(
        "live_host: sensor up in {:.1}s, day x3 and stop in {:.1}s total\nstep times (3 rounds):\n{}",
        sensor_up.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        day.report_times()
    );
    println!("per round (alerts seen by each round's barrier):\n{per_round}");
    println!("metrics at the end:\n{metrics}");
    println!("all alerts: {}", summary(&alerts));
    println!("{}", incidents_summary(&incidents));
    println!("low/info alerts ({}):", quiet.len());
    for q in &quiet {
        println!("  {q}");
    }
    assert!(
        loud_lines.is_empty(),
        "{} alerts of severity medium or above on a benign day:\n{}\n{}",
        loud_lines.len(),
        summary(&alerts),
        loud_lines.join("\n")
    );
}

#[test]
fn live_host_one_attack_in_an_ordinary_day_is_its_incident_and_nothing_else() {
    let Some(host) = Host::check() else { return };
    let started = Instant::now();
    let l = lab::lab();
    let (pem, fingerprint) = fresh_key();
    let key = l.root.join("keys/signing.pem");
    fs::write(&key, &pem).unwrap();
    // The default config, the marker's key directory, the victim (the
    // lab's protected signing service) and its allowance for its key.
    let extra = format!(
        "{}\n[[protected]]\nexe = \"{}\"\n\n[[allow]]\nexe = \"{}\"\nkey_path = \"{}\"\n",
        marker_key_path(&l),
        l.victim_bin.display(),
        l.victim_bin.display(),
        l.root.join("keys").display(),
    );
    let mut s = Sensor::start_default(&l.root, &extra);
    let sshd = Sshd::start(&l.root);
    let mut day = Day::new(&host, &l.root.join("day"), &sshd);

    // The attack of incident.rs: the signing service holds its key; a
    // dumper reads its memory through /proc/PID/mem into a file, cp copies
    // the dump, a sender sends the copy to 127.0.0.1.
    let dump = l.root.join("dump.bin");
    let stolen = l.root.join("stolen.bin");
    let mut pids = None;
    let mut seen = Vec::new();
    let mut attack = || {
        let (mut victim, vp) = spawn_args(&l.victim_bin, &["victim-key", key.to_str().unwrap()]);
        let (dumper, st) = actor(
            &["ptrace-dump", &vp.to_string(), dump.to_str().unwrap()],
            None,
            None,
        );
        assert!(st.success(), "ptrace-dump");
        let mut cp = Command::new("cp").arg(&dump).arg(&stolen).spawn().unwrap();
        let cp_pid = cp.id();
        assert!(cp.wait().unwrap().success());
        let port = listener();
        let (sender, st) = actor(
            &["send-file", stolen.to_str().unwrap(), &port.to_string()],
            None,
            None,
        );
        assert!(st.success(), "send-file");
        // The scanner reports on its own thread: wait for both of its
        // alerts and for the send.
        let done = |a: &[Value]| {
            let km: Vec<&str> = a
                .iter()
                .filter(|a| a["rule"] == "key-material")
                .filter_map(|a| a["target"]["path"].as_str())
                .collect();
            km.contains(&dump.to_str().unwrap())
                && km.contains(&stolen.to_str().unwrap())
                && a.iter()
                    .any(|a| a["rule"] == "exfiltration" && a["process"]["pid"] == sender)
        };
        while !done(&seen) {
            seen.extend(
                s.alerts_until(|a| a["rule"] == "key-material" || a["rule"] == "exfiltration"),
            );
        }
        drop(victim.stdin.take());
        let _ = victim.wait();
        pids = Some((vp, dumper, cp_pid, sender, port));
    };
    // Three rounds, the attack in the middle of the second.
    for n in 1..=3 {
        if n == 2 {
            day.round(n, &mut attack);
        } else {
            day.round(n, &mut || {});
        }
    }
    let (vp, dumper, cp_pid, sender, port) = pids.expect("the attack ran");
    sshd.stop();
    let mut alerts = seen;
    alerts.extend(s.alerts_until_marker(&l.marker));
    let metrics = blast_metrics(&s.metrics());
    let (rest, incidents) = s.stop_and_drain();
    alerts.extend(rest);
    let alerts = without_marker(alerts, &l.marker);
    keep("attack", &alerts, &incidents);
    println!(
        "live_host attack: day x3 with the attack in {:.1}s\nmetrics at the end:\n{metrics}",
        started.elapsed().as_secs_f64()
    );
    println!("all alerts: {}", summary(&alerts));
    println!("{}", incidents_summary(&incidents));

    // The attack's steps, as incident.rs asserts them: one incident.
    let step = |rule: &str, pid: u32| -> &Value {
        let v = by_pid(&alerts, rule, pid);
        assert!(
            !v.is_empty(),
            "no {rule} by {pid}:\n{}",
            alerts.iter().map(line).collect::<Vec<_>>().join("\n")
        );
        v[0]
    };
    let attach = step("ptrace-attach", dumper);
    let id = attach["incident"].as_str().unwrap().to_string();
    let chain = [
        attach,
        step("proc-mem-open", dumper),
        step("userspace-dump", dumper),
        step("tracked-copy", cp_pid),
        step("exfiltration", sender),
    ];
    for a in chain {
        assert_eq!(a["incident"], id.as_str(), "{a:#}");
    }
    assert_eq!(chain[2]["target"]["path"], dump.to_str().unwrap());
    assert_eq!(chain[3]["target"]["path"], stolen.to_str().unwrap());
    assert_eq!(
        chain[4]["flow"]["remote"],
        format!("127.0.0.1:{port}").as_str()
    );
    let km: Vec<&Value> = alerts
        .iter()
        .filter(|a| {
            a["rule"] == "key-material"
                && [dump.to_str().unwrap(), stolen.to_str().unwrap()]
                    .contains(&a["target"]["path"].as_str().unwrap_or(""))
        })
        .collect();
    assert_eq!(km.len(), 2, "{km:#?}");
    for a in &km {
        assert_eq!(a["incident"], id.as_str(), "{a:#}");
        assert_eq!(a["severity"], "critical");
        let fps: Vec<&str> = a["flow"]["keys"]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["kind"] == "ed25519")
            .filter_map(|f| f["fingerprint"].as_str())
            .collect();
        assert!(fps.contains(&fingerprint.as_str()), "{a:#}");
    }
    // Nothing else: every alert of medium or above is one of the attack's
    // (by its processes, the victim, or its files; the scanner's alerts
    // have no process), and no other alert joined its incident (with the
    // whole day in the attack's incident, "in the incident" alone would
    // prove nothing).
    let attack_pids = [vp, dumper, cp_pid, sender];
    let attack_files = [&dump, &stolen, &key].map(|p| p.to_str().unwrap().to_string());
    let is_attack = |a: &Value| {
        a["process"]["pid"]
            .as_u64()
            .is_some_and(|p| attack_pids.contains(&(p as u32)))
            || a["target"]["pid"] == vp
            || a["target"]["path"]
                .as_str()
                .is_some_and(|p| attack_files.iter().any(|f| f == p))
    };
    let loud_others: Vec<String> = alerts
        .iter()
        .filter(|a| loud(a) && !is_attack(a))
        .map(line)
        .collect();
    let joined: Vec<String> = alerts
        .iter()
        .filter(|a| a["incident"] == id.as_str() && !is_attack(a))
        .map(line)
        .collect();
    assert!(
        loud_others.is_empty() && joined.is_empty(),
        "the attack's incident {id} and something else: {} alerts of medium or above \
         not the attack's, {} alerts of the day in its incident\n{}\nmedium or above, \
         not the attack's:\n{}\nin the attack's incident, not the attack's:\n{}",
        loud_others.len(),
        joined.len(),
        summary(&alerts),
        loud_others.join("\n"),
        joined.join("\n")
    );

    let last = incidents
        .iter()
        .rfind(|i| i["id"] == id.as_str())
        .expect("the attack's incident record");
    assert_eq!(last["status"], "closed", "{last:#}");
    assert_eq!(last["severity"], "critical", "{last:#}");
    let steps: Vec<&str> = last["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str().or_else(|| s["rule"].as_str()))
        .collect();
    let stages: Vec<&str> = last["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    for st in ["access", "dump", "copy", "send", "key"] {
        assert!(stages.contains(&st), "stage {st} missing: {last:#}");
    }
    for r in [
        "ptrace-attach",
        "proc-mem-open",
        "userspace-dump",
        "tracked-copy",
        "exfiltration",
        "key-material",
    ] {
        assert!(steps.contains(&r), "{r} missing: {steps:?}");
    }
}
