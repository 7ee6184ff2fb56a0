//! Alerts: the JSON-lines schema (docs/alerts.md), a leaf every stage may
//! use. The outputs that write alerts are in `sinks.rs`.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Inventory: counted and written, never paged on.
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackedKind {
    /// A watched or key-named file.
    Key,
    /// A memory dump of a protected process.
    Dump,
    /// A file derived from a tracked file.
    Copy,
}

/// Who made a tracked file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub pid: u32,
    pub comm: String,
    pub exe: String,
    /// Why the process was protected (as `Target::Process`), where that
    /// matters: the process a dump was taken of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protected: Option<String>,
}

/// One step of a lineage, origin first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineageStep {
    pub id: u32,
    pub path: String,
    pub kind: TrackedKind,
    pub how: &'static str,
    pub generation: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<Origin>,
}

/// Details of a memory access.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MemDetail {
    pub op: String,
    pub access: &'static str,
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    pub target_protected: bool,
    pub recon: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The thread id the actor named when it is not the target's pid (the
    /// target is the process the thread belongs to).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ProcessCtx {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
    pub exe: String,
    /// Redacted command line.
    pub cmdline: String,
    /// Why the `[[allow]]` naming this executable did not hold (loader
    /// variables or a tracer at exec, a tracer since, a path that is not
    /// its file): the `allow_bypass` factor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_bypass: Option<String>,
    /// The cgroup v2 path the process ran in (docs/containers.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The systemd unit that path names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The container that path names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerCtx>,
    /// The kernel's cgroup id (what `cgroup`, `unit` and `container` are
    /// read from when the alert is emitted).
    #[serde(skip)]
    pub cgroup_id: u64,
    /// The process's mount and pid namespaces, when either is not the
    /// host's (read when the alert is emitted, from a process still
    /// running with the start time the event gave).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Namespaces>,
    /// Start time, boot ns (what `namespaces` checks).
    #[serde(skip)]
    pub start_ns: u64,
}

/// Namespace inode numbers (as `stat -L -c %i /proc/PID/ns/mnt`).
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Namespaces {
    pub mnt: u64,
    pub pid: u64,
}

/// A container, as its runtime names it in the cgroup path.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ContainerCtx {
    /// The runtime's id (64 hex digits), or an lxc container's name.
    pub id: String,
    /// docker, containerd, cri-o, podman or lxc.
    pub runtime: &'static str,
    /// The name its runtime's state gives it (`enrich/runtimes.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The image it runs, as the runtime recorded the reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Kubernetes: "namespace/pod".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Target {
    File {
        path: String,
        /// st_dev encoding (as `stat -c %d`).
        dev: u64,
        inode: u64,
    },
    Process {
        pid: u32,
        comm: String,
        exe: String,
        /// Why the process is protected ("holds /etc/ssl/private/ca.key",
        /// "[[protected]] exe = /usr/bin/vault", "keysentry itself"); absent
        /// when it is not.
        #[serde(skip_serializing_if = "Option::is_none")]
        protected: Option<String>,
        /// The container the process runs in (as `process.container`).
        #[serde(skip_serializing_if = "Option::is_none")]
        container: Option<ContainerCtx>,
        /// Its cgroup id (what `container` is read from).
        #[serde(skip)]
        cgroup_id: u64,
    },
}

/// Details of a key-file open.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OpenDetail {
    /// "success" or "failed".
    pub result: &'static str,
    /// errno name for a failed attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<&'static str>,
    /// "read", "write", "read-write" or "path" (O_PATH).
    pub access: &'static str,
    /// Syscall or io_uring.
    pub via: &'static str,
    /// The path as the process passed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arg: Option<String>,
    /// Why the file is a key: "key_path", "key_name".
    pub matched: Vec<&'static str>,
    /// The configured key_path that covers it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_path: Option<String>,
    /// The key_name rule(s) that matched.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub key_name: Vec<String>,
    /// An access through an fd the process did not open (BPF LSM): what
    /// it did, "read", "write" or "mmap" (`via` says how it got the fd).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_op: Option<&'static str>,
    /// The process that opened the file, when known (fd accesses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opened_by: Option<Origin>,
    /// A non-root user's own file matched by a key-name pattern only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub own_key: bool,
    /// A key the actor's uid created in the last ten minutes.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fresh_key: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Alert {
    /// RFC 3339, UTC.
    pub ts: String,
    pub rule: &'static str,
    pub severity: Severity,
    pub score: u32,
    /// MITRE ATT&CK technique id.
    pub attack: &'static str,
    pub host: String,
    pub process: ProcessCtx,
    pub target: Target,
    /// The incident this alert belongs to (`sensor/src/correlate.rs`).
    pub incident: String,
    /// Events this line stands for: 1 (plus the identical events the
    /// kernel folded into its record, if any), or on a fold report the
    /// repeats (same rule, actor and target) folded since the first was
    /// emitted, those the kernel folded included.
    pub count: u32,
    /// Origin id of a tracked file's lineage (copies of a dump or key share
    /// it); rules that track files fill it. Files without one correlate by
    /// (dev, inode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lineage: Option<String>,
    /// The `[scoring]` context weights that applied to the score.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub factors: Vec<&'static str>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open: Option<OpenDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dump: Option<DumpDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<RawDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyring: Option<KeyringDetail>,
    /// For the enforceable rules (`sensor_common::ENF_RULES`): "denied"
    /// when a BPF LSM hook refused the operation, "observed" when it went
    /// ahead. Absent on the other rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
}

/// Details of userspace-dump, dump-file-access, tracked-copy, exfiltration
/// and key-material alerts: where tracked material went and where it came
/// from.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct FlowDetail {
    /// How the data moved: "write", "sendfile", "copy_file_range",
    /// "splice", "reflink", "rename", "link", "send", "open".
    pub via: &'static str,
    /// The tracked file this alert is about (written, renamed, opened or
    /// scanned), and its lineage from the origin (origin first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracked_id: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lineage: Vec<LineageStep>,
    /// The protected process whose memory the data came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dumped: Option<Origin>,
    /// The data reached this process through a pipe from this process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipe_from: Option<u32>,
    /// exfiltration: the peer, the local end and the protocol.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'static str>,
    /// Bytes moved: a send's first syscall; a copy's whole size at its
    /// close (or its writer's exit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// tracked-copy: processes between the source's reader and the writer
    /// (0: the writer read it itself; each child or pipe is one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hops: Option<u32>,
    /// What the file is ("elf-core", "raw", ...), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// key-material: what the scanner found (kinds and fingerprints only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<serde_json::Value>,
}

/// Details of a kernel-reader alert: what was loaded into the kernel, or
/// what was sampled.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct KernelDetail {
    /// The syscall: "bpf", "init_module", "finit_module", "kexec_load",
    /// "kexec_file_load", "perf_event_open"; or the file write-opened:
    /// "sysrq-trigger", "uprobe_events", "kprobe_events", "dynamic_events".
    pub op: &'static str,
    /// "success" or "failed", and the errno name of a failure.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    /// bpf: the program type ("kprobe" covers uprobes), its name, and
    /// the expected attach type's number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prog_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prog_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attach_type: Option<u32>,
    /// perf_event_open: whose data is sampled ("every process", "a
    /// cgroup", "protected process"), and what ("stack_user",
    /// "regs_user", "raw").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampled: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sample: Vec<&'static str>,
    /// bpf, perf_event_open: where the program type or the sampled data
    /// was read: "kernel" (the object the kernel made, through the new
    /// fd) or "caller" (the caller's attr: a refused call; another thread
    /// can rewrite it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attr_from: Option<&'static str>,
    /// A module load the kernel asked for (request_module: modprobe run
    /// by a kernel thread), with the module it named.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub kernel_requested: bool,
    /// sysrq-trigger: a crash kernel is loaded (kdump), so a crash
    /// forced through it writes all memory to a vmcore.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crash_kernel: Option<bool>,
}

/// Details of an agent-socket-use alert: the agent whose socket was used,
/// and who it belongs to.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct AgentDetail {
    /// The socket file (as the agent bound it).
    pub socket: String,
    /// sun_path as the connecting process passed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arg: Option<String>,
    /// The agent process (at bind) and its program.
    pub pid: u32,
    pub exe: String,
    /// The agent's owner: uid, user name, login uid.
    pub owner_uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_loginuid: Option<u32>,
    /// The connecting process's login uid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loginuid: Option<u32>,
    /// Environments of other processes the connecting process or its
    /// parent read (looking for SSH_AUTH_SOCK), as the kernel counted.
    pub environ_reads: u32,
}

/// Details of a raw-read alert: which device, how it was opened, and
/// what it holds.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RawDetail {
    /// "mem" (/dev/mem), "kmem", "port", "kcore" (/proc/kcore) or "block".
    pub device: &'static str,
    /// The device number, "major:minor" (none for kcore).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rdev: Option<String>,
    /// "read", "write" or "read-write".
    pub access: &'static str,
    /// The path as the process passed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arg: Option<String>,
    /// block: the watched key paths whose file system is on the device.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<String>,
}

/// Details of a `keyring-read` alert.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct KeyringDetail {
    /// "read" (a key's payload read) or "persistent" (another uid's
    /// persistent keyring taken).
    pub op: &'static str,
    /// The key's serial (read), or the persistent keyring's (taken).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<i32>,
    /// The key's type (`user`, `big_key`, ...) and description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whose key or persistent keyring it is: uid and user name.
    pub owner_uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The reader's file-system uid and login uid.
    pub fsuid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loginuid: Option<u32>,
    /// "success" or "failed" (persistent; a read is reported granted).
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<&'static str>,
}

/// Details of a `key-holder-tamper` change of a code-loading path.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CodeDetail {
    /// The configured code path (`[tamper] code_paths`) that covers it,
    /// or the file a key holder runs.
    pub code_path: String,
    /// What that path is to the programs that load it.
    pub role: &'static str,
    /// "write", "read-write", "truncate", "create" (an open), "rename",
    /// "link" or "symlink" (a name made there).
    pub how: &'static str,
    /// The path as the process passed it (for a rename or link, the new
    /// name; for a symlink, its name, with `from` what it points to).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arg: Option<String>,
    /// The renamed or linked file's old name, or a symlink's target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// For a file a key holder runs (not a configured code path): the
    /// process first seen running it, "comm (pid N)".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loaded_by: Option<String>,
    /// A systemd unit changed (`[tamper] unit_paths`): the unit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// What the changed unit now sets: `LD_PRELOAD=/tmp/x.so`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setting: Option<String>,
}

/// Details of forced-crash, core-dump and dump-config-change alerts.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DumpDetail {
    /// The signal, e.g. "SIGSEGV".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// dump-config-change: what changed (core_pattern, core_pipe_limit,
    /// suid_dumpable, coredump_filter, PR_SET_DUMPABLE, RLIMIT_CORE).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setting: Option<&'static str>,
    /// dump-config-change: the new value, when the syscall carries it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<u64>,
    /// dump-config-change of a kernel guard (a sysctl): the value in force
    /// and the value written, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// dump-config-change: "success" or "failed".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<&'static str>,
    /// forced-crash: how it was sent ("kill" for SI_USER, "tkill" for
    /// SI_TKILL, "sigqueue" for SI_QUEUE) and whether it was delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_by: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered: Option<bool>,
    /// What the target does with the signal: "default" (a core dump),
    /// "handled" (its own handler: nginx's graceful SIGQUIT), "ignored".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disposition: Option<&'static str>,
    /// core-dump: the core_pattern in force; dump-config-change of
    /// core_pattern: the pattern after the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub core_pattern: Option<String>,
    /// dump-config-change of core_pattern: the new pattern runs this
    /// keysentry's own core handler (docs/dumps.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub own_handler: Option<bool>,
    /// core-dump to a file: the file the kernel wrote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Whether that file exists when the alert is made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// core-dump to a pipe: the helper and its arguments.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub helper: Vec<String>,
    /// core-dump to a pipe: the helper process and the files it wrote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub helper_pid: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// Id of the dump in the tracked-file registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracked_id: Option<u32>,
    /// core-dump through keysentry's core handler: what it did with the
    /// core ("redacted", "quarantined", "dropped"), the file it kept, its
    /// size, why nothing was kept, and the keys it removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handler_error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<RemovedKey>,
}

/// A key the core handler zeroed in a core: kinds, fingerprints and key
/// files only, never bytes.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct RemovedKey {
    /// The scanner's kind (`ed25519`, `rsa`, ...), or `key bytes` for the
    /// raw bytes of a watched key file found without its structure.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Places in the core it was zeroed at.
    pub occurrences: u64,
}

/// RFC 3339 UTC timestamp of a wall-clock time in ns since the epoch.
pub fn rfc3339(epoch_ns: i128) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(epoch_ns)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_500_000_000), "1970-01-01T00:00:01.5Z");
    }

    #[test]
    fn schema_fields() {
        let a = Alert {
            action: None,
            kernel: None,
            raw: None,
            agent: None,
            code: None,
            keyring: None,
            ts: rfc3339(0),
            rule: "key-file-open",
            severity: Severity::High,
            score: 70,
            attack: "T1552.004",
            host: "h".into(),
            process: ProcessCtx {
                pid: 1,
                ppid: 0,
                uid: 0,
                comm: "cat".into(),
                exe: "/usr/bin/cat".into(),
                cmdline: "cat k".into(),
                allow_bypass: None,
                ..Default::default()
            },
            target: Target::File {
                path: "/k".into(),
                dev: 2049,
                inode: 12,
            },
            incident: "i".into(),
            count: 1,
            lineage: None,
            factors: Vec::new(),
            message: "m".into(),
            open: None,
            memory: None,
            dump: None,
            flow: None,
        };
        let v: serde_json::Value = serde_json::to_value(&a).unwrap();
        for f in [
            "ts", "rule", "severity", "score", "attack", "host", "process", "target", "incident",
            "message",
        ] {
            assert!(v.get(f).is_some(), "{f}");
        }
        assert_eq!(v["target"]["inode"], 12);
        assert_eq!(v["severity"], "high");
    }
}
