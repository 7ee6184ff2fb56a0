//! Where a core dump goes: /proc/sys/kernel/core_pattern expanded for the
//! dumping process (a file, relative to its cwd unless absolute), or the
//! helper a `|` pattern pipes the dump to.

use std::path::{Path, PathBuf};

use crate::enrich::proctab::ProcInfo;

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

fn expand(pattern: &str, c: &DumpCtx<'_>) -> (String, bool) {
    let mut out = String::new();
    let mut has_pid = false;
    let mut chars = pattern.chars();
    while let Some(ch) = chars.next() {
        if ch != '%' {
            out.push(ch);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('p') | Some('P') => {
                has_pid = true;
                out.push_str(&c.proc.pid.to_string())
            }
            Some('i') | Some('I') => out.push_str(&c.tid.to_string()),
            Some('u') => out.push_str(&c.proc.uid.to_string()),
            Some('s') => out.push_str(&c.sig.to_string()),
            Some('t') => out.push_str(&c.time_s.to_string()),
            Some('h') => out.push_str(c.host),
            Some('e') => out.push_str(&c.proc.comm),
            Some('E') => out.push_str(&c.proc.exe.replace('/', "!")),
            Some('f') => out.push_str(
                Path::new(&*c.proc.exe)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default()
                    .as_str(),
            ),
            // %g (gid), %c (core limit), %d (dump mode), %C (cgroup): not
            // known here.
            Some(_) | None => {}
        }
    }
    (out, has_pid)
}

/// The dump's destination for `pattern` (the content of core_pattern).
pub fn target(pattern: &str, uses_pid: bool, c: &DumpCtx<'_>) -> DumpTarget {
    let pattern = pattern.trim_end_matches('\n');
    if let Some(pipe) = pattern.strip_prefix('|') {
        return DumpTarget::Pipe(
            pipe.split_whitespace()
                .map(|a| expand(a, c).0)
                .filter(|a| !a.is_empty())
                .collect(),
        );
    }
    let (mut path, has_pid) = expand(pattern, c);
    if uses_pid && !has_pid {
        path.push_str(&format!(".{}", c.proc.pid));
    }
    let path = PathBuf::from(path);
    let path = if path.is_absolute() {
        path
    } else {
        c.cwd.map(|d| d.join(&path)).unwrap_or(path)
    };
    DumpTarget::File(path)
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
