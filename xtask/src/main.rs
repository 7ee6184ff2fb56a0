//! `cargo xtask <cmd>`: keysentry's developer tasks (toolchain setup, eBPF and
//! user-space builds, running the sensor, the full test pipeline).

mod build;
mod cmd;
mod test;
mod toolchain;
mod vm;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "keysentry developer tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the missing toolchain pieces (Debian packages, bpf-linker, the
    /// `debian-rustc` rustup link). Fast when everything is present.
    Setup,
    /// Setup, then build the eBPF object (release) and print its path.
    BuildEbpf,
    /// Build the eBPF object, then `keysentry` (release) embedding it.
    Build,
    /// Build, then run target/release/keysentry as root (via `sudo -E` when
    /// not root). Arguments after `--` replace the default `run`.
    Run {
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Setup, build, fmt + clippy, unit tests, integration tests (as root).
    Test(test::TestArgs),
    /// Build, then measure what the sensor costs the workload (ks-bench)
    /// and the key scanner's throughput.
    Bench,
    /// Fetch Debian's cloud kernels for the VM matrix (6.1, 6.12) into the
    /// cache (~/.cache/keysentry/vm, or $KEYSENTRY_VM_CACHE).
    VmKernels(vm::KernelsArgs),
    /// Build, then run the integration tests inside qemu VMs booted with
    /// the cached kernels (fetched when missing).
    VmTest(vm::VmTestArgs),
    /// Fuzz each cargo-fuzz target (fuzz/: scan, decode, recording,
    /// config, redact) for N seconds.
    Fuzz {
        #[arg(long, default_value_t = 120)]
        seconds: u64,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The chain names the failing step and command; no backtrace (the
            // failing tool has already printed its own diagnostics).
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    let root = cmd::workspace_root()?;
    match cli.command {
        Command::Setup => toolchain::setup(),
        Command::BuildEbpf => {
            toolchain::setup()?;
            build::ebpf(&root)?;
            Ok(())
        }
        Command::Build => {
            toolchain::setup()?;
            build::ebpf(&root)?;
            build::sensor(&root)?;
            Ok(())
        }
        Command::Run { args } => {
            toolchain::setup()?;
            build::ebpf(&root)?;
            build::sensor(&root)?;
            build::run_sensor(&root, args)
        }
        Command::Test(args) => test::run(&root, &args),
        Command::Fuzz { seconds, target } => {
            toolchain::setup()?;
            build::ebpf(&root)?;
            build::fuzz(&root, seconds, target.as_deref())
        }
        Command::Bench => {
            toolchain::setup()?;
            build::ebpf(&root)?;
            build::sensor(&root)?;
            build::bench(&root)
        }
        Command::VmKernels(args) => vm::kernels(&args),
        Command::VmTest(args) => vm::vm_test(&root, &args),
    }
}
