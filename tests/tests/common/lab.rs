//! The victim lab shared by the dump and flow tests: a protected copy of
//! ks-actor that holds a secret, RLIMIT_CORE raised, a core_pattern set for
//! the test and restored whatever happens, and a watched key directory
//! whose marker file synchronises with the sensor.

use std::{
    io::{BufRead, BufReader, Read},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use base64::Engine;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding};
use sha2::Digest;

use super::*;

/// A fresh Ed25519 key: (PKCS#8 PEM, `SHA256:` fingerprint of its
/// SubjectPublicKeyInfo, as `keysentry scan` reports it).
pub fn fresh_key() -> (String, String) {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut seed)
        .unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let spki = key.verifying_key().to_public_key_der().unwrap();
    let fp = format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(sha2::Sha256::digest(spki))
    );
    (pem, fp)
}

/// Sets /proc/sys/kernel/core_pattern and restores the old one on drop,
/// whatever happens in the test.
pub struct CorePattern {
    old: String,
}

pub const CORE_PATTERN: &str = "/proc/sys/kernel/core_pattern";

impl CorePattern {
    pub fn set(p: &str) -> Self {
        let old = std::fs::read_to_string(CORE_PATTERN).unwrap();
        std::fs::write(CORE_PATTERN, p).unwrap();
        CorePattern { old }
    }
}

impl Drop for CorePattern {
    fn drop(&mut self) {
        let _ = std::fs::write(CORE_PATTERN, self.old.trim_end());
    }
}

pub fn spawn_victim(bin: &Path) -> (Child, u32) {
    spawn_as(bin, "victim")
}

pub fn spawn_as(bin: &Path, role: &str) -> (Child, u32) {
    spawn_args(bin, &[role])
}

/// `bin ARGS...` with RLIMIT_CORE raised, once it printed its first line.
pub fn spawn_args(bin: &Path, args: &[&str]) -> (Child, u32) {
    let (child, pid, _) = spawn_line(bin, args);
    (child, pid)
}

/// As `spawn_args`, with the first line it printed (a victim's "ADDR LEN FD").
pub fn spawn_line(bin: &Path, args: &[&str]) -> (Child, u32, String) {
    let mut c = Command::new(bin);
    c.args(args).stdin(Stdio::piped()).stdout(Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_CORE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = c.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid = child.id();
    (child, pid, line)
}

pub struct Lab {
    pub _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub marker: PathBuf,
    pub victim_bin: PathBuf,
}

pub fn lab() -> Lab {
    let tmp = tempdir();
    let root = tmp.path().to_path_buf();
    std::fs::create_dir(root.join("keys")).unwrap();
    let marker = root.join("keys/zz-marker");
    std::fs::write(&marker, b"m").unwrap();
    let victim_bin = root.join("ks-victim");
    std::fs::copy(actor_bin(), &victim_bin).unwrap();
    std::fs::set_permissions(&victim_bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    Lab {
        _tmp: tmp,
        root,
        marker,
        victim_bin,
    }
}

pub fn config(l: &Lab) -> String {
    format!(
        "[[key_path]]\npath = \"{}\"\n\n[[protected]]\nexe = \"{}\"\n",
        l.root.join("keys").display(),
        l.victim_bin.display()
    )
}

/// Sets /proc/sys/kernel/core_pipe_limit (the kernel then waits for the
/// pipe helper before the crashed process finishes exiting) and restores
/// it on drop.
pub struct PipeLimit {
    old: String,
}

pub const CORE_PIPE_LIMIT: &str = "/proc/sys/kernel/core_pipe_limit";

impl PipeLimit {
    pub fn set(v: u32) -> Self {
        let old = std::fs::read_to_string(CORE_PIPE_LIMIT).unwrap();
        std::fs::write(CORE_PIPE_LIMIT, v.to_string()).unwrap();
        PipeLimit { old }
    }
}

impl Drop for PipeLimit {
    fn drop(&mut self) {
        let _ = std::fs::write(CORE_PIPE_LIMIT, self.old.trim_end());
    }
}
