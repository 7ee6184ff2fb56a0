//! `cargo xtask test`: the full pipeline CI runs, step by step with timings.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::{build, cmd, toolchain, vm};

/// Env var the integration tests read: the `keysentry` binary to spawn.
const SENSOR_BIN_ENV: &str = "KEYSENTRY_BIN";

#[derive(clap::Args)]
pub struct TestArgs {
    /// Skip the fmt and clippy steps.
    #[arg(long)]
    no_lint: bool,
    /// Only run the integration tests whose name contains NAME.
    #[arg(long, value_name = "NAME")]
    filter: Option<String>,
    /// Skip the kernel matrix (the integration tests in 6.1 and 6.12 VMs).
    #[arg(long)]
    no_vm: bool,
    /// Run only a quick subset of the integration tests in the VMs
    /// (xtask/src/vm.rs QUICK_SUBSET) instead of all of them.
    #[arg(long)]
    vm_subset: bool,
    /// Seconds each fuzz target runs (0: no fuzzing).
    #[arg(long, default_value_t = FUZZ_SECONDS)]
    fuzz_seconds: u64,
}

/// Each fuzz target's share of `cargo xtask test`.
const FUZZ_SECONDS: u64 = 45;

type StepFn<'a> = Box<dyn FnOnce() -> Result<()> + 'a>;

pub fn run(root: &Path, args: &TestArgs) -> Result<()> {
    if !cmd::is_root()? {
        bail!(
            "`cargo xtask test` must run as root (the integration tests load eBPF programs): \
             try `sudo -E cargo xtask test`"
        );
    }

    let mut steps: Vec<(&str, StepFn)> = vec![
        ("setup", Box::new(toolchain::setup)),
        ("build eBPF", Box::new(|| build::ebpf(root).map(drop))),
        (
            "build keysentry",
            Box::new(|| build::sensor(root).map(drop)),
        ),
    ];
    if !args.no_lint {
        steps.push((
            "fmt (workspace)",
            Box::new(|| cmd::run(build::cargo(root).args(["fmt", "--all", "--", "--check"]))),
        ));
        steps.push((
            "fmt (sensor-ebpf)",
            Box::new(|| {
                cmd::run(
                    std::process::Command::new("cargo")
                        .current_dir(root.join("sensor-ebpf"))
                        .args(["fmt", "--all", "--", "--check"]),
                )
            }),
        ));
        steps.push((
            "clippy (workspace)",
            Box::new(|| {
                cmd::run(build::cargo(root).args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ]))
            }),
        ));
        steps.push((
            "clippy (sensor-ebpf)",
            Box::new(|| cmd::run(build::ebpf_cargo(root, "clippy").args(["--", "-D", "warnings"]))),
        ));
    }
    steps.push((
        "unit tests",
        Box::new(|| {
            // --release reuses the dependencies the keysentry build compiled.
            cmd::run(build::cargo(root).args([
                "test",
                "--release",
                "--workspace",
                "--exclude",
                "tests",
            ]))
        }),
    ));
    if args.fuzz_seconds > 0 && args.filter.is_none() {
        let seconds = args.fuzz_seconds;
        steps.push((
            "fuzz (scan, decode, recording, config, redact)",
            Box::new(move || build::fuzz(root, seconds, None)),
        ));
    }
    let filter = args.filter.clone();
    steps.push((
        "integration tests",
        Box::new(move || {
            let mut cmd = build::cargo(root);
            cmd.env(SENSOR_BIN_ENV, build::sensor_binary(root)).args([
                "test",
                "-p",
                "tests",
                "--release",
                "--",
            ]);
            if let Some(filter) = &filter {
                cmd.arg(filter);
            }
            cmd::run(cmd.arg("--test-threads=1"))
        }),
    ));
    if !args.no_vm {
        let vm_args = vm::VmTestArgs::matrix(args.filter.clone(), args.vm_subset);
        steps.push((
            "integration tests in VMs (6.1, 6.12)",
            Box::new(move || vm::run_matrix(root, &vm_args)),
        ));
    }
    let total = steps.len();
    let started = Instant::now();
    let mut times: Vec<(&str, Duration)> = Vec::new();
    let mut failure = None;
    for (i, (name, step)) in steps.into_iter().enumerate() {
        println!("\n==> [{}/{total}] {name}", i + 1);
        let t = Instant::now();
        let result = step();
        let elapsed = t.elapsed();
        times.push((name, elapsed));
        match result {
            Ok(()) => println!("<== {name}: ok in {}", secs(elapsed)),
            Err(err) => {
                println!("<== {name}: FAILED after {}", secs(elapsed));
                failure = Some(err.context(format!("step `{name}` failed")));
                break;
            }
        }
    }

    let summary: Vec<String> = times
        .iter()
        .map(|(name, d)| format!("{name} {}", secs(*d)))
        .collect();
    println!(
        "\nsummary: {} | total {}{}",
        summary.join(" | "),
        secs(started.elapsed()),
        if failure.is_some() { " | FAILED" } else { "" }
    );
    failure.map_or(Ok(()), Err)
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}
