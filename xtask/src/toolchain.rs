//! Checks and installs the toolchain pieces the build and tests need
//! (see shared/guides/toolchain.md). Idempotent; quick when all are present.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cmd;

/// Debian packages and why each is needed. Add new ones here.
pub const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("rustc-web", "Debian's rustc builds the eBPF crate"),
    (
        "cargo-web",
        "Debian's cargo, part of the debian-rustc toolchain",
    ),
    (
        "libstd-rust-web-dev-bpf",
        "prebuilt `core` for bpfel-unknown-none",
    ),
    ("llvm-22-dev", "libLLVM for bpf-linker"),
    (
        "rust-web-clippy",
        "clippy for the debian-rustc toolchain (eBPF lint)",
    ),
    ("iproute2", "integration tests and VM work"),
    ("python3", "integration tests and VM work"),
    ("util-linux", "integration tests and VM work"),
    ("gdb", "gcore, the userspace-dump test's real dumper"),
    ("curl", "an exfiltration test's sender"),
    ("netcat-openbsd", "an exfiltration test's sender (nc)"),
    (
        "prometheus",
        "the Prometheus server and promtool for tests/tests/prometheus.rs",
    ),
    ("openssl", "a key made at test time (flow.rs, live_host.rs)"),
    // The benign-host test (tests/tests/live_host.rs) runs an ordinary
    // admin day with the real programs; their services are not started at
    // install time (see `NoServiceStarts`), the test starts its own.
    (
        "openssh-server",
        "live_host.rs: sshd on a local port, key logins through PAM",
    ),
    ("openssh-client", "live_host.rs: ssh and ssh-keygen"),
    (
        "nginx",
        "live_host.rs: a TLS server loading its key and reloading",
    ),
    (
        "ssl-cert",
        "live_host.rs: nginx's snakeoil key (make-ssl-cert)",
    ),
    ("sudo", "live_host.rs: sudo logins"),
    ("passwd", "live_host.rs: useradd, chpasswd, userdel"),
    ("rsync", "live_host.rs: copies of ordinary files"),
    ("logrotate", "live_host.rs: rotation of an ordinary log"),
    (
        "strace",
        "live_host.rs: strace of the tester's own programs",
    ),
    (
        "gcc",
        "live_host.rs: a compiler run, the test package's library",
    ),
    ("procps", "live_host.rs: ps, top, pgrep"),
    (
        "e2fsprogs",
        "raw_read.rs: mkfs.ext4 on a loop device holding a key store",
    ),
    (
        "keyutils",
        "keyring.rs: keyctl, another user's kernel keys read",
    ),
    (
        "bpftrace",
        "kernel_reader.rs: a bpftrace uprobe script on a protected process",
    ),
];

/// Debian packages installed without their recommendations (podman's
/// would bring a user session's D-Bus and systemd).
pub const DEBIAN_PACKAGES_ALONE: &[(&str, &str)] = &[
    (
        "podman",
        "podman.rs: a real container, from an imported image",
    ),
    (
        "runc",
        "podman.rs: the OCI runtime (crun refuses a hybrid cgroup hierarchy)",
    ),
    (
        "busybox-static",
        "podman.rs: the image's static shell and sleep",
    ),
];

/// The rustup toolchain name linked to Debian's compiler in /usr.
pub const DEBIAN_TOOLCHAIN: &str = "debian-rustc";
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

/// Install whatever is missing.
pub fn setup() -> Result<()> {
    let mut installed = false;
    installed |= ensure_debian_packages()?;
    installed |= ensure_debian_toolchain_link()?;
    installed |= ensure_bpf_linker()?;
    installed |= ensure_rustup_components()?;
    if installed {
        println!("setup: toolchain ready");
    } else {
        println!("setup: all toolchain pieces present");
    }
    Ok(())
}

fn package_installed(pkg: &str) -> bool {
    cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|status| status.contains("install ok installed"))
}

fn ensure_debian_packages() -> Result<bool> {
    Ok(ensure_packages(DEBIAN_PACKAGES)? | install_missing(DEBIAN_PACKAGES_ALONE, false)?)
}

/// Install those of `packages` (name, why) that are missing with apt-get;
/// whether anything was installed.
pub fn ensure_packages(packages: &[(&str, &str)]) -> Result<bool> {
    install_missing(packages, true)
}

/// `ensure_packages`, with or without the packages' recommendations.
fn install_missing(packages: &[(&str, &str)], recommends: bool) -> Result<bool> {
    let missing: Vec<_> = packages
        .iter()
        .filter(|(pkg, _)| !package_installed(pkg))
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    for (pkg, why) in &missing {
        println!("setup: installing Debian package {pkg} ({why})");
    }
    let why = "installing Debian packages";
    cmd::run(cmd::as_root("apt-get", why)?.arg("update"))?;
    let _no_starts = NoServiceStarts::install()?;
    cmd::run(
        cmd::as_root("apt-get", why)?
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y"])
            .args((!recommends).then_some("--no-install-recommends"))
            .args(missing.iter().map(|(pkg, _)| *pkg)),
    )?;
    Ok(true)
}

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// While it lives, package scripts start no services: a `policy-rc.d`
/// that answers 101 ("action forbidden"), which invoke-rc.d and
/// deb-systemd-invoke consult before starting, restarting or reloading a
/// service. The tests need the programs, not the services: nginx's and
/// sshd's postinst would otherwise try to start them on ports 80 and 22
/// (on a CI machine without systemd, or with an sshd already running),
/// and a failed start fails the install. An existing policy-rc.d (Docker
/// images ship one) is left alone; the one written here is removed on drop.
struct NoServiceStarts {
    created: bool,
}

impl NoServiceStarts {
    fn install() -> Result<Self> {
        if Path::new(POLICY_RC_D).exists() {
            return Ok(NoServiceStarts { created: false });
        }
        println!("setup: {POLICY_RC_D} (exit 101) while installing: no service is started");
        let why = "writing policy-rc.d";
        cmd::run(cmd::as_root("sh", why)?.args([
            "-c",
            &format!("printf '#!/bin/sh\\nexit 101\\n' > {POLICY_RC_D} && chmod 755 {POLICY_RC_D}"),
        ]))?;
        Ok(NoServiceStarts { created: true })
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if !self.created {
            return;
        }
        match cmd::as_root("rm", "removing policy-rc.d") {
            Ok(mut rm) => {
                if let Err(e) = cmd::run(rm.args(["-f", POLICY_RC_D])) {
                    eprintln!("setup: could not remove {POLICY_RC_D}: {e:#}");
                }
            }
            Err(e) => eprintln!("setup: could not remove {POLICY_RC_D}: {e:#}"),
        }
    }
}

fn ensure_debian_toolchain_link() -> Result<bool> {
    let list = cmd::output(Command::new("rustup").args(["toolchain", "list"]))
        .context("`rustup toolchain list` failed: is rustup installed?")?;
    let linked = list
        .lines()
        .any(|line| line.split_whitespace().next() == Some(DEBIAN_TOOLCHAIN));
    if linked {
        return Ok(false);
    }
    if !Path::new("/usr/bin/rustc").exists() {
        bail!("/usr/bin/rustc is missing although rustc-web is installed");
    }
    println!(
        "setup: linking rustup toolchain {DEBIAN_TOOLCHAIN} -> /usr (Debian's rustc builds the eBPF crate)"
    );
    cmd::run(Command::new("rustup").args(["toolchain", "link", DEBIAN_TOOLCHAIN, "/usr"]))?;
    Ok(true)
}

fn bpf_linker_ok() -> bool {
    let major_minor = BPF_LINKER_VERSION.rsplit_once('.').map_or("", |(mm, _)| mm);
    cmd::output(Command::new("bpf-linker").arg("--version")).is_some_and(|v| {
        v.split_whitespace()
            .any(|word| word == BPF_LINKER_VERSION || word.starts_with(&format!("{major_minor}.")))
    })
}

fn ensure_bpf_linker() -> Result<bool> {
    if bpf_linker_ok() {
        return Ok(false);
    }
    println!(
        "setup: installing bpf-linker {BPF_LINKER_VERSION} with llvm-22 (links the eBPF object)"
    );
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![LLVM_BIN.into()];
    dirs.extend(std::env::split_paths(&path));
    let path = std::env::join_paths(dirs).context("cannot build PATH for bpf-linker")?;
    cmd::run(
        Command::new("cargo")
            .env("PATH", path)
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", "llvm-22"]),
    )?;
    if !bpf_linker_ok() {
        bail!(
            "bpf-linker {BPF_LINKER_VERSION} was installed but `bpf-linker --version` does not report it: is ~/.cargo/bin on PATH?"
        );
    }
    Ok(true)
}

/// rustfmt and clippy for the default (user-space) toolchain.
fn ensure_rustup_components() -> Result<bool> {
    let mut missing = Vec::new();
    for (sub, component) in [("fmt", "rustfmt"), ("clippy", "clippy")] {
        if cmd::output(Command::new("cargo").args([sub, "--version"])).is_none() {
            missing.push(component);
        }
    }
    if missing.is_empty() {
        return Ok(false);
    }
    println!(
        "setup: installing rustup components {} (lint steps of `cargo xtask test`)",
        missing.join(" ")
    );
    cmd::run(
        Command::new("rustup")
            .args(["component", "add"])
            .args(&missing),
    )?;
    Ok(true)
}
