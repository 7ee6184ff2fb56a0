//! Building the eBPF object and the `keysentry` binary, running and benching it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cmd;
use crate::toolchain::DEBIAN_TOOLCHAIN;

const EBPF_CRATE: &str = "sensor-ebpf";
const EBPF_TARGET: &str = "bpfel-unknown-none";
/// Env var read by sensor/build.rs at compile time: the object to embed.
pub const EBPF_OBJ_ENV: &str = "KEYSENTRY_EBPF_OBJ";

/// The eBPF crate's own target dir.
pub fn ebpf_target_dir(root: &Path) -> PathBuf {
    root.join("target").join("ebpf")
}

/// Absolute path of the release eBPF object.
pub fn ebpf_object(root: &Path) -> PathBuf {
    ebpf_target_dir(root)
        .join(EBPF_TARGET)
        .join("release")
        .join(EBPF_CRATE)
}

/// Absolute path of the release `keysentry` binary.
pub fn sensor_binary(root: &Path) -> PathBuf {
    cmd::target_dir(root).join("release").join("keysentry")
}

/// `cargo +debian-rustc <subcommand> --release --target bpfel-unknown-none`
/// in sensor-ebpf/, with Debian's compiler and unstable features enabled for
/// aya_ebpf only. `build` and `clippy` share this environment.
pub fn ebpf_cargo(root: &Path, subcommand: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root.join(EBPF_CRATE))
        // Whatever the caller had selected must not override `+debian-rustc`.
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env("RUSTC_BOOTSTRAP", "aya_ebpf")
        .env("CARGO_TARGET_DIR", ebpf_target_dir(root))
        .arg(format!("+{DEBIAN_TOOLCHAIN}"))
        .args([subcommand, "--release", "--target", EBPF_TARGET]);
    cmd
}

/// `cargo <args>` in the workspace root with the eBPF object env set.
pub fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root).env(EBPF_OBJ_ENV, ebpf_object(root));
    cmd
}

/// Build the eBPF object (toolchain assumed set up); print and return its path.
pub fn ebpf(root: &Path) -> Result<PathBuf> {
    cmd::run(&mut ebpf_cargo(root, "build")).context("building the eBPF object failed")?;
    let obj = ebpf_object(root);
    if !obj.is_file() {
        bail!("eBPF build succeeded but {} does not exist", obj.display());
    }
    println!("eBPF object: {}", obj.display());
    Ok(obj)
}

/// Build `keysentry` (release) embedding the eBPF object built by [`ebpf`].
pub fn sensor(root: &Path) -> Result<PathBuf> {
    cmd::run(cargo(root).args(["build", "--release", "-p", "sensor"]))
        .context("building keysentry failed")?;
    let bin = sensor_binary(root);
    if !bin.is_file() {
        bail!("build succeeded but {} does not exist", bin.display());
    }
    println!("keysentry: {}", bin.display());
    Ok(bin)
}

/// Replace this process with `keysentry ARGS` (default `run`), as root.
pub fn run_sensor(root: &Path, args: Vec<String>) -> Result<()> {
    let args = if args.is_empty() {
        vec!["run".to_owned()]
    } else {
        args
    };
    let bin = sensor_binary(root);
    let mut cmd = cmd::as_root(&bin, "keysentry (loading eBPF programs)")?;
    cmd.args(&args);
    println!("$ {}", cmd::describe(&cmd));
    let err = cmd.exec();
    Err(err).with_context(|| format!("cannot exec `{}`", cmd::describe(&cmd)))
}

/// The cargo-fuzz targets (fuzz/fuzz_targets/): the key scanner, the
/// ring-record decoder, the recording reader, the config loader and the
/// redactor: everything that reads bytes someone else chose.
pub const FUZZ_TARGETS: [&str; 5] = ["scan", "decode", "recording", "config", "redact"];

/// `cargo xtask fuzz`: each cargo-fuzz target (fuzz/) for `seconds`,
/// installing cargo-fuzz when missing. libFuzzer needs nightly compiler
/// flags (`-Zsanitizer`): RUSTC_BOOTSTRAP=1 lets the stable compiler accept
/// them. Each target's corpus stays in fuzz/corpus/TARGET, crashes in
/// fuzz/artifacts/TARGET; a crash fails the run.
pub fn fuzz(root: &Path, seconds: u64, only: Option<&str>) -> Result<()> {
    if !cmd::have("cargo-fuzz") {
        cmd::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
            .context("installing cargo-fuzz failed")?;
    }
    for target in FUZZ_TARGETS
        .iter()
        .filter(|t| only.is_none_or(|o| o == **t))
    {
        let mut c = Command::new("cargo");
        c.current_dir(root.join("fuzz"))
            .env("RUSTC_BOOTSTRAP", "1")
            .env(EBPF_OBJ_ENV, ebpf_object(root))
            .args(["fuzz", "run", "-O", target, "--", "-rss_limit_mb=512"])
            .arg(format!("-max_total_time={seconds}"));
        cmd::run(&mut c)
            .with_context(|| format!("fuzzing {target} failed (see fuzz/artifacts/{target})"))?;
    }
    Ok(())
}

/// `cargo xtask bench`: the workload cost of the sensor (ks-bench: openat
/// with no sensor, with empty programs, with keysentry), as root.
pub fn bench(root: &Path) -> Result<()> {
    cmd::run(cargo(root).args(["bench", "-p", "sensor", "--bench", "pipeline"]))
        .context("pipeline benchmark failed")?;
    cmd::run(cargo(root).args(["bench", "-p", "sensor", "--bench", "scan"]))
        .context("scanner benchmark failed")?;
    cmd::run(cargo(root).args(["build", "--release", "-p", "tests", "--bin", "ks-bench"]))
        .context("building ks-bench failed")?;
    let bench = root.join("target/release/ks-bench");
    let mut c = cmd::as_root(&bench, "ks-bench (starts keysentry)")?;
    c.arg(sensor_binary(root)).arg("7");
    cmd::run(&mut c)
}
