//! keysentry as the core handler (issue 15, docs/dumps.md): a key holder's
//! real crash is kept in the quarantine with every key zeroed (gdb still
//! reads it), or not kept at all; any other process's core reaches the
//! handler or file it went to before, unchanged; install and uninstall
//! round-trip core_pattern; without `keysentry run` the config's
//! `[[protected]]` programs are still kept.

mod common;

use std::{
    os::unix::{fs::MetadataExt, fs::PermissionsExt, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::Command,
};

use common::{lab::*, *};
use pkcs8::der::Decode;
use serde_json::Value;

/// bpffs where the unit's ExecStartPre (and systemd) mounts it: the
/// sensor pins PROTECTED there for the handler.
fn ensure_bpffs() {
    let mounted = std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some("/sys/fs/bpf") && l.split(' ').nth(2) == Some("bpf"));
    if !mounted {
        let st = Command::new("mount")
            .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
            .status()
            .unwrap();
        assert!(st.success(), "mount bpffs");
    }
}

/// The lab for the handler: a copy of keysentry at a short path (a
/// core_pattern holds 127 bytes), its state and quarantine directories.
struct HandlerLab {
    l: Lab,
    bin: PathBuf,
    state: PathBuf,
    quarantine: PathBuf,
}

fn handler_lab() -> HandlerLab {
    require_root();
    let l = lab();
    let bin = l.root.join("ks");
    std::fs::copy(keysentry_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = l.root.join("s");
    let quarantine = l.root.join("q");
    HandlerLab {
        l,
        bin,
        state,
        quarantine,
    }
}

impl HandlerLab {
    fn config(&self, policy: &str, extra: &str) -> String {
        format!(
            "[[key_path]]\npath = \"{}\"\n\n{extra}\n[dumps]\ndirs = []\nkey_holder_policy = \"{policy}\"\nquarantine_dir = \"{}\"\nstate_dir = \"{}\"\n",
            self.l.root.join("keys").display(),
            self.quarantine.display(),
            self.state.display()
        )
    }

    fn write_config(&self, body: &str) -> PathBuf {
        let p = self.l.root.join("handler.toml");
        std::fs::write(&p, body).unwrap();
        p
    }

    /// `ks install-core-handler` / `uninstall-core-handler`.
    fn run(&self, cmd: &str, config: &Path) -> (bool, String) {
        let out = Command::new(&self.bin)
            .arg(cmd)
            .arg("--config")
            .arg(config)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn install(&self, config: &Path) {
        let (ok, out) = self.run("install-core-handler", config);
        assert!(ok, "install: {out}");
    }

    fn spool(&self, pid: u32) -> Value {
        let dir = self.state.join("spool");
        let f = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{pid}."))
            })
            .unwrap_or_else(|| panic!("no spool record of {pid} in {}", dir.display()));
        serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap()
    }

    fn quarantined(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(&self.quarantine) {
            Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn pem_lines(pem: &str) -> Vec<&str> {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

/// Every byte string of a PEM private key that must not be in a redacted
/// core: the PEM text, each body line, the DER, and the raw private values
/// (Ed25519 seed; RSA d, p, q, dp, dq, qinv big-endian and byte-reversed).
fn secret_forms(pem_text: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![("pem".to_string(), pem_text.as_bytes().to_vec())];
    for (i, l) in pem_lines(pem_text).into_iter().enumerate() {
        out.push((format!("pem line {i}"), l.as_bytes().to_vec()));
    }
    let der = pem::parse(pem_text).unwrap().contents().to_vec();
    out.push(("der".into(), der.clone()));
    let info = pkcs8::PrivateKeyInfo::from_der(&der).unwrap();
    if let Ok(k) = pkcs1::RsaPrivateKey::from_der(info.private_key) {
        for (name, v) in [
            ("d", k.private_exponent),
            ("p", k.prime1),
            ("q", k.prime2),
            ("dp", k.exponent1),
            ("dq", k.exponent2),
            ("qinv", k.coefficient),
        ] {
            let be = v.as_bytes().to_vec();
            let mut le = be.clone();
            le.reverse();
            out.push((format!("rsa {name} big-endian"), be));
            out.push((format!("rsa {name} little-endian"), le));
        }
    } else {
        let seed = pkcs8::der::asn1::OctetStringRef::from_der(info.private_key).unwrap();
        out.push(("ed25519 seed".into(), seed.as_bytes().to_vec()));
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// gdb's backtrace of `core` (None: no gdb here).
fn backtrace(core: &Path) -> Option<String> {
    if !have("gdb") {
        println!("SKIPPED (backtrace part): gdb is not installed");
        return None;
    }
    let out = Command::new("gdb")
        .args(["-batch", "-nx", "-ex", "bt"])
        .arg(actor_bin())
        .arg(core)
        .output()
        .unwrap();
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_elf_core(bytes: &[u8]) -> bool {
    bytes.len() > 18 && bytes.starts_with(b"\x7fELF") && bytes[16] == 4 && bytes[17] == 0
}

/// A whole ELF core, byte for byte where it counts: its header at offset
/// 0 (nothing read off the front) and exactly as long as its program
/// headers say (nothing cut, nothing added).
fn assert_whole_core(bytes: &[u8], what: &str) {
    assert!(is_elf_core(bytes), "{what}: no ELF core header at offset 0");
    let u16_at = |o: usize| u16::from_le_bytes(bytes[o..o + 2].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    assert!(phnum > 1, "{what}: {phnum} program headers");
    let end = (0..phnum)
        .map(|i| {
            let ph = phoff + i * phentsize;
            u64_at(ph + 8) + u64_at(ph + 32)
        })
        .max()
        .unwrap();
    assert_eq!(bytes.len(), end, "{what}: the segments end at {end}");
}

#[test]
fn install_and_uninstall_round_trip_core_pattern() {
    let h = handler_lab();
    let previous = format!("|{}/prev.sh %p %s %% %F", h.l.root.display());
    let _pattern = CorePattern::set(&previous);
    let config = h.write_config(&h.config("redact", ""));
    h.install(&config);
    let now = std::fs::read_to_string(CORE_PATTERN).unwrap();
    assert_eq!(
        now.trim_end(),
        format!(
            "|{} core-handler --state {} %P %p %I %i %u %g %d %s %t %c %h %e %f %E %F",
            h.bin.display(),
            h.state.display()
        ),
        "the handler takes what the previous pattern uses (%F)"
    );
    let state: Value =
        serde_json::from_slice(&std::fs::read(h.state.join("core-handler.json")).unwrap()).unwrap();
    assert_eq!(state["previous"], previous.as_str());
    assert_eq!(
        std::fs::metadata(h.state.join("core-handler.json"))
            .unwrap()
            .mode()
            & 0o777,
        0o600
    );
    // Installed again (the unit does it at every start): nothing changes,
    // the pattern it replaced stays the one kept.
    let (ok, out) = h.run("install-core-handler", &config);
    assert!(ok && out.contains("already installed"), "{out}");
    assert_eq!(std::fs::read_to_string(CORE_PATTERN).unwrap(), now);
    let again: Value =
        serde_json::from_slice(&std::fs::read(h.state.join("core-handler.json")).unwrap()).unwrap();
    assert_eq!(again, state);
    // Another config (its own state directory) finds a handler it did not
    // install: refused.
    let other = h.l.root.join("other.toml");
    std::fs::write(
        &other,
        h.config("redact", "").replace(
            h.state.to_str().unwrap(),
            h.l.root.join("s2").to_str().unwrap(),
        ),
    )
    .unwrap();
    let (ok, out) = h.run("install-core-handler", &other);
    assert!(!ok && out.contains("did not install"), "{out}");
    let (ok, out) = h.run("uninstall-core-handler", &config);
    assert!(ok, "{out}");
    assert_eq!(
        std::fs::read_to_string(CORE_PATTERN).unwrap().trim_end(),
        previous
    );
    assert!(!h.state.join("core-handler.json").exists());
    let (ok, _) = h.run("uninstall-core-handler", &config);
    assert!(!ok, "nothing to uninstall");

    // Someone replaced the handler: uninstall leaves their pattern alone.
    h.install(&config);
    std::fs::write(CORE_PATTERN, "core.%p").unwrap();
    let (ok, out) = h.run("uninstall-core-handler", &config);
    assert!(!ok && out.contains("someone replaced it"), "{out}");
    assert_eq!(
        std::fs::read_to_string(CORE_PATTERN).unwrap().trim_end(),
        "core.%p"
    );
}

/// A key holder (no `[[protected]]` rule: it loaded a watched key) that
/// crashes: redacted, or dropped.
fn key_holder_crash(policy: &str) {
    let h = handler_lab();
    ensure_bpffs();
    let (ed_pem, ed_fp) = fresh_key();
    let ed = h.l.root.join("keys/signing-ed25519.pem");
    std::fs::write(&ed, &ed_pem).unwrap();
    let mut keys = vec![(ed.clone(), ed_pem.clone())];
    if have("openssl") {
        let rsa = h.l.root.join("keys/signing-rsa.pem");
        let st = Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&rsa)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        keys.push((rsa.clone(), std::fs::read_to_string(&rsa).unwrap()));
    } else {
        println!("SKIPPED (RSA part): openssl (to make an RSA key) is not installed");
    }
    // Where an ordinary core would go: nothing of the holder's may land there.
    let prev = h.l.root.join("prev");
    std::fs::create_dir(&prev).unwrap();
    let _pattern = CorePattern::set(&format!("{}/core.%p", prev.display()));
    let _limit = PipeLimit::set(4);
    let config = h.write_config(&h.config(policy, ""));
    let mut s = Sensor::start(&h.l.root, &std::fs::read_to_string(&config).unwrap());
    h.install(&config);

    let paths: Vec<&str> = keys.iter().map(|(p, _)| p.to_str().unwrap()).collect();
    let mut args = vec!["hold-keys-crash"];
    args.extend(&paths);
    let mut child = Command::new(actor_bin()).args(&args).spawn().unwrap();
    let pid = child.id();
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(libc::SIGSEGV));
    assert!(st.core_dumped(), "the kernel dumped the holder's core");

    // core_pipe_limit: the crashed process ended after the handler did.
    let rec = h.spool(pid);
    assert_eq!(rec["why"], "holds a key file", "{rec:#}");
    let alerts = s.alerts_until(|a| a["rule"] == "core-dump" && a["target"]["pid"] == pid);
    let a = alerts
        .iter()
        .find(|a| a["rule"] == "core-dump" && a["target"]["pid"] == pid)
        .unwrap();
    assert_eq!(a["severity"], "critical", "{a:#}");
    assert_eq!(
        a["target"]["protected"],
        format!("holds {}", paths[0]),
        "{a:#}"
    );
    assert!(
        std::fs::read_dir(&prev).unwrap().next().is_none(),
        "nothing at the previous pattern"
    );
    // The handler read the key files to redact: keysentry's own work, no alert.
    assert!(
        !alerts
            .iter()
            .any(|a| a["rule"] == "key-file-open" && a["process"]["pid"] != pid),
        "{alerts:#?}"
    );
    let d = &a["dump"];
    assert!(d["bytes"].as_u64().unwrap() > 0, "{a:#}");
    let action = if policy == "drop" {
        "dropped"
    } else {
        "redacted"
    };
    assert_eq!(
        s.metric(&format!(
            "keysentry_cores_handled_total{{action=\"{action}\"}}"
        )),
        Some(1.0)
    );

    if policy == "drop" {
        assert_eq!(d["action"], "dropped", "{a:#}");
        assert!(d.get("stored").is_none(), "{a:#}");
        assert!(h.quarantined().is_empty(), "{:?}", h.quarantined());
        assert!(
            a["message"]
                .as_str()
                .unwrap()
                .contains("kept nothing of it"),
            "{a:#}"
        );
        return;
    }
    assert_eq!(d["action"], "redacted", "{a:#}");
    let stored = PathBuf::from(d["stored"].as_str().unwrap());
    assert_eq!(h.quarantined(), vec![stored.clone()]);
    assert_eq!(
        d["files"],
        serde_json::json!([stored.to_str().unwrap()]),
        "the dump the handler wrote, by its final name: {a:#}"
    );
    let md = std::fs::metadata(&stored).unwrap();
    assert_eq!((md.uid(), md.mode() & 0o777), (0, 0o600));
    assert_eq!(
        std::fs::metadata(&h.quarantine).unwrap().mode() & 0o777,
        0o700
    );
    // Byte for byte: no form of either key is left anywhere in the core.
    let core = std::fs::read(&stored).unwrap();
    assert_whole_core(&core, "the redacted core");
    for (path, pem_text) in &keys {
        for (form, bytes) in secret_forms(pem_text) {
            assert!(
                !contains(&core, &bytes),
                "{form} of {} is in {}",
                path.display(),
                stored.display()
            );
        }
    }
    // What was removed: named by key file and fingerprint.
    let removed = d["removed"].as_array().unwrap();
    let ed_entry = removed
        .iter()
        .find(|r| r["key_file"] == paths[0])
        .unwrap_or_else(|| panic!("the Ed25519 key: {a:#}"));
    assert_eq!(ed_entry["fingerprint"], ed_fp.as_str());
    assert!(
        a["message"]
            .as_str()
            .unwrap()
            .contains(&format!("the private key of {} ({ed_fp})", paths[0])),
        "{a:#}"
    );
    if let Some(rsa) = paths.get(1) {
        let r = removed.iter().find(|r| r["key_file"] == *rsa);
        assert_eq!(
            r.map(|r| r["kind"].clone()),
            Some(Value::from("rsa")),
            "{a:#}"
        );
    }
    if let Some(bt) = backtrace(&stored) {
        assert!(bt.contains("crash_holding_keys"), "gdb's backtrace: {bt}");
    }
    // The dump is tracked: a copy of it is followed like any dump.
    assert!(d["tracked_id"].as_u64().is_some(), "{a:#}");
    assert!(
        !d["files"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| f.as_str().unwrap().contains("/spool/")),
        "the spool record is no dump: {a:#}"
    );
}

#[test]
fn a_key_holders_crash_is_redacted_and_gdb_still_reads_it() {
    key_holder_crash("redact");
}

#[test]
fn with_the_drop_policy_nothing_of_a_key_holders_core_is_kept() {
    key_holder_crash("drop");
}

#[test]
fn an_ordinary_crash_goes_where_it_went_before() {
    let h = handler_lab();
    ensure_bpffs();
    let prev = h.l.root.join("prev");
    std::fs::create_dir(&prev).unwrap();
    std::fs::set_permissions(&prev, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let _limit = PipeLimit::set(4);
    let config = h.write_config(&h.config("redact", ""));
    let mut s = Sensor::start(&h.l.root, &std::fs::read_to_string(&config).unwrap());

    // 1. A previous pipe helper: a script that keeps what it is given.
    let script = h.l.root.join("prev.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat > {dir}/piped.$1\necho \"$@\" > {dir}/args.$1\n",
            dir = prev.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pattern = CorePattern::set(&format!("|{} %p %s %e %%", script.display()));
    h.install(&config);
    let (pid, st) = actor(&["threads-crash", "1"], None, None);
    assert!(st.core_dumped(), "{st:?}");
    let args = std::fs::read_to_string(prev.join(format!("args.{pid}"))).unwrap();
    assert_eq!(args.trim_end(), format!("{pid} 11 ks-actor %"));
    let core = std::fs::read(prev.join(format!("piped.{pid}"))).unwrap();
    assert_whole_core(&core, "the core the previous helper got");
    assert!(
        h.state
            .join("spool")
            .read_dir()
            .map(|mut d| d.next().is_none())
            .unwrap_or(true),
        "nothing kept by keysentry"
    );
    let (ok, out) = h.run("uninstall-core-handler", &config);
    assert!(ok, "{out}");
    drop(pattern);

    // 2. A previous file pattern: the file the kernel would have written,
    // as the crashed user, mode 0600.
    let _pattern = CorePattern::set(&format!("{}/core.%e.%p", prev.display()));
    h.install(&config);
    let nobody = 65534;
    let (pid, st) = actor(&["threads-crash", "1"], Some(&prev), Some(nobody));
    assert_eq!(st.signal(), Some(libc::SIGSEGV), "{st:?}");
    let file = prev.join(format!("core.ks-actor.{pid}"));
    let md = std::fs::symlink_metadata(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert_eq!((md.uid(), md.mode() & 0o777), (nobody, 0o600));
    let core = std::fs::read(&file).unwrap();
    assert_whole_core(&core, "the core file");
    if let Some(bt) = backtrace(&file) {
        assert!(bt.contains("ks_actor"), "gdb's backtrace: {bt}");
    }
    // Neither crash was a protected process's.
    let alerts = s.alerts_until_marker(&h.l.marker);
    assert!(
        !alerts.iter().any(|a| a["rule"] == "core-dump"),
        "{alerts:#?}"
    );
}

#[test]
fn without_the_sensor_a_protected_programs_crash_is_still_kept() {
    let h = handler_lab();
    let _pattern = CorePattern::set("core");
    let _limit = PipeLimit::set(4);
    let extra = format!("[[protected]]\nexe = \"{}\"\n", h.l.victim_bin.display());
    let config = h.write_config(&h.config("quarantine", &extra));
    h.install(&config);
    let (mut c, pid) = spawn_victim(&h.l.victim_bin);
    use std::io::Write;
    writeln!(c.stdin.as_mut().unwrap(), "segv").unwrap();
    let st = c.wait().unwrap();
    assert!(st.core_dumped(), "{st:?}");
    let rec = h.spool(pid);
    assert_eq!(rec["action"], "quarantined", "{rec:#}");
    assert_eq!(
        rec["why"],
        format!("[[protected]] exe = {}", h.l.victim_bin.display()),
        "{rec:#}"
    );
    let stored = PathBuf::from(rec["path"].as_str().unwrap());
    assert_whole_core(&std::fs::read(&stored).unwrap(), "the quarantined core");
    assert!(!h.l.root.join(format!("core.{pid}")).exists());
}
