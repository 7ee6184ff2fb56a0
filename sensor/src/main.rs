//! `keysentry`: command line.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use sensor::{agent::live, agent::probes_report, agent::replay, config::Config};

#[derive(Parser)]
#[command(
    name = "keysentry",
    version,
    about = "eBPF sensor for hosts that hold signing keys"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the sensor (as root) until SIGTERM or SIGINT.
    Run {
        /// Config file (default: the embedded default config).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Daemon log format on stderr.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
        /// Size of the kernel's bulk ring buffer (opens and closes) in bytes
        /// (a power of two, at least 4096); the critical and lifecycle rings
        /// are 2 MiB each. Events that do not fit are counted in
        /// keysentry_events_lost_total{kind,lane}.
        #[arg(long, default_value_t = sensor::kernel::loader::DEFAULT_RING_BYTES)]
        ring_buffer_bytes: u32,
        /// Write the raw kernel events, and what enrichment read from /proc,
        /// to this file (replay it with `keysentry replay`).
        #[arg(long)]
        record: Option<PathBuf>,
        /// Benchmarks only: attach every program but make each return at once.
        #[arg(long, hide = true)]
        bench_empty_programs: bool,
        /// Benchmarks only: one tp_btf dispatcher on raw_syscalls in place
        /// of the syscalls: tracepoints (with --bench-empty-programs).
        #[arg(long, hide = true, requires = "bench_empty_programs")]
        bench_dispatcher: bool,
        /// Tests only: MAP=N sizes the kernel map MAP to N entries (TAINTED
        /// holds 16384), so a test can fill it with a few hundred processes.
        #[arg(long = "map-entries", hide = true, value_name = "MAP=N", value_parser = parse_map_entries)]
        map_entries: Vec<(String, u32)>,
        /// Benchmarks and diagnosis only: send every repeat instead of
        /// folding repeats in the kernel.
        #[arg(long, hide = true)]
        no_kernel_fold: bool,
        /// auto: BPF LSM enforces rules in enforce mode where the kernel
        /// allows it; tracepoint: no LSM program (nothing is denied).
        #[arg(long, value_enum, default_value = "auto")]
        backend: sensor::kernel::loader::lsm::Backend,
    },
    /// Print, for each detection, the hook that serves it on this kernel
    /// and why, and how each enforceable rule runs (as root).
    Probes {
        /// Config file (default: the embedded default config).
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "auto")]
        backend: sensor::kernel::loader::lsm::Backend,
    },
    /// Validate a config file: exit 0 when valid, 2 naming the bad field.
    CheckConfig { file: PathBuf },
    /// Print the embedded default config.
    DefaultConfig,
    /// Look for private keys in files (offline; no root, no eBPF). Prints
    /// one JSON line per file; exit 0 when no key is found, 1 when a key
    /// is found, 2 when a file could not be read (the others are still
    /// scanned; 2 wins over 1).
    Scan {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Make keysentry the kernel's core handler (as root): core_pattern
    /// runs `keysentry core-handler`, which keeps the cores of protected
    /// processes and key holders as `[dumps] key_holder_policy` says and
    /// passes every other core to the pattern it replaced (docs/dumps.md).
    InstallCoreHandler {
        /// Config the handler reads (default: the embedded default config).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Give core_pattern back the pattern `install-core-handler` replaced.
    UninstallCoreHandler {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// The core_pattern pipe helper itself (the kernel runs it; see
    /// install-core-handler): `core-handler [--state DIR] VALUES...`.
    #[command(hide = true)]
    CoreHandler {
        #[arg(allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Run a recording (`run --record`) through enrichment, the rules,
    /// correlation and scoring; print the alerts and incident records.
    Replay {
        file: PathBuf,
        /// Config to use instead of the one in the recording.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Also write a copy of the recording to OUT without the
        /// start-snapshot processes this replay never looked at.
        #[arg(long, value_name = "OUT")]
        trim: Option<PathBuf>,
    },
}

/// `keysentry scan`: never prints key bytes (the report holds none).
fn scan(files: &[PathBuf]) -> ExitCode {
    use std::io::Write;
    let limits = sensor::enrich::scan::ScanLimits::default();
    let mut found = false;
    let mut failed = false;
    let mut out = std::io::stdout().lock();
    for path in files {
        let line = match sensor::enrich::scan::scan_path(path, &limits) {
            Ok(report) => {
                found |= !report.findings.is_empty() || report.findings_dropped > 0;
                serde_json::json!({ "path": path, "report": report })
            }
            Err(e) => {
                failed = true;
                eprintln!("keysentry: scan: {e}");
                serde_json::json!({ "path": path, "error": e.to_string() })
            }
        };
        if writeln!(out, "{line}").is_err() {
            return ExitCode::from(2);
        }
    }
    ExitCode::from(if failed {
        2
    } else if found {
        1
    } else {
        0
    })
}

/// Prints a command's result: its line on stdout, or the error on stderr
/// (exit 1).
fn report(r: anyhow::Result<String>) -> ExitCode {
    match r {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keysentry: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYSENTRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() -> ExitCode {
    // The kernel's helper: its arguments are specifier values (a comm can
    // start with '-'), never parsed as options.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("core-handler") {
        return ExitCode::from(sensor::agent::corehandler::main(&argv[2..]) as u8);
    }
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::CoreHandler { .. } => unreachable!("handled above"),
        Cmd::InstallCoreHandler { config } => {
            report(sensor::agent::corehandler::install(config.as_deref()))
        }
        Cmd::UninstallCoreHandler { config } => {
            report(sensor::agent::corehandler::uninstall(config.as_deref()))
        }
        Cmd::Scan { files } => scan(&files),
        Cmd::DefaultConfig => {
            print!("{}", sensor::config::DEFAULT_CONFIG);
            ExitCode::SUCCESS
        }
        Cmd::Replay { file, config, trim } => {
            let cfg = match config.as_deref().map(Config::load).transpose() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("keysentry: invalid config: {e}");
                    return ExitCode::from(2);
                }
            };
            match replay::replay(&file, cfg, trim.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("keysentry: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::CheckConfig { file } => {
            match Config::load(&file)
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    live::metrics_endpoint(&c.metrics)
                        .map_err(|e| format!("{}: {e}", file.display()))
                }) {
                Ok(_) => {
                    println!("{}: ok", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("keysentry: invalid config: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Probes { config, backend } => {
            let cfg = match &config {
                Some(path) => Config::load(path),
                None => Ok(Config::default_config()),
            };
            let cfg = match cfg {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("keysentry: invalid config: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logs("text");
            match probes_report::probes_report(&cfg, backend) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("keysentry: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Run {
            config,
            log_format,
            ring_buffer_bytes,
            record,
            bench_empty_programs,
            bench_dispatcher,
            map_entries,
            no_kernel_fold,
            backend,
        } => {
            let cfg = match &config {
                Some(path) => Config::load_trusted(path),
                None => Ok(Config::default_config()),
            };
            let cfg = match cfg {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("keysentry: invalid config: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Err(e) = live::check_privileges() {
                eprintln!("keysentry: {e}");
                return ExitCode::from(1);
            }
            init_logs(&log_format);
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("keysentry: starting runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            let opts = live::RunOptions {
                empty_programs: bench_empty_programs,
                bench_dispatcher,
                no_kernel_fold,
                ring_bytes: ring_buffer_bytes,
                map_entries,
                config_path: config.clone(),
                backend,
                record: record.map(|r| {
                    let text = config
                        .as_ref()
                        .and_then(|c| std::fs::read_to_string(c).ok())
                        .unwrap_or_else(|| sensor::config::DEFAULT_CONFIG.to_string());
                    (r, text)
                }),
            };
            match rt.block_on(live::run(cfg, opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("keysentry: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// `--map-entries MAP=N`: a kernel map's name and its entries (at least 1).
fn parse_map_entries(s: &str) -> Result<(String, u32), String> {
    let (name, n) = s.split_once('=').ok_or("expected MAP=N")?;
    let n: u32 = n.parse().map_err(|e| format!("{n}: {e}"))?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') || n == 0 {
        return Err(format!(
            "{s}: expected a map name in capitals and a count of at least 1"
        ));
    }
    Ok((name.to_string(), n))
}
