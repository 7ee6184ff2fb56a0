//! Configuration: TOML, every table `deny_unknown_fields`, defaults in one
//! place (`default-config.toml`, embedded), validated before anything is
//! loaded. Errors name the field: `key_name[2].suffix: ...`.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use sensor_common::names::{MAX_AFFIX, MAX_EXACT, MAX_PATTERNS};

pub const DEFAULT_CONFIG: &str = include_str!("default-config.toml");

/// Most `[[key_path]]` entries.
pub const MAX_KEY_PATHS: usize = 256;
/// Most excludes of one `[[key_name]]`.
pub const MAX_EXCLUDES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: {field}: {message}")]
    Invalid {
        origin: String,
        field: String,
        message: String,
    },
    #[error("{0}: {1}")]
    Read(String, std::io::Error),
}

#[derive(Debug, Clone, Deserialize)]
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9979))
}

fn yes() -> bool {
    true
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            enabled: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    /// JSON lines on stdout.
    #[serde(default = "yes")]
    pub stdout: bool,
    /// JSON lines appended to this file.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

impl Default for Alerts {
    fn default() -> Self {
        Self {
            stdout: true,
            file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPath {
    /// A key file, or a directory watched recursively.
    pub path: PathBuf,
    /// A label (default: the path).
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyName {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub suffix: Option<String>,
    /// Name of the parent directory (e.g. private-keys-v1.d).
    #[serde(default)]
    pub dir: Option<String>,
    /// "*SUFFIX", "PREFIX*" or an exact name.
    #[serde(default)]
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Dir(String),
}

impl NameMatch {
    fn parse_exclude(s: &str) -> NameMatch {
        if let Some(rest) = s.strip_prefix('*') {
            NameMatch::Suffix(rest.to_string())
        } else if let Some(rest) = s.strip_suffix('*') {
            NameMatch::Prefix(rest.to_string())
        } else {
            NameMatch::Exact(s.to_string())
        }
    }

    fn text(&self) -> &str {
        match self {
            NameMatch::Exact(s)
            | NameMatch::Prefix(s)
            | NameMatch::Suffix(s)
            | NameMatch::Dir(s) => s,
        }
    }

    /// Does a file `name` (in directory `parent`) match?
    pub fn matches(&self, name: &str, parent: Option<&str>) -> bool {
        match self {
            NameMatch::Exact(s) => name == s,
            NameMatch::Prefix(s) => name.starts_with(s.as_str()),
            NameMatch::Suffix(s) => name.ends_with(s.as_str()),
            NameMatch::Dir(s) => parent == Some(s.as_str()),
        }
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
    /// The including pattern (validated: exactly one is set).
    pub fn include(&self) -> NameMatch {
        if let Some(s) = &self.name {
            NameMatch::Exact(s.clone())
        } else if let Some(s) = &self.prefix {
            NameMatch::Prefix(s.clone())
        } else if let Some(s) = &self.suffix {
            NameMatch::Suffix(s.clone())
        } else {
            NameMatch::Dir(self.dir.clone().unwrap_or_default())
        }
    }

    pub fn excludes(&self) -> Vec<NameMatch> {
        self.exclude
            .iter()
            .map(|e| NameMatch::parse_exclude(e))
            .collect()
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protected {
    #[serde(default)]
    pub exe: Option<PathBuf>,
    #[serde(default)]
    pub comm: Option<String>,
    #[serde(default)]
    pub pid_file: Option<PathBuf>,
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    /// Real executable path of the allowed program.
    pub exe: PathBuf,
    /// Restricts the allowance to this configured key_path.
    #[serde(default)]
    pub key_path: Option<PathBuf>,
}

/// Index of the first rule whose include matches `name` (in directory
/// `parent`) and none of whose excludes match `name`.
pub fn name_matches(rules: &[KeyName], name: &str, parent_dir: Option<&str>) -> Option<usize> {
    rules.iter().position(|r| {
        r.include().matches(name, parent_dir)
            && !r.excludes().iter().any(|e| e.matches(name, parent_dir))
    })
}

impl Config {
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        cfg.validate()
            .map_err(|(field, message)| ConfigError::Invalid {
                origin: origin.to_string(),
                field,
                message,
            })?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read(path.display().to_string(), e))?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn default_config() -> Config {
        Self::parse(DEFAULT_CONFIG, "embedded default config")
            .expect("the embedded default config is valid")
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let err = |field: String, msg: &str| Err((field, msg.to_string()));
        if let Some(f) = &self.alerts.file
            && !f.is_absolute()
        {
            return err("alerts.file".into(), "must be an absolute path");
        }
        if self.key_path.len() > MAX_KEY_PATHS {
            return err(
                "key_path".into(),
                &format!("at most {MAX_KEY_PATHS} entries"),
            );
        }
        for (i, k) in self.key_path.iter().enumerate() {
            if !k.path.is_absolute() {
                return err(format!("key_path[{i}].path"), "must be an absolute path");
            }
        }
        let mut patterns = 0usize;
        for (i, k) in self.key_name.iter().enumerate() {
            let set: Vec<(&str, &String)> = [
                ("name", &k.name),
                ("prefix", &k.prefix),
                ("suffix", &k.suffix),
                ("dir", &k.dir),
            ]
            .into_iter()
            .filter_map(|(n, v)| v.as_ref().map(|v| (n, v)))
            .collect();
            if set.len() != 1 {
                return err(
                    format!("key_name[{i}]"),
                    "set exactly one of name, prefix, suffix, dir",
                );
            }
            let (field, value) = set[0];
            let max = if matches!(field, "prefix" | "suffix") {
                MAX_AFFIX
            } else {
                MAX_EXACT
            };
            check_name(&format!("key_name[{i}].{field}"), value, max)?;
            if k.exclude.len() > MAX_EXCLUDES {
                return err(
                    format!("key_name[{i}].exclude"),
                    &format!("at most {MAX_EXCLUDES} entries"),
                );
            }
            for (j, e) in k.exclude.iter().enumerate() {
                let field = format!("key_name[{i}].exclude[{j}]");
                let m = NameMatch::parse_exclude(e);
                let max = if matches!(m, NameMatch::Exact(_)) {
                    MAX_EXACT
                } else {
                    MAX_AFFIX
                };
                if m.text().contains('*') {
                    return err(field, "'*' only at the start (suffix) or the end (prefix)");
                }
                check_name(&field, m.text(), max)?;
            }
            patterns += 1 + k.exclude.len();
        }
        if self.key_name.len() > 32 || patterns > MAX_PATTERNS {
            return err(
                "key_name".into(),
                &format!(
                    "at most {MAX_PATTERNS} patterns in all (entries plus excludes), found {patterns}"
                ),
            );
        }
        for (i, p) in self.protected.iter().enumerate() {
            let n = [
                p.exe.is_some(),
                p.comm.is_some(),
                p.pid_file.is_some(),
                p.cgroup.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if n != 1 {
                return err(
                    format!("protected[{i}]"),
                    "set exactly one of exe, comm, pid_file, cgroup",
                );
            }
            for (field, path) in [
                ("exe", &p.exe),
                ("pid_file", &p.pid_file),
                ("cgroup", &p.cgroup),
            ] {
                if path.as_ref().is_some_and(|p| !p.is_absolute()) {
                    return err(
                        format!("protected[{i}].{field}"),
                        "must be an absolute path",
                    );
                }
            }
            if let Some(c) = &p.comm
                && (c.is_empty() || c.len() > 15)
            {
                return err(format!("protected[{i}].comm"), "must be 1 to 15 bytes");
            }
        }
        for (i, a) in self.allow.iter().enumerate() {
            if !a.exe.is_absolute() {
                return err(format!("allow[{i}].exe"), "must be an absolute path");
            }
            if let Some(kp) = &a.key_path
                && !self.key_path.iter().any(|k| &k.path == kp)
            {
                return err(format!("allow[{i}].key_path"), "not a configured key_path");
            }
        }
        Ok(())
    }
}

fn check_name(field: &str, value: &str, max: usize) -> Result<(), (String, String)> {
    if value.is_empty() {
        return Err((field.to_string(), "must not be empty".into()));
    }
    if value.len() > max {
        return Err((
            field.to_string(),
            format!(
                "{value:?} is {} bytes, at most {max} are supported",
                value.len()
            ),
        ));
    }
    if value.contains('/') || value.contains('\0') {
        return Err((field.to_string(), "a file name: no '/' or NUL".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(text: &str) -> String {
        Config::parse(text, "t.toml").unwrap_err().to_string()
    }

    #[test]
    fn default_parses() {
        let c = Config::default_config();
        assert!(!c.key_path.is_empty());
        assert!(!c.key_name.is_empty());
        assert!(c.metrics.enabled);
    }

    #[test]
    fn errors_name_the_field() {
        assert!(bad("[metrics]\nbogus = 1\n").contains("bogus"));
        assert!(bad("[[key_path]]\npath = \"rel\"\n").contains("key_path[0].path"));
        assert!(
            bad("[[key_name]]\nsuffix = \"12345678901234567\"\n").contains("key_name[0].suffix")
        );
        assert!(bad("[[key_name]]\nname = \"a\"\nprefix = \"b\"\n").contains("key_name[0]"));
        assert!(bad("[metrics]\nlisten = \"nope\"\n").contains("listen"));
        assert!(
            bad("[[key_path]]\npath = \"/a\"\n[[allow]]\nexe = \"/x\"\nkey_path = \"/b\"\n")
                .contains("allow[0].key_path")
        );
        assert!(bad("[[key_name]]\nsuffix = \".x\"\nexclude = [\"a*b\"]\n").contains("exclude[0]"));
        let many: String = (0..33)
            .map(|i| format!("[[key_name]]\nsuffix = \".k{i}\"\n"))
            .collect();
        assert!(bad(&many).contains("key_name"));
        assert!(bad("[[protected]]\nexe = \"/a\"\ncomm = \"b\"\n").contains("protected[0]"));
        assert!(bad("[alerts]\nfile = \"x.jsonl\"\n").contains("alerts.file"));
    }

    #[test]
    fn names() {
        let c = Config::parse(
            "[[key_name]]\nprefix = \"id_\"\nexclude = [\"*.pub\"]\n[[key_name]]\nsuffix = \".p12\"\n[[key_name]]\ndir = \"private-keys-v1.d\"\n",
            "t",
        )
        .unwrap();
        let r = &c.key_name;
        assert_eq!(name_matches(r, "id_rsa", None), Some(0));
        assert_eq!(name_matches(r, "id_rsa.pub", None), None);
        assert_eq!(name_matches(r, "x.p12", None), Some(1));
        assert_eq!(
            name_matches(r, "ABC.key", Some("private-keys-v1.d")),
            Some(2)
        );
        assert_eq!(r[0].to_string(), "id_* !*.pub");
    }
}
