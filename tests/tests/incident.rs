//! Incidents, scores and record/replay against a real attack chain: an
//! actor dumps a protected process's memory with ptrace + /proc/<pid>/mem
//! into a file, a sibling opens a watched key; the live run records, and
//! `keysentry replay` of the recording prints the same alerts and incident
//! records.

mod common;

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
};

use common::*;
use serde_json::Value;

#[test]
fn attack_chain_is_one_incident_and_replays_identically() {
    require_root();
    let tmp = tempdir();
    let root = tmp.path().to_path_buf();
    std::fs::create_dir(root.join("keys")).unwrap();
    let marker = root.join("keys/zz-marker");
    std::fs::write(&marker, b"m").unwrap();
    let key = root.join("keys/signing.key");
    std::fs::write(&key, b"not a real key").unwrap();
    let victim_bin = root.join("ks-victim");
    std::fs::copy(actor_bin(), &victim_bin).unwrap();
    std::fs::set_permissions(&victim_bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rec = root.join("chain.ksrec");
    let cfg = format!(
        "[[key_path]]\npath = \"{}\"\n\n[[protected]]\nexe = \"{}\"\n",
        root.join("keys").display(),
        victim_bin.display()
    );
    let mut s = Sensor::start_with(&root, &cfg, &["--record", rec.to_str().unwrap()]);

    let mut victim = Command::new(&victim_bin)
        .arg("victim")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(victim.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let vp = victim.id().to_string();
    let dump = root.join("dump.bin");
    let (dumper, st) = actor(&["ptrace-dump", &vp, dump.to_str().unwrap()], None, None);
    assert!(st.success());
    let (opener, st) = actor(&["open", key.to_str().unwrap()], None, None);
    assert!(st.success());
    let (opener2, st) = actor(&["open", key.to_str().unwrap()], None, None);
    assert!(st.success());
    let alerts = s.alerts_until_marker(&marker);
    drop(victim.stdin.take());
    let _ = victim.wait();

    // Every alert of the chain names one incident.
    let attach = by_pid(&alerts, "ptrace-attach", dumper);
    assert!(!attach.is_empty(), "{alerts:#?}");
    let id = attach[0]["incident"].as_str().unwrap().to_string();
    let mem = by_pid(&alerts, "proc-mem-open", dumper);
    assert_eq!(mem.len(), 1, "{alerts:#?}");
    assert_eq!(mem[0]["incident"], id.as_str(), "same target process");
    let open = by_pid(&alerts, "key-file-open", opener);
    assert_eq!(open.len(), 1, "{alerts:#?}");
    assert_eq!(open[0]["incident"], id.as_str(), "same parent process");
    // Another actor's open of the same key is not a repeat of the first.
    assert_eq!(by_pid(&alerts, "key-file-open", opener2).len(), 1);
    // Scores come from [scoring]: ptrace-attach base 80 plus context.
    let a = attach[0];
    assert_eq!(a["count"], 1);
    let factors: Vec<&str> = a["factors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(factors.contains(&"recent_start"), "{a:#}");
    let actor_weights = factors
        .iter()
        .filter(|f| ["uid_differs", "recent_start", "interactive_shell"].contains(f))
        .count() as u64;
    assert_eq!(
        a["score"].as_u64().unwrap(),
        80 + 5 * actor_weights,
        "{a:#}"
    );

    let (rest, incidents) = s.stop_and_drain();
    let mut live: Vec<Value> = alerts.into_iter().chain(rest).collect();
    // The chain's incident: open records as it grew, a closed one at exit.
    let mine: Vec<&Value> = incidents
        .iter()
        .filter(|i| i["id"] == id.as_str())
        .collect();
    assert!(mine.len() >= 4, "{incidents:#?}");
    let last = mine.last().unwrap();
    assert_eq!(last["status"], "closed");
    let stages: Vec<&str> = last["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(stages.starts_with(&["access", "dump"]), "{last:#}");
    let rules: Vec<&str> = last["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rule"].as_str().unwrap())
        .collect();
    assert!(
        rules.contains(&"ptrace-attach") && rules.contains(&"key-file-open"),
        "{rules:?}"
    );
    let max_step = last["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["score"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(
        last["score"].as_u64().unwrap() >= (max_step + 10).min(100),
        "{last:#}"
    );
    eprintln!("incident record: {last}");

    // Replay: the same lines, without a kernel.
    let out = Command::new(keysentry_bin())
        .arg("replay")
        .arg(&rec)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (r_inc, r_alerts): (Vec<Value>, Vec<Value>) =
        replayed.into_iter().partition(|v| v["type"] == "incident");
    // key-material comes from the scanner thread, not from an event.
    live.retain(|a| a["rule"] != "key-material");
    // alerts_until_marker consumed the live marker alert.
    let r_alerts: Vec<Value> = r_alerts
        .into_iter()
        .filter(|a| a["rule"] != "key-material")
        .filter(|a| a["target"]["path"] != marker.to_str().unwrap())
        .collect();
    assert_eq!(r_alerts, live, "replayed alerts differ from the live run");
    let r_mine: Vec<&Value> = r_inc.iter().filter(|i| i["id"] == id.as_str()).collect();
    assert_eq!(r_mine.last(), mine.last(), "the closed incident differs");
}
