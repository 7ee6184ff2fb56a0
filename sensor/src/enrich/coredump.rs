//! Where a core dump goes: /proc/sys/kernel/core_pattern expanded for the
//! dumping process (a file, relative to its cwd unless absolute), or the
//! helper a `|` pattern pipes the dump to.

use std::path::{Path, PathBuf};

use crate::{
    enrich::corepattern::{Destination, Values, destination},
    enrich::proctab::ProcInfo,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DumpTarget {
    File(PathBuf),
    /// `|/path/to/helper args...`, arguments expanded.
    Pipe(Vec<String>),
}

/// What the kernel needs to expand a pattern.
pub struct DumpCtx<'a> {
    pub proc: &'a ProcInfo,
    pub tid: u32,
    pub sig: u32,
    pub time_s: u64,
    pub host: &'a str,
    pub cwd: Option<&'a Path>,
}

/// The values the kernel would give each specifier, as far as keysentry
/// knows them (not %g, %c, %d, %C, %F; %p and %i are taken as the host's
/// ids).
fn values(c: &DumpCtx<'_>) -> Values {
    let pid = c.proc.pid.to_string();
    let tid = c.tid.to_string();
    let file = Path::new(&*c.proc.exe)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    Values::of([
        ('p', pid.clone()),
        ('P', pid),
        ('i', tid.clone()),
        ('I', tid),
        ('u', c.proc.uid.to_string()),
        ('s', c.sig.to_string()),
        ('t', c.time_s.to_string()),
        ('h', c.host.to_string()),
        ('e', c.proc.comm.clone()),
        ('E', c.proc.exe.replace('/', "!")),
        ('f', file),
    ])
}

/// The dump's destination for `pattern` (the content of core_pattern),
/// expanded as the kernel would (`corepattern::destination`).
pub fn target(pattern: &str, uses_pid: bool, c: &DumpCtx<'_>) -> DumpTarget {
    let pattern = pattern.trim_end_matches('\n');
    match destination(pattern, &values(c), uses_pid) {
        // Arguments keysentry cannot know are left out.
        Ok(Destination::Pipe(argv)) => {
            DumpTarget::Pipe(argv.into_iter().filter(|a| !a.is_empty()).collect())
        }
        Ok(Destination::File(name)) => {
            let path = PathBuf::from(name);
            DumpTarget::File(if path.is_absolute() {
                path
            } else {
                c.cwd.map(|d| d.join(&path)).unwrap_or(path)
            })
        }
        Err(_) => DumpTarget::Pipe(Vec::new()),
    }
}

/// The running kernel's core_pattern and core_uses_pid.
pub fn current_pattern() -> (String, bool) {
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    let uses_pid =
        std::fs::read_to_string("/proc/sys/kernel/core_uses_pid").is_ok_and(|v| v.trim() == "1");
    (pattern.trim_end().to_string(), uses_pid)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn ctx<'a>(p: &'a ProcInfo, cwd: Option<&'a Path>) -> DumpCtx<'a> {
        DumpCtx {
            proc: p,
            tid: 43,
            sig: 11,
            time_s: 1700000000,
            host: "ca-01",
            cwd,
        }
    }

    #[test]
    fn expands_patterns() {
        let p = ProcInfo {
            pid: 42,
            ppid: 1,
            uid: 998,
            comm: "vault".into(),
            exe: Arc::from("/usr/bin/vault"),
            argv: Arc::from([]),
            start_ns: 0,
            cgroup_id: 0,
            execed: true,
            exe_genuine: true,
            exe_in_root: false,
            allow_bypass: None,
        };
        let cwd = Path::new("/var/lib/vault");
        assert_eq!(
            target("/var/crash/core.%e.%p.%s.%t.%h", false, &ctx(&p, None)),
            DumpTarget::File("/var/crash/core.vault.42.11.1700000000.ca-01".into())
        );
        assert_eq!(
            target("core", true, &ctx(&p, Some(cwd))),
            DumpTarget::File("/var/lib/vault/core.42".into())
        );
        assert_eq!(
            target("core.%E%%", false, &ctx(&p, Some(cwd))),
            DumpTarget::File("/var/lib/vault/core.!usr!bin!vault%".into())
        );
        assert_eq!(
            target(
                "|/usr/lib/systemd/systemd-coredump %P %u %g %s %t %c %h",
                false,
                &ctx(&p, None)
            ),
            DumpTarget::Pipe(
                "/usr/lib/systemd/systemd-coredump 42 998 11 1700000000 ca-01"
                    .split(' ')
                    .map(String::from)
                    .collect()
            )
        );
    }
}
