//! Configuration: TOML, every table `deny_unknown_fields`, defaults in one
//! place (the `Default` impls below; the embedded `default-config.toml` is
//! the template users start from), validated before anything is loaded.
//! Errors name the field: `key_name[2].suffix: ...`.
//!
//! Reference: docs/configuration.md.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Deserializer};

pub const DEFAULT_CONFIG: &str = include_str!("default-config.toml");

/// Most `[[key_path]]` entries.
pub const MAX_KEY_PATHS: usize = 256;
/// Most `[[key_name]]` entries (one rule bit each in the kernel).
pub const MAX_KEY_NAMES: usize = 32;
/// Most name patterns in all: every `[[key_name]]` entry plus its excludes.
/// Equals `sensor_common::names::MAX_PATTERNS` (the kernel's pattern table);
/// repeated here so this module stands alone, and `live::name_patterns`
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
    #[serde(default)]
    pub allow: Vec<Allow>,
    #[serde(default)]
    pub dumps: Dumps,
    #[serde(default)]
    pub rule: Vec<RuleMode>,
    /// `[scoring]`: docs/scoring.md.
    #[serde(default)]
    pub scoring: crate::score::ScoringConfig,
    /// `[correlation]`: incident window, repeat folding.
    #[serde(default)]
    pub correlation: crate::correlate::CorrelationConfig,
    /// `[flow]`: how far taint and tracking follow data.
    #[serde(default)]
    pub flow: Flow,
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

/// `[dumps]`: where crash handlers keep dumps.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dumps {
    /// Directories whose files are dumps (systemd-coredump, apport): the
    /// files there at start and those written later are registered, so
    /// opens, copies and sends of them are followed. Absolute paths; a
    /// missing directory is skipped.
    pub dirs: Vec<PathBuf>,
}

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
        }
    }
}

/// `[metrics]`: Prometheus text exposition at `http://<listen>/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Metrics {
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    pub enabled: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9979)),
            enabled: true,
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
}

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

/// `[[key_name]]`: files named like keys, wherever they are. Exactly one of
/// `name`, `prefix`, `suffix`, `dir` (validated).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyName {
    /// Exact file name.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub suffix: Option<String>,
    /// Name of the parent directory (e.g. private-keys-v1.d).
    #[serde(default)]
    pub dir: Option<String>,
    /// "*SUFFIX", "PREFIX*" or an exact name, matched on the file's name.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// One name pattern, as the kernel-side code compiles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// Exact name of the parent directory.
    Dir(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Dir,
}

impl Kind {
    fn max_len(self) -> usize {
        match self {
            Kind::Prefix | Kind::Suffix => MAX_AFFIX,
            Kind::Exact | Kind::Dir => MAX_EXACT,
        }
    }

    /// Does a file `name` in a directory named `parent` match `text`?
    fn matches(self, text: &str, name: &str, parent: Option<&str>) -> bool {
        match self {
            Kind::Exact => name == text,
            Kind::Prefix => name.starts_with(text),
            Kind::Suffix => name.ends_with(text),
            Kind::Dir => parent == Some(text),
        }
    }
}

/// An exclude: "*SUFFIX", "PREFIX*", else an exact name.
fn parse_exclude(s: &str) -> (Kind, &str) {
    if let Some(rest) = s.strip_prefix('*') {
        (Kind::Suffix, rest)
    } else if let Some(rest) = s.strip_suffix('*') {
        (Kind::Prefix, rest)
    } else {
        (Kind::Exact, s)
    }
}

impl NameMatch {
    fn new(kind: Kind, text: &str) -> Self {
        let t = text.to_string();
        match kind {
            Kind::Exact => NameMatch::Exact(t),
            Kind::Prefix => NameMatch::Prefix(t),
            Kind::Suffix => NameMatch::Suffix(t),
            Kind::Dir => NameMatch::Dir(t),
        }
    }

    fn kind(&self) -> Kind {
        match self {
            NameMatch::Exact(_) => Kind::Exact,
            NameMatch::Prefix(_) => Kind::Prefix,
            NameMatch::Suffix(_) => Kind::Suffix,
            NameMatch::Dir(_) => Kind::Dir,
        }
    }

    /// The pattern's bytes.
    pub fn text(&self) -> &str {
        match self {
            NameMatch::Exact(s)
            | NameMatch::Prefix(s)
            | NameMatch::Suffix(s)
            | NameMatch::Dir(s) => s,
        }
    }

    /// Does a file `name` (in a directory named `parent`) match?
    pub fn matches(&self, name: &str, parent: Option<&str>) -> bool {
        self.kind().matches(self.text(), name, parent)
    }
}

impl fmt::Display for NameMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameMatch::Exact(s) => write!(f, "{s}"),
            NameMatch::Prefix(s) => write!(f, "{s}*"),
            NameMatch::Suffix(s) => write!(f, "*{s}"),
            NameMatch::Dir(s) => write!(f, "{s}/*"),
        }
    }
}

impl KeyName {
    /// The fields set among name, prefix, suffix, dir.
    fn set(&self) -> Vec<(&'static str, Kind, &str)> {
        [
            ("name", Kind::Exact, &self.name),
            ("prefix", Kind::Prefix, &self.prefix),
            ("suffix", Kind::Suffix, &self.suffix),
            ("dir", Kind::Dir, &self.dir),
        ]
        .into_iter()
        .filter_map(|(f, k, v)| v.as_deref().map(|v| (f, k, v)))
        .collect()
    }

    fn include_ref(&self) -> (Kind, &str) {
        if let Some(s) = &self.name {
            (Kind::Exact, s)
        } else if let Some(s) = &self.prefix {
            (Kind::Prefix, s)
        } else if let Some(s) = &self.suffix {
            (Kind::Suffix, s)
        } else {
            (Kind::Dir, self.dir.as_deref().unwrap_or_default())
        }
    }

    /// The including pattern (validation ensures exactly one is set).
    pub fn include(&self) -> NameMatch {
        let (k, t) = self.include_ref();
        NameMatch::new(k, t)
    }

    /// The excluding patterns: Exact, Prefix or Suffix, never Dir.
    pub fn excludes(&self) -> Vec<NameMatch> {
        self.exclude
            .iter()
            .map(|e| {
                let (k, t) = parse_exclude(e);
                NameMatch::new(k, t)
            })
            .collect()
    }

    /// Does this rule match a file `name` in a directory named `parent_dir`?
    /// Excludes are evaluated on the file's own name.
    pub fn matches(&self, name: &str, parent_dir: Option<&str>) -> bool {
        let (k, t) = self.include_ref();
        k.matches(t, name, parent_dir)
            && !self.exclude.iter().any(|e| {
                let (k, t) = parse_exclude(e);
                k.matches(t, name, None)
            })
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.include())?;
        for e in self.excludes() {
            write!(f, " !{e}")?;
        }
        Ok(())
    }
}

/// Index of the first rule whose include matches `name` (for a `dir` rule:
/// `parent_dir`, the name of the file's directory) and none of whose
/// excludes match `name`. The kernel computes the same, as a rule bitmask.
pub fn name_matches(rules: &[KeyName], name: &str, parent_dir: Option<&str>) -> Option<usize> {
    rules.iter().position(|r| r.matches(name, parent_dir))
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
}

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|e| {
        serde::de::Error::custom(format!(
            "metrics.listen: {s:?}: {e}; expected IP:PORT, e.g. \"127.0.0.1:9979\" or \"[::1]:9979\""
        ))
    })
}

/// A validation failure: (field, message).
type Invalid = (String, String);

fn invalid<T>(field: impl Into<String>, message: impl Into<String>) -> Result<T, Invalid> {
    Err((field.into(), message.into()))
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

    /// The embedded default config (a unit test keeps it valid).
    pub fn default_config() -> Config {
        Self::parse(DEFAULT_CONFIG, "embedded default config")
            .expect("the embedded default config is valid")
    }

    fn validate(&self) -> Result<(), Invalid> {
        self.validate_alerts()?;
        self.scoring.validate()?;
        self.correlation.validate()?;
        self.validate_key_paths()?;
        self.validate_key_names()?;
        self.validate_protected()?;
        self.validate_allow()?;
        self.validate_rules()?;
        for (i, d) in self.dumps.dirs.iter().enumerate() {
            absolute(&format!("dumps.dirs[{i}]"), d)?;
        }
        if !(1..=16).contains(&self.flow.max_generations) {
            return invalid("flow.max_generations", "must be between 1 and 16");
        }
        Ok(())
    }

    fn validate_alerts(&self) -> Result<(), Invalid> {
        let a = &self.alerts;
        if let Some(f) = &a.file {
            absolute("alerts.file", f)?;
        }
        if !a.stdout && a.file.is_none() && !a.syslog {
            return invalid(
                "alerts",
                "no output: set stdout = true, a file or syslog = true, or alerts would be lost",
            );
        }
        if a.file_max_bytes != 0 && a.file_max_bytes < 4096 {
            return invalid(
                "alerts.file_max_bytes",
                format!(
                    "{} is too small: at least 4096, or 0 (never rotate)",
                    a.file_max_bytes
                ),
            );
        }
        if a.file_keep > 1000 {
            return invalid("alerts.file_keep", "at most 1000 rotated files");
        }
        absolute("alerts.syslog_socket", &a.syslog_socket)?;
        if syslog_facility(&a.syslog_facility).is_none() {
            return invalid(
                "alerts.syslog_facility",
                format!(
                    "{:?} is not a facility: kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, authpriv, ftp, ntp, audit, alert, clock, local0 .. local7",
                    a.syslog_facility
                ),
            );
        }
        if a.queue == 0 || a.queue > MAX_QUEUE {
            return invalid(
                "alerts.queue",
                format!("{}: between 1 and {MAX_QUEUE}", a.queue),
            );
        }
        Ok(())
    }

    fn validate_rules(&self) -> Result<(), Invalid> {
        for (i, r) in self.rule.iter().enumerate() {
            if !sensor_common::ENF_RULES.contains(&r.name.as_str()) {
                return invalid(
                    format!("rule[{i}].name"),
                    format!(
                        "{:?} is not an enforceable rule; one of: {}",
                        r.name,
                        sensor_common::ENF_RULES.join(", ")
                    ),
                );
            }
            if let Some(j) = self.rule[..i].iter().position(|o| o.name == r.name) {
                return invalid(
                    format!("rule[{i}].name"),
                    format!("{:?} is already set by rule[{j}]", r.name),
                );
            }
        }
        Ok(())
    }

    /// Bit per ENF_* rule configured with `mode = "enforce"`.
    pub fn enforce_bits(&self) -> u32 {
        self.rule
            .iter()
            .filter(|r| r.mode == Mode::Enforce)
            .filter_map(|r| sensor_common::ENF_RULES.iter().position(|n| *n == r.name))
            .fold(0, |bits, i| bits | 1 << i)
    }

    fn validate_key_paths(&self) -> Result<(), Invalid> {
        let n = self.key_path.len();
        if n > MAX_KEY_PATHS {
            return invalid(
                "key_path",
                format!("{n} entries, at most {MAX_KEY_PATHS} are supported"),
            );
        }
        for (i, k) in self.key_path.iter().enumerate() {
            let field = format!("key_path[{i}].path");
            absolute(&field, &k.path)?;
            if k.path.parent().is_none() {
                return invalid(field, "\"/\" is not a key store");
            }
            if let Some(j) = self.key_path[..i].iter().position(|o| o.path == k.path) {
                return invalid(field, format!("same path as key_path[{j}]"));
            }
            if k.name.as_deref().is_some_and(str::is_empty) {
                return invalid(format!("key_path[{i}].name"), "must not be empty");
            }
        }
        Ok(())
    }

    fn validate_key_names(&self) -> Result<(), Invalid> {
        let n = self.key_name.len();
        if n > MAX_KEY_NAMES {
            return invalid(
                "key_name",
                format!("{n} entries, at most {MAX_KEY_NAMES} are supported"),
            );
        }
        for (i, k) in self.key_name.iter().enumerate() {
            let set = k.set();
            let [(field, kind, text)] = set[..] else {
                let found: Vec<&str> = set.iter().map(|s| s.0).collect();
                let found = if found.is_empty() {
                    "none".to_string()
                } else {
                    found.join(", ")
                };
                return invalid(
                    format!("key_name[{i}]"),
                    format!("set exactly one of name, prefix, suffix, dir (found: {found})"),
                );
            };
            check_pattern(&format!("key_name[{i}].{field}"), kind, text, false)?;
            if k.exclude.len() > MAX_EXCLUDES {
                return invalid(
                    format!("key_name[{i}].exclude"),
                    format!(
                        "{} entries, at most {MAX_EXCLUDES} are supported",
                        k.exclude.len()
                    ),
                );
            }
            for (j, e) in k.exclude.iter().enumerate() {
                let (kind, text) = parse_exclude(e);
                check_pattern(&format!("key_name[{i}].exclude[{j}]"), kind, text, true)?;
            }
        }
        let patterns: usize = self.key_name.iter().map(|k| 1 + k.exclude.len()).sum();
        if patterns > MAX_PATTERNS {
            return invalid(
                "key_name",
                format!(
                    "{patterns} patterns (entries plus their excludes), at most {MAX_PATTERNS} are supported"
                ),
            );
        }
        Ok(())
    }

    fn validate_protected(&self) -> Result<(), Invalid> {
        for (i, p) in self.protected.iter().enumerate() {
            let found: Vec<&str> = [
                ("exe", p.exe.is_some()),
                ("comm", p.comm.is_some()),
                ("pid_file", p.pid_file.is_some()),
                ("cgroup", p.cgroup.is_some()),
            ]
            .into_iter()
            .filter_map(|(f, set)| set.then_some(f))
            .collect();
            if found.len() != 1 {
                let found = if found.is_empty() {
                    "none".to_string()
                } else {
                    found.join(", ")
                };
                return invalid(
                    format!("protected[{i}]"),
                    format!("set exactly one of exe, comm, pid_file, cgroup (found: {found})"),
                );
            }
            if let Some(exe) = &p.exe {
                absolute(&format!("protected[{i}].exe"), exe)?;
            }
            if let Some(f) = &p.pid_file {
                absolute(&format!("protected[{i}].pid_file"), f)?;
            }
            if let Some(c) = &p.comm {
                let field = format!("protected[{i}].comm");
                if c.is_empty() {
                    return invalid(field, "must not be empty");
                }
                if c.len() > MAX_COMM {
                    return invalid(
                        field,
                        format!(
                            "{c:?} is {} bytes, at most {MAX_COMM} are supported (the kernel truncates comm)",
                            c.len()
                        ),
                    );
                }
                if c.contains('\0') {
                    return invalid(field, "must not contain NUL");
                }
            }
            if let Some(cg) = &p.cgroup {
                let field = format!("protected[{i}].cgroup");
                absolute(&field, cg)?;
                let s = cg.to_string_lossy();
                if s.starts_with("/sys/fs/cgroup") {
                    return invalid(
                        field,
                        "the path inside the cgroup hierarchy, without the /sys/fs/cgroup mount point, e.g. \"/system.slice/vault.service\"",
                    );
                }
                if s.split('/').any(|c| c == "." || c == "..") {
                    return invalid(field, "must not contain \".\" or \"..\" components");
                }
            }
        }
        Ok(())
    }

    fn validate_allow(&self) -> Result<(), Invalid> {
        for (i, a) in self.allow.iter().enumerate() {
            absolute(&format!("allow[{i}].exe"), &a.exe)?;
            if let Some(t) = &a.target {
                absolute(&format!("allow[{i}].target"), t)?;
                if a.key_path.is_some() {
                    return invalid(
                        format!("allow[{i}].target"),
                        "cannot be combined with key_path: use one entry for key files, one for memory access",
                    );
                }
            }
            if a.dumps && (a.key_path.is_some() || a.target.is_some()) {
                return invalid(
                    format!("allow[{i}].dumps"),
                    "cannot be combined with key_path or target: use one entry per kind of allowance",
                );
            }
            if let Some(kp) = &a.key_path
                && !self.key_path.iter().any(|k| &k.path == kp)
            {
                return invalid(
                    format!("allow[{i}].key_path"),
                    format!(
                        "not a configured key_path: {:?} (must equal the path of a [[key_path]])",
                        kp.display().to_string()
                    ),
                );
            }
        }
        Ok(())
    }
}

/// An absolute path without NUL.
fn absolute(field: &str, p: &Path) -> Result<(), Invalid> {
    let s = p.to_string_lossy();
    if s.contains('\0') {
        return invalid(field, "must not contain NUL");
    }
    if !p.is_absolute() {
        return invalid(field, format!("must be absolute (start with '/'): {s:?}"));
    }
    Ok(())
}

/// A name pattern: a file name (no '/', no NUL), 1 to the kind's maximum
/// bytes. In an include '*' is refused (it is no wildcard there); in an
/// exclude it was already taken off the start or the end.
fn check_pattern(field: &str, kind: Kind, text: &str, exclude: bool) -> Result<(), Invalid> {
    if text.contains('*') {
        return invalid(
            field,
            if exclude {
                "one '*' only, at the start (\"*SUFFIX\") or the end (\"PREFIX*\")"
            } else {
                "'*' is no wildcard here: use prefix = \"...\" or suffix = \"...\""
            },
        );
    }
    if text.contains('/') {
        return invalid(field, format!("{text:?}: a file name, '/' is not allowed"));
    }
    if text.contains('\0') {
        return invalid(field, "must not contain NUL");
    }
    if text.is_empty() {
        return invalid(
            field,
            if exclude {
                "empty pattern (it would exclude every name)"
            } else {
                "must not be empty"
            },
        );
    }
    if matches!(kind, Kind::Exact | Kind::Dir) && (text == "." || text == "..") {
        return invalid(field, format!("{text:?} is not a file name"));
    }
    let max = kind.max_len();
    if text.len() > max {
        return invalid(
            field,
            format!(
                "{text:?} is {} bytes, at most {max} are supported",
                text.len()
            ),
        );
    }
    Ok(())
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
    use super::*;

    fn err(text: &str) -> ConfigError {
        Config::parse(text, "t.toml").unwrap_err()
    }

    fn bad(text: &str) -> String {
        err(text).to_string()
    }

    /// A validation error naming `field`; its Display is "t.toml: field: ...".
    fn invalid_field(text: &str, field: &str) -> String {
        let e = err(text);
        assert_eq!(e.field(), Some(field), "{e}");
        let s = e.to_string();
        assert!(s.starts_with(&format!("t.toml: {field}: ")), "{s}");
        s
    }

    #[test]
    fn the_deploy_config_is_the_default_with_production_outputs() {
        let deploy = Config::parse(
            include_str!("../../deploy/keysentry.toml"),
            "deploy/keysentry.toml",
        )
        .unwrap();
        let default = Config::default_config();
        assert_eq!(deploy.key_path, default.key_path);
        assert_eq!(deploy.key_name, default.key_name);
        assert_eq!(deploy.allow, default.allow);
        assert_eq!(deploy.protected, default.protected);
        assert_eq!(deploy.dumps, default.dumps);
        assert_eq!(deploy.flow, default.flow);
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
        assert!(bad("[[allow]]\nkey_path = \"/a\"\n").contains("exe"));
        assert!(bad("[alerts]\nstdout = \"yes\"\n").contains("stdout"));
    }

    #[test]
    fn key_path_errors() {
        let s = invalid_field(
            "[[key_path]]\npath = \"relative/path\"\n",
            "key_path[0].path",
        );
        assert!(s.contains("must be absolute"), "{s}");
        invalid_field(
            "[[key_path]]\npath = \"/a\"\n[[key_path]]\npath = \"\"\n",
            "key_path[1].path",
        );
        invalid_field(
            "[[key_path]]\npath = \"/a\"\n[[key_path]]\npath = \"/a/\"\n",
            "key_path[1].path",
        );
        invalid_field("[[key_path]]\npath = \"/\"\n", "key_path[0].path");
        invalid_field(
            "[[key_path]]\npath = \"/a\"\nname = \"\"\n",
            "key_path[0].name",
        );
        let many: String = (0..=MAX_KEY_PATHS)
            .map(|i| format!("[[key_path]]\npath = \"/k{i}\"\n"))
            .collect();
        invalid_field(&many, "key_path");
        let c = Config::parse("[[key_path]]\npath = \"/does/not/exist\"\n", "t").unwrap();
        assert_eq!(c.key_path[0].label(), "/does/not/exist");
    }

    #[test]
    fn key_name_errors() {
        let s = invalid_field(
            "[[key_name]]\nsuffix = \".a\"\n[[key_name]]\nsuffix = \"12345678901234567\"\n",
            "key_name[1].suffix",
        );
        assert!(
            s.ends_with("\"12345678901234567\" is 17 bytes, at most 16 are supported"),
            "{s}"
        );
        invalid_field(
            "[[key_name]]\nprefix = \"12345678901234567\"\n",
            "key_name[0].prefix",
        );
        let ok32 = "a".repeat(32);
        Config::parse(&format!("[[key_name]]\nname = \"{ok32}\"\n"), "t").unwrap();
        invalid_field(
            &format!("[[key_name]]\nname = \"{ok32}b\"\n"),
            "key_name[0].name",
        );
        let s = invalid_field(
            "[[key_name]]\nname = \"a\"\nprefix = \"b\"\n",
            "key_name[0]",
        );
        assert!(s.contains("name, prefix"), "{s}");
        invalid_field("[[key_name]]\nexclude = [\"*.pub\"]\n", "key_name[0]");
        invalid_field("[[key_name]]\nsuffix = \"\"\n", "key_name[0].suffix");
        invalid_field("[[key_name]]\nname = \"a/b\"\n", "key_name[0].name");
        invalid_field("[[key_name]]\nname = \"a\\u0000b\"\n", "key_name[0].name");
        invalid_field("[[key_name]]\ndir = \"..\"\n", "key_name[0].dir");
        invalid_field("[[key_name]]\nsuffix = \"*.key\"\n", "key_name[0].suffix");
        for e in ["a*b", "**", "*", "*a*", "a/*", "*12345678901234567"] {
            invalid_field(
                &format!("[[key_name]]\nsuffix = \".x\"\nexclude = [\"{e}\"]\n"),
                "key_name[0].exclude[0]",
            );
        }
        invalid_field(
            "[[key_name]]\nsuffix = \".x\"\nexclude = [\"a\", \"b\", \"c\", \"d\", \"e\"]\n",
            "key_name[0].exclude",
        );
    }

    #[test]
    fn pattern_limits() {
        let entries = |n: usize| -> String {
            (0..n)
                .map(|i| format!("[[key_name]]\nsuffix = \".k{i}\"\n"))
                .collect()
        };
        Config::parse(&entries(32), "t").unwrap();
        let s = invalid_field(&entries(33), "key_name");
        assert!(s.contains("33 entries"), "{s}");
        // 29 entries + 4 excludes = 33 patterns.
        let too_many = format!(
            "{}[[key_name]]\nprefix = \"id_\"\nexclude = [\"*.pub\", \"a\", \"b\", \"c\"]\n",
            entries(28)
        );
        let s = invalid_field(&too_many, "key_name");
        assert!(s.contains("33 patterns"), "{s}");
        let just_right = format!(
            "{}[[key_name]]\nprefix = \"id_\"\nexclude = [\"*.pub\", \"a\", \"b\", \"c\"]\n",
            entries(27)
        );
        Config::parse(&just_right, "t").unwrap();
    }

    #[test]
    fn metrics_and_alerts_errors() {
        let s = bad("[metrics]\nlisten = \"nope\"\n");
        assert!(s.contains("metrics.listen: \"nope\""), "{s}");
        assert!(s.contains("line 2"), "{s}");
        assert!(bad("[metrics]\nlisten = \"localhost:9979\"\n").contains("metrics.listen"));
        assert!(bad("[metrics]\nlisten = 9979\n").contains("listen"));
        let c = Config::parse("[metrics]\nlisten = \"[::1]:9\"\n", "t").unwrap();
        assert_eq!(c.metrics.listen, "[::1]:9".parse().unwrap());
        invalid_field("[alerts]\nfile = \"x.jsonl\"\n", "alerts.file");
        invalid_field("[alerts]\nstdout = false\n", "alerts");
        let c = Config::parse("[alerts]\nstdout = false\nfile = \"/a.jsonl\"\n", "t").unwrap();
        assert_eq!(c.alerts.file.as_deref(), Some(Path::new("/a.jsonl")));
        let c = Config::parse("[alerts]\nstdout = false\nsyslog = true\n", "t").unwrap();
        assert_eq!(c.alerts.syslog_socket, Path::new("/dev/log"));
        invalid_field("[alerts]\nfile_max_bytes = 100\n", "alerts.file_max_bytes");
        Config::parse("[alerts]\nfile_max_bytes = 0\n", "t").unwrap();
        invalid_field("[alerts]\nfile_keep = 5000\n", "alerts.file_keep");
        invalid_field(
            "[alerts]\nsyslog_socket = \"dev/log\"\n",
            "alerts.syslog_socket",
        );
        let s = invalid_field(
            "[alerts]\nsyslog_facility = \"local9\"\n",
            "alerts.syslog_facility",
        );
        assert!(s.contains("\"local9\""), "{s}");
        invalid_field("[alerts]\nqueue = 0\n", "alerts.queue");
    }

    #[test]
    fn protected_errors() {
        let s = invalid_field(
            "[[protected]]\nexe = \"/a\"\ncomm = \"b\"\n",
            "protected[0]",
        );
        assert!(s.contains("found: exe, comm"), "{s}");
        invalid_field("[[protected]]\n", "protected[0]");
        invalid_field("[[protected]]\nexe = \"vault\"\n", "protected[0].exe");
        invalid_field(
            "[[protected]]\npid_file = \"v.pid\"\n",
            "protected[0].pid_file",
        );
        invalid_field(
            "[[protected]]\ncomm = \"0123456789abcdef\"\n",
            "protected[0].comm",
        );
        invalid_field("[[protected]]\ncomm = \"\"\n", "protected[0].comm");
        invalid_field(
            "[[protected]]\ncgroup = \"system.slice/vault.service\"\n",
            "protected[0].cgroup",
        );
        invalid_field(
            "[[protected]]\ncgroup = \"/sys/fs/cgroup/system.slice/vault.service\"\n",
            "protected[0].cgroup",
        );
        let c = Config::parse(
            "[[protected]]\ncomm = \"0123456789abcde\"\n[[protected]]\ncgroup = \"/system.slice/vault.service\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.protected.len(), 2);
    }

    #[test]
    fn dump_allowances_and_dirs_are_checked() {
        let f = invalid_field(
            "[[allow]]\nexe = \"/usr/bin/x\"\ndumps = true\ntarget = \"/usr/bin/y\"\n",
            "allow[0].dumps",
        );
        assert!(f.contains("cannot be combined"), "{f}");
        let f = invalid_field("[dumps]\ndirs = [\"crash\"]\n", "dumps.dirs[0]");
        assert!(f.contains("absolute"), "{f}");
        let c = Config::parse("[[allow]]\nexe = \"/usr/bin/x\"\ndumps = true\n", "t").unwrap();
        assert!(c.allow[0].dumps);
        assert_eq!(Config::default_config().dumps, Dumps::default());
    }

    #[test]
    fn rule_modes() {
        let c = Config::parse(
            "[[rule]]\nname = \"ptrace-attach\"\nmode = \"enforce\"\n[[rule]]\nname = \"core-dump\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.rule[1].mode, Mode::Observe);
        assert_eq!(c.enforce_bits(), 1 << sensor_common::ENF_PTRACE);
        let e = invalid_field(
            "[[rule]]\nname = \"key-open\"\nmode = \"enforce\"\n",
            "rule[0].name",
        );
        assert!(e.contains("key-file-open"), "{e}");
        invalid_field(
            "[[rule]]\nname = \"core-dump\"\n[[rule]]\nname = \"core-dump\"\nmode = \"enforce\"\n",
            "rule[1].name",
        );
        let e = bad("[[rule]]\nname = \"core-dump\"\nmode = \"deny\"\n");
        assert!(e.contains("mode") || e.contains("deny"), "{e}");
        assert_eq!(Config::default_config().enforce_bits(), 0);
    }

    #[test]
    fn allow_errors() {
        let s = invalid_field(
            "[[key_path]]\npath = \"/a\"\n[[allow]]\nexe = \"/x\"\nkey_path = \"/b\"\n",
            "allow[0].key_path",
        );
        assert!(s.contains("not a configured key_path"), "{s}");
        invalid_field("[[allow]]\nexe = \"nginx\"\n", "allow[0].exe");
        let c = Config::parse(
            "[[key_path]]\npath = \"/a/\"\n[[allow]]\nexe = \"/x\"\nkey_path = \"/a\"\n[[allow]]\nexe = \"/y\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.allow[1].key_path, None);
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

    #[test]
    fn names() {
        let c = Config::parse(
            "[[key_name]]\nprefix = \"id_\"\nexclude = [\"*.pub\"]\n\
             [[key_name]]\nsuffix = \".p12\"\n\
             [[key_name]]\ndir = \"private-keys-v1.d\"\nexclude = [\"*.lock\"]\n\
             [[key_name]]\nname = \"secring.gpg\"\n",
            "t",
        )
        .unwrap();
        let r = &c.key_name;
        assert_eq!(name_matches(r, "id_rsa", None), Some(0));
        assert_eq!(
            name_matches(r, "id_rsa", Some("private-keys-v1.d")),
            Some(0)
        );
        assert_eq!(name_matches(r, "id_rsa.pub", None), None);
        assert_eq!(name_matches(r, "xid_rsa", None), None);
        assert_eq!(name_matches(r, "x.p12", None), Some(1));
        assert_eq!(name_matches(r, ".p12", None), Some(1));
        assert_eq!(name_matches(r, "x.p12.bak", None), None);
        assert_eq!(
            name_matches(r, "ABC.key", Some("private-keys-v1.d")),
            Some(2)
        );
        assert_eq!(name_matches(r, "ABC.key", Some("other")), None);
        assert_eq!(name_matches(r, "ABC.key", None), None);
        // Excludes look at the file's own name, not its directory's.
        assert_eq!(name_matches(r, "x.lock", Some("private-keys-v1.d")), None);
        assert_eq!(name_matches(r, "secring.gpg", None), Some(3));
        assert_eq!(name_matches(r, "secring.gpg~", None), None);

        assert_eq!(r[0].include(), NameMatch::Prefix("id_".into()));
        assert_eq!(r[0].excludes(), vec![NameMatch::Suffix(".pub".into())]);
        assert_eq!(r[2].include(), NameMatch::Dir("private-keys-v1.d".into()));
        assert_eq!(r[3].include(), NameMatch::Exact("secring.gpg".into()));
        let k = KeyName {
            suffix: Some(".k".into()),
            exclude: vec!["a*".into(), "*b".into(), "c".into()],
            ..KeyName::default()
        };
        assert_eq!(
            k.excludes(),
            vec![
                NameMatch::Prefix("a".into()),
                NameMatch::Suffix("b".into()),
                NameMatch::Exact("c".into()),
            ]
        );
        assert_eq!(r[0].to_string(), "id_* !*.pub");
        assert_eq!(r[2].to_string(), "private-keys-v1.d/* !*.lock");
        assert_eq!(k.to_string(), "*.k !a* !*b !c");
    }
}
