//! Where a process runs (issue 17): every alert's `process` names its
//! cgroup v2 path, the systemd unit and the container that path names.
//! The test makes cgroups shaped like docker's systemd-driver scope and a
//! service's, runs a real key read in each and a read of a protected
//! process in the container, and reads the alerts.

mod common;

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use common::*;
use serde_json::Value;

const ID: &str = "5e1f00d5c0ffee0123456789abcdef0123456789abcdef0123456789abcdef01";

/// The cgroup2 mount, when it has one and new cgroups can be made there.
fn cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|d| d.join("cgroup.procs").exists() && !d.join("tasks").exists())
}

/// Cgroups made for the test, removed (innermost first) on drop.
struct Cgroups(Vec<PathBuf>);

impl Drop for Cgroups {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// `ks-actor open KEY` run inside cgroup `dir` (it joins before its
/// exec): its pid.
fn open_in(dir: &Path, key: &Path) -> u32 {
    let mut c = Command::new("sh")
        .arg("-c")
        .arg(r#"echo $$ > "$1/cgroup.procs" && exec "$2" open "$3""#)
        .arg("sh")
        .arg(dir)
        .arg(actor_bin())
        .arg(key)
        .spawn()
        .unwrap();
    let pid = c.id();
    assert!(c.wait().unwrap().success());
    pid
}

fn key_open(alerts: &[Value], pid: u32) -> &Value {
    let mine: Vec<_> = alerts
        .iter()
        .filter(|a| a["process"]["pid"] == pid && a["rule"] == "key-file-open")
        .collect();
    assert_eq!(mine.len(), 1, "one key open by {pid}: {alerts:#?}");
    mine[0]
}

#[test]
fn alerts_name_the_cgroup_unit_and_container() {
    let Some(root) = cgroup2_root() else {
        println!("SKIP: no cgroup v2 hierarchy to make test cgroups in");
        return;
    };
    let tmp = tempdir();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("keys")).unwrap();
    let key = dir.join("keys/ca.key");
    std::fs::write(&key, b"a watched file").unwrap();
    let marker = dir.join("keys/zz-marker");
    std::fs::write(&marker, b"m").unwrap();

    let slice = root.join(format!("ks-test-{}.slice", std::process::id()));
    let docker = slice.join(format!("docker-{ID}.scope"));
    let service = slice.join("vault.service");
    let mut made = Cgroups(Vec::new());
    for d in [&slice, &docker, &service] {
        if let Err(e) = std::fs::create_dir(d) {
            println!("SKIP: cannot make cgroup {}: {e}", d.display());
            return;
        }
        made.0.push(d.clone());
    }

    // A protected program (a copy of ks-actor) in the container.
    let vault = dir.join("ks-vault");
    std::fs::copy(actor_bin(), &vault).unwrap();
    std::fs::set_permissions(&vault, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut s = Sensor::start(
        dir,
        &format!(
            "[[key_path]]\npath = \"{}\"\n\n[[protected]]\nexe = \"{}\"\n",
            dir.join("keys").display(),
            vault.display()
        ),
    );
    let mut victim = Command::new("sh")
        .arg("-c")
        .arg(r#"echo $$ > "$1/cgroup.procs" && exec "$2" victim"#)
        .arg("sh")
        .arg(&docker)
        .arg(&vault)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(victim.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    let vp = victim.id().to_string();
    let (reader, st) = actor(&["vm-read", &vp, f[0], f[1]], None, None);
    assert!(st.success());
    let in_docker = open_in(&docker, &key);
    let in_service = open_in(&service, &key);
    let (here, st) = actor(&["open", key.to_str().unwrap()], None, None);
    assert!(st.success());
    let alerts = s.alerts_until_marker(&marker);

    let slice_path = format!("/{}", slice.file_name().unwrap().to_str().unwrap());
    let a = &key_open(&alerts, in_docker)["process"];
    assert_eq!(
        a["cgroup"],
        format!("{slice_path}/docker-{ID}.scope"),
        "{a:#}"
    );
    assert_eq!(a["unit"], format!("docker-{ID}.scope"), "{a:#}");
    assert_eq!(a["container"]["runtime"], "docker", "{a:#}");
    assert_eq!(a["container"]["id"], ID, "{a:#}");

    let a = &key_open(&alerts, in_service)["process"];
    assert_eq!(a["cgroup"], format!("{slice_path}/vault.service"), "{a:#}");
    assert_eq!(a["unit"], "vault.service", "{a:#}");
    assert!(
        a.get("container").is_none(),
        "a service is no container: {a:#}"
    );

    // The test's own process: its own cgroup.
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    let a = &key_open(&alerts, here)["process"];
    assert_eq!(a["cgroup"], own, "{a:#}");

    // A process outside reading the protected one: the target's
    // container is named.
    let r: Vec<_> = alerts
        .iter()
        .filter(|a| a["process"]["pid"] == reader)
        .collect();
    assert_eq!(r.len(), 1, "{alerts:#?}");
    assert_eq!(r[0]["rule"], "process-vm-read");
    assert_eq!(r[0]["target"]["pid"], victim.id(), "{:#}", r[0]);
    assert_eq!(r[0]["target"]["container"]["id"], ID, "{:#}", r[0]);
    assert_eq!(r[0]["target"]["container"]["runtime"], "docker");
    assert!(r[0]["process"].get("container").is_none(), "{:#}", r[0]);
    drop(victim.stdin.take());
    let _ = victim.wait();
    drop(s);
}
