//! Containers and namespaces (issue 17). Where a process runs: every
//! alert's `process` names its cgroup v2 path, the systemd unit and the
//! container that path names. Files a process writes in its own mount
//! namespace (a container's /tmp) are read through its root.
//! The test makes cgroups shaped like docker's systemd-driver scope and a
//! service's, runs a real key read in each and a read of a protected
//! process in the container, and reads the alerts.

mod common;

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use common::{lab::*, *};
use serde_json::Value;

const ID: &str = "5e1f00d5c0ffee0123456789abcdef0123456789abcdef0123456789abcdef01";
const ID2: &str = "5e1f00d5c0ffee02aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbcccccccccccccccc";

/// Docker's state for container `id` under `root` (`[containers]
/// docker_root`): its name and the image it was run with.
fn docker_state(root: &Path, id: &str, name: &str, image: &str) {
    let d = root.join("containers").join(id);
    std::fs::create_dir_all(&d).unwrap();
    let state =
        serde_json::json!({"ID": id, "Name": format!("/{name}"), "Config": {"Image": image}});
    std::fs::write(d.join("config.v2.json"), state.to_string()).unwrap();
}

/// The cgroup2 mount, when it has one and new cgroups can be made there.
fn cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|d| d.join("cgroup.procs").exists() && !d.join("tasks").exists())
}

/// Whether util-linux's `unshare` is here (SKIP printed when not).
fn have_unshare() -> bool {
    let ok = shell("command -v unshare").is_some();
    if !ok {
        println!("SKIPPED: no unshare (util-linux)");
    }
    ok
}

/// `sh -c SCRIPT sh ARGS` in a mount namespace of its own (`unshare -m`,
/// private propagation), with piped stdin and stdout: the shell, its
/// stdout and the first line it printed.
fn unshare_sh(
    script: &str,
    args: &[&std::ffi::OsStr],
) -> (
    std::process::Child,
    BufReader<std::process::ChildStdout>,
    String,
) {
    let mut sh = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(sh.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    (sh, out, line)
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

/// `PROG victim` run inside cgroup `dir` (it joins before its exec), with
/// piped stdin and stdout, and the (address, length) it printed first.
fn victim_in(dir: &Path, prog: &Path) -> (std::process::Child, Vec<String>) {
    let mut c = Command::new("sh")
        .arg("-c")
        .arg(r#"echo $$ > "$1/cgroup.procs" && exec "$2" victim"#)
        .arg("sh")
        .arg(dir)
        .arg(prog)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(c.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (c, line.split_whitespace().map(String::from).collect())
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
        println!("SKIPPED: no cgroup v2 hierarchy to make test cgroups in");
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
    let docker2 = slice.join(format!("docker-{ID2}.scope"));
    let service = slice.join("vault.service");
    let signer = slice.join("signer.service");
    // A user's own systemd manager's tree: a unit of the same name there
    // is its user's to name.
    let user_mgr = slice.join("user@4242.service");
    let user_signer = user_mgr.join("signer.service");
    let mut made = Cgroups(Vec::new());
    for d in [
        &slice,
        &docker,
        &docker2,
        &service,
        &signer,
        &user_mgr,
        &user_signer,
    ] {
        if let Err(e) = std::fs::create_dir(d) {
            println!("SKIPPED: cannot make cgroup {}: {e}", d.display());
            return;
        }
        made.0.push(d.clone());
    }

    // A protected program (a copy of ks-actor) in the container, and
    // everything in the service's cgroup protected by its cgroup path.
    let vault = dir.join("ks-vault");
    std::fs::copy(actor_bin(), &vault).unwrap();
    std::fs::set_permissions(&vault, std::fs::Permissions::from_mode(0o755)).unwrap();
    let slice_path = format!("/{}", slice.file_name().unwrap().to_str().unwrap());
    // The runtime's state names the containers (a docker data root of
    // the test's own).
    let docker_root = dir.join("docker");
    docker_state(&docker_root, ID, "ks-vault-c", "hashicorp/vault:1.15");
    docker_state(
        &docker_root,
        ID2,
        "ks-signer-c",
        "registry.example:5000/signer:3",
    );
    // ks-actor may open the keys, but only in signer.service.
    let mut s = Sensor::start(
        dir,
        &format!(
            "[[key_path]]\npath = \"{}\"\n\n[[protected]]\nexe = \"{}\"\n\n[[protected]]\ncgroup = \"{slice_path}/vault.service\"\n\n[[protected]]\nunit = \"signer.service\"\n\n[[protected]]\ncontainer_image = \"registry.example:5000/signer\"\n\n[[allow]]\nexe = \"{}\"\nunit = \"signer.service\"\n\n[containers]\ndocker_root = \"{}\"\n",
            dir.join("keys").display(),
            vault.display(),
            actor_bin().display(),
            docker_root.display(),
        ),
    );
    // A program in the service's cgroup, one of the unit a
    // `[[protected]] unit` names and one in a container: their execs (protection by cgroup or
    // unit is decided there) are handled once the marker is through.
    let (service_victim, sf) = victim_in(&service, &actor_bin());
    let (unit_victim, uf) = victim_in(&signer, &actor_bin());
    // And one protected by its container's image.
    let (image_victim, imf) = victim_in(&docker2, &actor_bin());
    let _ = s.alerts_until_marker(&marker);
    let sp = service_victim.id().to_string();
    let (service_reader, st) = actor(&["vm-read", &sp, &sf[0], &sf[1]], None, None);
    assert!(st.success());
    let up = unit_victim.id().to_string();
    let (unit_reader, st) = actor(&["vm-read", &up, &uf[0], &uf[1]], None, None);
    assert!(st.success());
    let (victim, f) = victim_in(&docker, &vault);
    let vp = victim.id().to_string();
    let (reader, st) = actor(&["vm-read", &vp, &f[0], &f[1]], None, None);
    assert!(st.success());
    let ip = image_victim.id().to_string();
    let (image_reader, st) = actor(&["vm-read", &ip, &imf[0], &imf[1]], None, None);
    assert!(st.success());
    let in_docker = open_in(&docker, &key);
    let in_service = open_in(&service, &key);
    let in_signer = open_in(&signer, &key);
    let in_user_signer = open_in(&user_signer, &key);
    let (here, st) = actor(&["open", key.to_str().unwrap()], None, None);
    assert!(st.success());
    let alerts = s.alerts_until_marker(&marker);

    let a = &key_open(&alerts, in_docker)["process"];
    assert_eq!(
        a["cgroup"],
        format!("{slice_path}/docker-{ID}.scope"),
        "{a:#}"
    );
    assert_eq!(a["unit"], format!("docker-{ID}.scope"), "{a:#}");
    assert_eq!(a["container"]["runtime"], "docker", "{a:#}");
    assert_eq!(a["container"]["id"], ID, "{a:#}");
    assert_eq!(a["container"]["name"], "ks-vault-c", "{a:#}");
    assert_eq!(a["container"]["image"], "hashicorp/vault:1.15", "{a:#}");

    // `[[allow]] unit`: the allowed program in its unit opens quietly;
    // the same program elsewhere, and in a user's unit of that name, is
    // an alert.
    assert!(
        !alerts.iter().any(|a| a["process"]["pid"] == in_signer),
        "allowed in signer.service: {alerts:#?}"
    );
    let a = &key_open(&alerts, in_user_signer)["process"];
    assert_eq!(a["unit"], "signer.service", "{a:#}");
    assert_eq!(
        a["cgroup"],
        format!("{slice_path}/user@4242.service/signer.service"),
        "{a:#}"
    );

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

    // The one alert of `reader`: its read of `target`.
    let read_by = |reader: u32, target: u32| -> &Value {
        let r: Vec<_> = alerts
            .iter()
            .filter(|a| a["process"]["pid"] == reader)
            .collect();
        assert_eq!(r.len(), 1, "{alerts:#?}");
        assert_eq!(r[0]["rule"], "process-vm-read", "{:#}", r[0]);
        assert_eq!(r[0]["target"]["pid"], target, "{:#}", r[0]);
        r[0]
    };
    // A protected process read by a process of another rule: high, the
    // rule named.
    let protected_read = |reader: u32, target: u32, why: &str| -> &Value {
        let r = read_by(reader, target);
        assert_eq!(r["target"]["protected"], why, "{r:#}");
        assert_eq!(r["memory"]["target_protected"], true, "{r:#}");
        assert_eq!(r["severity"], "high", "{r:#}");
        r
    };
    // A process outside reading the protected one: the target's
    // container is named.
    let r = read_by(reader, victim.id());
    assert_eq!(r["target"]["container"]["id"], ID, "{r:#}");
    assert_eq!(r["target"]["container"]["runtime"], "docker");
    assert_eq!(r["target"]["container"]["name"], "ks-vault-c");
    // A process of a container whose image a [[protected]] rule names.
    let r = protected_read(
        image_reader,
        image_victim.id(),
        "[[protected]] container_image = registry.example:5000/signer",
    );
    assert_eq!(r["target"]["container"]["name"], "ks-signer-c", "{r:#}");
    assert!(r["process"].get("container").is_none(), "{r:#}");
    // A process of a cgroup a [[protected]] rule names is protected.
    protected_read(
        service_reader,
        service_victim.id(),
        &format!("[[protected]] cgroup = {slice_path}/vault.service"),
    );
    // A process of a unit a [[protected]] rule names, whatever its slice.
    protected_read(
        unit_reader,
        unit_victim.id(),
        "[[protected]] unit = signer.service",
    );
    for mut c in [victim, service_victim, unit_victim, image_victim] {
        drop(c.stdin.take());
        let _ = c.wait();
    }
    drop(s);
}

#[test]
fn files_in_a_private_mount_are_read_from_their_writers_root() {
    if !have_unshare() {
        return;
    }
    let l = lab();
    let (pem, fp) = fresh_key();
    let key = l.root.join("keys/signing.pem");
    std::fs::write(&key, pem).unwrap();
    // Exists here as an empty directory; the writer mounts its own tmpfs
    // on it, as a container's /tmp or a PrivateTmp service's is.
    let private = l.root.join("private");
    std::fs::create_dir(&private).unwrap();
    let mut s = Sensor::start(&l.root, &config(&l));
    let (mut victim, vp) = spawn_victim(&l.victim_bin);
    let _ = s.alerts_until_marker(&l.marker);

    // A shell in its own mount namespace dumps the protected process and
    // copies the key into its private mount, then waits (its namespace,
    // and the files, live while it does).
    let vps = vp.to_string();
    let (mut sh, _out, line) = unshare_sh(
        r#"mount -t tmpfs ks-private "$4" && "$1" ptrace-dump "$2" "$4/vault.dump" && cp "$3" "$4/exported.pem" && echo done && read x"#,
        &[
            actor_bin().as_ref(),
            vps.as_ref(),
            key.as_ref(),
            private.as_ref(),
        ],
    );
    assert_eq!(line.trim(), "done");
    let alerts = s.alerts_until(|a| a["rule"] == "key-material");
    drop(sh.stdin.take());
    let _ = sh.wait();
    drop(victim.stdin.take());
    let _ = victim.wait();

    // Nothing of this is in keysentry's own namespace.
    let dump = private.join("vault.dump");
    let copy = private.join("exported.pem");
    assert!(!dump.exists() && !copy.exists());
    let d = about(&alerts, "userspace-dump", &dump);
    assert_eq!(d.len(), 1, "{alerts:#?}");
    assert_eq!(d[0]["flow"]["dumped"]["pid"], vp);
    // Its format comes from its first bytes, read through the writer's root.
    assert_eq!(d[0]["flow"]["format"], "raw", "{:#}", d[0]);
    let km = about(&alerts, "key-material", &copy);
    assert_eq!(km.len(), 1, "the copy was scanned: {alerts:#?}");
    assert_eq!(km[0]["flow"]["keys"]["findings"][0]["fingerprint"], fp);
}

/// `[[key_path]] scope = "all"`: a container's own file at a key path (an
/// overlay over the host's key directory, as an image layer puts one
/// there) is a key in that container. Two key directories, each with an
/// overlay in the container's mount namespace: the scope-"all" one's file
/// there is watched (its open alerts, naming the container's namespaces
/// and container); the scope-"host" one's is not, though the host's file
/// at the same path is.
#[test]
fn a_scope_all_key_path_is_a_key_inside_a_container_too() {
    if !have_unshare() {
        return;
    }
    let l = lab();
    // An overlay mount in a throwaway namespace (the module loads on use).
    let probe = l.root.join("probe");
    for d in ["l", "u", "w", "m"] {
        std::fs::create_dir_all(probe.join(d)).unwrap();
    }
    let st = Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "mount",
            "-t",
            "overlay",
            "ks-probe",
            "-o",
        ])
        .arg(format!(
            "lowerdir={0}/l,upperdir={0}/u,workdir={0}/w",
            probe.display()
        ))
        .arg(probe.join("m"))
        .status()
        .unwrap();
    if !st.success() {
        println!("SKIPPED: no overlay mount here (no overlay file system in this kernel?)");
        return;
    }
    let store = l.root.join("store");
    let hostonly = l.root.join("hostonly");
    let layers = l.root.join("layers");
    for d in [&store, &hostonly, &layers] {
        std::fs::create_dir(d).unwrap();
    }
    let (host_pem, _) = fresh_key();
    let (image_pem, _) = fresh_key();
    std::fs::write(store.join("signing.pem"), &host_pem).unwrap();
    std::fs::write(hostonly.join("tls.pem"), &host_pem).unwrap();
    let image_key = l.root.join("image.pem");
    std::fs::write(&image_key, &image_pem).unwrap();
    // A container cgroup, where cgroup v2 lets the test make one.
    let mut made = Cgroups(Vec::new());
    let docker = cgroup2_root().and_then(|r| {
        let d = r.join(format!("docker-{ID}.scope"));
        std::fs::create_dir(&d).ok()?;
        made.0.push(d.clone());
        Some(d)
    });
    if docker.is_none() {
        println!("SKIPPED (container fields): no cgroup v2 hierarchy to make a test cgroup in");
    }
    let mut s = Sensor::start(
        &l.root,
        &format!(
            "{}\n[[key_path]]\npath = \"{}\"\nscope = \"all\"\n\n[[key_path]]\npath = \"{}\"\nscope = \"host\"\n",
            config(&l),
            store.display(),
            hostonly.display()
        ),
    );
    let _ = s.alerts_until_marker(&l.marker);

    // The container: its own mount namespace, an overlay over each key
    // directory with the image's key in it, then its entrypoint's exec
    // (a shell that, when told to, opens one key itself and keeps it open,
    // and runs a program that reads the other).
    let (mut sh, mut out, mut line) = unshare_sh(
        r#"if [ -n "$6" ]; then echo $$ > "$6/cgroup.procs" || exit 1; fi
L="$3"
mount -t tmpfs ks-layers "$L" && mkdir "$L/u1" "$L/w1" "$L/u2" "$L/w2" &&
cp "$4" "$L/u1/signing.pem" && cp "$4" "$L/u2/tls.pem" &&
mount -t overlay ks-image -o "lowerdir=$1,upperdir=$L/u1,workdir=$L/w1" "$1" &&
mount -t overlay ks-image -o "lowerdir=$2,upperdir=$L/u2,workdir=$L/w2" "$2" &&
exec sh -c 'echo ready; read x; exec 3< "$2/signing.pem" && "$1" open "$3/tls.pem" && echo done; read y' sh "$5" "$1" "$2""#,
        &[
            store.as_ref(),
            hostonly.as_ref(),
            layers.as_ref(),
            image_key.as_ref(),
            actor_bin().as_ref(),
            docker.as_deref().unwrap_or(Path::new("")).as_ref(),
        ],
    );
    assert_eq!(line.trim(), "ready");
    let cpid = sh.id();
    let inside = PathBuf::from(format!("/proc/{cpid}/root"));
    let ino_in = |p: &Path| ino(&inside.join(p.strip_prefix("/").unwrap()));
    let image_ino = ino_in(&store.join("signing.pem"));
    assert_ne!(image_ino, ino(&store.join("signing.pem")));
    // keysentry resolved the scope-"all" path in the new namespace: the
    // overlay's directory and its file (nothing of the scope-"host" one).
    let end = std::time::Instant::now() + deadline();
    while s
        .metric("keysentry_namespace_watched_inodes")
        .is_none_or(|n| n < 2.0)
    {
        assert!(
            std::time::Instant::now() < end,
            "the container's key path was never resolved"
        );
        std::thread::yield_now();
    }
    let mut stdin = sh.stdin.take().unwrap();
    use std::io::Write;
    writeln!(stdin).unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "done");
    // The host's files at the same paths, read on the host.
    for p in [store.join("signing.pem"), hostonly.join("tls.pem")] {
        let (_, st) = actor(&["open", p.to_str().unwrap()], None, None);
        assert!(st.success());
    }
    let alerts = s.alerts_until_marker(&l.marker);
    let mnt_ns = std::fs::metadata(format!("/proc/{cpid}/ns/mnt"))
        .unwrap()
        .ino();
    drop(stdin);
    let _ = sh.wait();

    let opens = |p: &Path| -> Vec<&Value> {
        alerts
            .iter()
            .filter(|a| a["rule"] == "key-file-open" && a["target"]["path"] == p.to_str().unwrap())
            .collect()
    };
    // The image's key in the container: watched, and named as such.
    let signing = opens(&store.join("signing.pem"));
    let inside: Vec<_> = signing
        .iter()
        .filter(|a| a["target"]["inode"] == image_ino)
        .collect();
    assert_eq!(inside.len(), 1, "{alerts:#?}");
    let a = inside[0];
    assert_eq!(a["process"]["pid"], cpid, "{a:#}");
    assert_eq!(a["severity"], "high", "{a:#}");
    assert_eq!(a["process"]["namespaces"]["mnt"], mnt_ns, "{a:#}");
    if docker.is_some() {
        assert_eq!(a["process"]["container"]["id"], ID, "{a:#}");
    }
    // The host's own file too, read on the host (no namespaces named).
    let host: Vec<_> = signing
        .iter()
        .filter(|a| a["target"]["inode"] == ino(&store.join("signing.pem")))
        .collect();
    assert_eq!(host.len(), 1, "{alerts:#?}");
    assert!(
        host[0]["process"].get("namespaces").is_none(),
        "{:#}",
        host[0]
    );
    // Scope "host": only the host's file.
    let tls = opens(&hostonly.join("tls.pem"));
    assert_eq!(tls.len(), 1, "{alerts:#?}");
    assert_eq!(tls[0]["target"]["inode"], ino(&hostonly.join("tls.pem")));
    drop(s);
}

/// `container-escape`: from a process in its own mount namespace, the
/// host's key opened through another process's `/proc/<pid>/root` (the
/// host's mounts) is an escape; the same key opened through the
/// namespace's own copy of the mount is an ordinary `key-file-open`. A
/// cgroup v1 `release_agent` opened for writing is an escape too.
#[test]
fn a_container_reaching_the_hosts_keys_is_an_escape() {
    if !have_unshare() {
        return;
    }
    let escape_line = probes_report()
        .lines()
        .any(|l| l.contains("container-escape (key opened") && l.contains(" available ("));
    if !escape_line {
        println!("SKIPPED: this kernel's BTF lacks the mount namespace offsets (keysentry probes)");
        return;
    }
    let l = lab();
    let key = l.root.join("keys/host.pem");
    let (pem, _) = fresh_key();
    std::fs::write(&key, pem).unwrap();
    let hierarchy = l.root.join("v1");
    let mut s = Sensor::start(&l.root, &config(&l));
    let _ = s.alerts_until_marker(&l.marker);
    let me = std::process::id().to_string();
    let (mut sh, _out, line) = unshare_sh(
        r#""$1" open "$2" && "$1" open "/proc/$3/root$2" || exit 1
p=$(cat /proc/sys/kernel/core_pattern) && printf '%s\n' "$p" > /proc/sys/kernel/core_pattern || exit 1
mkdir -p "$4"
if mount -t cgroup -o none,name=ks-escape-test ks-v1 "$4" 2>/dev/null; then
  echo /bin/true > "$4/release_agent"; umount "$4"; echo agent
else
  echo no-agent
fi
read x"#,
        &[
            actor_bin().as_ref(),
            key.as_ref(),
            me.as_ref(),
            hierarchy.as_ref(),
        ],
    );
    let agent = match line.trim() {
        "agent" => true,
        "no-agent" => {
            println!("SKIPPED (release_agent): no cgroup v1 hierarchy can be mounted here");
            false
        }
        other => panic!("the shell failed: {other:?}"),
    };
    // The host's core_pattern written (its own value) from the host.
    let pattern = std::fs::read("/proc/sys/kernel/core_pattern").unwrap();
    std::fs::write("/proc/sys/kernel/core_pattern", &pattern).unwrap();
    let alerts = s.alerts_until_marker(&l.marker);
    let shp = sh.id();
    drop(sh.stdin.take());
    let _ = sh.wait();

    let of = |rule: &str| -> Vec<&Value> {
        alerts
            .iter()
            .filter(|a| a["rule"] == rule && a["process"]["ppid"] == shp)
            .collect()
    };
    // Through the namespace's own mount: the key read, no escape.
    let opens = of("key-file-open");
    assert_eq!(opens.len(), 1, "{alerts:#?}");
    assert_eq!(opens[0]["target"]["path"], key.to_str().unwrap());
    // Through the host's mounts (/proc/<pid>/root): an escape, named so.
    let esc = of("container-escape");
    assert_eq!(esc.len(), 1, "{alerts:#?}");
    let e = esc[0];
    assert_eq!(e["target"]["path"], key.to_str().unwrap(), "{e:#}");
    assert_eq!(e["target"]["inode"], ino(&key), "{e:#}");
    assert_eq!(e["severity"], "high", "{e:#}");
    assert_eq!(e["attack"], "T1611", "{e:#}");
    assert_ne!(e["process"]["pid"], opens[0]["process"]["pid"]);
    // The release_agent, written by the shell itself.
    let ra: Vec<_> = alerts
        .iter()
        .filter(|a| a["rule"] == "container-escape" && a["process"]["pid"] == shp)
        .collect();
    let by_op = |op: &str| -> Vec<&Value> {
        ra.iter()
            .copied()
            .filter(|a| a["kernel"]["op"] == op)
            .collect()
    };
    if agent {
        let ra = by_op("release_agent");
        assert_eq!(ra.len(), 1, "{alerts:#?}");
        assert_eq!(ra[0]["kernel"]["result"], "success", "{:#}", ra[0]);
    }
    // The host's core_pattern, written from the namespace: an escape in
    // place of its dump-config-change; from the host, no escape.
    let cp = by_op("core_pattern");
    assert_eq!(cp.len(), 1, "{alerts:#?}");
    assert_eq!(cp[0]["severity"], "high", "{:#}", cp[0]);
    assert_eq!(
        cp[0]["target"]["path"], "/proc/sys/kernel/core_pattern",
        "{:#}",
        cp[0]
    );
    none_by_pid(&alerts, "dump-config-change", shp, "the namespace's write");
    one_by_pid(&alerts, "dump-config-change", std::process::id());
    // Nothing else is an escape (the host's own opens, keysentry's).
    let all: Vec<_> = alerts
        .iter()
        .filter(|a| a["rule"] == "container-escape")
        .collect();
    assert_eq!(all.len(), 2 + agent as usize, "{alerts:#?}");
}
