//! Kernel-free: `keysentry replay` of the committed recording of a real
//! attack chain (`tests/fixtures/attack-chain.ksrec`, written by
//! `incident.rs` with `KEYSENTRY_UPDATE_FIXTURES=1`: a protected process
//! holding an Ed25519 key is dumped with ptrace + /proc/<pid>/mem, the dump
//! is copied with cp and the copy sent to 127.0.0.1). No root, no BPF: the
//! recording carries the raw kernel records and every /proc read.

mod common;

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
};

use common::*;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn expected() -> Vec<Value> {
    std::fs::read_to_string(fixture("attack-chain.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn incidents(v: &[Value]) -> Vec<&Value> {
    v.iter().filter(|v| v["type"] == "incident").collect()
}

fn alerts<'a>(v: &'a [Value], rule: &str) -> Vec<&'a Value> {
    v.iter().filter(|v| v["rule"] == rule).collect()
}

/// The config the recording was made with (its header, the first record:
/// magic, u32 LE length, type `H`, JSON).
fn recorded_config() -> String {
    let data = std::fs::read(fixture("attack-chain.ksrec")).unwrap();
    assert_eq!(&data[..7], b"KSREC1\n");
    let len = u32::from_le_bytes(data[7..11].try_into().unwrap()) as usize;
    assert_eq!(data[11], b'H');
    let h: Value = serde_json::from_slice(&data[12..11 + len]).unwrap();
    h["config"].as_str().unwrap().to_string()
}

#[test]
fn the_recorded_attack_chain_replays_to_the_recorded_output() {
    assert_eq!(replay(&fixture("attack-chain.ksrec"), &[]), expected());
}

#[test]
fn the_recorded_chain_is_one_critical_incident_from_access_to_key_material() {
    let out = replay(&fixture("attack-chain.ksrec"), &[]);
    let closed: Vec<&Value> = incidents(&out)
        .into_iter()
        .filter(|i| i["status"] == "closed")
        .collect();
    assert_eq!(closed.len(), 1, "{closed:#?}");
    let inc = closed[0];
    assert_eq!(inc["severity"], "critical");
    assert_eq!(inc["score"], 100);
    assert_eq!(
        inc["stages"],
        serde_json::json!(["access", "dump", "copy", "send", "key"])
    );
    // Every alert of the run belongs to it, in order of its steps.
    let id = inc["id"].as_str().unwrap();
    let rules: Vec<&str> = out
        .iter()
        .filter(|v| v["type"] != "incident")
        .map(|a| {
            assert_eq!(a["incident"], id, "{a:#}");
            a["rule"].as_str().unwrap()
        })
        .collect();
    let steps: Vec<&str> = inc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, steps);
    for r in [
        "ptrace-attach",
        "proc-mem-open",
        "userspace-dump",
        "tracked-copy",
        "exfiltration",
        "key-material",
    ] {
        assert!(steps.contains(&r), "{r} missing from {steps:?}");
    }
    // The copy's lineage leads back to the dump of the protected process,
    // and the key found in the copy is the one found in the dump.
    let copy = alerts(&out, "tracked-copy")[0];
    let lineage = copy["flow"]["lineage"].as_array().unwrap();
    assert_eq!(lineage[0]["kind"], "dump");
    assert_eq!(lineage[0]["how"], "userspace-dump");
    assert_eq!(copy["flow"]["dumped"]["comm"], "ks-victim");
    let km = alerts(&out, "key-material");
    assert_eq!(km.len(), 2);
    let fp = |a: &Value| a["flow"]["keys"]["findings"][0]["fingerprint"].clone();
    assert!(fp(km[0]).as_str().unwrap().starts_with("SHA256:"));
    assert_eq!(fp(km[0]), fp(km[1]));
    let send = alerts(&out, "exfiltration")[0];
    assert_eq!(send["flow"]["protocol"], "tcp");
    assert_eq!(send["flow"]["lineage"][0]["kind"], "dump");
}

#[test]
fn scoring_comes_from_the_config_given_to_replay() {
    // The same events under another [scoring]: ptrace-attach is worth 10
    // and an incident is critical only from 100 (high from 95).
    let dir = tempdir();
    let cfg = dir.path().join("rescore.toml");
    let mut f = std::fs::File::create(&cfg).unwrap();
    write!(
        f,
        "{}\n[scoring.base]\nptrace-attach = 10\n\n[scoring.thresholds]\ncritical = 100\nhigh = 95\nmedium = 40\nlow = 1\n",
        recorded_config()
    )
    .unwrap();
    drop(f);
    let out = replay(
        &fixture("attack-chain.ksrec"),
        &["--config", cfg.to_str().unwrap()],
    );
    let before = expected();
    let attach = alerts(&out, "ptrace-attach")[0];
    let was = alerts(&before, "ptrace-attach")[0];
    let weights = was["score"].as_u64().unwrap() - 80;
    assert_eq!(
        attach["score"].as_u64().unwrap(),
        10 + weights,
        "{attach:#}"
    );
    assert_eq!(attach["severity"], "low");
    // proc-mem-open (95 before) is now high, not critical.
    let mem = alerts(&out, "proc-mem-open")[0];
    assert_eq!(mem["score"], alerts(&before, "proc-mem-open")[0]["score"]);
    assert_eq!(mem["severity"], "high");
    // The same chain still reaches 100 and is critical.
    let inc = *incidents(&out).last().unwrap();
    assert_eq!(inc["score"], 100);
    assert_eq!(inc["severity"], "critical");
}

#[test]
fn a_damaged_recording_is_refused_with_where_it_is_damaged() {
    let dir = tempdir();
    let data = std::fs::read(fixture("attack-chain.ksrec")).unwrap();
    let run = |bytes: &[u8]| {
        let p = dir.path().join("bad.ksrec");
        std::fs::write(&p, bytes).unwrap();
        let out = Command::new(keysentry_bin())
            .arg("replay")
            .arg(&p)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty(), "nothing is printed from a bad file");
        String::from_utf8(out.stderr).unwrap()
    };
    let e = run(&data[..data.len() - 3]);
    assert!(e.contains("truncated"), "{e}");
    let e = run(b"not a recording");
    assert!(e.contains("not a keysentry recording"), "{e}");
    let mut bad = data.clone();
    let len = u32::from_le_bytes(bad[7..11].try_into().unwrap()) as usize;
    // The record after the header gets an unknown type.
    bad[11 + len + 4] = b'?';
    let e = run(&bad);
    assert!(e.contains(&format!("record at byte {}", 11 + len)), "{e}");
}

/// A recording whose config names a file and syslog output (planted, or
/// made on another host) replays to stdout only: the replay writes nowhere
/// the recording says.
#[test]
fn a_replay_never_writes_where_the_recording_says() {
    let dir = tempdir();
    let planted = dir.path().join("planted.log");
    let data = std::fs::read(fixture("attack-chain.ksrec")).unwrap();
    let len = u32::from_le_bytes(data[7..11].try_into().unwrap()) as usize;
    let mut h: Value = serde_json::from_slice(&data[12..11 + len]).unwrap();
    let cfg = h["config"].as_str().unwrap().replace(
        "[alerts]",
        &format!("[alerts]\nfile = \"{}\"\nsyslog = true", planted.display()),
    );
    assert!(
        cfg.contains("planted.log"),
        "the recorded config has an [alerts] table"
    );
    h["config"] = cfg.into();
    let header = serde_json::to_vec(&h).unwrap();
    let mut out = data[..7].to_vec();
    out.extend_from_slice(&(header.len() as u32 + 1).to_le_bytes());
    out.push(b'H');
    out.extend_from_slice(&header);
    out.extend_from_slice(&data[11 + len..]);
    let rec = dir.path().join("planted.ksrec");
    std::fs::write(&rec, out).unwrap();
    assert_eq!(replay(&rec, &[]), expected());
    assert!(
        !planted.exists(),
        "the replay wrote to {}",
        planted.display()
    );
}
