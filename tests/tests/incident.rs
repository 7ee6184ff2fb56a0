//! Incidents, scores and record/replay against the real attack chain of
//! the brief: a signing service (protected) holds an Ed25519 key in memory;
//! an actor dumps its memory with ptrace + /proc/<pid>/mem into a file, `cp`
//! copies the dump, another actor sends the copy to a 127.0.0.1 listener,
//! and the scanner finds the key in the dump and in its copy. The live run
//! records; `keysentry replay` of the recording prints the same alerts and
//! incident records.
//!
//! With `KEYSENTRY_UPDATE_FIXTURES=1` the test also writes the trimmed
//! recording and its replay output to `tests/fixtures/` (the kernel-free
//! replay tests in `replay.rs` read them).

mod common;

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use common::{
    lab::{fresh_key, spawn_args},
    *,
};
use serde_json::Value;

fn rules_of(v: &Value, field: &str) -> Vec<String> {
    v[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| s["rule"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn attack_chain_is_one_critical_incident_and_replays_identically() {
    require_root();
    let l = lab::lab();
    let (pem, fingerprint) = fresh_key();
    let key = l.root.join("keys/signing.pem");
    std::fs::write(&key, &pem).unwrap();
    let rec = l.root.join("chain.ksrec");
    let cfg = format!(
        "{}\n[[allow]]\nexe = \"{}\"\nkey_path = \"{}\"\n",
        lab::config(&l),
        l.victim_bin.display(),
        l.root.join("keys").display(),
    );
    let mut s = Sensor::start_with(&l.root, &cfg, &["--record", rec.to_str().unwrap()]);

    // The signing service loads its key (allowed) and keeps it in memory.
    let (mut victim, vp) = spawn_args(&l.victim_bin, &["victim-key", key.to_str().unwrap()]);
    let dump = l.root.join("dump.bin");
    let (dumper, st) = actor(
        &["ptrace-dump", &vp.to_string(), dump.to_str().unwrap()],
        None,
        None,
    );
    assert!(st.success());
    let stolen = l.root.join("stolen.bin");
    let mut cp = Command::new("cp").arg(&dump).arg(&stolen).spawn().unwrap();
    let cp_pid = cp.id();
    assert!(cp.wait().unwrap().success());
    let port = listener();
    let (sender, st) = actor(
        &["send-file", stolen.to_str().unwrap(), &port.to_string()],
        None,
        None,
    );
    assert!(st.success());
    // The scanner reports on its own thread: wait for both of its alerts
    // and for the send.
    let mut alerts = Vec::new();
    let done = |a: &[Value]| {
        let km: BTreeSet<&str> = a
            .iter()
            .filter(|a| a["rule"] == "key-material")
            .filter_map(|a| a["target"]["path"].as_str())
            .collect();
        km.contains(dump.to_str().unwrap())
            && km.contains(stolen.to_str().unwrap())
            && a.iter().any(|a| a["rule"] == "exfiltration")
    };
    while !done(&alerts) {
        alerts
            .extend(s.alerts_until(|a| a["rule"] == "key-material" || a["rule"] == "exfiltration"));
    }
    drop(victim.stdin.take());
    let _ = victim.wait();
    let (rest, incidents) = s.stop_and_drain();
    let live: Vec<Value> = alerts.into_iter().chain(rest).collect();

    // Every step of the chain names one incident.
    let step = |rule: &str, pid: u32| -> &Value {
        let v = by_pid(&live, rule, pid);
        assert!(!v.is_empty(), "no {rule} by {pid}: {live:#?}");
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
        format!("127.0.0.1:{port}").as_str(),
        "{:#}",
        chain[4]
    );
    let km: Vec<&Value> = live
        .iter()
        .filter(|a| a["rule"] == "key-material")
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

    // Scores come from [scoring]: ptrace-attach base 80 plus context.
    assert_eq!(attach["count"], 1);
    let factors = rules_of(attach, "factors");
    assert!(factors.iter().any(|f| f == "recent_start"), "{attach:#}");
    let actor_weights = factors
        .iter()
        .filter(|f| ["uid_differs", "recent_start", "interactive_shell"].contains(&f.as_str()))
        .count() as u64;
    assert_eq!(
        attach["score"].as_u64().unwrap(),
        80 + 5 * actor_weights,
        "{attach:#}"
    );

    // The incident: open records as it grew, then one closed at exit with
    // every stage of the chain, critical.
    let mine: Vec<&Value> = incidents
        .iter()
        .filter(|i| i["id"] == id.as_str())
        .collect();
    let last = *mine.last().expect("incident records");
    assert_eq!(last["status"], "closed", "{last:#}");
    assert_eq!(last["severity"], "critical", "{last:#}");
    assert_eq!(
        rules_of(last, "stages"),
        ["access", "dump", "copy", "send", "key"],
        "{last:#}"
    );
    let steps = rules_of(last, "steps");
    for r in [
        "ptrace-attach",
        "proc-mem-open",
        "userspace-dump",
        "tracked-copy",
        "exfiltration",
        "key-material",
    ] {
        assert!(steps.iter().any(|s| s == r), "{r} missing: {steps:?}");
    }
    eprintln!("incident record: {last}");

    // Fingerprints only: no alert or incident holds the key.
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    for v in live.iter().chain(&incidents) {
        assert!(!v.to_string().contains(&body), "key bytes in {v}");
    }

    // Replay: the same alerts and incident records, without a kernel.
    let fixtures = std::env::var_os("KEYSENTRY_UPDATE_FIXTURES").is_some();
    let trimmed = l.root.join("trimmed.ksrec");
    let replayed = replay(&rec, &["--trim", trimmed.to_str().unwrap()]);
    let (r_inc, r_alerts): (Vec<Value>, Vec<Value>) = replayed
        .iter()
        .cloned()
        .partition(|v| v["type"] == "incident");
    assert_eq!(r_alerts, live, "replayed alerts differ from the live run");
    assert_eq!(
        r_inc, incidents,
        "replayed incidents differ from the live run"
    );
    // The trimmed recording (start snapshot cut to the processes the
    // replay looked at) replays the same.
    assert_eq!(replay(&trimmed, &[]), replayed);
    if fixtures {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&trimmed, dir.join("attack-chain.ksrec")).unwrap();
        let lines: String = replayed.iter().map(|v| format!("{v}\n")).collect();
        std::fs::write(dir.join("attack-chain.jsonl"), lines).unwrap();
        eprintln!("wrote {}", dir.display());
    }
}
