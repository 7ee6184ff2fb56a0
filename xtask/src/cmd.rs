//! Running external commands with inherited stdio and errors that name them.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The root of the cargo workspace (the parent of xtask/).
pub fn workspace_root() -> Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .context("xtask's manifest dir has no parent")?;
    root.canonicalize()
        .with_context(|| format!("cannot resolve workspace root {}", root.display()))
}

/// The user-space target dir: `$CARGO_TARGET_DIR` (relative to the root) when
/// set, else `<root>/target`.
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// A shell-like rendering of `cmd`: `[dir] VAR=value program args...`.
pub fn describe(cmd: &Command) -> String {
    let mut out = String::new();
    if let Some(dir) = cmd.get_current_dir() {
        out.push_str(&format!("[{}] ", dir.display()));
    }
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            out.push_str(&format!("{}={} ", key.to_string_lossy(), quote(value)));
        }
    }
    out.push_str(&quote(cmd.get_program()));
    for arg in cmd.get_args() {
        out.push(' ');
        out.push_str(&quote(arg));
    }
    out
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=+:,@%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Run `cmd` with inherited stdio; an error names the command and its status.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = describe(cmd);
    println!("$ {shown}");
    let status = cmd
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Run `cmd` quietly and return its stdout when it exits 0, `None` when it
/// cannot be started or fails.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `program` can be found on PATH.
pub fn have(program: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        let candidate = dir.join(program);
        candidate.metadata().is_ok_and(|m| {
            m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
        })
    })
}

/// Whether the effective user is root (`id -u` prints 0).
pub fn is_root() -> Result<bool> {
    let uid = output(Command::new("id").arg("-u")).context("cannot run `id -u`")?;
    Ok(uid.trim() == "0")
}

/// A command that runs `program` as root: directly when root, through
/// `sudo -E` when sudo exists, else an error saying why root is needed.
pub fn as_root(program: impl AsRef<OsStr>, why: &str) -> Result<Command> {
    if is_root()? {
        Ok(Command::new(program))
    } else if have("sudo") {
        let mut cmd = Command::new("sudo");
        cmd.arg("-E").arg(program);
        Ok(cmd)
    } else {
        bail!("{why} needs root: run as root (sudo is not installed)")
    }
}
