//! `kernel-reader`: reading memory from the kernel side, re-enacted with the
//! real syscalls. A BPF kprobe/uprobe program loaded (what bpftrace does
//! before it reads a process through a uprobe), perf sampling of user
//! stacks of every process or of a protected one, a kernel module and a
//! kexec image loaded (both refused by the kernel: the files are not
//! ones). Not alerts: a socket filter, perf counting its own process,
//! perf sampling a process that is not protected, an allowlisted
//! monitoring agent; but the same agent under LD_PRELOAD, or a renamed
//! copy of it, is.

mod common;

use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use common::{lab::spawn_victim, *};
use serde_json::Value;

const RULE: &str = "kernel-reader";

struct Lab {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    marker: PathBuf,
    /// A protected copy of ks-actor.
    victim_bin: PathBuf,
    /// A copy of ks-actor allowlisted as a kernel reader (a monitoring agent).
    agent_bin: PathBuf,
    config: String,
}

fn lab() -> Lab {
    let tmp = tempdir();
    let root = tmp.path().to_path_buf();
    let marker = keys_with_marker(&root);
    let victim_bin = actor_copy(&root, "ks-victim");
    let agent_bin = actor_copy(&root, "ks-agent");
    let config = format!(
        "[[key_path]]\npath = \"{}\"\n\n[[protected]]\nexe = \"{}\"\n\n[[allow]]\nexe = \"{}\"\nkernel_reader = true\n",
        root.join("keys").display(),
        victim_bin.display(),
        agent_bin.display(),
    );
    Lab {
        _tmp: tmp,
        root,
        marker,
        victim_bin,
        agent_bin,
        config,
    }
}

/// Runs `bin ARGS` (with `env`); returns (pid, exited 0).
fn run(bin: &Path, args: &[&str], env: &[(&str, &str)], uid: Option<u32>) -> (u32, bool) {
    let mut c = Command::new(bin);
    c.args(args).stdout(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    if let Some(u) = uid {
        c.uid(u).gid(u);
    }
    let mut child = c.spawn().unwrap();
    let pid = child.id();
    (pid, child.wait().unwrap().success())
}

#[test]
fn bpf_tracing_programs_and_perf_sampling_of_others_alert() {
    require_root();
    let l = lab();
    let mut s = Sensor::start(&l.root, &l.config);
    let actor = actor_bin();
    let (victim, vpid) = spawn_victim(&l.victim_bin);
    let (plain, ppid) = spawn_victim(&actor);

    // Not alerts: a socket filter, counting one's own CPU time, sampling
    // a process that is not protected.
    let (sock, ok) = run(&actor, &["bpf-load", "1", "ks_sock"], &[], None);
    assert!(ok, "socket filter load");
    let (count, ok) = run(&actor, &["perf-count"], &[], None);
    assert!(ok, "perf counting");
    let (unprot, ok) = run(&actor, &["perf-sample", &ppid.to_string()], &[], None);
    assert!(ok, "perf sampling of a plain process");

    // Alerts.
    let (kprobe, ok) = run(&actor, &["bpf-load", "2", "ks_peek"], &[], None);
    assert!(ok, "kprobe program load");
    let (all, ok) = run(&actor, &["perf-sample", "-1"], &[], None);
    assert!(ok, "system-wide perf sampling");
    let (prot, ok) = run(&actor, &["perf-sample", &vpid.to_string()], &[], None);
    assert!(ok, "perf sampling of the protected victim");
    // An unprivileged attempt: refused by the kernel, still an attempt.
    let (nobody, ok) = run(
        &world_executable(&actor),
        &["bpf-load", "2", "ks_try"],
        &[],
        Some(65534),
    );
    assert!(!ok, "an unprivileged kprobe load must fail");

    let alerts = s.alerts_until_marker(&l.marker);
    release(victim);
    release(plain);

    none_by_pid(&alerts, RULE, sock, "a socket filter load");
    none_by_pid(&alerts, RULE, count, "perf counting its own process");
    none_by_pid(
        &alerts,
        RULE,
        unprot,
        "perf sampling of an unprotected process",
    );

    let a = one_by_pid(&alerts, RULE, kprobe);
    assert_eq!(a["severity"], "high", "{a:#}");
    assert_eq!(a["kernel"]["op"], "bpf");
    assert_eq!(a["kernel"]["prog_type"], "kprobe");
    assert_eq!(a["kernel"]["prog_name"], "ks_peek");
    assert_eq!(a["kernel"]["result"], "success");
    // The type as the kernel loaded it, not the caller's attr.
    assert_eq!(a["kernel"]["attr_from"], "kernel", "{a:#}");
    assert_eq!(a["target"]["path"], "kernel");
    assert_eq!(a["attack"], "T1014");

    let a = one_by_pid(&alerts, RULE, all);
    assert_eq!(a["severity"], "high", "{a:#}");
    assert_eq!(a["kernel"]["op"], "perf_event_open");
    assert_eq!(a["kernel"]["sampled"], "every process");
    assert_eq!(a["kernel"]["attr_from"], "kernel", "{a:#}");
    assert_eq!(
        a["kernel"]["sample"],
        serde_json::json!(["stack_user", "regs_user"])
    );

    let a = one_by_pid(&alerts, RULE, prot);
    assert_eq!(a["severity"], "high", "{a:#}");
    assert_eq!(a["kernel"]["sampled"], "protected process");
    assert_eq!(a["target"]["pid"], vpid, "{a:#}");
    assert!(
        a["target"]["protected"].as_str().is_some(),
        "the target says why it is protected: {a:#}"
    );

    let a = one_by_pid(&alerts, RULE, nobody);
    assert_eq!(a["severity"], "medium", "{a:#}");
    assert_eq!(a["kernel"]["result"], "failed");
    assert_eq!(a["kernel"]["errno"], "EPERM");
    assert_eq!(a["kernel"]["attr_from"], "caller", "{a:#}");
    assert_eq!(a["process"]["uid"], 65534);
}

#[test]
fn an_allowed_kernel_reader_holds_only_as_itself() {
    require_root();
    let l = lab();
    let mut s = Sensor::start(&l.root, &l.config);
    // The monitoring agent: no alert.
    let (agent, ok) = run(&l.agent_bin, &["bpf-load", "2", "ks_agent"], &[], None);
    assert!(ok);
    // The same agent with a loader variable: its allowance does not hold.
    let libc = libc_path();
    let (preload, ok) = run(
        &l.agent_bin,
        &["bpf-load", "2", "ks_agent"],
        &[("LD_PRELOAD", &libc)],
        None,
    );
    assert!(ok);
    // A renamed copy of the same program is another program.
    let renamed = actor_copy(&l.root, "ks-agent2");
    let (other, ok) = run(&renamed, &["bpf-load", "2", "ks_agent"], &[], None);
    assert!(ok);

    let alerts = s.alerts_until_marker(&l.marker);
    none_by_pid(&alerts, RULE, agent, "the allowlisted agent");
    let a = one_by_pid(&alerts, RULE, preload);
    assert!(
        a["severity"] == "high" || a["severity"] == "critical",
        "{a:#}"
    );
    assert!(
        a["process"]["allow_bypass"]
            .as_str()
            .is_some_and(|w| w.contains("LD_PRELOAD")),
        "{a:#}"
    );
    assert!(
        a["factors"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "allow_bypass")),
        "{a:#}"
    );
    let a = one_by_pid(&alerts, RULE, other);
    assert_eq!(a["severity"], "high", "{a:#}");
}

/// The kernel has the syscall's exit tracepoint (a kernel built without
/// modules or kexec has neither the syscall nor its tracepoint).
fn tracepoint(name: &str) -> bool {
    Path::new("/sys/kernel/tracing/events/syscalls")
        .join(format!("sys_exit_{name}"))
        .exists()
        || Path::new("/sys/kernel/debug/tracing/events/syscalls")
            .join(format!("sys_exit_{name}"))
            .exists()
}

#[test]
fn module_and_kexec_loads_alert_with_the_file() {
    require_root();
    let have_module = tracepoint("finit_module");
    let have_kexec = tracepoint("kexec_file_load");
    if !have_module && !have_kexec {
        println!(
            "SKIPPED: this kernel has no finit_module or kexec_file_load (no sys_exit tracepoint: built without modules and kexec)"
        );
        return;
    }
    let l = lab();
    let mut s = Sensor::start(&l.root, &l.config);
    // Files the kernel refuses to load: the attempt is what is seen.
    let bogus = l.root.join("evil.ko");
    std::fs::write(&bogus, b"not an ELF module").unwrap();
    let actor = actor_bin();
    let module = have_module.then(|| {
        let (pid, ok) = run(&actor, &["module-load", bogus.to_str().unwrap()], &[], None);
        assert!(!ok, "the kernel must refuse a file that is not a module");
        pid
    });
    let kexec = have_kexec.then(|| {
        let (pid, ok) = run(&actor, &["kexec-file", bogus.to_str().unwrap()], &[], None);
        assert!(!ok, "the kernel must refuse a file that is not a kernel");
        pid
    });
    let alerts = s.alerts_until_marker(&l.marker);
    for (pid, op) in [(module, "finit_module"), (kexec, "kexec_file_load")] {
        let Some(pid) = pid else {
            println!("SKIPPED {op}: this kernel has no sys_exit_{op} tracepoint");
            continue;
        };
        let a = one_by_pid(&alerts, RULE, pid);
        assert_eq!(a["kernel"]["op"], op, "{a:#}");
        assert_eq!(a["kernel"]["result"], "failed", "{a:#}");
        assert_eq!(a["severity"], "medium", "{a:#}");
        assert_eq!(a["target"]["inode"], ino(&bogus), "{a:#}");
        assert_eq!(a["target"]["path"], bogus.to_str().unwrap(), "{a:#}");
        assert!(a["kernel"].get("kernel_requested").is_none(), "{a:#}");
    }
}

/// Sets /proc/sys/kernel/modprobe (the program the kernel runs to load a
/// module it needs) and restores it on drop, whatever happens in the test.
struct Modprobe {
    old: String,
}

const MODPROBE: &str = "/proc/sys/kernel/modprobe";

impl Modprobe {
    fn set(p: &Path) -> Self {
        let old = std::fs::read_to_string(MODPROBE).unwrap();
        std::fs::write(MODPROBE, p.to_str().unwrap()).unwrap();
        Modprobe { old }
    }
}

impl Drop for Modprobe {
    fn drop(&mut self) {
        let _ = std::fs::write(MODPROBE, self.old.trim_end());
    }
}

/// A module the kernel asks for: a mount of a file-system type it lacks
/// makes it run its modprobe helper (request_module), as a child of a
/// kernel thread. The helper here tries to load a file that is not a
/// module: the load is low and says the kernel asked for it; the same
/// helper run by a user is medium.
#[test]
fn a_module_the_kernel_asks_for_is_low() {
    require_root();
    if !Path::new(MODPROBE).exists() || !tracepoint("finit_module") {
        println!(
            "SKIPPED: this kernel has no module loading (no {MODPROBE} or no finit_module tracepoint)"
        );
        return;
    }
    let l = lab();
    let bogus = l.root.join("evil.ko");
    std::fs::write(&bogus, b"not an ELF module").unwrap();
    let helper = l.root.join("modprobe-helper");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nexec {} module-load {}\n",
            actor_bin().display(),
            bogus.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mnt = l.root.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut s = Sensor::start(&l.root, &l.config);
    {
        let _guard = Modprobe::set(&helper);
        let (_, ok) = run(
            &actor_bin(),
            &["mount-fs", "ksnosuchfs", mnt.to_str().unwrap()],
            &[],
            None,
        );
        assert!(!ok, "a mount of a type the kernel lacks must fail");
    }
    let (by_user, ok) = run(&helper, &[], &[], None);
    assert!(!ok);
    let alerts = s.alerts_until_marker(&l.marker);
    let loads: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["rule"] == RULE && a["kernel"]["op"] == "finit_module")
        .collect();
    let by_kernel: Vec<&&Value> = loads
        .iter()
        .filter(|a| a["process"]["pid"] != by_user)
        .collect();
    assert_eq!(by_kernel.len(), 1, "the kernel's request: {loads:#?}");
    let a = by_kernel[0];
    assert_eq!(a["severity"], "low", "{a:#}");
    assert_eq!(a["kernel"]["kernel_requested"], true, "{a:#}");
    assert_eq!(a["target"]["inode"], ino(&bogus), "{a:#}");
    let a = one_by_pid(&alerts, RULE, by_user);
    assert_eq!(a["severity"], "medium", "{a:#}");
    assert!(a["kernel"].get("kernel_requested").is_none(), "{a:#}");
}

/// The test the issue asks for: bpftrace attaching a uprobe that reads a
/// protected process's buffers (libc's read, filtered on its pid). Its
/// kprobe-type program load is the alert, before any byte is read.
#[test]
fn a_bpftrace_uprobe_on_a_protected_process_is_an_alert() {
    use std::io::{BufRead, BufReader};
    require_root();
    if !have("bpftrace") {
        println!("SKIPPED: bpftrace is not installed");
        return;
    }
    let l = lab();
    let mut s = Sensor::start(&l.root, &l.config);
    let (victim, vpid) = spawn_victim(&l.victim_bin);
    let libc = libc_path();
    let script =
        format!("uprobe:{libc}:read /pid == {vpid}/ {{ printf(\"%r\\n\", buf(arg1, 16)); }}");
    let mut bt = Command::new("bpftrace")
        .arg("-e")
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let btpid = bt.id();
    // "Attaching 1 probe..." once its program is loaded and attached.
    let mut line = String::new();
    BufReader::new(bt.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = bt.kill();
    let _ = bt.wait();
    release(victim);
    if !line.starts_with("Attaching") {
        println!("SKIPPED: bpftrace could not attach on this kernel: {line:?}");
        return;
    }
    let alerts = s.alerts_until_marker(&l.marker);
    // Its uprobe program (kprobe type): a success is high; a kernel that
    // refuses it (lockdown refuses the buffer read) still shows the
    // attempt, medium.
    let loads: Vec<&Value> = by_pid(&alerts, RULE, btpid)
        .into_iter()
        .filter(|a| a["kernel"]["prog_type"] == "kprobe")
        .collect();
    assert!(!loads.is_empty(), "bpftrace's uprobe program: {alerts:#?}");
    for a in &loads {
        let want = if a["kernel"]["result"] == "success" {
            "high"
        } else {
            "medium"
        };
        assert_eq!(a["severity"], want, "{a:#}");
        assert_eq!(a["process"]["comm"], "bpftrace");
    }
}

/// The kernel's own back doors: a tracefs dynamic-probe file opened for
/// writing (a uprobe's fetch arguments read any process's memory, no BPF
/// needed) is high; the SysRq trigger is high with a crash kernel loaded
/// (kdump writes all memory to a vmcore), else medium. Each is opened
/// for append and nothing is written. Not alerts: reading uprobe_events,
/// an allowlisted agent (a copy of the shell) writing it.
#[test]
fn the_kernels_back_doors_alert() {
    require_root();
    let l = lab();
    let sh = std::fs::canonicalize("/bin/sh").unwrap();
    let agent_sh = l.root.join("ks-agent-sh");
    std::fs::copy(&sh, &agent_sh).unwrap();
    std::fs::set_permissions(&agent_sh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy_runs = Command::new(&agent_sh)
        .args(["-c", "true"])
        .status()
        .is_ok_and(|s| s.success());
    let config = format!(
        "[[key_path]]\npath = \"{}\"\n\n[[allow]]\nexe = \"{}\"\nkernel_reader = true\n",
        l.root.join("keys").display(),
        agent_sh.display(),
    );
    let mut s = Sensor::start(&l.root, &config);
    // keysentry mounts tracefs at /sys/kernel/tracing when it is not.
    let uprobes = Path::new("/sys/kernel/tracing/uprobe_events");
    let have_uprobes = uprobes.exists();
    let sysrq = Path::new("/proc/sysrq-trigger");
    let have_sysrq = sysrq.exists();
    let append =
        |bin: &Path, file: &Path| run(bin, &["-c", &format!(": >> {}", file.display())], &[], None);
    let (w_uprobe, read_uprobe, agent) = if have_uprobes {
        let (w, ok) = append(Path::new("/bin/sh"), uprobes);
        assert!(ok, "append-open of uprobe_events");
        let (r, _) = run(
            Path::new("/bin/sh"),
            &["-c", &format!("read x < {}", uprobes.display())],
            &[],
            None,
        );
        let agent = copy_runs.then(|| {
            let (a, ok) = append(&agent_sh, uprobes);
            assert!(ok, "the agent's append-open of uprobe_events");
            a
        });
        (w, r, agent)
    } else {
        (0, 0, None)
    };
    let w_sysrq = have_sysrq.then(|| {
        let (p, ok) = append(Path::new("/bin/sh"), sysrq);
        assert!(ok, "append-open of sysrq-trigger");
        p
    });
    let alerts = s.alerts_until_marker(&l.marker);

    if have_uprobes {
        let a = one_by_pid(&alerts, RULE, w_uprobe);
        assert_eq!(a["severity"], "high", "{a:#}");
        assert_eq!(a["kernel"]["op"], "uprobe_events", "{a:#}");
        none_by_pid(&alerts, RULE, read_uprobe, "a read of uprobe_events");
        match agent {
            Some(p) => none_by_pid(&alerts, RULE, p, "an allowlisted agent"),
            None => {
                println!("SKIPPED part: a copy of /bin/sh does not run under another name here")
            }
        }
    } else {
        println!("SKIPPED part: this kernel has no uprobe_events (CONFIG_UPROBE_EVENTS)");
    }
    match w_sysrq {
        Some(p) => {
            let a = one_by_pid(&alerts, RULE, p);
            assert_eq!(a["kernel"]["op"], "sysrq-trigger", "{a:#}");
            let crash = a["kernel"]["crash_kernel"] == true;
            assert_eq!(
                a["severity"],
                if crash { "high" } else { "medium" },
                "{a:#}"
            );
        }
        None => {
            println!("SKIPPED part: this kernel has no /proc/sysrq-trigger (CONFIG_MAGIC_SYSRQ)")
        }
    }
}
