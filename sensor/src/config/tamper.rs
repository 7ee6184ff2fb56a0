//! `[tamper]`: the code-loading paths whose change is
//! `key-holder-tamper`, and their defaults (docs/configuration.md).

use std::path::PathBuf;

use serde::Deserialize;

/// `[tamper]`: files and directories whose content becomes code inside
/// the programs that hold keys (the loader's preload list and search path,
/// the loader itself, PAM's configuration and modules, OpenSSL's
/// configuration, providers and engines, PKCS#11 modules and their
/// registrations). An open of one of them (or of a file in one of the
/// directories) that may change it, and a rename, hard link or symlink
/// made at one of their names, is `key-holder-tamper`, unless made by an
/// `[[allow]] code_change = true` program or a program it runs (dpkg and
/// its maintainer scripts).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tamper {
    /// Absolute paths, files or directories (a directory covers what is
    /// in it, recursively). Missing ones are watched once they appear.
    /// Replaces the default list when set.
    pub code_paths: Vec<PathBuf>,
    /// Files that configure where core dumps go (systemd-coredump's
    /// coredump.conf and its drop-ins: `Storage=journal` keeps every dump
    /// in the journal): a change is `dump-config-change`. Same rules as
    /// `code_paths`.
    pub dump_paths: Vec<PathBuf>,
    /// systemd unit directories: a unit file or drop-in changed to start
    /// its service with `LD_PRELOAD` or `LD_AUDIT` is `key-holder-tamper`
    /// (high when the service is a key holder). Same watching as
    /// `code_paths`; the content decides.
    pub unit_paths: Vec<PathBuf>,
}

/// The systemd system unit directories an administrator or package writes
/// (not the generators' and transient units' in /run).
pub const DEFAULT_UNIT_PATHS: [&str; 6] = [
    "/etc/systemd/system",
    "/etc/systemd/system.control",
    "/run/systemd/system",
    "/run/systemd/system.control",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
];

/// systemd-coredump's configuration and its drop-in directories.
pub const DEFAULT_DUMP_PATHS: [&str; 4] = [
    "/etc/systemd/coredump.conf",
    "/etc/systemd/coredump.conf.d",
    "/run/systemd/coredump.conf.d",
    "/usr/lib/systemd/coredump.conf.d",
];

/// The code-loading paths of a Debian (or Ubuntu) x86_64 host; RHEL's
/// lib64 locations too.
pub const DEFAULT_CODE_PATHS: [&str; 17] = [
    "/etc/ld.so.preload",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/lib64/ld-linux-x86-64.so.2",
    "/etc/pam.d",
    "/etc/pam.conf",
    "/usr/lib/x86_64-linux-gnu/security",
    "/usr/lib64/security",
    "/etc/ssl/openssl.cnf",
    "/etc/pki/tls/openssl.cnf",
    "/usr/lib/x86_64-linux-gnu/ossl-modules",
    "/usr/lib/x86_64-linux-gnu/engines-3",
    "/usr/lib64/ossl-modules",
    "/usr/lib64/engines-3",
    "/usr/lib/x86_64-linux-gnu/pkcs11",
    "/usr/share/p11-kit/modules",
    "/etc/pkcs11",
];

impl Tamper {
    /// Every watched path: the code paths, then the dump paths, then the
    /// unit directories (`Policy::code_kind` tells a watch id's).
    pub fn all_paths(&self) -> Vec<PathBuf> {
        self.code_paths
            .iter()
            .chain(&self.dump_paths)
            .chain(&self.unit_paths)
            .cloned()
            .collect()
    }
}

impl Default for Tamper {
    fn default() -> Self {
        Self {
            code_paths: DEFAULT_CODE_PATHS.iter().map(PathBuf::from).collect(),
            dump_paths: DEFAULT_DUMP_PATHS.iter().map(PathBuf::from).collect(),
            unit_paths: DEFAULT_UNIT_PATHS.iter().map(PathBuf::from).collect(),
        }
    }
}
