//! `key-holder-tamper`: code put into a protected or allowlisted program
//! from its start. Re-enacted: a protected program started with
//! LD_PRELOAD, with LD_AUDIT, and under strace; an allowlisted program
//! started with LD_PRELOAD. Not alerts: the same programs started plainly
//! or with LD_LIBRARY_PATH only, and an unprotected program with
//! LD_PRELOAD. The second half, changes of code-loading paths, is
//! `code_loading_paths_changed`; changes of the files a key holder runs
//! (a vendor library it loaded from outside every code path, its own
//! executable) are `files_a_key_holder_runs_changed`.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use common::*;
use serde_json::Value;

const RULE: &str = "key-holder-tamper";

struct Lab {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    marker: PathBuf,
    /// A protected copy of ks-actor.
    victim_bin: PathBuf,
    /// A copy of ks-actor allowed to open the lab's keys.
    reader_bin: PathBuf,
    config: String,
}

fn lab() -> Lab {
    let tmp = tempdir();
    let root = tmp.path().to_path_buf();
    let marker = keys_with_marker(&root);
    let keys = root.join("keys");
    let victim_bin = actor_copy(&root, "ks-victim");
    let reader_bin = actor_copy(&root, "ks-reader");
    let config = format!(
        "[[key_path]]\npath = \"{}\"\n\n[[protected]]\nexe = \"{}\"\n\n[[allow]]\nexe = \"{}\"\nkey_path = \"{}\"\n",
        keys.display(),
        victim_bin.display(),
        reader_bin.display(),
        keys.display(),
    );
    Lab {
        _tmp: tmp,
        root,
        marker,
        victim_bin,
        reader_bin,
        config,
    }
}

/// `prefix... bin victim` with `env`, once it printed its first line; its
/// pid (the victim's: the last program of the prefix execs it).
fn start(prefix: &[&str], bin: &Path, env: &[(&str, &str)]) -> Child {
    let mut args: Vec<&str> = prefix.to_vec();
    args.push(bin.to_str().unwrap());
    args.push("victim");
    let mut c = Command::new(args[0]);
    c.args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(!line.is_empty(), "{args:?} printed nothing");
    child
}

fn tamper_by(alerts: &[Value], pid: u32) -> Vec<&Value> {
    by_pid(alerts, RULE, pid)
}

#[test]
fn protected_and_allowlisted_programs_started_with_loader_code_alert() {
    require_root();
    let l = lab();
    let mut s = Sensor::start(&l.root, &l.config);
    let libc = libc_path();
    let victim = l.victim_bin.as_path();
    let preload = start(&[], victim, &[("LD_PRELOAD", &libc)]);
    let audit = start(&[], victim, &[("LD_AUDIT", "/nonexistent/ks-audit.so")]);
    let libpath = start(&[], victim, &[("LD_LIBRARY_PATH", "/nonexistent")]);
    let plain = start(&[], victim, &[]);
    let allowed = start(&[], &l.reader_bin, &[("LD_PRELOAD", &libc)]);
    let allowed_plain = start(&[], &l.reader_bin, &[]);
    let unprotected = start(&[], &actor_bin(), &[("LD_PRELOAD", &libc)]);
    let traced = have("strace").then(|| start(&["strace", "-o", "/dev/null"], victim, &[]));
    let alerts = s.alerts_until_marker(&l.marker);
    let pids = |c: &Child| c.id();

    let a = tamper_by(&alerts, pids(&preload));
    assert_eq!(a.len(), 1, "{alerts:#?}");
    let a = a[0];
    assert!(
        a["severity"] == "high" || a["severity"] == "critical",
        "{a:#}"
    );
    assert_eq!(a["attack"], "T1574.006");
    assert!(
        a["message"].as_str().unwrap().contains("LD_PRELOAD"),
        "{a:#}"
    );
    assert_eq!(a["target"]["pid"], pids(&preload));
    assert!(a["target"]["protected"].as_str().is_some(), "{a:#}");

    let a = tamper_by(&alerts, pids(&audit));
    assert_eq!(a.len(), 1, "{alerts:#?}");
    assert!(
        a[0]["message"].as_str().unwrap().contains("LD_AUDIT")
            && !a[0]["message"].as_str().unwrap().contains("LD_PRELOAD"),
        "{:#}",
        a[0]
    );

    let a = tamper_by(&alerts, pids(&allowed));
    assert_eq!(a.len(), 1, "{alerts:#?}");
    assert!(
        a[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("allowlisted program"),
        "{:#}",
        a[0]
    );

    for (c, what) in [
        (&libpath, "LD_LIBRARY_PATH only"),
        (&plain, "a plain start"),
        (&allowed_plain, "the allowlisted program's plain start"),
        (&unprotected, "an unprotected program with LD_PRELOAD"),
    ] {
        let got = tamper_by(&alerts, pids(c));
        assert!(got.is_empty(), "{what} must not alert: {got:#?}");
    }

    match &traced {
        Some(t) => {
            let a = tamper_by(&alerts, pids(t));
            // strace's child execs the victim: the alert names the child.
            let a: Vec<&Value> = if a.is_empty() {
                alerts
                    .iter()
                    .filter(|x| x["rule"] == RULE && x["process"]["ppid"] == pids(t))
                    .collect()
            } else {
                a
            };
            assert_eq!(a.len(), 1, "{alerts:#?}");
            assert_eq!(a[0]["attack"], "T1055.008", "{:#}", a[0]);
            assert!(
                a[0]["message"].as_str().unwrap().contains("tracer"),
                "{:#}",
                a[0]
            );
        }
        None => println!("SKIPPED tracer part: strace is not installed"),
    }
    for c in [
        preload,
        audit,
        libpath,
        plain,
        allowed,
        allowed_plain,
        unprotected,
    ]
    .into_iter()
    .chain(traced)
    {
        release(c);
    }
}

/// `sh -c CMD` in `cwd`, which must succeed; its pid (the shell's: a
/// redirection is the shell's open, a command it runs last is exec'd in
/// its place).
fn sh_in(cwd: &Path, cmd: &str) -> u32 {
    let (pid, st) = run_quiet(Command::new("sh").args(["-c", cmd]).current_dir(cwd));
    assert!(st.success(), "sh -c {cmd:?} failed: {st}");
    pid
}

/// `sh -c CMD` in `cwd` on CPU 0 (with what it runs): the kernel's open
/// verdict cache is per CPU, so a read there is cached for the write
/// after it.
fn sh_on_cpu0(cwd: &Path, cmd: &str) -> u32 {
    let mut c = Command::new("sh");
    c.args(["-c", cmd]).current_dir(cwd).stdout(Stdio::null());
    pin_to_cpu0(&mut c);
    let mut child = c.spawn().unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success(), "sh -c {cmd:?} failed");
    pid
}

/// Removes /etc/ld.so.preload if this test made it.
struct PreloadGuard(bool);

impl Drop for PreloadGuard {
    fn drop(&mut self) {
        if self.0 {
            let _ = std::fs::remove_file("/etc/ld.so.preload");
        }
    }
}

/// A package for dpkg: ships a file into a code directory
/// (/etc/ld.so.conf.d) and runs a maintainer script that appends to the
/// lab's watched PAM file: the package manager and what it runs.
fn code_package(dir: &Path, pam_file: &Path) -> Option<PathBuf> {
    const PKG: &str = "ks-tamper-test";
    if !have("dpkg-deb") || !have("dpkg") || !Path::new("/var/lib/dpkg/status").exists() {
        println!("SKIPPED dpkg part: no working dpkg (dpkg-deb, /var/lib/dpkg) on this system");
        return None;
    }
    let root = dir.join("pkg");
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("etc/ld.so.conf.d")).unwrap();
    std::fs::write(
        root.join("etc/ld.so.conf.d/ks-tamper-test.conf"),
        "# keysentry tamper test\n",
    )
    .unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {PKG}\nVersion: 1.0\nArchitecture: all\nMaintainer: keysentry tests <root@localhost>\n\
             Description: keysentry key-holder-tamper test\n a file in a code directory\n"
        ),
    )
    .unwrap();
    let postinst = root.join("DEBIAN/postinst");
    std::fs::write(
        &postinst,
        format!(
            "#!/bin/sh\nset -e\necho '# postinst' >> '{}'\n",
            pam_file.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&postinst, std::fs::Permissions::from_mode(0o755)).unwrap();
    let deb = dir.join(format!("{PKG}.deb"));
    let st = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&root)
        .arg(&deb)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "dpkg-deb --build failed");
    Some(deb)
}

/// Purges the test package whatever happens.
struct PkgGuard;

impl Drop for PkgGuard {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "ks-tamper-test"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The rule's other half: a change of a code-loading path. Re-enacted on
/// the lab's code paths (a PAM directory, a PAM module directory, a
/// preload list that does not exist yet) and on the real
/// /etc/ld.so.preload: an append through a relative path after two reads
/// on the same CPU (the open verdict cache keeps reads only), a module copied
/// in through a symlink to its directory, a file renamed onto the preload
/// list, files moved into the PAM directories under new names (a bare
/// name from inside, by a process gone before keysentry looks, and an
/// absolute one), a hard link made at a PAM file's name and a symlink at a
/// PAM module's, an empty /etc/ld.so.preload created; and a drop-in
/// written into a coredump.conf.d (`[tamper] dump_paths`), a
/// dump-config-change. Not alerts: reads of the same files, a file
/// renamed elsewhere, and dpkg installing a package that ships a file into
/// /etc/ld.so.conf.d and whose maintainer script appends to the PAM file.
#[test]
fn code_loading_paths_changed() {
    require_root();
    let tmp = tempdir();
    let root = tmp.path().to_path_buf();
    let marker = keys_with_marker(&root);
    let pamd = root.join("pam.d");
    let security = root.join("security");
    std::fs::create_dir(&pamd).unwrap();
    std::fs::create_dir(&security).unwrap();
    std::fs::write(pamd.join("sshd"), "auth required pam_unix.so\n").unwrap();
    std::fs::write(security.join("pam_unix.so"), "not a module\n").unwrap();
    std::fs::write(root.join("other"), "x\n").unwrap();
    std::fs::write(root.join("other2"), "x\n").unwrap();
    std::fs::write(root.join("other3"), "x\n").unwrap();
    std::fs::write(root.join("other4"), "x\n").unwrap();
    std::os::unix::fs::symlink(&security, root.join("modules")).unwrap();
    let dumpconf = root.join("coredump.conf.d");
    std::fs::create_dir(&dumpconf).unwrap();
    let preload = root.join("ld.so.preload");
    let real_preload = Path::new("/etc/ld.so.preload");
    let config = format!(
        "[[key_path]]\npath = \"{}\"\n\n[tamper]\ncode_paths = [\"{}\", \"{}\", \"{}\", \"/etc/ld.so.preload\", \"/etc/ld.so.conf.d\"]\ndump_paths = [\"{}\"]\n\n\
         [[allow]]\nexe = \"/usr/bin/dpkg\"\ncode_change = true\n",
        root.join("keys").display(),
        pamd.display(),
        security.display(),
        preload.display(),
        dumpconf.display(),
    );
    let deb = code_package(&root, &pamd.join("sshd"));
    let mut s = Sensor::start(&root, &config);

    // Alerts.
    // Read twice (the verdict cache keeps "nothing to report" for reads
    // of a code path), then appended to through the same dentry.
    let append = sh_on_cpu0(
        &pamd,
        "cat sshd; cat sshd; echo 'auth optional pam_evil.so' >> sshd",
    );
    let copy = sh_in(&root, "exec cp /bin/true modules/pam_evil.so");
    std::fs::write(root.join("staged"), "/tmp/evil.so\n").unwrap();
    // New names in a code directory, by processes gone before keysentry
    // looks: a bare name (the kernel names the directory) and an absolute
    // one (the directory's name is a code path's).
    let bare = sh_in(&pamd, &format!("exec mv {}/other3 evil", root.display()));
    let into = sh_in(
        &root,
        &format!("exec mv {0}/other4 {0}/security/pam_new.so", root.display()),
    );
    let rename = sh_in(
        &root,
        &format!("exec mv {0}/staged {0}/ld.so.preload", root.display()),
    );
    let link = sh_in(
        &root,
        &format!(
            "rm {0}/sshd && exec ln {1}/other {0}/sshd",
            pamd.display(),
            root.display()
        ),
    );
    let symlink = sh_in(
        &root,
        &format!(
            "rm {0}/pam_unix.so && exec ln -s /tmp/evil {0}/pam_unix.so",
            security.display()
        ),
    );
    // systemd-coredump told to keep dumps in the journal (a drop-in).
    let journal = sh_in(
        &dumpconf,
        "echo '[Coredump]\nStorage=journal' > 50-journal.conf",
    );
    let real = (!real_preload.exists()).then(|| sh_in(&root, ": >> /etc/ld.so.preload"));
    let _guard = PreloadGuard(real.is_some());
    // Not alerts.
    let read = sh_in(&pamd, "exec cat sshd ../ld.so.preload");
    let elsewhere = sh_in(
        &root,
        &format!("exec mv {0}/other2 {0}/moved", root.display()),
    );
    let _pkg = deb.as_ref().map(|deb| {
        let g = PkgGuard;
        let st = Command::new("dpkg")
            .arg("-i")
            .arg(deb)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "dpkg -i failed");
        let st = Command::new("dpkg")
            .args(["--purge", "ks-tamper-test"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "dpkg --purge failed");
        g
    });
    let alerts = s.alerts_until_marker(&marker);

    let code = |pid: u32, how: &str, code_path: &Path| -> Value {
        let a = tamper_by(&alerts, pid);
        assert_eq!(a.len(), 1, "pid {pid} ({how}): {alerts:#?}");
        let a = a[0].clone();
        assert_eq!(a["severity"], "high", "{a:#}");
        assert_eq!(a["code"]["how"], how, "{a:#}");
        assert_eq!(a["code"]["code_path"], code_path.to_str().unwrap(), "{a:#}");
        a
    };
    let a = code(append, "write", &pamd);
    assert_eq!(a["target"]["path"], pamd.join("sshd").to_str().unwrap());
    assert_eq!(a["code"]["arg"], "sshd");
    assert_eq!(a["attack"], "T1556.003");
    let a = code(copy, "create", &security);
    assert_eq!(
        a["target"]["path"],
        security.join("pam_evil.so").to_str().unwrap(),
        "the file, not the symlink it was named through"
    );
    let a = code(rename, "rename", &preload);
    assert_eq!(a["attack"], "T1574.006");
    assert_eq!(a["target"]["inode"], ino(&preload));
    let a = code(bare, "rename", &pamd);
    assert_eq!(a["target"]["path"], pamd.join("evil").to_str().unwrap());
    assert_eq!(a["code"]["arg"], "evil");
    let a = code(into, "rename", &security);
    assert_eq!(
        a["target"]["path"],
        security.join("pam_new.so").to_str().unwrap()
    );
    code(link, "link", &pamd);
    let a = code(symlink, "symlink", &security);
    assert_eq!(a["code"]["from"], "/tmp/evil");
    match real {
        Some(pid) => {
            let a = code(pid, "create", real_preload);
            assert!(
                a["message"].as_str().unwrap().contains("preload list"),
                "{a:#}"
            );
        }
        None => println!("SKIPPED /etc/ld.so.preload part: the file exists on this host"),
    }
    let a = by_pid(&alerts, "dump-config-change", journal);
    assert_eq!(a.len(), 1, "{alerts:#?}");
    assert_eq!(a[0]["severity"], "medium");
    assert_eq!(a[0]["code"]["how"], "create");
    assert_eq!(a[0]["code"]["code_path"], dumpconf.to_str().unwrap());
    assert!(
        a[0]["message"]
            .as_str()
            .unwrap()
            .contains("Storage=journal"),
        "{:#}",
        a[0]
    );
    for (pid, what) in [(read, "reads"), (elsewhere, "a rename elsewhere")] {
        let got = tamper_by(&alerts, pid);
        assert!(got.is_empty(), "{what} must not alert: {got:#?}");
    }
    // Nothing else: dpkg, its maintainer script and ldconfig are silent.
    let expected = [append, copy, bare, into, rename, link, symlink]
        .into_iter()
        .chain(real)
        .collect::<Vec<_>>();
    let others: Vec<&Value> = alerts
        .iter()
        .filter(|a| {
            a["rule"] == RULE
                && !expected.contains(&(a["process"]["pid"].as_u64().unwrap_or(0) as u32))
        })
        .collect();
    assert!(others.is_empty(), "unexpected alerts: {others:#?}");
    if deb.is_some() {
        // The kernel did report dpkg's and its script's writes (the
        // package's file created in /etc/ld.so.conf.d, the PAM file
        // appended to): the allowance, not a blind spot, kept them silent.
        let writes = s
            .metric("keysentry_events_total{kind=\"code_write\"}")
            .unwrap_or(0.0);
        let opens_alerted = 2 + real.iter().count();
        assert!(
            writes >= (opens_alerted + 2) as f64,
            "{writes} code_write records: dpkg's writes were not seen"
        );
        println!("dpkg -i and --purge of a package writing code paths: seen, no alert");
    }
}

/// A library a protected program loaded from a directory no code path
/// covers (a vendor module under /opt), and the program's executable:
/// keysentry reads them from its mappings and watches them. Alerts: an
/// append to the library, the library deleted and created again under
/// its name, a file renamed over the executable. Not alerts: reading the
/// library, a new file next to it that nothing loaded.
#[test]
fn files_a_key_holder_runs_changed() {
    require_root();
    let l = lab();
    let Some(libz) = [
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
        "/lib/x86_64-linux-gnu/libz.so.1",
    ]
    .iter()
    .find_map(|p| std::fs::canonicalize(p).ok()) else {
        println!("SKIPPED: no libz.so.1 to load");
        return;
    };
    let vendor = l.root.join("vendor");
    std::fs::create_dir(&vendor).unwrap();
    let lib = vendor.join("libks-hsm.so.1");
    std::fs::copy(&libz, &lib).unwrap();
    let mut s = Sensor::start(&l.root, &l.config);
    let mut holder = Command::new(&l.victim_bin)
        .args(["dlopen", lib.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(holder.stdout.as_mut().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    let holder_pid = holder.id();
    // Synchronised on keysentry's own report, not a sleep.
    let mut batches = String::new();
    while !batches.contains(lib.to_str().unwrap()) {
        batches += &s.wait_log("key holders run");
    }
    assert!(
        batches.contains(l.victim_bin.to_str().unwrap()),
        "{batches}"
    );

    // Not alerts.
    let read = sh_in(&vendor, "exec cat libks-hsm.so.1 > /dev/null");
    let other = sh_in(&vendor, "exec cp /bin/true libother.so.1");
    // Alerts.
    let append = sh_in(&vendor, "printf x >> libks-hsm.so.1");
    let recreate = sh_in(
        &vendor,
        "rm libks-hsm.so.1 && exec cp /bin/true libks-hsm.so.1",
    );
    std::fs::copy("/bin/true", l.root.join("staged")).unwrap();
    let over_exe = sh_in(
        &l.root,
        &format!("exec mv staged {}", l.victim_bin.display()),
    );
    let alerts = s.alerts_until_marker(&l.marker);
    release(holder);

    let code = |pid: u32, how: &str, path: &Path| -> Value {
        let a = tamper_by(&alerts, pid);
        assert_eq!(a.len(), 1, "pid {pid} ({how}): {alerts:#?}");
        let a = a[0].clone();
        assert_eq!(a["severity"], "high", "{a:#}");
        assert_eq!(a["attack"], "T1574", "{a:#}");
        assert_eq!(a["code"]["how"], how, "{a:#}");
        assert_eq!(a["code"]["code_path"], path.to_str().unwrap(), "{a:#}");
        let by = a["code"]["loaded_by"].as_str().unwrap_or_default();
        assert!(
            by.contains(&format!("(pid {holder_pid})")),
            "loaded_by {by:?}: {a:#}"
        );
        a
    };
    let a = code(append, "write", &lib);
    assert_eq!(a["target"]["path"], lib.to_str().unwrap());
    code(recreate, "create", &lib);
    let a = code(over_exe, "rename", &l.victim_bin);
    assert_eq!(a["code"]["arg"], l.victim_bin.to_str().unwrap());
    for (pid, what) in [
        (read, "a read of the library"),
        (other, "a file nothing loaded"),
    ] {
        none_by_pid(&alerts, RULE, pid, what);
    }
}

/// systemd units that start a key holder with loader code: a drop-in
/// written into a protected service's drop-in directory, one renamed
/// there (as `systemctl edit` does), one written into a drop-in directory
/// made at that moment, each setting LD_PRELOAD or LD_AUDIT, are high; the same in a service that runs no key holder is low; a
/// drop-in that sets nothing of the kind is no alert. The unit directory
/// is the test's (`[tamper] unit_paths`): nothing here needs systemd.
#[test]
fn systemd_units_that_start_a_key_holder_with_loader_code() {
    require_root();
    let l = lab();
    let units = l.root.join("units");
    let holder_d = units.join("ks-holder.service.d");
    let other_d = units.join("ks-other.service.d");
    std::fs::create_dir_all(&holder_d).unwrap();
    std::fs::create_dir_all(&other_d).unwrap();
    std::fs::write(
        units.join("ks-holder.service"),
        format!("[Service]\nExecStart=-{} victim\n", l.victim_bin.display()),
    )
    .unwrap();
    std::fs::write(
        units.join("ks-holder-b.service"),
        format!("[Service]\nExecStart={} victim\n", l.victim_bin.display()),
    )
    .unwrap();
    std::fs::write(
        units.join("ks-other.service"),
        "[Service]\nExecStart=/bin/sleep 1000\n",
    )
    .unwrap();
    std::fs::write(
        l.root.join("staged.conf"),
        "[Service]\nEnvironment=\"LD_AUDIT=/tmp/ks-audit.so\" TOKEN=do-not-show\n",
    )
    .unwrap();
    let config = format!(
        "{}\n[tamper]\nunit_paths = [\"{}\"]\n",
        l.config,
        units.display()
    );
    let mut s = Sensor::start(&l.root, &config);

    let benign = sh_in(&holder_d, "printf '[Service]\\nNice=5\\n' > 20-nice.conf");
    let written = sh_in(
        &holder_d,
        "printf '[Service]\\nEnvironment=LD_PRELOAD=/tmp/ks-evil.so\\n' > 10-env.conf",
    );
    let renamed = sh_in(
        &l.root,
        &format!(
            "exec mv {}/staged.conf {}/override.conf",
            l.root.display(),
            holder_d.display()
        ),
    );
    // A drop-in directory made and written at once, before keysentry's
    // rescan watches it (the kernel knows its parent).
    let fresh = sh_in(
        &units,
        "mkdir ks-holder-b.service.d && printf '[Service]\\nEnvironment=LD_PRELOAD=/tmp/ks-evil.so\\n' > ks-holder-b.service.d/x.conf",
    );
    let other = sh_in(
        &other_d,
        "printf '[Service]\\nEnvironment=LD_PRELOAD=/tmp/ks-evil.so\\n' > env.conf",
    );
    let alerts = s.alerts_until(|a| a["process"]["pid"] == other);

    let unit = |pid: u32| -> Value {
        let a = tamper_by(&alerts, pid);
        assert_eq!(a.len(), 1, "pid {pid}: {alerts:#?}");
        assert_eq!(a[0]["attack"], "T1574.006", "{:#}", a[0]);
        a[0].clone()
    };
    let a = unit(written);
    assert_eq!(a["severity"], "high", "{a:#}");
    assert_eq!(a["code"]["unit"], "ks-holder.service");
    assert_eq!(a["code"]["setting"], "LD_PRELOAD=/tmp/ks-evil.so");
    assert_eq!(a["code"]["how"], "create");
    assert_eq!(a["code"]["code_path"], units.to_str().unwrap());
    assert!(
        a["code"]["loaded_by"]
            .as_str()
            .unwrap_or_default()
            .contains("[[protected]]"),
        "{a:#}"
    );
    let a = unit(renamed);
    assert_eq!(a["severity"], "high", "{a:#}");
    assert_eq!(a["code"]["how"], "rename");
    assert_eq!(a["code"]["setting"], "LD_AUDIT=/tmp/ks-audit.so");
    assert!(
        !a.to_string().contains("do-not-show"),
        "another variable of the line is shown: {a:#}"
    );
    let a = unit(fresh);
    assert_eq!(a["severity"], "high", "{a:#}");
    assert_eq!(a["code"]["unit"], "ks-holder-b.service");
    let a = unit(other);
    assert_eq!(a["severity"], "low", "{a:#}");
    assert_eq!(a["code"]["unit"], "ks-other.service");
    none_by_pid(&alerts, RULE, benign, "a drop-in without loader variables");
}
