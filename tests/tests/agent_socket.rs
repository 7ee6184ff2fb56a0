//! `agent-socket-use`: another principal's key agent used, re-enacted with
//! OpenSSH's real agent. An ssh-agent of uid 65534, started in a login of
//! its own (login uid 65534, as pam_loginuid sets it), holds a key; root,
//! from the test's login, has it sign a file (`ssh-keygen -Y sign`) through
//! a symlink to the socket, and lists its keys through a relative path:
//! each is a high alert naming the agent, its owner and the socket. An
//! agent started before keysentry is found at start. Not alerts: the
//! owner adding and listing its own keys, the owner using its agent that
//! runs outside any login (as systemd --user starts one), root in the
//! owner's login (sudo keeps the login uid), a socket a program that is not an agent bound (a
//! renamed copy of ssh-agent). With `[agents] protected`, a
//! `[[protected]]` signing daemon's socket is an agent's too.

mod common;

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use common::*;

const RULE: &str = "agent-socket-use";
const OWNER: u32 = 65534;

/// Why this host cannot run the test, if it cannot.
fn unavailable() -> Option<String> {
    for tool in ["ssh-agent", "ssh-add", "ssh-keygen"] {
        if !have(tool) {
            return Some(format!("{tool} is not installed"));
        }
    }
    if !Path::new("/proc/self/loginuid").exists() {
        return Some("the kernel has no login uid (CONFIG_AUDIT)".into());
    }
    if !probes_report().contains("agent-socket-use (a connect to a key agent)") {
        return Some("keysentry probes lists no agent-socket-use probe".into());
    }
    None
}

/// A command that starts in login `login` (written to /proc/self/loginuid
/// as pam_loginuid does at a login; u32::MAX: the test's own, unset here)
/// as `uid` (None: stays root).
fn in_login(bin: &str, login: u32, uid: Option<u32>) -> Command {
    let mut c = Command::new(bin);
    c.stdin(Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe calls: open,
    // write, close and the set*id syscalls.
    unsafe {
        c.pre_exec(move || {
            if login != u32::MAX {
                let text = format!("{login}");
                std::fs::write("/proc/self/loginuid", text.as_bytes())?;
            }
            if let Some(u) = uid
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(u) != 0
                    || libc::setuid(u) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

/// An agent process, killed when dropped (a failed assertion too).
struct Agent(Child);

impl Agent {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ssh-agent -D -a SOCK` (the binary `bin`) in login `login` as `uid`,
/// once it listens (it prints its environment then).
fn agent(bin: &str, sock: &Path, login: u32, uid: Option<u32>) -> Agent {
    let mut c = in_login(bin, login, uid)
        .arg("-D")
        .arg("-a")
        .arg(sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ssh-agent");
    let mut line = String::new();
    BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let c = Agent(c);
    assert!(line.contains("SSH_AUTH_SOCK"), "{bin} said {line:?}");
    c
}

/// Runs `cmd` with SSH_AUTH_SOCK=`sock`; returns (pid, exited 0).
fn with_agent(cmd: Command, sock: &str, cwd: Option<&Path>) -> (u32, bool) {
    let (pid, code) = with_agent_code(cmd, sock, cwd);
    (pid, code == Some(0))
}

/// ... and its exit code (ssh-add -l: 1 for an agent without keys, 2 when
/// it could not reach the agent).
fn with_agent_code(mut cmd: Command, sock: &str, cwd: Option<&Path>) -> (u32, Option<i32>) {
    cmd.env("SSH_AUTH_SOCK", sock);
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let (pid, st) = run_quiet(&mut cmd);
    (pid, st.code())
}

#[test]
fn another_principals_agent_used_alerts() {
    require_root();
    if let Some(why) = unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    let tmp = tempdir();
    let root = tmp.path().to_path_buf();
    let marker = keys_with_marker(&root);
    // The owner's directory: its key and its agents' sockets.
    let home = root.join("owner");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(OWNER), Some(OWNER)).unwrap();
    std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let key = home.join("id");
    let st = in_login("ssh-keygen", OWNER, Some(OWNER))
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "owner", "-f"])
        .arg(&key)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "ssh-keygen");
    // An agent that runs before keysentry starts.
    let early_sock = home.join("early.sock");
    let early = agent("ssh-agent", &early_sock, OWNER, Some(OWNER));
    // A program that is not an agent: a copy of ssh-agent under another
    // name, run by root; and another copy, a [[protected]] signing daemon.
    let ssh_agent = PathBuf::from(shell("command -v ssh-agent").expect("ssh-agent on PATH"));
    let real = std::fs::canonicalize(&ssh_agent).unwrap();
    let copy = root.join("ks-other");
    std::fs::copy(&real, &copy).unwrap();
    let keyd = root.join("ks-keyd");
    std::fs::copy(&real, &keyd).unwrap();
    let config = format!(
        "[[key_path]]\npath = \"{}\"\n\n[agents]\nprotected = true\n\n[[protected]]\nexe = \"{}\"\n",
        root.join("keys").display(),
        keyd.display()
    );

    let mut s = Sensor::start(&root, &config);
    let sock = home.join("agent.sock");
    let agent_proc = agent("ssh-agent", &sock, OWNER, Some(OWNER));
    let agent_pid = agent_proc.id();
    let other_sock = home.join("other.sock");
    let other = agent(copy.to_str().unwrap(), &other_sock, OWNER + 1, Some(OWNER));
    // An agent outside any login (as systemd --user starts gpg-agent).
    let nologin_sock = home.join("nologin.sock");
    let nologin = agent("ssh-agent", &nologin_sock, u32::MAX, Some(OWNER));
    let keyd_sock = home.join("keyd.sock");
    let keyd_proc = agent(keyd.to_str().unwrap(), &keyd_sock, OWNER + 1, Some(OWNER));
    let sock_s = sock.to_str().unwrap();
    // The owner loads its key and lists it: its own agent.
    let mut add = in_login("ssh-add", OWNER, Some(OWNER));
    add.arg(&key);
    let (p_add, ok) = with_agent(add, sock_s, None);
    assert!(ok, "the owner's ssh-add");
    let mut list = in_login("ssh-add", OWNER, Some(OWNER));
    list.arg("-l");
    let (p_own_list, ok) = with_agent(list, sock_s, None);
    assert!(ok, "the owner's ssh-add -l");
    // The owner, from its login, using its agent that runs outside any.
    let mut own_nologin = in_login("ssh-add", OWNER, Some(OWNER));
    own_nologin.arg("-l");
    let (p_own_nologin, code) = with_agent_code(own_nologin, nologin_sock.to_str().unwrap(), None);
    assert_eq!(code, Some(1), "ssh-add -l reached the agent (no keys)");
    // Root in the owner's login (sudo): the same principal.
    let mut sudo = in_login("ssh-add", OWNER, None);
    sudo.arg("-l");
    let (p_sudo, ok) = with_agent(sudo, sock_s, None);
    assert!(ok, "ssh-add -l in the owner's login as root");
    // Root from another login signs with the owner's key, through a
    // symlink to the socket.
    let link = root.join("sock-link");
    std::os::unix::fs::symlink(&sock, &link).unwrap();
    let data = root.join("release.tar");
    std::fs::write(&data, b"release\n").unwrap();
    let mut sign = Command::new("ssh-keygen");
    sign.args(["-Y", "sign", "-n", "file", "-f"])
        .arg(home.join("id.pub"))
        .arg(&data);
    let (p_sign, ok) = with_agent(sign, link.to_str().unwrap(), None);
    assert!(ok, "ssh-keygen -Y sign through the owner's agent");
    assert!(
        root.join("release.tar.sig").exists(),
        "the agent signed the file"
    );
    // ... and lists the keys through a relative path.
    let mut rel = Command::new("ssh-add");
    rel.arg("-l");
    let (p_rel, ok) = with_agent(rel, "agent.sock", Some(&home));
    assert!(ok, "ssh-add -l through a relative path");
    // The agent that ran before keysentry.
    let mut early_list = Command::new("ssh-add");
    early_list.arg("-l");
    let (p_early, code) = with_agent_code(early_list, early_sock.to_str().unwrap(), None);
    assert_eq!(
        code,
        Some(1),
        "ssh-add -l reached the early agent (no keys)"
    );
    // Not an agent: the renamed copy's socket (its owner in another
    // login), used by root.
    let mut other_list = Command::new("ssh-add");
    other_list.arg("-l");
    let (p_other, code) = with_agent_code(other_list, other_sock.to_str().unwrap(), None);
    assert!(
        matches!(code, Some(0 | 1)),
        "ssh-add -l reached it: {code:?}"
    );
    // The protected daemon's socket, used by root.
    let mut keyd_list = Command::new("ssh-add");
    keyd_list.arg("-l");
    let (p_keyd, code) = with_agent_code(keyd_list, keyd_sock.to_str().unwrap(), None);
    assert!(
        matches!(code, Some(0 | 1)),
        "ssh-add -l reached it: {code:?}"
    );
    let alerts = s.alerts_until_marker(&marker);

    let a = one_by_pid(&alerts, RULE, p_sign);
    assert_eq!(a["severity"], "high", "{a:#}");
    assert_eq!(a["attack"], "T1563.001", "{a:#}");
    assert_eq!(a["target"]["path"], sock_s, "{a:#}");
    assert_eq!(a["agent"]["socket"], sock_s, "{a:#}");
    assert_eq!(a["agent"]["arg"], link.to_str().unwrap(), "{a:#}");
    assert_eq!(a["agent"]["pid"], agent_pid, "{a:#}");
    assert!(
        a["agent"]["exe"]
            .as_str()
            .is_some_and(|e| e.ends_with("/ssh-agent")),
        "{a:#}"
    );
    assert_eq!(a["agent"]["owner_uid"], OWNER, "{a:#}");
    assert_eq!(a["agent"]["owner"], "nobody", "{a:#}");
    assert_eq!(a["agent"]["owner_loginuid"], OWNER, "{a:#}");
    assert_eq!(a["process"]["uid"], 0, "{a:#}");
    let a = one_by_pid(&alerts, RULE, p_rel);
    assert_eq!(a["agent"]["socket"], sock_s, "{a:#}");
    assert_eq!(a["agent"]["arg"], "agent.sock", "{a:#}");
    let a = one_by_pid(&alerts, RULE, p_early);
    assert_eq!(a["agent"]["socket"], early_sock.to_str().unwrap(), "{a:#}");
    assert_eq!(a["agent"]["pid"], early.id(), "{a:#}");
    let a = one_by_pid(&alerts, RULE, p_keyd);
    assert_eq!(a["agent"]["socket"], keyd_sock.to_str().unwrap(), "{a:#}");
    assert_eq!(a["agent"]["exe"], keyd.to_str().unwrap(), "{a:#}");
    assert_eq!(a["agent"]["owner_uid"], OWNER, "{a:#}");
    assert_eq!(a["agent"]["owner_loginuid"], OWNER + 1, "{a:#}");
    none_by_pid(&alerts, RULE, p_add, "the owner adding its key");
    none_by_pid(&alerts, RULE, p_own_list, "the owner listing its keys");
    none_by_pid(&alerts, RULE, p_sudo, "root in the owner's login");
    none_by_pid(
        &alerts,
        RULE,
        p_own_nologin,
        "the owner using its agent that runs outside a login",
    );
    none_by_pid(&alerts, RULE, p_other, "a socket no agent bound");
    drop(s);
    drop((agent_proc, other, keyd_proc, early, nologin));
}
