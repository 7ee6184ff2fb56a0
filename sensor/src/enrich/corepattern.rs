//! The kernel's core_pattern: expanded as the kernel would for one crash
//! (where `keysentry run` expects a dump, and where the core handler passes
//! one on), the pattern that runs keysentry's core handler, the state
//! `install-core-handler` keeps, and whether the handler is in place
//! (docs/dumps.md).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use std::os::unix::fs::MetadataExt;

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

/// The kernel's core_pattern file.
pub const CORE_PATTERN: &str = "/proc/sys/kernel/core_pattern";
/// Longest core_pattern the kernel takes (CORENAME_MAX_SIZE with its NUL).
pub const MAX_PATTERN: usize = 127;
/// The specifiers the handler is always given, in argument order: pid in
/// the initial and in its own pid namespace, the crashing thread likewise,
/// real uid and gid, dump mode, signal, time, RLIMIT_CORE, host name,
/// comm, executable file name and path (`!` for `/`).
pub const BASE_SPECS: &str = "PpIiugdstchefE";
/// Every specifier the kernel expands (format_corename); `%F` is a pidfd
/// (6.16), `%C` the CPU.
const KNOWN_SPECS: &str = "pPiIugdstchefECF";
/// The state file in `[dumps] state_dir`.
pub const STATE_FILE: &str = "core-handler.json";

/// What `install-core-handler` replaced, kept for the handler (which
/// passes other processes' cores on to it) and for `uninstall`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The core_pattern before install.
    pub previous: String,
    /// The pattern install wrote.
    pub installed: String,
    /// The specifiers of `installed`, in argument order.
    pub specs: String,
    /// The config the handler reads (None: the embedded default).
    pub config: Option<PathBuf>,
}

impl State {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(STATE_FILE)
    }

    pub fn load(state_dir: &Path) -> Result<State> {
        let p = Self::path(state_dir);
        let text = crate::enrich::rootfiles::read_root_file(&p, 64 << 10)
            .with_context(|| format!("core handler state {}", p.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("core handler state {}", p.display()))
    }
}

/// The specifier values the kernel gave the handler (`%X` -> value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Values(HashMap<char, String>);

impl Values {
    /// `args` are the expansions of `specs`, one each.
    pub fn new(specs: &str, args: &[String]) -> Result<Values> {
        if specs.chars().count() != args.len() {
            bail!(
                "core handler: {} arguments for {} specifiers ({specs})",
                args.len(),
                specs.chars().count()
            );
        }
        Ok(Values(specs.chars().zip(args.iter().cloned()).collect()))
    }

    /// Values given directly (`keysentry run`'s own expansion).
    pub fn of(pairs: impl IntoIterator<Item = (char, String)>) -> Values {
        Values(pairs.into_iter().collect())
    }

    pub fn get(&self, spec: char) -> &str {
        self.0.get(&spec).map(String::as_str).unwrap_or("")
    }

    /// A numeric specifier.
    pub fn num(&self, spec: char) -> Option<u64> {
        self.get(spec).parse().ok()
    }

    /// `template` with each `%X` replaced as the kernel would: `%%` is
    /// `%`, an unknown specifier is nothing.
    pub fn expand(&self, template: &str) -> String {
        let mut out = String::with_capacity(template.len() + 32);
        let mut it = template.chars();
        while let Some(c) = it.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match it.next() {
                Some('%') => out.push('%'),
                Some(s) => out.push_str(self.get(s)),
                None => {}
            }
        }
        out
    }
}

/// Where the core of a process keysentry does not keep goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A pipe helper: its argv, expanded.
    Pipe(Vec<String>),
    /// A file (relative names are in the crashed process's cwd).
    File(String),
}

/// The previous pattern expanded for one crash (`uses_pid`: the kernel's
/// core_uses_pid, which appends `.PID` to a file name without `%p`).
pub fn destination(previous: &str, v: &Values, uses_pid: bool) -> Result<Destination> {
    if let Some(cmd) = previous.strip_prefix('|') {
        // The kernel splits a pipe pattern at white space before expanding
        // it: a value with a space in it stays one argument.
        let argv: Vec<String> = cmd.split_ascii_whitespace().map(|t| v.expand(t)).collect();
        if argv.is_empty() || argv[0].is_empty() {
            bail!("the previous core_pattern {previous:?} names no helper");
        }
        return Ok(Destination::Pipe(argv));
    }
    // An empty pattern names no file: the kernel writes nothing.
    if previous.is_empty() {
        return Ok(Destination::File(String::new()));
    }
    let template = previous;
    let mut name = v.expand(template);
    if uses_pid && !has_spec(template, 'p') {
        name.push('.');
        name.push_str(v.get('p'));
    }
    Ok(Destination::File(name))
}

/// Whether `template` uses `%spec` (not `%%spec`).
fn has_spec(template: &str, spec: char) -> bool {
    specs_of(template).contains(&spec)
}

/// The specifiers `template` uses, in order.
fn specs_of(template: &str) -> Vec<char> {
    let mut out = Vec::new();
    let mut it = template.chars();
    while let Some(c) = it.next() {
        if c == '%'
            && let Some(s) = it.next()
            && s != '%'
        {
            out.push(s);
        }
    }
    out
}

/// The specifiers the handler needs to pass `previous` on: the base set
/// and any other the kernel knows that `previous` uses.
pub fn specs_for(previous: &str) -> String {
    let mut specs = BASE_SPECS.to_string();
    for s in specs_of(previous) {
        if KNOWN_SPECS.contains(s) && !specs.contains(s) {
            specs.push(s);
        }
    }
    specs
}

/// The pattern that runs `exe core-handler` with `specs`.
pub fn handler_pattern(exe: &Path, state_dir: Option<&Path>, specs: &str) -> Result<String> {
    let mut p = format!("|{} core-handler", exe.display());
    if let Some(d) = state_dir {
        p.push_str(&format!(" --state {}", d.display()));
    }
    for s in specs.chars() {
        p.push_str(&format!(" %{s}"));
    }
    for (what, path) in [("executable", Some(exe)), ("state_dir", state_dir)] {
        if let Some(path) = path
            && path
                .to_string_lossy()
                .contains(|c: char| c.is_whitespace() || c == '%')
        {
            bail!(
                "the {what} path {} has white space or '%': a core_pattern cannot name it",
                path.display()
            );
        }
    }
    if p.len() > MAX_PATTERN {
        bail!(
            "the core_pattern would be {} bytes, over the kernel's {MAX_PATTERN}: {p}",
            p.len()
        );
    }
    Ok(p)
}

/// The program a pipe pattern runs (None: a file pattern).
pub fn helper_path(pattern: &str) -> Option<&str> {
    pattern
        .strip_prefix('|')
        .and_then(|c| c.split_ascii_whitespace().next())
}

/// Whether `argv` (a pattern's, or a helper process's) runs keysentry as
/// its core handler: `keysentry core-handler ...`.
pub fn runs_handler<S: AsRef<str>>(argv: &[S]) -> bool {
    argv.get(1).is_some_and(|a| a.as_ref() == "core-handler")
}

/// Whether `pattern` runs keysentry's core handler.
pub fn is_handler(pattern: &str) -> bool {
    pattern
        .strip_prefix('|')
        .is_some_and(|c| runs_handler(&c.split_ascii_whitespace().collect::<Vec<_>>()))
}

/// At `keysentry run`'s start and at each change of core_pattern: a
/// warning when the handler was installed (its state in `state_dir`) and
/// someone has replaced it since.
pub fn check_installed(state_dir: &Path) -> Option<String> {
    let st = State::load(state_dir).ok()?;
    let cur = read_pattern().ok()?;
    (cur != st.installed).then(|| {
        format!(
            "keysentry's core handler was installed ({:?}) but core_pattern is now {cur:?}: cores of key holders are not kept from it",
            st.installed
        )
    })
}

/// Whether `pattern` runs this very keysentry executable (the same file,
/// by device and inode) as the core handler.
pub fn is_own_handler(pattern: &str) -> bool {
    if !is_handler(pattern) {
        return false;
    }
    let Some(helper) = helper_path(pattern) else {
        return false;
    };
    match (
        std::fs::metadata(helper),
        std::fs::metadata("/proc/self/exe"),
    ) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// The kernel's core_pattern now.
pub fn read_pattern() -> Result<String> {
    let s = std::fs::read_to_string(CORE_PATTERN).context("read core_pattern")?;
    Ok(s.trim_end_matches('\n').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values {
        let specs = BASE_SPECS;
        let args: Vec<String> = [
            "4242",
            "7",
            "4243",
            "8",
            "1000",
            "1000",
            "1",
            "11",
            "1700000000",
            "18446744073709551615",
            "host",
            "my prog",
            "prog",
            "!usr!bin!prog",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Values::new(specs, &args).unwrap()
    }

    #[test]
    fn a_pipe_pattern_is_split_before_it_is_expanded() {
        let d = destination(
            "|/lib/systemd/systemd-coredump %P %u %g %s %t 9223372036854775808 %h %e",
            &values(),
            true,
        )
        .unwrap();
        assert_eq!(
            d,
            Destination::Pipe(
                [
                    "/lib/systemd/systemd-coredump",
                    "4242",
                    "1000",
                    "1000",
                    "11",
                    "1700000000",
                    "9223372036854775808",
                    "host",
                    "my prog"
                ]
                .iter()
                .map(|s| s.to_string())
                .collect()
            )
        );
    }

    #[test]
    fn a_file_pattern_gets_the_pid_when_core_uses_pid_says_so() {
        let v = values();
        assert_eq!(
            destination("core", &v, true).unwrap(),
            Destination::File("core.7".into())
        );
        assert_eq!(
            destination("", &v, true).unwrap(),
            Destination::File("".into())
        );
        assert_eq!(
            destination("/var/crash/core.%e.%p.%%", &v, true).unwrap(),
            Destination::File("/var/crash/core.my prog.7.%".into())
        );
        assert_eq!(
            destination("/c/%X%", &v, false).unwrap(),
            Destination::File("/c/".into())
        );
    }

    #[test]
    fn the_handler_asks_for_what_the_previous_pattern_uses() {
        assert_eq!(specs_for("core"), BASE_SPECS);
        assert_eq!(specs_for("|/x %F %C %% %Z"), format!("{BASE_SPECS}FC"));
        let p = handler_pattern(Path::new("/usr/bin/keysentry"), None, BASE_SPECS).unwrap();
        assert_eq!(
            p,
            "|/usr/bin/keysentry core-handler %P %p %I %i %u %g %d %s %t %c %h %e %f %E"
        );
        assert!(is_handler(&p));
        assert!(!is_handler("|/usr/bin/keysentry %P"));
        let long = PathBuf::from(format!("/{}", "d".repeat(80)));
        let e = handler_pattern(Path::new("/usr/bin/keysentry"), Some(&long), BASE_SPECS);
        assert!(e.unwrap_err().to_string().contains("over the kernel's 127"));
        assert!(handler_pattern(Path::new("/a b/keysentry"), None, BASE_SPECS).is_err());
    }

    #[test]
    fn values_must_match_the_specifiers() {
        assert!(Values::new("Pp", &["1".into()]).is_err());
    }

    #[test]
    fn only_this_executable_is_its_own_handler() {
        let me = std::fs::canonicalize("/proc/self/exe").unwrap();
        assert!(is_own_handler(&format!(
            "|{} core-handler %P",
            me.display()
        )));
        // Another program with the same arguments, or keysentry not as the
        // handler, is not.
        assert!(!is_own_handler("|/bin/true core-handler %P"));
        assert!(!is_own_handler(&format!("|{} %P", me.display())));
        assert!(!is_own_handler("core"));
    }
}
