//! `keyring-read`: a key the kernel holds for one user (a Kerberos
//! KEYRING ccache, a token, a passphrase) read by another principal, or
//! another uid's persistent keyring taken (`keyctl get_persistent @s UID`,
//! after which its keys are the caller's to search and read). The kernel
//! reports a read only once the key's own permissions granted it, and only
//! when the key's owner is not the reader's file-system uid (BPF LSM
//! `key_permission`, sensor-ebpf/src/probes/keyring.rs); a persistent
//! keyring asked for another uid, whatever the result (the keyctl exit
//! tracepoint). Not alerts: keysentry, and an `[[allow]] keyring_read =
//! true` program (NFS's rpc.gssd, gssproxy).

use sensor_common::{KEYRING_PERSISTENT, KEYRING_READ};

use crate::{
    alert::{KeyringDetail, Target},
    detect::{
        Policy, agent_socket::user_name, errno_name, kernel_reader::is_keysentry, rule_alert,
    },
    enrich::context::Context,
    ingest::decode::memory::KeyringRecord,
    rules::Rule,
};

/// A keyring record.
pub fn keyring(cx: &mut Context, policy: &Policy, r: &KeyringRecord) {
    if r.op != KEYRING_READ && r.op != KEYRING_PERSISTENT {
        return;
    }
    let actor = cx.procs.resolve(&r.task);
    if is_keysentry(cx, &actor) || policy.allowed_keyring_read(&actor) {
        return;
    }
    let owner = user_name(cx, r.owner);
    let who = format!(
        "uid {}{}",
        r.owner,
        owner
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default()
    );
    let ok = r.ret >= 0;
    let (op, message, target) = if r.op == KEYRING_READ {
        (
            "read",
            format!(
                "{} (pid {}, uid {}) read kernel key {} ({} \"{}\") of {who}: the key's payload, past its owner",
                actor.comm, actor.pid, r.fsuid, r.serial, r.ktype, r.desc
            ),
            Target::File {
                path: format!("key:{}", r.serial),
                dev: 0,
                inode: r.serial as u32 as u64,
            },
        )
    } else {
        (
            "persistent",
            format!(
                "{} (pid {}, uid {}) {} the persistent keyring of {who}: its keys (Kerberos tickets among them) become the caller's to search and read",
                actor.comm,
                actor.pid,
                r.fsuid,
                if ok { "took" } else { "tried to take" }
            ),
            Target::File {
                path: format!("keyring:persistent:{}", r.owner),
                dev: 0,
                inode: r.owner as u64,
            },
        )
    };
    let mut alert = rule_alert(
        Rule::KeyringRead,
        &actor,
        target,
        &cx.host,
        cx.wall(r.task.ts_boot_ns),
    )
    .message(message)
    .keyring(KeyringDetail {
        op,
        serial: (r.serial > 0).then_some(r.serial),
        key_type: (!r.ktype.is_empty()).then(|| r.ktype.clone()),
        description: (!r.desc.is_empty()).then(|| r.desc.clone()),
        owner_uid: r.owner,
        owner,
        fsuid: r.fsuid,
        loginuid: r.loginuid,
        result: if ok { "success" } else { "failed" },
        errno: if ok { None } else { errno_name(r.ret) },
    });
    if !ok {
        alert = alert.verdict(crate::alert::Severity::Medium, 50);
    }
    cx.raise(alert, r.task.ts_boot_ns);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        alert::Severity,
        detect::{
            flow_tests::{raised, task, with},
            tests::{policy, proc},
        },
    };

    fn rec(p: &crate::enrich::proctab::ProcInfo, op: u32, ret: i64, owner: u32) -> KeyringRecord {
        KeyringRecord {
            task: task(p),
            op,
            ret,
            serial: 123,
            owner,
            fsuid: p.uid,
            loginuid: None,
            ktype: "user".into(),
            desc: "krb5cc".into(),
        }
    }

    #[test]
    fn another_users_keys_read_or_persistent_keyring_taken() {
        let root = proc(10, 1, 0, "/usr/bin/keyctl");
        let gssd = proc(11, 1, 0, "/usr/sbin/rpc.gssd");
        let mut cx = with(&[root.clone(), gssd.clone()]);
        let p = policy("[[allow]]\nexe = \"/usr/sbin/rpc.gssd\"\nkeyring_read = true\n");
        keyring(&mut cx, &p, &rec(&root, KEYRING_READ, 0, 1000));
        keyring(&mut cx, &p, &rec(&root, KEYRING_PERSISTENT, 123, 1000));
        keyring(&mut cx, &p, &rec(&root, KEYRING_PERSISTENT, -1, 1000));
        keyring(&mut cx, &p, &rec(&gssd, KEYRING_READ, 0, 1000));
        let a = raised(&mut cx);
        let got: Vec<(&str, &str, Severity)> = a
            .iter()
            .map(|a| {
                let k = a.keyring.as_ref().unwrap();
                (k.op, k.result, a.severity)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("read", "success", Severity::High),
                ("persistent", "success", Severity::High),
                ("persistent", "failed", Severity::Medium),
            ]
        );
        assert_eq!(a[0].rule, "keyring-read");
        assert_eq!(a[0].attack, "T1555");
        assert!(a[0].message.contains("krb5cc"), "{}", a[0].message);
        assert_eq!(a[2].keyring.as_ref().unwrap().errno, Some("EPERM"));
    }
}
