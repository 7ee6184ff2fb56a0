//! `keyring-read`: another user's kernel keys. Re-enacted with keyutils:
//! uid 65534 keeps a secret in its persistent keyring; root, in a session
//! of its own, takes that persistent keyring (`keyctl get_persistent @s
//! 65534`: an alert wherever the keyctl tracepoint is) and prints the
//! secret (`keyctl print`: an alert where BPF LSM runs, its key_permission
//! hook). Not alerts: uid 65534 taking its own persistent keyring, adding
//! the key and printing it (in a session of its own, as a login has).

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

const RULE: &str = "keyring-read";
const NOBODY: u32 = 65534;

/// `sh -c CMD` as `uid` (None: root), its stdout; panics when it fails.
fn sh_as(uid: Option<u32>, cmd: &str) -> String {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new("sh");
    c.args(["-c", cmd]).current_dir("/").stderr(Stdio::piped());
    if let Some(u) = uid {
        c.uid(u).gid(u);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "sh -c {cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Revokes the test's key whatever happens (as its owner, in a session
/// where it possesses its persistent keyring).
struct Revoke(String);

impl Drop for Revoke {
    fn drop(&mut self) {
        use std::os::unix::process::CommandExt;
        let _ = Command::new("keyctl")
            .args(["session", "-", "sh", "-c"])
            .arg(format!(
                "keyctl get_persistent @s >/dev/null && keyctl revoke {}",
                self.0
            ))
            .uid(NOBODY)
            .gid(NOBODY)
            .current_dir("/")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn keyring_alerts<'a>(alerts: &'a [Value], op: &str) -> Vec<&'a Value> {
    alerts
        .iter()
        .filter(|a| a["rule"] == RULE && a["keyring"]["op"] == op)
        .collect()
}

#[test]
fn another_users_kernel_keys_read() {
    require_root();
    if !have("keyctl") {
        println!("SKIPPED: keyctl (keyutils) is not installed");
        return;
    }
    // Persistent keyrings need CONFIG_PERSISTENT_KEYRINGS.
    let probe = Command::new("keyctl")
        .args(["get_persistent", "@s"])
        .output()
        .unwrap();
    if !probe.status.success() {
        println!(
            "SKIPPED: this kernel has no persistent keyrings ({})",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
        return;
    }
    let lsm = lsm_unavailable();
    let tmp = tempdir();
    let root = tmp.path().to_path_buf();
    let marker = keys_with_marker(&root);
    let config = format!("[[key_path]]\npath = \"{}\"\n", root.join("keys").display());
    let mut s = Sensor::start(&root, &config);

    // Its owner, in a session of its own: no alert.
    let out = sh_as(
        Some(NOBODY),
        "keyctl session - sh -c 'P=$(keyctl get_persistent @s) && K=$(keyctl add user ks-test-secret not-a-real-secret \"$P\") && echo $K && keyctl print $K'",
    );
    let mut lines = out.lines();
    let serial = lines.next().unwrap_or_default().to_string();
    let _revoke = Revoke(serial.clone());
    assert_eq!(lines.next(), Some("not-a-real-secret"), "{out}");
    // Root, in a session of its own: the persistent keyring, then the key.
    let stolen = sh_as(
        None,
        &format!(
            "keyctl session - sh -c 'keyctl get_persistent @s {NOBODY} >/dev/null && keyctl print {serial}'"
        ),
    );
    assert_eq!(stolen, "not-a-real-secret");
    let alerts = s.alerts_until_marker(&marker);

    let taken = keyring_alerts(&alerts, "persistent");
    assert_eq!(taken.len(), 1, "{alerts:#?}");
    let a = taken[0];
    assert_eq!(a["severity"], "high", "{a:#}");
    assert_eq!(a["attack"], "T1555");
    assert_eq!(a["process"]["comm"], "keyctl");
    assert_eq!(a["process"]["uid"], 0);
    assert_eq!(a["keyring"]["owner_uid"], NOBODY);
    assert_eq!(a["keyring"]["result"], "success");

    let read = keyring_alerts(&alerts, "read");
    match &lsm {
        None => {
            assert_eq!(read.len(), 1, "{alerts:#?}");
            let a = read[0];
            assert_eq!(a["process"]["comm"], "keyctl");
            assert_eq!(a["keyring"]["fsuid"], 0);
            assert_eq!(a["keyring"]["owner_uid"], NOBODY);
            assert_eq!(a["keyring"]["serial"].to_string(), serial);
            assert_eq!(a["keyring"]["key_type"], "user");
            assert_eq!(a["keyring"]["description"], "ks-test-secret");
            assert_eq!(a["target"]["path"], format!("key:{serial}"));
            // Never the key's bytes.
            assert!(
                !serde_json::to_string(a)
                    .unwrap()
                    .contains("not-a-real-secret"),
                "{a:#}"
            );
        }
        Some(why) => {
            assert!(read.is_empty(), "{read:#?}");
            println!("SKIPPED read part: BPF LSM is not available {why}");
        }
    }
    // The owner's own actions: nothing.
    let by_owner: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["rule"] == RULE && a["process"]["uid"] == NOBODY)
        .collect();
    assert!(by_owner.is_empty(), "{by_owner:#?}");
}
