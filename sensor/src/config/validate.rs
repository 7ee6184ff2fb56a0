//! Validation of a parsed config: every check names the bad field
//! (`key_name[2].suffix`), with a message saying what is accepted.

use std::path::Path;

use super::{
    Config, MAX_AFFIX, MAX_COMM, MAX_EXACT, MAX_EXCLUDES, MAX_KEY_NAMES, MAX_KEY_PATHS,
    MAX_PATTERNS, MAX_QUEUE,
    names::{Kind, parse_exclude},
    syslog_facility,
};

/// A validation failure: (field, message).
type Invalid = (String, String);

fn invalid<T>(field: impl Into<String>, message: impl Into<String>) -> Result<T, Invalid> {
    Err((field.into(), message.into()))
}

impl Config {
    /// Every check, in order; `Config::parse` turns the first failure into
    /// `ConfigError::Invalid`.
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        self.validate_alerts()?;
        self.scoring.validate()?;
        self.correlation.validate()?;
        self.validate_key_paths()?;
        self.validate_key_names()?;
        self.validate_protected()?;
        self.validate_allow()?;
        self.validate_rules()?;
        self.validate_metrics()?;
        for (i, d) in self.dumps.dirs.iter().enumerate() {
            absolute(&format!("dumps.dirs[{i}]"), d)?;
        }
        for (i, e) in self.tamper.code_paths.iter().enumerate() {
            absolute(&format!("tamper.code_paths[{i}]"), e)?;
        }
        for (i, e) in self.tamper.dump_paths.iter().enumerate() {
            absolute(&format!("tamper.dump_paths[{i}]"), e)?;
        }
        for (i, e) in self.tamper.unit_paths.iter().enumerate() {
            absolute(&format!("tamper.unit_paths[{i}]"), e)?;
        }
        for (i, e) in self.agents.exes.iter().enumerate() {
            absolute(&format!("agents.exes[{i}]"), e)?;
        }
        absolute("containers.docker_root", &self.containers.docker_root)?;
        absolute("containers.podman_root", &self.containers.podman_root)?;
        absolute("dumps.quarantine_dir", &self.dumps.quarantine_dir)?;
        absolute("dumps.state_dir", &self.dumps.state_dir)?;
        if !(1..=3600).contains(&self.dumps.handler_timeout_secs) {
            return invalid("dumps.handler_timeout_secs", "must be between 1 and 3600");
        }
        if self.dumps.quarantine_max_bytes < 1 << 20 {
            return invalid(
                "dumps.quarantine_max_bytes",
                "must be at least 1048576 (1 MiB)",
            );
        }
        if !(1..=16).contains(&self.flow.max_generations) {
            return invalid("flow.max_generations", "must be between 1 and 16");
        }
        Ok(())
    }

    fn validate_metrics(&self) -> Result<(), Invalid> {
        let m = &self.metrics;
        for (field, p) in [
            ("metrics.tls_cert", &m.tls_cert),
            ("metrics.tls_key", &m.tls_key),
            ("metrics.tls_client_ca", &m.tls_client_ca),
            ("metrics.bearer_token_file", &m.bearer_token_file),
        ] {
            if let Some(p) = p {
                absolute(field, p)?;
            }
        }
        match (&m.tls_cert, &m.tls_key) {
            (Some(_), None) => return invalid("metrics.tls_key", "tls_cert needs tls_key"),
            (None, Some(_)) => return invalid("metrics.tls_cert", "tls_key needs tls_cert"),
            _ => {}
        }
        if m.tls_client_ca.is_some() && m.tls_cert.is_none() {
            return invalid(
                "metrics.tls_client_ca",
                "client certificates need TLS: set tls_cert and tls_key",
            );
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
        if !super::CMDLINE_MODES.contains(&a.cmdline.as_str()) {
            return invalid(
                "alerts.cmdline",
                format!("{:?}: \"redacted\" or \"program-and-files\"", a.cmdline),
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
                ("unit", p.unit.is_some()),
                ("container_name", p.container_name.is_some()),
                ("container_image", p.container_image.is_some()),
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
                    format!(
                        "set exactly one of exe, comm, pid_file, cgroup, unit, container_name, container_image (found: {found})"
                    ),
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
            place_selectors(
                &format!("protected[{i}]"),
                p.unit.as_deref(),
                p.container_name.as_deref(),
                p.container_image.as_deref(),
            )?;
        }
        Ok(())
    }

    fn validate_allow(&self) -> Result<(), Invalid> {
        for (i, a) in self.allow.iter().enumerate() {
            absolute(&format!("allow[{i}].exe"), &a.exe)?;
            place_selectors(
                &format!("allow[{i}]"),
                a.unit.as_deref(),
                a.container_name.as_deref(),
                a.container_image.as_deref(),
            )?;
            if a.unit.is_some() && a.in_container() {
                return invalid(
                    format!("allow[{i}].unit"),
                    "cannot be combined with container_name or container_image: a container's processes run in its own scope",
                );
            }
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
            if a.kernel_reader && (a.key_path.is_some() || a.target.is_some() || a.dumps) {
                return invalid(
                    format!("allow[{i}].kernel_reader"),
                    "cannot be combined with key_path, target or dumps: use one entry per kind of allowance",
                );
            }
            if a.raw_read
                && (a.key_path.is_some() || a.target.is_some() || a.dumps || a.kernel_reader)
            {
                return invalid(
                    format!("allow[{i}].raw_read"),
                    "cannot be combined with key_path, target, dumps or kernel_reader: use one entry per kind of allowance",
                );
            }
            if a.agent_use
                && (a.key_path.is_some()
                    || a.target.is_some()
                    || a.dumps
                    || a.kernel_reader
                    || a.raw_read)
            {
                return invalid(
                    format!("allow[{i}].agent_use"),
                    "cannot be combined with key_path, target, dumps, kernel_reader or raw_read: use one entry per kind of allowance",
                );
            }
            if a.code_change
                && (a.key_path.is_some()
                    || a.target.is_some()
                    || a.dumps
                    || a.kernel_reader
                    || a.raw_read
                    || a.agent_use)
            {
                return invalid(
                    format!("allow[{i}].code_change"),
                    "cannot be combined with key_path, target, dumps, kernel_reader, raw_read or agent_use: use one entry per kind of allowance",
                );
            }
            if a.keyring_read
                && (a.key_path.is_some()
                    || a.target.is_some()
                    || a.dumps
                    || a.kernel_reader
                    || a.raw_read
                    || a.agent_use
                    || a.code_change)
            {
                return invalid(
                    format!("allow[{i}].keyring_read"),
                    "cannot be combined with another kind of allowance: use one entry per kind",
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

/// Longest pattern of a kind, in bytes (the kernel's name words).
fn max_len(kind: Kind) -> usize {
    match kind {
        Kind::Prefix | Kind::Suffix => MAX_AFFIX,
        Kind::Exact | Kind::Dir => MAX_EXACT,
    }
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
    let max = max_len(kind);
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

/// The `unit`, `container_name` and `container_image` selectors of the
/// entry `entry` (`protected[0]`, `allow[2]`).
fn place_selectors(
    entry: &str,
    unit: Option<&str>,
    name: Option<&str>,
    image: Option<&str>,
) -> Result<(), Invalid> {
    if let Some(u) = unit {
        unit_name(format!("{entry}.unit"), u)?;
    }
    if let Some(n) = name {
        container_sel(format!("{entry}.container_name"), n)?;
    }
    if let Some(n) = image {
        container_sel(format!("{entry}.container_image"), n)?;
    }
    Ok(())
}

/// A systemd unit's name: `<name>.service` or `<name>.scope`.
fn unit_name(field: String, u: &str) -> Result<(), Invalid> {
    let stem = u
        .strip_suffix(".service")
        .or_else(|| u.strip_suffix(".scope"));
    if stem.is_none_or(|s| s.is_empty()) || u.contains('/') || u.contains('\0') {
        return invalid(
            field,
            format!(
                "{u:?}: a systemd unit name ending in .service or .scope, e.g. \"vault.service\""
            ),
        );
    }
    Ok(())
}

/// A container name or image reference.
fn container_sel(field: String, s: &str) -> Result<(), Invalid> {
    if s.is_empty() || s.len() > 255 || s.chars().any(|c| c.is_whitespace() || c == '\0') {
        return invalid(
            field,
            format!("{s:?}: 1 to 255 characters, no spaces, e.g. \"vault\" or \"hashicorp/vault\""),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{
        super::{
            Dumps, Mode,
            tests::{bad, invalid_field},
        },
        *,
    };

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
    fn tamper_errors() {
        let s = invalid_field(
            "[tamper]\ncode_paths = [\"/etc/pam.d\", \"etc/ld.so.preload\"]\n",
            "tamper.code_paths[1]",
        );
        assert!(s.contains("must be absolute"), "{s}");
        invalid_field(
            "[[allow]]\nexe = \"/usr/bin/dpkg\"\ncode_change = true\ndumps = true\n",
            "allow[0].code_change",
        );
        let c = Config::parse(
            "[tamper]\ncode_paths = [\"/opt/hsm/lib\"]\n[[allow]]\nexe = \"/usr/bin/dpkg\"\ncode_change = true\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            c.tamper.code_paths,
            [std::path::PathBuf::from("/opt/hsm/lib")]
        );
        assert!(c.allow[0].code_change);
        invalid_field(
            "[tamper]\ndump_paths = [\"coredump.conf\"]\n",
            "tamper.dump_paths[0]",
        );
        // Unset: the built-in list.
        let c = Config::parse("", "t").unwrap();
        assert!(
            c.tamper
                .code_paths
                .contains(&std::path::PathBuf::from("/etc/ld.so.preload"))
        );
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
        invalid_field("[metrics]\ntls_cert = \"/c.pem\"\n", "metrics.tls_key");
        invalid_field("[metrics]\ntls_key = \"/k.pem\"\n", "metrics.tls_cert");
        invalid_field(
            "[metrics]\ntls_client_ca = \"/ca.pem\"\n",
            "metrics.tls_client_ca",
        );
        invalid_field(
            "[metrics]\nbearer_token_file = \"token\"\n",
            "metrics.bearer_token_file",
        );
        invalid_field("[alerts]\ncmdline = \"argv0\"\n", "alerts.cmdline");
        Config::parse("[alerts]\ncmdline = \"program-and-files\"\n", "t").unwrap();
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
    fn kernel_reader_allowances_stand_alone() {
        for other in [
            "dumps = true",
            "target = \"/usr/bin/y\"",
            "key_path = \"/k\"",
        ] {
            let f = invalid_field(
                &format!(
                    "[[key_path]]\npath = \"/k\"\n[[allow]]\nexe = \"/usr/bin/x\"\nkernel_reader = true\n{other}\n"
                ),
                "allow[0].kernel_reader",
            );
            assert!(f.contains("cannot be combined"), "{f}");
        }
        let c = Config::parse(
            "[[allow]]\nexe = \"/usr/bin/x\"\nkernel_reader = true\n",
            "t",
        )
        .unwrap();
        assert!(c.allow[0].kernel_reader && !c.allow[0].dumps);
        assert!(
            Config::default_config()
                .allow
                .iter()
                .any(|a| a.kernel_reader && a.exe.ends_with("systemd-udevd"))
        );
    }

    #[test]
    fn raw_read_allowances_stand_alone() {
        for other in [
            "dumps = true",
            "kernel_reader = true",
            "target = \"/usr/bin/y\"",
            "key_path = \"/k\"",
        ] {
            let f = invalid_field(
                &format!(
                    "[[key_path]]\npath = \"/k\"\n[[allow]]\nexe = \"/usr/bin/x\"\nraw_read = true\n{other}\n"
                ),
                "allow[0].raw_read",
            );
            assert!(f.contains("cannot be combined"), "{f}");
        }
        assert!(
            Config::default_config()
                .allow
                .iter()
                .any(|a| a.raw_read && a.exe.ends_with("systemd-udevd"))
        );
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
}
