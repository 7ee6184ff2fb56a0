//! `agent-socket-use`: a key agent's socket (ssh-agent, gpg-agent, a
//! PKCS#11 proxy: `[agents] exes`) connected to by a process of
//! another principal. The agent signs with keys that never leave it, for
//! whoever reaches its socket: root, or anyone who can, uses another
//! user's keys without stealing them (`SSH_AUTH_SOCK=/tmp/ssh-.../agent.N
//! ssh-keygen -Y sign`, ssh to the next host as that user). The kernel
//! reports only a connection to a socket an agent bound, recognised by the
//! socket file the kernel connected to (a symlink, a relative path or a
//! hard link is the same socket), made by a process of another uid or
//! another login uid than the agent's (`sensor-ebpf/src/probes/agent.rs`).
//! This rule decides:
//!
//! - the agent owner's own login (same login uid: `sudo` keeps it) is no
//!   alert; nor keysentry itself, nor an `[[allow]]` with `agent_use` for
//!   a genuine, uncontrolled program;
//! - anything else is high (T1563.001), naming the agent, its owner, the
//!   socket and the connecting process; how many other processes'
//!   environments the connecting process or its parent read (where
//!   `SSH_AUTH_SOCK` is found) is in `agent.environ_reads`.

use sensor_common::{AGENT_BIND, AGENT_CONNECT, InodeKey};
use serde_json::{Value, json};

use crate::{
    alert::{AgentDetail, Target},
    detect::{Policy, kernel_reader::is_keysentry, rule_alert},
    enrich::{agents::AgentSocket, context::Context, devnum::st_dev},
    ingest::decode::memory::AgentSocketRecord,
    rules::Rule,
};

/// An agent's socket bound, or connected to.
pub fn agent_socket(cx: &mut Context, policy: &Policy, r: &AgentSocketRecord) {
    let key = InodeKey {
        dev: r.sock.0,
        _pad: 0,
        ino: r.sock.1,
    };
    match r.op {
        AGENT_BIND => bound(cx, r, key),
        AGENT_CONNECT => connected(cx, policy, r, key),
        _ => {}
    }
}

/// An agent bound a socket: remembered with its path (made absolute
/// against the agent's working directory when it named it relatively).
fn bound(cx: &mut Context, r: &AgentSocketRecord, key: InodeKey) {
    let actor = cx.procs.resolve(&r.task);
    let pid = r.task.pid;
    let path = if r.path.starts_with('/') {
        r.path.clone()
    } else {
        let cwd = cx
            .view
            .value(format!("cwd:{pid}:{}", r.task.ts_boot_ns), || {
                std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .map(|p| Value::String(p.to_string_lossy().into_owned()))
                    .unwrap_or_default()
            });
        format!("{}/{}", cwd.as_str().unwrap_or(""), r.path)
    };
    tracing::info!(
        "key agent {} (pid {pid}, uid {}) bound {path}: watched",
        actor.exe,
        r.agent_uid
    );
    cx.agents.bound(
        key,
        AgentSocket {
            path,
            pid,
            exe: actor.exe.to_string(),
            uid: r.agent_uid,
            loginuid: r.agent_loginuid,
        },
    );
}

/// What user space knows of the socket: recorded, so a replay names a
/// socket found at start the same way; one an agent bound while recording
/// is known from its bind record.
fn socket_info(cx: &mut Context, key: &InodeKey) -> Option<AgentSocket> {
    let live = cx.agents.socket(key).cloned();
    let known = live.clone();
    let v = cx
        .view
        .value(format!("agent-socket:{}:{}", key.dev, key.ino), || {
            live.map_or(Value::Null, |s| {
                json!({"path": s.path, "pid": s.pid, "exe": s.exe, "uid": s.uid, "loginuid": s.loginuid})
            })
        });
    let parse = |v: &Value| {
        Some(AgentSocket {
            path: v.get("path")?.as_str()?.to_string(),
            pid: v.get("pid")?.as_u64()? as u32,
            exe: v.get("exe")?.as_str()?.to_string(),
            uid: v.get("uid")?.as_u64()? as u32,
            loginuid: v.get("loginuid").and_then(Value::as_u64).map(|l| l as u32),
        })
    };
    parse(&v).or(known)
}

/// A connection to an agent's socket by another uid or login uid.
fn connected(cx: &mut Context, policy: &Policy, r: &AgentSocketRecord, key: InodeKey) {
    if same_principal(r) {
        return;
    }
    let actor = cx.procs.resolve(&r.task);
    if is_keysentry(cx, &actor) || policy.allowed_agent_use(&actor) {
        return;
    }
    let info = socket_info(cx, &key);
    let socket = info
        .as_ref()
        .map(|s| s.path.clone())
        .unwrap_or_else(|| r.path.clone());
    let exe = info.as_ref().map(|s| s.exe.clone()).unwrap_or_default();
    let agent_pid = info.as_ref().map_or(r.agent_pid, |s| s.pid);
    let environ_reads = environ_reads(cx, &actor);
    let owner = user_name(cx, r.agent_uid);
    let agent_name = std::path::Path::new(&exe)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "a key agent".into());
    let message = format!(
        "{} (pid {}, uid {}) connected to {agent_name}'s socket {socket} (pid {agent_pid}, owner uid {}{}): it can sign with every key that agent holds",
        actor.comm,
        actor.pid,
        actor.uid,
        r.agent_uid,
        owner
            .as_deref()
            .map(|n| format!(" {n}"))
            .unwrap_or_default(),
    );
    let alert = rule_alert(
        Rule::AgentSocketUse,
        &actor,
        Target::File {
            path: socket.clone(),
            dev: st_dev(key.dev),
            inode: key.ino,
        },
        &cx.host,
        cx.wall(r.task.ts_boot_ns),
    )
    .message(message)
    .agent(AgentDetail {
        socket,
        arg: (!r.path.is_empty()).then(|| r.path.clone()),
        pid: agent_pid,
        exe,
        owner_uid: r.agent_uid,
        owner,
        owner_loginuid: r.agent_loginuid,
        loginuid: r.loginuid,
        environ_reads,
    });
    cx.raise(alert, r.task.ts_boot_ns);
}

/// The agent's owner connecting: the same login uid (sudo and su keep it),
/// or the same uid where either login uid is unset (an agent that
/// systemd --user started has none). Another uid in another login, or the
/// same uid from another login, is another principal.
fn same_principal(r: &AgentSocketRecord) -> bool {
    match (r.agent_loginuid, r.loginuid) {
        (Some(a), Some(b)) => a == b,
        _ => r.agent_uid == r.task.uid,
    }
}

/// Environments of other processes the connecting process or its parent
/// read (a search for SSH_AUTH_SOCK), as the kernel counted them.
fn environ_reads(cx: &mut Context, actor: &crate::enrich::proctab::ProcInfo) -> u32 {
    let (pid, ppid) = (actor.pid, actor.ppid);
    let own = cx.kernel.environ_reads(pid);
    let parent = cx.kernel.environ_reads(ppid);
    let v = cx.view.value(format!("environ-reads:{pid}"), || {
        Value::from(own.max(parent))
    });
    v.as_u64().unwrap_or(0) as u32
}

/// A uid's user name (the host's passwd), recorded.
pub(crate) fn user_name(cx: &mut Context, uid: u32) -> Option<String> {
    let v = cx.view.value(format!("user:{uid}"), || {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or(Value::Null, |u| Value::String(u.name))
    });
    v.as_str().map(String::from)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        alert::Severity,
        detect::{
            flow_tests::{raised, task, with},
            tests::{policy, proc},
        },
        enrich::proctab::ProcInfo,
    };

    fn rec(actor: &ProcInfo, op: u32, loginuid: Option<u32>, path: &str) -> AgentSocketRecord {
        AgentSocketRecord {
            task: task(actor),
            op,
            fd: 3,
            sock: (8 << 20 | 1, 77),
            agent_pid: 400,
            agent_uid: 1000,
            agent_loginuid: Some(1000),
            loginuid,
            path: path.into(),
        }
    }

    const DEPLOY: &str = "[[allow]]\nexe = \"/usr/bin/deployer\"\nagent_use = true\n";

    /// The agent's bind names the socket; a connection from another login
    /// is high and names agent, owner and socket; the owner's login (sudo
    /// keeps it) is none, nor is an allowed program, unless preloaded; an
    /// agent without a login uid is its uid's.
    #[test]
    fn another_login_using_an_agent_is_high() {
        let agent = proc(400, 1, 1000, "/usr/bin/ssh-agent");
        let root = proc(500, 1, 0, "/usr/bin/ssh-keygen");
        let sudo = proc(501, 1, 0, "/usr/bin/ssh-add");
        let deployer = proc(502, 1, 0, "/usr/bin/deployer");
        let preloaded = ProcInfo {
            allow_bypass: Some(Arc::from("LD_PRELOAD at exec")),
            ..proc(503, 1, 0, "/usr/bin/deployer")
        };
        let mut cx = with(&[
            agent.clone(),
            root.clone(),
            sudo.clone(),
            deployer.clone(),
            preloaded.clone(),
        ]);
        let p = policy(DEPLOY);
        let mut bind = rec(&agent, AGENT_BIND, Some(1000), "/tmp/ssh-x/agent.399");
        bind.agent_pid = 400;
        agent_socket(&mut cx, &p, &bind);
        agent_socket(&mut cx, &p, &rec(&root, AGENT_CONNECT, None, "/tmp/l"));
        agent_socket(
            &mut cx,
            &p,
            &rec(&sudo, AGENT_CONNECT, Some(1000), "/tmp/l"),
        );
        agent_socket(
            &mut cx,
            &p,
            &rec(&deployer, AGENT_CONNECT, Some(0), "/tmp/l"),
        );
        agent_socket(
            &mut cx,
            &p,
            &rec(&preloaded, AGENT_CONNECT, Some(0), "/tmp/l"),
        );
        // An agent systemd --user started (no login uid): its owner's
        // shell is the owner; root from no login is not.
        let own = proc(504, 1, 1000, "/usr/bin/gpg");
        let cron = proc(505, 1, 0, "/usr/bin/gpg");
        cx.procs.insert(own.clone());
        cx.procs.insert(cron.clone());
        for (who, login) in [(&own, Some(1000)), (&cron, None)] {
            let mut r = rec(
                who,
                AGENT_CONNECT,
                login,
                "/run/user/1000/gnupg/S.gpg-agent",
            );
            r.agent_loginuid = None;
            agent_socket(&mut cx, &p, &r);
        }
        let a = raised(&mut cx);
        assert_eq!(
            a.iter().map(|a| a.process.pid).collect::<Vec<_>>(),
            vec![500, 503, 505]
        );
        assert_eq!(a[0].rule, "agent-socket-use");
        assert_eq!(a[0].severity, Severity::High);
        assert_eq!(a[0].attack, "T1563.001");
        let d = a[0].agent.as_ref().unwrap();
        assert_eq!(d.socket, "/tmp/ssh-x/agent.399");
        assert_eq!(d.arg.as_deref(), Some("/tmp/l"));
        assert_eq!((d.pid, d.exe.as_str()), (400, "/usr/bin/ssh-agent"));
        assert_eq!(
            (d.owner_uid, d.owner_loginuid, d.loginuid),
            (1000, Some(1000), None)
        );
    }
}
