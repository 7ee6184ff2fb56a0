//! `[[key_name]]`: key files recognised by name wherever they are, and the
//! string matcher (`name_matches`). The kernel runs the same rules on name
//! words (`sensor_common::names`, compiled by `reload::name_patterns`);
//! sensor/tests/key_names.rs checks that the two agree.

use std::fmt;

use serde::Deserialize;

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

/// What a pattern's text is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Exact,
    Prefix,
    Suffix,
    Dir,
}

impl Kind {
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
pub(super) fn parse_exclude(s: &str) -> (Kind, &str) {
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
    pub(super) fn set(&self) -> Vec<(&'static str, Kind, &str)> {
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

#[cfg(test)]
mod tests {
    use super::{super::Config, *};

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
