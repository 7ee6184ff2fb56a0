//! Configuration: TOML, every table `deny_unknown_fields`, defaults in one
//! place (the `Default` impls below; the embedded `default-config.toml` is
//! the template users start from), validated before anything is loaded.
//! Errors name the field: `key_name[2].suffix: ...`.
//!
//! Reference: docs/configuration.md.
//!
//! Here: the `Config` tree (one struct per table), its parse and load entry
//! points and the embedded default. `validate` checks a parsed config and
//! names the bad field; `names` holds `[[key_name]]` and its matcher;
//! `tamper` holds `[tamper]` and its default paths.

pub mod names;
mod tamper;
mod validate;

pub use tamper::Tamper;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Deserializer};

use self::names::KeyName;

pub const DEFAULT_CONFIG: &str = include_str!("default-config.toml");

/// Most `[[key_path]]` entries.
pub const MAX_KEY_PATHS: usize = 256;
/// Most `[[key_name]]` entries (one rule bit each in the kernel).
pub const MAX_KEY_NAMES: usize = 32;
/// Most name patterns in all: every `[[key_name]]` entry plus its excludes.
/// Equals `sensor_common::names::MAX_PATTERNS` (the kernel's pattern table);
/// repeated here so this module stands alone, and `reload::name_patterns`
/// checks again against the kernel's own limits.
pub const MAX_PATTERNS: usize = 32;
/// Most excludes of one `[[key_name]]`.
pub const MAX_EXCLUDES: usize = 4;
/// Longest prefix or suffix, in bytes (`sensor_common::names::MAX_AFFIX`).
pub const MAX_AFFIX: usize = 16;
/// Longest exact name or directory name (`sensor_common::names::MAX_EXACT`).
pub const MAX_EXACT: usize = 32;
/// Longest `comm` (the kernel's TASK_COMM_LEN minus the NUL).
pub const MAX_COMM: usize = 15;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{origin}: {source}")]
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, a type, an unknown or a missing field: the toml crate's
    /// message, with line, column and the offending key.
    #[error("{origin}: {}", .source.to_string().trim_end())]
    Syntax {
        origin: String,
        #[source]
        source: toml::de::Error,
    },
    /// A file others could have changed: not owned by root, or writable
    /// by its group or by anyone.
    #[error(
        "{origin}: refused: {why} (the config decides what is watched and allowed: owner root, no group or world write)"
    )]
    Untrusted { origin: String, why: String },
    /// A value that parses but is not acceptable.
    #[error("{origin}: {field}: {message}")]
    Invalid {
        origin: String,
        field: String,
        message: String,
    },
}

impl ConfigError {
    /// The offending field of a validation error, e.g. `key_path[0].path`.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub metrics: Metrics,
    #[serde(default)]
    pub alerts: Alerts,
    #[serde(default)]
    pub key_path: Vec<KeyPath>,
    #[serde(default)]
    pub key_name: Vec<KeyName>,
    #[serde(default)]
    pub protected: Vec<Protected>,
    /// `[protection]`: who is protected without a `[[protected]]` rule.
    #[serde(default)]
    pub protection: Protection,
    #[serde(default)]
    pub allow: Vec<Allow>,
    #[serde(default)]
    pub dumps: Dumps,
    #[serde(default)]
    pub rule: Vec<RuleMode>,
    /// `[scoring]`: docs/scoring.md.
    #[serde(default)]
    pub scoring: crate::correlate::score::ScoringConfig,
    /// `[correlation]`: incident window, repeat folding.
    #[serde(default)]
    pub correlation: crate::correlate::CorrelationConfig,
    /// `[flow]`: how far taint and tracking follow data.
    #[serde(default)]
    pub flow: Flow,
    /// `[agents]`: key agents, whose sockets sign for whoever connects.
    #[serde(default)]
    pub agents: Agents,
    /// `[tamper]`: the code-loading paths whose change is
    /// `key-holder-tamper`.
    #[serde(default)]
    pub tamper: Tamper,
    /// `[containers]`: where the container runtimes keep their state.
    #[serde(default)]
    pub containers: Containers,
}

/// `[containers]`: the state directories of the container runtimes whose
/// state names containers (`enrich/runtimes.rs`; containerd's and cri-o's
/// are their fixed run directories).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Containers {
    /// Docker's data root (`data-root` in /etc/docker/daemon.json).
    pub docker_root: PathBuf,
    /// Podman's storage root for root's containers (`graphroot` in
    /// /etc/containers/storage.conf).
    pub podman_root: PathBuf,
}

impl Default for Containers {
    fn default() -> Self {
        Self {
            docker_root: "/var/lib/docker".into(),
            podman_root: "/var/lib/containers/storage".into(),
        }
    }
}

/// `[agents]`: programs that hold keys and use them for whoever connects
/// to their unix socket (ssh-agent, gpg-agent, a PKCS#11 proxy).
/// A unix socket one of them binds is watched from its bind (by the
/// socket file's identity); sockets they listened on before keysentry
/// started are found at start and at each key-path rescan. A connection
/// by a process of another uid or another login uid is `agent-socket-use`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Agents {
    /// The agents' executables (absolute; the real path, as
    /// `readlink /proc/PID/exe` shows it). Missing ones are skipped.
    pub exes: Vec<PathBuf>,
    /// The unix sockets of `[[protected]]` processes (a rule's, not key
    /// holders') are agents' sockets too: a signing daemon that serves
    /// clients over a socket is a key oracle. Off by default: its clients
    /// of other uids then alert until allowed (`agent_use`).
    pub protected: bool,
}

/// The key agents Debian ships: OpenSSH's agent and the user-privileged
/// sshd process that binds a forwarded agent's socket, GnuPG's agent,
/// p11-kit's PKCS#11 server, GNOME's keyring. Not pcscd: the smart-card
/// daemon runs as root for every user's card readers (the card's PIN
/// guards the key), so each user's use of a card would alert.
pub const DEFAULT_AGENTS: [&str; 7] = [
    "/usr/bin/ssh-agent",
    "/usr/lib/openssh/sshd-session",
    "/usr/sbin/sshd",
    "/usr/bin/gpg-agent",
    "/usr/libexec/p11-kit/p11-kit-server",
    "/usr/lib/x86_64-linux-gnu/p11-kit/p11-kit-server",
    "/usr/bin/gnome-keyring-daemon",
];

impl Default for Agents {
    fn default() -> Self {
        Self {
            exes: DEFAULT_AGENTS.iter().map(PathBuf::from).collect(),
            protected: false,
        }
    }
}

/// `[flow]`: how far keysentry follows data from a key, a dump or a
/// protected process's memory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Flow {
    /// Hops followed from the origin (each file written, pipe read or
    /// child forked is one): files of a later generation are not tracked
    /// and processes are not tainted (counted in
    /// `keysentry_flow_stopped_total{reason="generation"}`). 1..=16.
    pub max_generations: u32,
}

impl Default for Flow {
    fn default() -> Self {
        Self { max_generations: 3 }
    }
}

/// `[[rule]]`: the mode of one enforceable rule (docs/enforcement.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleMode {
    /// A rule name from `sensor_common::ENF_RULES`.
    pub name: String,
    #[serde(default)]
    pub mode: Mode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Alert only (the default).
    #[default]
    Observe,
    /// Deny with EPERM where BPF LSM is active, and alert.
    Enforce,
}

/// `[protection]`: processes protected without being listed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Protection {
    /// A process that opens a watched key file for reading, allowed or
    /// not, is a key holder: protected at once, in the kernel, as if a
    /// `[[protected]]` rule matched it, until it execs or exits (its
    /// children forked after the open too). Alerts say why a target is
    /// protected ("holds /etc/ssl/private/ca.key").
    pub key_holders: bool,
}

impl Default for Protection {
    fn default() -> Self {
        Self { key_holders: true }
    }
}

/// `[dumps]`: where crash handlers keep dumps, and what keysentry's own
/// core handler (`keysentry install-core-handler`, docs/dumps.md) does
/// with the core of a protected process or key holder.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dumps {
    /// Directories whose files are dumps (systemd-coredump, apport): the
    /// files there at start and those written later are registered, so
    /// opens, copies and sends of them are followed. Absolute paths; a
    /// missing directory is skipped.
    pub dirs: Vec<PathBuf>,
    /// The core handler, for a protected process or key holder: `redact`
    /// (keys found zeroed, the core kept in `quarantine_dir`),
    /// `quarantine` (kept unmodified there) or `drop` (not kept).
    pub key_holder_policy: KeyHolderPolicy,
    /// Root-only (0700) directory the core handler keeps cores in.
    pub quarantine_dir: PathBuf,
    /// Bytes the quarantine may hold: a core that does not fit is dropped,
    /// and older cores are removed, oldest first, to make room.
    pub quarantine_max_bytes: u64,
    /// Seconds the core handler may take for one core (reading it, the
    /// scan, the redaction); then it stops, keeping nothing of a key
    /// holder's core. 1..=3600.
    pub handler_timeout_secs: u32,
    /// Where the installed handler keeps its state (the core_pattern it
    /// replaced) and its spool (one record per core it handled, read by
    /// `keysentry run`).
    pub state_dir: PathBuf,
}

/// `[dumps] key_holder_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyHolderPolicy {
    Redact,
    Quarantine,
    Drop,
}

/// `[dumps] state_dir` by default.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/keysentry";

impl Default for Dumps {
    fn default() -> Self {
        Self {
            dirs: [
                "/var/lib/systemd/coredump",
                "/var/crash",
                "/var/lib/apport/coredump",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
            key_holder_policy: KeyHolderPolicy::Redact,
            quarantine_dir: PathBuf::from("/var/lib/keysentry/quarantine"),
            quarantine_max_bytes: 4 << 30,
            handler_timeout_secs: 120,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
        }
    }
}

/// `[metrics]`: Prometheus text exposition at `http://<listen>/metrics`,
/// or `https://` with `tls_cert` and `tls_key`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Metrics {
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    pub enabled: bool,
    /// PEM certificate chain the endpoint presents (a process squatting on
    /// the port cannot: the scraper checks it).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (owned by root, readable by no one
    /// else).
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: clients must present a certificate they signed.
    pub tls_client_ca: Option<PathBuf>,
    /// A file holding the token scrapers must send as
    /// `Authorization: Bearer TOKEN` (owned by root, readable by no one
    /// else).
    pub bearer_token_file: Option<PathBuf>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9979)),
            enabled: true,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            bearer_token_file: None,
        }
    }
}

/// `[alerts]`: where alerts go. Each output has its own bounded queue.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Alerts {
    /// JSON lines on stdout.
    pub stdout: bool,
    /// JSON lines appended to this file (absolute path).
    pub file: Option<PathBuf>,
    /// Rotate the file before it would exceed this many bytes (0: never).
    pub file_max_bytes: u64,
    /// Rotated files kept: FILE.1 (newest) to FILE.N.
    pub file_keep: u32,
    /// RFC 5424 messages to the local syslog socket.
    pub syslog: bool,
    /// The syslog socket (unix datagram).
    pub syslog_socket: PathBuf,
    /// Syslog facility name (auth, authpriv, daemon, local0..local7, ...).
    pub syslog_facility: String,
    /// Alerts each output may hold before it drops (and counts) more.
    pub queue: usize,
    /// Command lines in alerts and recordings: "redacted" (every argument,
    /// secrets redacted) or "program-and-files" (the program and the
    /// arguments that are paths; every other argument omitted).
    pub cmdline: String,
}

/// The values of `alerts.cmdline` (`redact::CmdlineMode`).
pub const CMDLINE_MODES: [&str; 2] = ["redacted", "program-and-files"];

/// Largest `alerts.queue`.
pub const MAX_QUEUE: usize = 1 << 20;

impl Default for Alerts {
    fn default() -> Self {
        Self {
            stdout: true,
            file: None,
            file_max_bytes: 100 << 20,
            file_keep: 5,
            syslog: false,
            syslog_socket: PathBuf::from("/dev/log"),
            syslog_facility: "authpriv".into(),
            queue: 4096,
            cmdline: "redacted".into(),
        }
    }
}

/// `[[key_path]]`: a key file, or a directory watched recursively.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPath {
    /// Absolute; need not exist yet.
    pub path: PathBuf,
    /// A label (default: the path).
    #[serde(default)]
    pub name: Option<String>,
    /// Where the path counts: the host's mount namespace only, or every
    /// mount namespace keysentry sees too (`enrich/nskeys.rs`).
    #[serde(default)]
    pub scope: KeyScope,
}

/// `[[key_path]] scope`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyScope {
    /// The path in the host's mount namespace.
    #[default]
    Host,
    /// The same path inside every mount namespace too (a container's own
    /// /etc/ssl/private), resolved against a member process's root.
    All,
}

impl KeyPath {
    /// The label: `name`, else the path.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => self.path.display().to_string(),
        }
    }
}

/// `[[protected]]`: a process whose memory holds keys. Exactly one field set
/// (validated).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protected {
    /// Real executable path.
    #[serde(default)]
    pub exe: Option<PathBuf>,
    /// Process name (`/proc/PID/comm`), 1 to 15 bytes.
    #[serde(default)]
    pub comm: Option<String>,
    /// File holding the pid.
    #[serde(default)]
    pub pid_file: Option<PathBuf>,
    /// cgroup v2 path inside the hierarchy, e.g. /system.slice/vault.service.
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
    /// systemd unit (`vault.service`, `docker-<id>.scope`): every process
    /// whose cgroup's innermost unit it is, whatever slice it is under.
    #[serde(default)]
    pub unit: Option<String>,
    /// A container's name, as its runtime's state says it (root's
    /// docker, podman, containerd or cri-o containers).
    #[serde(default)]
    pub container_name: Option<String>,
    /// A container's image ("hashicorp/vault" matches every tag).
    #[serde(default)]
    pub container_image: Option<String>,
}

/// `[[allow]]`: a program that may open keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    /// Real executable path of the allowed program.
    pub exe: PathBuf,
    /// Restricts the allowance to this configured key_path (its `path`).
    #[serde(default)]
    pub key_path: Option<PathBuf>,
    /// Makes this a memory-access allowance: `exe` may read or write the
    /// memory of processes whose real executable is `target` (e.g. a backup
    /// agent). An entry with `target` allows no key-file opens.
    #[serde(default)]
    pub target: Option<PathBuf>,
    /// Makes this a dump allowance: `exe` may open registered dump files
    /// (a crash-report uploader, the dump handler's own tools).
    #[serde(default)]
    pub dumps: bool,
    /// Makes this a kernel-reader allowance: `exe` may load BPF tracing
    /// programs, kernel modules and kexec images and sample other
    /// processes' user stacks (the monitoring stack, udev, systemd).
    #[serde(default)]
    pub kernel_reader: bool,
    /// Makes this a raw-read allowance: `exe` may open /dev/mem,
    /// /proc/kcore and the block devices under the watched key stores
    /// (udev's probes, LVM, smartd, fsck).
    #[serde(default)]
    pub raw_read: bool,
    /// Makes this an agent-use allowance: `exe` may use other users' key
    /// agents (a deployment tool that signs through a designated agent).
    #[serde(default)]
    pub agent_use: bool,
    /// Makes this a code-change allowance: `exe`, and the programs it runs
    /// (a package manager's maintainer scripts), may change the
    /// `[tamper] code_paths` (dpkg).
    #[serde(default)]
    pub code_change: bool,
    /// Makes this a keyring-read allowance: `exe` may read other users'
    /// kernel keys and take their persistent keyrings (NFS's rpc.gssd and
    /// gssproxy act for users with their Kerberos credentials).
    #[serde(default)]
    pub keyring_read: bool,
    /// The allowance holds only for processes in this systemd unit of the
    /// system manager ("vault.service"; a user's own units never match).
    #[serde(default)]
    pub unit: Option<String>,
    /// The allowance holds only for processes of this container (its
    /// name, as root's runtime state says it); `exe` is then the path
    /// inside the container.
    #[serde(default)]
    pub container_name: Option<String>,
    /// The allowance holds only for processes of containers running this
    /// image; `exe` is then the path inside the container.
    #[serde(default)]
    pub container_image: Option<String>,
}

impl Allow {
    /// Does the entry select a container (its `exe` a path inside it)?
    pub fn in_container(&self) -> bool {
        self.container_name.is_some() || self.container_image.is_some()
    }
}

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|e| {
        serde::de::Error::custom(format!(
            "metrics.listen: {s:?}: {e}; expected IP:PORT, e.g. \"127.0.0.1:9979\" or \"[::1]:9979\""
        ))
    })
}

impl Config {
    /// Parses and validates; `origin` (the file name) prefixes errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|source| ConfigError::Syntax {
            origin: origin.to_string(),
            source,
        })?;
        cfg.scoring.fill_defaults();
        cfg.validate()
            .map_err(|(field, message)| ConfigError::Invalid {
                origin: origin.to_string(),
                field,
                message,
            })?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            origin: origin.clone(),
            source,
        })?;
        Self::parse(&text, &origin)
    }

    /// `load` for the running sensor: the file (as opened, not as named)
    /// must be owned by root and writable by no one else, or it is
    /// refused: whoever can write it could allowlist their own program.
    pub fn load_trusted(path: &Path) -> Result<Config, ConfigError> {
        use std::{io::Read, os::unix::fs::MetadataExt};
        let origin = path.display().to_string();
        let read = |source| ConfigError::Read {
            origin: origin.clone(),
            source,
        };
        let mut f = std::fs::File::open(path).map_err(read)?;
        let md = f.metadata().map_err(read)?;
        let why = if md.uid() != 0 {
            Some(format!("owned by uid {}, not root", md.uid()))
        } else if md.mode() & 0o022 != 0 {
            Some(format!(
                "mode {:o}: writable by {}",
                md.mode() & 0o7777,
                if md.mode() & 0o002 != 0 {
                    "anyone"
                } else {
                    "its group"
                }
            ))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(ConfigError::Untrusted { origin, why });
        }
        let mut text = String::new();
        f.read_to_string(&mut text).map_err(read)?;
        Self::parse(&text, &origin)
    }

    /// The embedded default config (a unit test keeps it valid).
    pub fn default_config() -> Config {
        Self::parse(DEFAULT_CONFIG, "embedded default config")
            .expect("the embedded default config is valid")
    }

    /// Bit per ENF_* rule configured with `mode = "enforce"`.
    pub fn enforce_bits(&self) -> u32 {
        self.rule
            .iter()
            .filter(|r| r.mode == Mode::Enforce)
            .filter_map(|r| sensor_common::ENF_RULES.iter().position(|n| *n == r.name))
            .fold(0, |bits, i| bits | 1 << i)
    }
}

/// Syslog facility code of a name (RFC 5424 table 1).
pub fn syslog_facility(name: &str) -> Option<u8> {
    const NAMES: [&str; 24] = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
        "authpriv", "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2",
        "local3", "local4", "local5", "local6", "local7",
    ];
    NAMES.iter().position(|n| *n == name).map(|i| i as u8)
}

#[cfg(test)]
mod tests {
    use super::{names::name_matches, *};

    pub(super) fn err(text: &str) -> ConfigError {
        Config::parse(text, "t.toml").unwrap_err()
    }

    pub(super) fn bad(text: &str) -> String {
        err(text).to_string()
    }

    /// A validation error naming `field`; its Display is "t.toml: field: ...".
    pub(super) fn invalid_field(text: &str, field: &str) -> String {
        let e = err(text);
        assert_eq!(e.field(), Some(field), "{e}");
        let s = e.to_string();
        assert!(s.starts_with(&format!("t.toml: {field}: ")), "{s}");
        s
    }

    #[test]
    fn the_deploy_config_is_the_default_with_production_outputs() {
        let deploy = Config::parse(
            include_str!("../../../deploy/keysentry.toml"),
            "deploy/keysentry.toml",
        )
        .unwrap();
        let default = Config::default_config();
        assert_eq!(deploy.key_path, default.key_path);
        assert_eq!(deploy.key_name, default.key_name);
        assert_eq!(deploy.allow, default.allow);
        assert_eq!(deploy.protected, default.protected);
        assert_eq!(deploy.protection, default.protection);
        assert_eq!(deploy.dumps, default.dumps);
        assert_eq!(deploy.flow, default.flow);
        assert_eq!(deploy.agents, default.agents);
        assert_eq!(deploy.tamper, default.tamper);
        assert_eq!(default.tamper, Tamper::default());
        assert!(deploy.alerts.file.is_some() && deploy.alerts.syslog);
    }

    #[test]
    fn default_parses() {
        let c = Config::default_config();
        assert!(c.metrics.enabled);
        assert_eq!(c.metrics.listen, Metrics::default().listen);
        assert!(c.alerts.stdout);
        assert!(c.protected.is_empty());
        for p in [
            "/etc/ssl/private",
            "/etc/shadow",
            "/etc/ssh/ssh_host_ed25519_key",
            "/root/.gnupg/private-keys-v1.d",
        ] {
            assert!(c.key_path.iter().any(|k| k.path == Path::new(p)), "{p}");
        }
        let r = &c.key_name;
        for key in [
            "id_rsa",
            "id_ed25519",
            "ssh_host_ed25519_key",
            "server.key",
            "client.p12",
            "krb5.keytab",
        ] {
            assert!(name_matches(r, key, None).is_some(), "{key}");
        }
        for not_key in [
            "id_rsa.pub",
            "id_ed25519-cert.pub",
            "ssh_host_rsa_key.pub",
            "server.pem",
            "server.crt",
            "authorized_keys",
            "truststore.jks",
        ] {
            assert_eq!(name_matches(r, not_key, None), None, "{not_key}");
        }
        assert!(name_matches(r, "0123ABCD.key", Some("private-keys-v1.d")).is_some());
    }

    #[test]
    fn empty_config_takes_the_defaults() {
        let c = Config::parse("", "t.toml").unwrap();
        assert_eq!(c.metrics, Metrics::default());
        assert_eq!(c.alerts, Alerts::default());
        assert!(c.key_path.is_empty() && c.key_name.is_empty() && c.allow.is_empty());
        let c = Config::parse("[metrics]\nenabled = false\n", "t.toml").unwrap();
        assert_eq!(c.metrics.listen, Metrics::default().listen);
        assert!(!c.metrics.enabled);
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let s = bad("[metrics]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n");
        assert!(s.starts_with("t.toml: "), "{s}");
        assert!(s.contains("bogus") && s.contains("line 3"), "{s}");
        assert!(bad("[[key_path]]\npath = \"/a\"\nlabel = \"x\"\n").contains("label"));
        assert!(bad("[[keypath]]\npath = \"/a\"\n").contains("keypath"));
        assert!(bad("[[protected]]\nunit = \"vault\"\n").contains("protected[0].unit"));
        assert!(bad("[[protected]]\nunit = \"a/b.service\"\n").contains("protected[0].unit"));
        assert!(
            bad("[[protected]]\ncontainer_name = \"a b\"\n")
                .contains("protected[0].container_name")
        );
        assert!(
            bad("[[protected]]\ncontainer_image = \"x\"\nunit = \"x.service\"\n")
                .contains("(found: unit, container_image)")
        );
        assert!(bad("[[allow]]\nexe = \"/a\"\nunit = \"vault\"\n").contains("allow[0].unit"));
        assert!(
            bad("[[allow]]\nexe = \"/a\"\nunit = \"v.service\"\ncontainer_name = \"v\"\n")
                .contains("allow[0].unit")
        );
        assert!(
            bad("[[allow]]\nexe = \"/a\"\ncontainer_image = \"\"\n")
                .contains("allow[0].container_image")
        );
        assert!(bad("[containers]\ndocker_root = \"docker\"\n").contains("containers.docker_root"));
        assert!(bad("[[protected]]\nunit = \"x.service\"\ncomm = \"x\"\n").contains("comm, unit"));
        assert!(bad("[[allow]]\nkey_path = \"/a\"\n").contains("exe"));
        assert!(bad("[alerts]\nstdout = \"yes\"\n").contains("stdout"));
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("keysentry-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("bad.toml");
        std::fs::write(&f, "[[key_path]]\npath = \"rel\"\n").unwrap();
        let s = Config::load(&f).unwrap_err().to_string();
        assert!(
            s.starts_with(&format!("{}: key_path[0].path: ", f.display())),
            "{s}"
        );
        let s = Config::load(&dir.join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(s.contains("missing.toml"), "{s}");
        std::fs::write(&f, DEFAULT_CONFIG).unwrap();
        assert_eq!(Config::load(&f).unwrap(), Config::default_config());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
