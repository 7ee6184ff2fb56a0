//! keysentry as the kernel's core_pattern pipe helper (docs/dumps.md).
//!
//! `install-core-handler` points core_pattern at `keysentry core-handler`
//! and keeps the pattern it replaced (`pattern::State`). For each crash
//! the kernel starts the handler with the crash's specifier values and
//! the core on stdin. The handler asks the kernel's PROTECTED map (pinned
//! by `keysentry run`, `pin`) whether the process was protected or a key
//! holder, else the config's `[[protected]]` programs and the key files it
//! has open. Any other core goes on exactly as before: to the previous
//! pipe helper (exec'd with the same stdin) or to the previous file. A
//! protected process's core is redacted, quarantined or dropped
//! (`[dumps] key_holder_policy`, `store`, `secrets`), and a spool record
//! tells `keysentry run` what was done (`detect::dumps` adds it to the
//! `core-dump` alert). It fails closed for a key holder (nothing kept) and
//! open for everyone else.

mod quarantine;

use std::{
    ffi::CString,
    fs::File,
    io::{Read, Write},
    os::unix::{ffi::OsStrExt, fs::MetadataExt, process::CommandExt},
    path::{Path, PathBuf},
    sync::OnceLock,
    time::{Duration, Instant},
};

use aho_corasick::{AhoCorasick, MatchKind};
use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{
    config::{Config, DEFAULT_STATE_DIR, KeyHolderPolicy},
    enrich::{
        corepattern::{self as pattern, Destination, State, Values, read_pattern},
        rootfiles as store,
        scan::{Finding, ScanLimits, scan_reader, secrets},
    },
    kernel::pin,
};

/// Redaction passes over a stored core before it is given up as unclean.
const MAX_PASSES: usize = 4;
/// Key files whose secrets are loaded, at most, and their size.
const MAX_KEY_FILES: usize = 128;
const MAX_KEY_BYTES: u64 = 1 << 20;

/// Writes a line to the kernel log (the handler has no terminal; systemd
/// and the kernel's own core messages go there too).
fn kmsg(msg: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = writeln!(f, "<4>keysentry core-handler: {msg}");
    }
}

/// The partial core being written, removed if the hard deadline hits.
static PARTIAL: OnceLock<CString> = OnceLock::new();

extern "C" fn on_alarm(_: libc::c_int) {
    if let Some(p) = PARTIAL.get() {
        // SAFETY: unlink and _exit are async-signal-safe.
        unsafe { libc::unlink(p.as_ptr()) };
    }
    // SAFETY: as above.
    unsafe { libc::_exit(3) };
}

/// A hard stop `secs` from now: whatever is stuck, the process ends and
/// a partial core of a key holder is removed.
fn arm_deadline(secs: u32) {
    // SAFETY: installing a handler that only calls async-signal-safe
    // functions; alarm has no preconditions.
    unsafe {
        libc::signal(libc::SIGALRM, on_alarm as *const () as libc::sighandler_t);
        libc::alarm(secs);
    }
}

/// `keysentry core-handler [--state DIR] VALUES...`: returns the exit
/// status (the kernel ignores it; it is for tests and the kernel log).
pub fn main(args: &[String]) -> i32 {
    let (state_dir, values) = match args {
        [flag, dir, rest @ ..] if flag == "--state" => (PathBuf::from(dir), rest),
        rest => (PathBuf::from(DEFAULT_STATE_DIR), rest),
    };
    match handle(&state_dir, values) {
        Ok(()) => 0,
        Err(e) => {
            kmsg(&format!("{e:#}"));
            1
        }
    }
}

fn handle(state_dir: &Path, args: &[String]) -> Result<()> {
    // Without its state the handler knows neither the previous pattern nor
    // the crash's fields: nothing is kept, the kernel's write fails.
    let st = State::load(state_dir)?;
    let v = Values::new(&st.specs, args)?;
    let cfg = match &st.config {
        Some(p) => Config::load_trusted(p).unwrap_or_else(|e| {
            kmsg(&format!("{}: {e}; the default config decides", p.display()));
            Config::default_config()
        }),
        None => Config::default_config(),
    };
    let secs = cfg.dumps.handler_timeout_secs;
    arm_deadline(secs + 10);
    let deadline = Instant::now() + Duration::from_secs(secs as u64);
    let pid: u32 = v.num('P').context("no pid (%P)")? as u32;
    match why_kept(pid, &cfg) {
        None => {
            // SAFETY: cancels the alarm; no preconditions.
            unsafe { libc::alarm(0) };
            pass_on(&st.previous, &v)
        }
        Some(why) => {
            let record = keep(&cfg, &v, &why, deadline);
            store::spool(state_dir, v.get('P'), v.get('t'), &record)?;
            Ok(())
        }
    }
}

/// Why the crashed process's core is kept from the usual handler, or
/// None for an ordinary process.
fn why_kept(pid: u32, cfg: &Config) -> Option<String> {
    match pin::lookup(pid) {
        Ok(Some(sensor_common::HOLDER_RULE)) => {
            return Some("holds a key file".into());
        }
        Ok(Some(crate::enrich::protect::SELF_RULE)) => return Some("keysentry itself".into()),
        Ok(Some(_)) => return Some("[[protected]]".into()),
        Ok(None) => {}
        Err(e) => kmsg(&format!("{e:#}: deciding by the config only")),
    }
    by_config(pid, cfg)
}

/// The config's `[[protected]]` exe and comm rules, and key files the
/// process has open, read from /proc while the kernel holds it dumping.
fn by_config(pid: u32, cfg: &Config) -> Option<String> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let exe = std::fs::metadata(proc.join("exe")).ok();
    let comm = std::fs::read_to_string(proc.join("comm")).unwrap_or_default();
    for p in &cfg.protected {
        if let (Some(path), Some(exe)) = (&p.exe, &exe)
            && let Ok(md) = std::fs::metadata(path)
            && (md.dev(), md.ino()) == (exe.dev(), exe.ino())
        {
            return Some(format!("[[protected]] exe = {}", path.display()));
        }
        if let Some(c) = &p.comm
            && comm.trim_end_matches('\n') == c
        {
            return Some(format!("[[protected]] comm = {c}"));
        }
    }
    let keys = key_files(cfg);
    let fds = std::fs::read_dir(proc.join("fd")).ok()?;
    for fd in fds.flatten() {
        if let Ok(md) = std::fs::metadata(fd.path())
            && let Some((_, path)) = keys.iter().find(|(id, _)| *id == (md.dev(), md.ino()))
        {
            return Some(format!("holds {}", path.display()));
        }
    }
    None
}

/// The watched key files: each `[[key_path]]` file, and the files of each
/// `[[key_path]]` directory (not below), by (dev, inode).
fn key_files(cfg: &Config) -> Vec<((u64, u64), PathBuf)> {
    let paths = cfg.key_path.iter().map(|k| k.path.clone());
    crate::enrich::keybook::files_of(paths, MAX_KEY_FILES)
        .into_iter()
        .map(|(p, md)| ((md.dev(), md.ino()), p))
        .collect()
}

/// An ordinary process's core: where the previous pattern sends it.
fn pass_on(previous: &str, v: &Values) -> Result<()> {
    let uses_pid = std::fs::read_to_string("/proc/sys/kernel/core_uses_pid")
        .map(|s| s.trim() == "1")
        .unwrap_or(false);
    match pattern::destination(previous, v, uses_pid)? {
        Destination::Pipe(argv) => {
            // The previous helper reads the kernel's pipe itself.
            let e = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
            bail!("exec {}: {e}", argv[0])
        }
        Destination::File(name) => to_file(&name, v),
    }
}

/// Writes the core where the kernel would have: `name` in the crashed
/// process's cwd (or root, for an absolute name), created as its user
/// (mode 0600, never through a final symlink, an old file replaced), at
/// most RLIMIT_CORE bytes.
fn to_file(name: &str, v: &Values) -> Result<()> {
    let limit = v.num('c').unwrap_or(u64::MAX);
    if limit == 0 || name.is_empty() {
        return Ok(());
    }
    let pid = v.get('P');
    let (base, rel, in_root) = match name.strip_prefix('/') {
        Some(rel) => (format!("/proc/{pid}/root"), rel, true),
        None => (format!("/proc/{pid}/cwd"), name, false),
    };
    // A dump of a process that is not dumpable (suid_dumpable = 2) is
    // root's, and the kernel writes it only to an absolute path; any other
    // is its user's, with its user's permissions (groups included).
    let suid_safe = v.num('d') == Some(2);
    if suid_safe && !in_root {
        bail!("suid_dumpable = 2 needs an absolute pattern: the kernel writes nothing to {name}");
    }
    let dir = File::open(&base).with_context(|| format!("open {base}"))?;
    if !suid_safe {
        let groups: Vec<libc::gid_t> = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let (uid, gid) = (
            v.num('u').unwrap_or(0) as u32,
            v.num('g').unwrap_or(0) as u32,
        );
        // SAFETY: setgroups with a valid array; setfsuid/setfsgid only
        // change this process's file-system ids.
        unsafe {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
                bail!("setgroups: {}", std::io::Error::last_os_error());
            }
            libc::setfsgid(gid);
            libc::setfsuid(uid);
        }
    }
    let c = CString::new(rel.as_bytes())?;
    use std::os::fd::AsRawFd;
    // SAFETY: a valid C string and a directory descriptor we hold.
    unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) };
    let fd = crate::enrich::rootfiles::openat2(
        &dir,
        std::path::Path::new(rel),
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
        0o600,
        if in_root { libc::RESOLVE_IN_ROOT } else { 0 },
    )
    .with_context(|| format!("create {name}"))?;
    let mut out = File::from(fd);
    std::io::copy(&mut std::io::stdin().lock().take(limit), &mut out)?;
    Ok(())
}

/// The core of a protected process or key holder, as the policy says.
/// Returns the spool record.
fn keep(cfg: &Config, v: &Values, why: &str, deadline: Instant) -> Value {
    let pid = v.get('P');
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .ok();
    let mut rec = json!({
        "pid": v.num('P'),
        "tid": v.num('I'),
        "signal": v.num('s'),
        "time": v.num('t'),
        "uid": v.num('u'),
        "comm": v.get('e'),
        "exe": v.get('E').replace('!', "/"),
        "threads": threads,
        "why": why,
        "policy": cfg.dumps.key_holder_policy,
    });
    let stdin = std::io::stdin().lock();
    let outcome = match cfg.dumps.key_holder_policy {
        KeyHolderPolicy::Drop => {
            let (bytes, _) = quarantine::drain(Timed { r: stdin, deadline }, u64::MAX);
            Ok(json!({"action": "dropped", "bytes": bytes}))
        }
        policy => quarantine(cfg, v, policy, stdin, deadline),
    };
    let outcome = outcome.unwrap_or_else(|e| {
        // Fails closed: whatever went wrong, nothing of the core is kept.
        kmsg(&format!("the core of pid {pid} was not kept: {e:#}"));
        json!({"action": "dropped", "error": format!("{e:#}")})
    });
    if let (Value::Object(r), Value::Object(o)) = (&mut rec, outcome) {
        r.extend(o);
    }
    rec
}

/// Reads stdin at full speed until `deadline`.
struct Timed<R> {
    r: R,
    deadline: Instant,
}

impl<R: Read> Read for Timed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if Instant::now() > self.deadline {
            return Err(std::io::Error::other("the handler's deadline passed"));
        }
        self.r.read(buf)
    }
}

fn quarantine(
    cfg: &Config,
    v: &Values,
    policy: KeyHolderPolicy,
    stdin: impl Read,
    deadline: Instant,
) -> Result<Value> {
    let qdir = &cfg.dumps.quarantine_dir;
    let dir = store::root_dir(qdir, true)?;
    let name = format!(
        "core.{}.{}.{}",
        store::name_part(v.get('e')),
        store::name_part(v.get('P')),
        store::name_part(v.get('t'))
    );
    let partial = format!(".{name}.partial");
    let _ = PARTIAL.set(CString::new(qdir.join(&partial).as_os_str().as_bytes())?);
    store::unlink_in(&dir, &partial);
    let mut file = store::create_in(&dir, &partial)?;
    let secrets = if policy == KeyHolderPolicy::Redact {
        load_secrets(cfg)
    } else {
        secrets::Secrets::default()
    };
    let result = (|| -> Result<Value> {
        let mut tee = quarantine::Tee {
            r: Timed { r: stdin, deadline },
            out: Some(&mut file),
            bytes: 0,
            cap: cfg.dumps.quarantine_max_bytes,
            over: false,
        };
        let mut out = json!({});
        let first = if policy == KeyHolderPolicy::Redact {
            let r = scan_reader(&mut tee, &ScanLimits::default());
            if tee.over {
                bail!(
                    "the core is over quarantine_max_bytes ({})",
                    cfg.dumps.quarantine_max_bytes
                );
            }
            r?.findings
        } else {
            let mut sink = std::io::sink();
            let r = std::io::copy(&mut tee, &mut sink);
            if tee.over {
                bail!(
                    "the core is over quarantine_max_bytes ({})",
                    cfg.dumps.quarantine_max_bytes
                );
            }
            r?;
            Vec::new()
        };
        out["bytes"] = json!(tee.bytes);
        if policy == KeyHolderPolicy::Redact {
            let removed = redact(&file, first, &secrets, deadline)?;
            out["action"] = json!("redacted");
            out["removed"] = json!(removed);
        } else {
            out["action"] = json!("quarantined");
        }
        file.sync_all()?;
        Ok(out)
    })();
    match result {
        Ok(mut out) => {
            store::rename_in(&dir, &partial, &name)?;
            let evicted = quarantine::evict(&dir, qdir, cfg.dumps.quarantine_max_bytes, &name);
            out["path"] = json!(qdir.join(&name));
            if !evicted.is_empty() {
                out["evicted"] = json!(evicted);
            }
            Ok(out)
        }
        Err(e) => {
            store::unlink_in(&dir, &partial);
            Err(e)
        }
    }
}

/// The secrets of the watched key files.
fn load_secrets(cfg: &Config) -> secrets::Secrets {
    let mut s = secrets::Secrets::default();
    for (_, path) in key_files(cfg) {
        if let Ok(text) = store::read_file(&path, MAX_KEY_BYTES, false) {
            s.add_file(&path, &text);
        }
    }
    s
}

/// Zeroes, in the stored core `f`, every key the scanner finds (`first`:
/// what it found while the core was read) and every occurrence of the
/// watched keys' own bytes, then looks again, until nothing is left.
/// Returns what was removed (kinds and fingerprints, never bytes); an
/// error when the core is still not clean after `MAX_PASSES`.
fn redact(
    f: &File,
    first: Vec<Finding>,
    secrets: &secrets::Secrets,
    deadline: Instant,
) -> Result<Vec<Value>> {
    let ac = if secrets.is_empty() {
        None
    } else {
        Some(
            AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .build(secrets.patterns.iter().map(|p| &p.bytes[..]))?,
        )
    };
    let max_len = secrets
        .patterns
        .iter()
        .map(|p| p.bytes.len())
        .max()
        .unwrap_or(0);
    // (fingerprint or kind, key file) -> (kind, occurrences)
    let mut removed: std::collections::BTreeMap<(String, Option<String>), (String, u64)> =
        Default::default();
    let mut findings = Some(first);
    for _ in 0..MAX_PASSES {
        if Instant::now() > deadline {
            bail!("the handler's deadline passed while redacting");
        }
        let found = match findings.take() {
            Some(f) => f,
            None => {
                let mut r = f.try_clone()?;
                std::io::Seek::rewind(&mut r)?;
                scan_reader(r, &ScanLimits::default())?.findings
            }
        };
        let matches = match &ac {
            Some(ac) => quarantine::find_all(f, ac, max_len)?,
            None => Vec::new(),
        };
        if found.is_empty() && matches.is_empty() {
            return Ok(removed
                .into_iter()
                .map(|((id, file), (kind, n))| {
                    let mut e = json!({"kind": kind, "occurrences": n});
                    if id.starts_with("SHA256:") {
                        e["fingerprint"] = json!(id);
                    }
                    if let Some(file) = file {
                        e["key_file"] = json!(file);
                    }
                    e
                })
                .collect());
        }
        for k in &found {
            quarantine::zero(f, k.offset, k.length)?;
            let file = k.fingerprint.as_ref().and_then(|fp| {
                secrets
                    .keys
                    .iter()
                    .find(|r| r.fingerprint.as_ref() == Some(fp))
                    .map(|r| r.file.clone())
            });
            let id = k.fingerprint.clone().unwrap_or_else(|| k.kind.to_string());
            removed
                .entry((id, file))
                .or_insert((k.kind.to_string(), 0))
                .1 += 1;
        }
        for &(off, len, pat) in &matches {
            quarantine::zero(f, off, len)?;
            let key = &secrets.keys[secrets.patterns[pat].key];
            let id = key
                .fingerprint
                .clone()
                .unwrap_or_else(|| "key bytes".into());
            removed
                .entry((id, Some(key.file.clone())))
                .or_insert(("key bytes".into(), 0))
                .1 += 1;
        }
    }
    bail!("keys were still found after {MAX_PASSES} redaction passes")
}

/// `keysentry install-core-handler`.
pub fn install(config: Option<&Path>) -> Result<String> {
    let (cfg, config) = match config {
        Some(p) => (Config::load(p)?, Some(std::fs::canonicalize(p)?)),
        None => (Config::default_config(), None),
    };
    let exe = std::fs::canonicalize("/proc/self/exe")?;
    let cur = read_pattern()?;
    let state_dir = &cfg.dumps.state_dir;
    if pattern::is_handler(&cur) {
        // In place with this config's state: nothing to do (the unit runs
        // the install at every start). The pattern it replaced stays the
        // one kept, never keysentry's own.
        if State::load(state_dir).is_ok_and(|st| st.installed == cur) {
            return Ok(format!(
                "keysentry's core handler is already installed: {cur}"
            ));
        }
        bail!("a keysentry core handler this config did not install is in place: {cur}");
    }
    store::root_dir(state_dir, false)?;
    let specs = pattern::specs_for(&cur);
    let own = (state_dir != Path::new(DEFAULT_STATE_DIR)).then_some(state_dir.as_path());
    let installed = pattern::handler_pattern(&exe, own, &specs)?;
    let st = State {
        previous: cur.clone(),
        installed: installed.clone(),
        specs,
        config,
    };
    write_state(state_dir, &st)?;
    write_pattern(&installed)?;
    Ok(format!(
        "core_pattern is now {installed:?} (it was {cur:?})"
    ))
}

/// `keysentry uninstall-core-handler`: the previous pattern back.
pub fn uninstall(config: Option<&Path>) -> Result<String> {
    let cfg = match config {
        Some(p) => Config::load(p)?,
        None => Config::default_config(),
    };
    let state_dir = &cfg.dumps.state_dir;
    let st = State::load(state_dir)?;
    let cur = read_pattern()?;
    if cur != st.installed {
        bail!(
            "core_pattern is {cur:?}, not the handler keysentry installed ({:?}): someone replaced it; left as it is",
            st.installed
        );
    }
    write_pattern(&st.previous)?;
    std::fs::remove_file(State::path(state_dir))?;
    Ok(format!("core_pattern is {:?} again", st.previous))
}

fn write_pattern(p: &str) -> Result<()> {
    std::fs::write(pattern::CORE_PATTERN, format!("{p}\n")).context("write core_pattern")?;
    let now = read_pattern()?;
    if now != p {
        bail!("core_pattern reads {now:?} after writing {p:?}");
    }
    Ok(())
}

fn write_state(state_dir: &Path, st: &State) -> Result<()> {
    let dir = store::root_dir(state_dir, false)?;
    store::write_new(
        &dir,
        pattern::STATE_FILE,
        serde_json::to_string_pretty(st)?.as_bytes(),
    )
}
