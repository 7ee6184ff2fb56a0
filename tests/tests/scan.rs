//! `keysentry scan`: offline, unprivileged; exit 0 clean, 1 key found,
//! 2 unreadable file (2 wins); one JSON line per file; no key bytes.

mod common;

use std::process::Command;

use common::*;

// A throwaway Ed25519 key made for this test only.
const KEY_B64: &str = "MC4CAQAwBQYDK2VwBCIEIJ0o2LkpTHOfF3CKJ4n9W1ipS3JCm0Nfs1gJ3gx8m1gq";

#[test]
fn scan_exit_codes_and_output() {
    let dir = tempdir();
    let clean = dir.path().join("clean.bin");
    std::fs::write(&clean, vec![0x5au8; 1 << 20]).unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(
        &key,
        format!("-----BEGIN PRIVATE KEY-----\n{KEY_B64}\n-----END PRIVATE KEY-----\n"),
    )
    .unwrap();
    let missing = dir.path().join("missing");

    let scan = |files: &[&std::path::Path]| {
        let out = Command::new(keysentry_bin())
            .arg("scan")
            .args(files)
            .env_remove("KEYSENTRY_LOG")
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            !stdout.contains(&KEY_B64[16..32]),
            "key bytes printed: {stdout}"
        );
        let lines: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (out.status.code(), lines)
    };

    let (code, lines) = scan(&[&clean]);
    assert_eq!(code, Some(0));
    assert_eq!(lines[0]["report"]["findings"], serde_json::json!([]));

    let (code, lines) = scan(&[&clean, &key]);
    assert_eq!(code, Some(1));
    assert_eq!(lines.len(), 2);
    let f = &lines[1]["report"]["findings"][0];
    assert_eq!(f["kind"], "ed25519");
    assert_eq!(f["format"], "pem");
    assert!(f["fingerprint"].as_str().unwrap().starts_with("SHA256:"));
    assert_eq!(lines[1]["report"]["file_kind"], "pem");

    let (code, lines) = scan(&[&missing, &key]);
    assert_eq!(code, Some(2), "an error wins over a finding");
    assert!(lines[0]["error"].as_str().unwrap().contains("missing"));
    assert_eq!(lines[1]["report"]["findings"][0]["kind"], "ed25519");
}

/// The scan needs no privileges: it never loads the eBPF object.
#[test]
fn scan_runs_unprivileged() {
    use std::os::unix::process::CommandExt;
    require_root();
    let out = Command::new(world_executable(&keysentry_bin()))
        .args(["scan", "/bin/ls"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["report"]["file_kind"], "elf");
}
