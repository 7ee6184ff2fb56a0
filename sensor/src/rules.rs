//! The rules, one definition each: the name alerts carry (`rule`), the
//! MITRE ATT&CK technique (`attack`), the attack-chain stage that scoring
//! defaults to (`[scoring.stages]`), and the verdict (severity, score) its
//! detector gives a full-weight alert, which is also the rule's default
//! `[scoring.base]` where the rule has one. docs/alerts.md describes each
//! rule; the `detect*` modules, `flows.rs`, `renames.rs`, `dumps.rs`,
//! `environ.rs` and `keyscan.rs` decide when one fires. A leaf: it knows the alert schema
//! (`alert.rs`) and nothing else.
//!
//! `Alert::new` (below) starts every alert a rule makes from this table.

use crate::alert::{
    Alert, CodeDetail, DumpDetail, FlowDetail, KernelDetail, KeyringDetail, MemDetail, OpenDetail,
    ProcessCtx, RawDetail, Severity, Target,
};

/// A detection rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    KeyFileOpen,
    /// A key file created by its writer (or a new key found in a file a
    /// tainted writer made): inventory.
    KeyCreated,
    PtraceAttach,
    ProcessVmRead,
    ProcessVmWrite,
    ProcMemOpen,
    /// /proc/<pid>/environ of a protected process (tokens in its
    /// environment), judged when its reader exits (`environ.rs`).
    ProcEnvironRead,
    PidfdGetfd,
    /// BPF LSM backend: another process accessed through a syscall the
    /// tracepoints do not enumerate (the kernel's ptrace access check).
    ProcessAccess,
    ForcedCrash,
    CoreDump,
    DumpConfigChange,
    UserspaceDump,
    DumpFileAccess,
    TrackedCopy,
    Exfiltration,
    KeyMaterial,
    /// Code loaded into the kernel (BPF tracing program, module, kexec
    /// image) or other processes' user stacks sampled: a way to read any
    /// process's memory from the kernel side (`kernel_reader.rs`).
    KernelReader,
    /// A protected or allowlisted program started with code loaded into
    /// it (LD_PRELOAD, LD_AUDIT) or under a tracer (`tamper.rs`).
    KeyHolderTamper,
    /// The kernel's memory (/dev/mem, /dev/kmem, /dev/port, /proc/kcore)
    /// or a block device under a watched key store opened: every key in
    /// memory or on the disk, past the file permissions (`raw_read.rs`).
    RawRead,
    /// A key agent's socket (ssh-agent, gpg-agent, ...) connected to by
    /// another uid or login uid: its keys used without being stolen
    /// (`agent_socket.rs`).
    AgentSocketUse,
    /// The kernel could not hand user space a critical record (its lane's
    /// ring was full): a detection may be missing (`agent/live.rs`).
    EventsLost,
    /// A kernel key read by another principal than its owner, or another
    /// uid's persistent keyring taken (`keyring.rs`).
    KeyringRead,
    /// A way out of a container to the host's keys: a key opened from a
    /// non-host mount namespace through a mount of another one
    /// (`/proc/<pid>/root`), or a cgroup v1 `release_agent` opened for
    /// writing (`keys.rs`, `escape.rs`).
    ContainerEscape,
}

/// A stage of the attack chain (`[scoring.stages]`, docs/scoring.md): an
/// incident scores more for each distinct stage it reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Access,
    Dump,
    Copy,
    Send,
    Key,
}

impl Stage {
    /// In chain order.
    pub const ALL: [Stage; 5] = [
        Stage::Access,
        Stage::Dump,
        Stage::Copy,
        Stage::Send,
        Stage::Key,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Access => "access",
            Stage::Dump => "dump",
            Stage::Copy => "copy",
            Stage::Send => "send",
            Stage::Key => "key",
        }
    }
}

/// One row of the table.
struct Def {
    rule: Rule,
    name: &'static str,
    attack: &'static str,
    /// The technique of the rule's other variant, if it has one (see
    /// `Rule::alt_attack`).
    alt_attack: Option<&'static str>,
    stage: Stage,
    /// Severity and detector score of a full-weight alert (a success, on a
    /// protected target); None when the alert always decides (tracked-copy:
    /// its evidence, `evidence.rs`).
    verdict: Option<(Severity, u32)>,
    /// The verdict's score is the rule's default `[scoring.base]`; the other
    /// rules keep their detector's score (docs/scoring.md).
    base: bool,
}

const fn def(
    rule: Rule,
    name: &'static str,
    (attack, alt_attack): (&'static str, Option<&'static str>),
    stage: Stage,
    verdict: Option<(Severity, u32)>,
    base: bool,
) -> Def {
    Def {
        rule,
        name,
        attack,
        alt_attack,
        stage,
        verdict,
        base,
    }
}

/// A rule with one technique.
const fn one(attack: &'static str) -> (&'static str, Option<&'static str>) {
    (attack, None)
}

/// A rule with two: the first, and its variant's.
const fn two(attack: &'static str, alt: &'static str) -> (&'static str, Option<&'static str>) {
    (attack, Some(alt))
}

/// ATT&CK techniques.
pub(crate) mod attack {
    /// Unsecured Credentials: Private Keys.
    pub const PRIVATE_KEYS: &str = "T1552.004";
    /// Unsecured Credentials (environment variables holding secrets).
    pub const CREDENTIALS: &str = "T1552";
    /// OS Credential Dumping: Proc Filesystem (process memory).
    pub const PROC_MEMORY: &str = "T1003.007";
    /// OS Credential Dumping.
    pub const CREDENTIAL_DUMPING: &str = "T1003";
    /// Process Injection: Ptrace System Calls.
    pub const PTRACE_INJECT: &str = "T1055.008";
    /// Process Injection.
    pub const INJECT: &str = "T1055";
    /// Process Discovery (what a read-mode access reveals).
    pub const PROCESS_DISCOVERY: &str = "T1057";
    /// Data from Local System.
    pub const LOCAL_DATA: &str = "T1005";
    /// Data Staged.
    pub const STAGED: &str = "T1074";
    /// Archive Collected Data.
    pub const ARCHIVE: &str = "T1560";
    /// Exfiltration Over C2 Channel (a TCP stream).
    pub const EXFIL_C2: &str = "T1041";
    /// Exfiltration Over Alternative Protocol (datagrams and others).
    pub const EXFIL_ALT: &str = "T1048";
    /// Impair Defenses: Indicator Blocking (a flood that makes the
    /// sensor drop what it should have seen).
    pub const INDICATOR_BLOCKING: &str = "T1562.006";
    /// Hijack Execution Flow: Dynamic Linker Hijacking.
    pub const DYLD_HIJACK: &str = "T1574.006";
    /// Hijack Execution Flow (a module a program loads replaced).
    pub const HIJACK: &str = "T1574";
    /// Credentials from Password Stores (a kernel keyring: Kerberos
    /// tickets, tokens, passphrases).
    pub const PASSWORD_STORES: &str = "T1555";
    /// Modify Authentication Process: Pluggable Authentication Modules.
    pub const PAM: &str = "T1556.003";
    /// Rootkit (BPF programs that read other processes from the kernel).
    pub const ROOTKIT: &str = "T1014";
    /// Boot or Logon Autostart Execution: Kernel Modules and Extensions.
    pub const KERNEL_MODULES: &str = "T1547.006";
    /// Direct Volume Access (a file system read from its block device).
    pub const DIRECT_VOLUME: &str = "T1006";
    /// Remote Service Session Hijacking: SSH Hijacking (another user's
    /// agent socket used).
    pub const SSH_HIJACK: &str = "T1563.001";
    /// Escape to Host (a container reaching the host's files or running
    /// code there).
    pub const ESCAPE_TO_HOST: &str = "T1611";
}

/// Every rule, in `Rule` order (checked at compile time below). The
/// variants' alternative techniques: ptrace-attach's memory writes
/// (PTRACE_POKE*, SETREGS), process-access's attach-mode checks,
/// tracked-copy's archives, exfiltration other than over TCP, kernel-reader's
/// module loads, key-holder-tamper's tracer, raw-read's kernel memory.
#[rustfmt::skip]
const TABLE: [Def; 24] = {
    use Severity::{Critical, High, Info, Medium};
    use Stage::{Access, Copy, Dump, Key, Send};
    use attack::*;
    [
        def(Rule::KeyFileOpen, "key-file-open", one(PRIVATE_KEYS), Access, Some((High, 70)), true),
        def(Rule::KeyCreated, "key-created", one(PRIVATE_KEYS), Access, Some((Info, 5)), false),
        def(Rule::PtraceAttach, "ptrace-attach", two(PROC_MEMORY, PTRACE_INJECT), Access, Some((High, 80)), true),
        def(Rule::ProcessVmRead, "process-vm-read", one(PROC_MEMORY), Dump, Some((High, 80)), true),
        def(Rule::ProcessVmWrite, "process-vm-write", one(INJECT), Access, Some((High, 80)), true),
        def(Rule::ProcMemOpen, "proc-mem-open", one(PROC_MEMORY), Dump, Some((High, 80)), true),
        def(Rule::ProcEnvironRead, "proc-environ-read", one(CREDENTIALS), Access, Some((Medium, 50)), false),
        def(Rule::PidfdGetfd, "pidfd-getfd", one(CREDENTIAL_DUMPING), Access, Some((High, 80)), true),
        def(Rule::ProcessAccess, "process-access", two(PROCESS_DISCOVERY, PROC_MEMORY), Access, Some((Medium, 60)), false),
        def(Rule::ForcedCrash, "forced-crash", one(CREDENTIAL_DUMPING), Dump, Some((High, 75)), true),
        def(Rule::CoreDump, "core-dump", one(CREDENTIAL_DUMPING), Dump, Some((Critical, 90)), true),
        def(Rule::DumpConfigChange, "dump-config-change", one(CREDENTIAL_DUMPING), Access, Some((High, 70)), false),
        def(Rule::UserspaceDump, "userspace-dump", one(CREDENTIAL_DUMPING), Dump, Some((Critical, 90)), false),
        def(Rule::DumpFileAccess, "dump-file-access", one(LOCAL_DATA), Copy, Some((High, 75)), false),
        def(Rule::TrackedCopy, "tracked-copy", two(STAGED, ARCHIVE), Copy, None, false),
        def(Rule::Exfiltration, "exfiltration", two(EXFIL_C2, EXFIL_ALT), Send, Some((Critical, 95)), false),
        def(Rule::KeyMaterial, "key-material", one(PRIVATE_KEYS), Key, Some((Critical, 95)), false),
        def(Rule::KernelReader, "kernel-reader", two(ROOTKIT, KERNEL_MODULES), Access, Some((High, 80)), false),
        def(Rule::KeyHolderTamper, "key-holder-tamper", two(DYLD_HIJACK, PTRACE_INJECT), Access, Some((High, 75)), false),
        def(Rule::RawRead, "raw-read", two(DIRECT_VOLUME, CREDENTIAL_DUMPING), Access, Some((High, 80)), false),
        def(Rule::AgentSocketUse, "agent-socket-use", one(SSH_HIJACK), Access, Some((High, 80)), false),
        def(Rule::EventsLost, "events-lost", one(INDICATOR_BLOCKING), Access, Some((High, 80)), false),
        def(Rule::KeyringRead, "keyring-read", one(PASSWORD_STORES), Access, Some((High, 80)), false),
        def(Rule::ContainerEscape, "container-escape", one(ESCAPE_TO_HOST), Access, Some((High, 80)), false),
    ]
};

// Row i is the rule whose discriminant is i.
const _: () = {
    let mut i = 0;
    while i < TABLE.len() {
        assert!(TABLE[i].rule as usize == i);
        i += 1;
    }
};

impl Rule {
    fn def(self) -> &'static Def {
        &TABLE[self as usize]
    }

    /// Every rule.
    pub fn all() -> impl Iterator<Item = Rule> {
        TABLE.iter().map(|d| d.rule)
    }

    /// The name in alerts, config and metrics, e.g. "key-file-open".
    pub fn name(self) -> &'static str {
        self.def().name
    }

    pub fn from_name(name: &str) -> Option<Rule> {
        TABLE.iter().find(|d| d.name == name).map(|d| d.rule)
    }

    /// The ATT&CK technique id.
    pub fn attack(self) -> &'static str {
        self.def().attack
    }

    /// The technique of the rule's other variant (the table's comment
    /// says which); `attack()` for a rule with one technique.
    pub fn alt_attack(self) -> &'static str {
        self.def().alt_attack.unwrap_or(self.def().attack)
    }

    /// The stage `[scoring.stages]` gives it unless the config says
    /// otherwise.
    pub fn stage(self) -> Stage {
        self.def().stage
    }

    /// Severity and detector score of a full-weight alert (the rule lowers
    /// it for a failure, an unprotected target, weak evidence...). None:
    /// every alert of the rule sets its own.
    pub fn verdict(self) -> Option<(Severity, u32)> {
        self.def().verdict
    }

    /// The rule's default `[scoring.base]`, if it is scored from a base.
    pub fn base(self) -> Option<u32> {
        let d = self.def();
        d.verdict.filter(|_| d.base).map(|(_, score)| score)
    }
}

/// The alert builder: each rule starts its alerts here and sets what it
/// decided with the setters.
impl Alert {
    /// An alert of `rule` about `process` (whose own incident id is
    /// `incident`) and `target`, at `ts`: the rule's name and technique,
    /// its verdict (info / 0 for a rule without one, until `verdict`),
    /// count 1, no details. `pipeline::Pipeline::emit` scores it
    /// (`factors`, the final score and severity) and fills `lineage` from
    /// `flow`; the correlator (`correlate.rs`) assigns `incident` and
    /// `count` for alerts that join an incident or fold.
    pub fn new(
        rule: Rule,
        process: ProcessCtx,
        incident: String,
        target: Target,
        host: &str,
        ts: String,
    ) -> Self {
        let (severity, score) = rule.verdict().unwrap_or((Severity::Info, 0));
        Alert {
            ts,
            rule: rule.name(),
            severity,
            score,
            attack: rule.attack(),
            host: host.to_string(),
            process,
            target,
            incident,
            count: 1,
            lineage: None,
            factors: Vec::new(),
            message: String::new(),
            open: None,
            memory: None,
            dump: None,
            flow: None,
            kernel: None,
            raw: None,
            agent: None,
            code: None,
            keyring: None,
            action: None,
        }
    }

    /// The technique when it is not the rule's first (`Rule::alt_attack`).
    pub fn attack(mut self, attack: &'static str) -> Self {
        self.attack = attack;
        self
    }

    /// Severity and detector score, when not the rule's own verdict.
    pub fn verdict(mut self, severity: Severity, score: u32) -> Self {
        self.severity = severity;
        self.score = score;
        self
    }

    pub fn message(mut self, message: String) -> Self {
        self.message = message;
        self
    }

    pub fn open(mut self, open: OpenDetail) -> Self {
        self.open = Some(open);
        self
    }

    pub fn memory(mut self, memory: MemDetail) -> Self {
        self.memory = Some(memory);
        self
    }

    pub fn agent(mut self, agent: crate::alert::AgentDetail) -> Self {
        self.agent = Some(agent);
        self
    }

    pub fn kernel(mut self, kernel: KernelDetail) -> Self {
        self.kernel = Some(kernel);
        self
    }

    pub fn keyring(mut self, keyring: KeyringDetail) -> Self {
        self.keyring = Some(keyring);
        self
    }

    pub fn code(mut self, code: CodeDetail) -> Self {
        self.code = Some(code);
        self
    }

    pub fn raw(mut self, raw: RawDetail) -> Self {
        self.raw = Some(raw);
        self
    }

    pub fn dump(mut self, dump: DumpDetail) -> Self {
        self.dump = Some(dump);
        self
    }

    pub fn flow(mut self, flow: FlowDetail) -> Self {
        self.flow = Some(flow);
        self
    }

    pub fn lineage(mut self, lineage: String) -> Self {
        self.lineage = Some(lineage);
        self
    }

    /// "denied" or "observed" (enforceable rules, `alert.rs`).
    pub fn action(mut self, action: &'static str) -> Self {
        self.action = Some(action);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALERTS_MD: &str = include_str!("../../docs/alerts.md");

    #[test]
    fn names_are_unique_documented_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for r in Rule::all() {
            assert!(seen.insert(r.name()), "{} twice", r.name());
            assert!(
                ALERTS_MD.contains(&format!("| `{}` |", r.name())),
                "{} has no row in docs/alerts.md",
                r.name()
            );
            assert_eq!(Rule::from_name(r.name()), Some(r));
        }
        assert_eq!(Rule::from_name("no-such-rule"), None);
    }

    #[test]
    fn every_documented_rule_is_in_the_table() {
        // The rules table of docs/alerts.md: rows whose first cell is a
        // rule name in backquotes, followed by an ATT&CK id.
        let documented: Vec<&str> = ALERTS_MD
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once("` | T"))
            .map(|(name, _)| name)
            .collect();
        assert_eq!(documented.len(), TABLE.len(), "{documented:?}");
        for name in documented {
            assert!(Rule::from_name(name).is_some(), "{name} is not in rules.rs");
        }
    }

    #[test]
    fn enforceable_rules_are_rules() {
        for name in sensor_common::ENF_RULES {
            assert!(Rule::from_name(name).is_some(), "{name}");
        }
    }

    #[test]
    fn techniques_are_documented() {
        for r in Rule::all() {
            let row = ALERTS_MD
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", r.name())))
                .unwrap();
            let attack_cell = row.split('|').nth(2).unwrap();
            assert!(attack_cell.contains(r.attack()), "{}", r.name());
            assert!(attack_cell.contains(r.alt_attack()), "{}", r.name());
        }
    }

    #[test]
    fn builder_starts_from_the_table() {
        let p = ProcessCtx {
            pid: 1,
            ppid: 0,
            uid: 0,
            comm: "c".into(),
            exe: "/c".into(),
            cmdline: "c".into(),
            allow_bypass: None,
            ..Default::default()
        };
        let t = Target::Process {
            pid: 2,
            comm: "v".into(),
            exe: "/v".into(),
            protected: None,
            container: None,
            cgroup_id: 0,
        };
        let a = Alert::new(
            Rule::CoreDump,
            p.clone(),
            "i".into(),
            t.clone(),
            "h",
            "ts".into(),
        );
        assert_eq!(
            (a.rule, a.attack, a.severity, a.score, a.count),
            ("core-dump", "T1003", Severity::Critical, 90, 1)
        );
        let a = Alert::new(Rule::TrackedCopy, p, "i".into(), t, "h", "ts".into())
            .attack(Rule::TrackedCopy.alt_attack())
            .verdict(Severity::Low, 25)
            .message("m".into());
        assert_eq!(
            (a.attack, a.severity, a.score, a.message.as_str()),
            ("T1560", Severity::Low, 25, "m")
        );
    }

    #[test]
    fn bases_and_stages_are_the_scoring_defaults() {
        let s = crate::correlate::score::ScoringConfig::default();
        for r in Rule::all() {
            assert_eq!(
                s.base.get(r.name()).map(|b| *b as u32),
                r.base(),
                "{}",
                r.name()
            );
            assert_eq!(s.stage(r.name()), r.stage().as_str(), "{}", r.name());
            // Each verdict is what the default thresholds make of its score.
            if let Some((severity, score)) = r.verdict() {
                assert_eq!(s.severity(score), severity, "{}", r.name());
            }
        }
    }
}
