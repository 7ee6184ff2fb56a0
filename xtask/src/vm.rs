//! The kernel matrix: Debian's cloud kernels fetched with apt and cached
//! (`cargo xtask vm-kernels`), and the integration tests run inside qemu VMs
//! booted with them (`cargo xtask vm-test`).
//!
//! A VM is a busybox initramfs holding the prebuilt test executables,
//! `keysentry`, the helper binaries (each at its host path, with its shared
//! libraries) and a shell script that runs every test as its own process.
//! The guest writes its output to a virtio-serial port backed by a host file
//! that is read while the VM runs; marker lines (`@@ks ...`) carry each
//! test's start, end, exit status and guest-clock duration.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{build, cmd, toolchain};

/// Host packages the VM runner needs, and why.
const VM_PACKAGES: &[(&str, &str)] = &[
    (
        "qemu-system-x86",
        "boots the test kernels (software emulation)",
    ),
    ("busybox-static", "the VM's init, shell and tools"),
    ("cpio", "packs the VM's initramfs"),
    (
        "kmod",
        "depmod/modprobe resolve the kernel modules the VM loads",
    ),
    ("xz-utils", "decompresses kernel modules (.ko.xz)"),
    ("zstd", "decompresses kernel modules (.ko.zst)"),
];

/// Modules the guest needs when the kernel has them as modules (Debian's
/// 6.1 cloud kernels; built in on 6.12): the virtio-serial output port;
/// loop devices and ext4 for raw_read.rs's key store on a block device;
/// overlay for containers.rs's image layers.
/// A cache made for another list is fetched again.
const GUEST_MODULES: &[&str] = &["virtio_pci", "virtio_console", "loop", "ext4", "overlay"];

/// Host programs the integration tests run, copied into the VM with their
/// shared libraries when the host has them.
const GUEST_TOOLS: &[&str] = &[
    "/usr/bin/cat",
    "/usr/bin/cp",
    "/usr/bin/mv",
    "/usr/bin/tar",
    // tar czf runs gzip from PATH; a test checks the writer's comm.
    "/usr/bin/gzip",
    "/usr/bin/bash",
    "/usr/bin/env",
    "/usr/bin/curl",
    "/usr/bin/nc",
    "/usr/bin/python3",
    "/usr/bin/gdb",
    "/usr/bin/gcore",
    // flow.rs makes a private key at test time.
    "/usr/bin/openssl",
    // prometheus.rs checks the deploy files and scrapes the sensor (Debian's
    // prometheus package, about 50 MB each).
    "/usr/bin/promtool",
    "/usr/bin/prometheus",
    // raw_read.rs: a key store's file system on a loop device, read by dd
    // (a copy of it allowlisted: busybox's applets cannot be copied).
    "/usr/sbin/losetup",
    "/usr/sbin/mkfs.ext4",
    "/usr/bin/dd",
    // agent_socket.rs: another user's ssh-agent used.
    "/usr/bin/ssh-agent",
    "/usr/bin/ssh-add",
    "/usr/bin/ssh-keygen",
    // keyring.rs: another user's kernel keys read.
    "/usr/bin/keyctl",
    // gdb dlopens it for threaded programs (ldd does not list it).
    "/lib/x86_64-linux-gnu/libthread_db.so.1",
];

/// The guest's /bin/sh (Debian's dash), when the host has it.
const HOST_SH: &str = "/usr/bin/dash";

/// Host directories the tools need (python's standard library, gdb's
/// data), without the parts named in the second field.
const GUEST_DIRS: &[(&str, &[&str])] = &[
    (
        "/usr/lib/python3.11",
        &[
            "test",
            "__pycache__",
            "idlelib",
            "tkinter",
            "ensurepip",
            "lib2to3",
            "pydoc_data",
        ],
    ),
    ("/usr/share/gdb", &[]),
];

/// BPF LSM on: the last `lsm=` on the command line wins over the built-in list.
const LSM: &str = "lockdown,capability,landlock,yama,bpf";

/// One kernel of the matrix: the Debian suite whose cloud kernel it is.
pub struct KernelSpec {
    pub name: &'static str,
    suite: &'static str,
}

/// The matrix. Each suite's `linux-image-cloud-amd64` metapackage names
/// the kernel package; the version fetched is recorded in the cache
/// manifest and printed with every run.
pub const KERNELS: &[KernelSpec] = &[
    KernelSpec {
        name: "6.1",
        suite: "bookworm",
    },
    KernelSpec {
        name: "6.12",
        suite: "trixie",
    },
];
const META_PACKAGE: &str = "linux-image-cloud-amd64";
const ARCHIVE: &str = "http://deb.debian.org/debian";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum KernelChoice {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    All,
}

impl KernelChoice {
    pub fn specs(self) -> Vec<&'static KernelSpec> {
        let want = match self {
            KernelChoice::V6_1 => Some("6.1"),
            KernelChoice::V6_12 => Some("6.12"),
            KernelChoice::All => None,
        };
        KERNELS
            .iter()
            .filter(|k| want.is_none_or(|w| w == k.name))
            .collect()
    }
}

#[derive(clap::Args)]
pub struct KernelsArgs {
    /// Which kernel(s).
    #[arg(long, value_enum, default_value = "all")]
    kernel: KernelChoice,
    /// Fetch again even when cached (picks up a newer Debian kernel).
    #[arg(long)]
    refresh: bool,
}

/// The tests `cargo xtask test --vm-subset` runs in each VM (a quick local
/// check; CI runs every test): every enforcement test (they need BPF LSM,
/// which only the VMs have) and one test of each detection family.
pub const QUICK_SUBSET: &[&str] = &[
    "enforce::",
    "lsm_detect::a_key_read_through_a_handed_over_fd_is_alerted",
    "lsm_detect::an_access_the_tracepoints_do_not_enumerate_is_alerted_once",
    "cli::",
    "key_open::every_name_of_a_key_gives_exactly_one_alert",
    "memory::every_technique_against_a_protected_process_alerts",
    "dump::forced_crash_then_core_dump_of_a_protected_process",
    "flow::a_user_space_dump_is_followed_to_its_copy_and_the_network",
];

#[derive(clap::Args, Clone)]
pub struct VmTestArgs {
    /// Which kernel(s) to boot.
    #[arg(long, value_enum, default_value = "all")]
    pub kernel: KernelChoice,
    /// Only the tests whose `file::name` contains NAME (NAME,NAME,...: any).
    #[arg(long, value_name = "NAME")]
    pub filter: Option<String>,
    /// Wall-clock limit for one VM, in minutes.
    #[arg(long, default_value_t = 60)]
    pub timeout_min: u64,
    /// Limit for one test inside the VM, in seconds.
    #[arg(long, default_value_t = 900)]
    pub test_timeout: u64,
    /// How long a test waits for one event in the VM, in seconds
    /// (KEYSENTRY_TEST_DEADLINE_SECS; a sensor start takes 1-2 minutes in TCG).
    #[arg(long, default_value_t = 300)]
    pub deadline: u64,
    /// Boot the kernels one after the other instead of at the same time.
    #[arg(long)]
    pub sequential: bool,
    /// Run every test even after one failed (by default a VM stops at its
    /// first failure: in TCG a failing sensor start costs minutes, and the
    /// tests left are reported as not run, which fails the step too).
    #[arg(long)]
    pub no_fail_fast: bool,
    /// Guest memory (qemu -m).
    #[arg(long, default_value = "2G")]
    pub mem: String,
    /// Guest vCPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
}

impl VmTestArgs {
    /// The defaults, for `cargo xtask test`: the given filter, else every
    /// test, or the quick subset when `subset`.
    pub fn matrix(filter: Option<String>, subset: bool) -> Self {
        let filter = match (filter, subset) {
            (Some(f), _) => Some(f),
            (None, false) => None,
            (None, true) => Some(QUICK_SUBSET.join(",")),
        };
        VmTestArgs {
            kernel: KernelChoice::All,
            filter,
            timeout_min: 60,
            test_timeout: 900,
            deadline: 300,
            sequential: false,
            no_fail_fast: false,
            mem: "2G".to_owned(),
            cpus: 2,
        }
    }
}

/// A kernel ready to boot, from the cache.
pub struct Kernel {
    pub name: &'static str,
    pub package: String,
    pub version: String,
    pub release: String,
    pub vmlinuz: PathBuf,
    /// Plain ELF .ko files, in load order.
    pub modules: Vec<PathBuf>,
}

/// `$KEYSENTRY_VM_CACHE`, else `$XDG_CACHE_HOME/keysentry/vm`, else
/// `~/.cache/keysentry/vm`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KEYSENTRY_VM_CACHE").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("keysentry/vm"));
    }
    let home = std::env::var_os("HOME").context("neither KEYSENTRY_VM_CACHE nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/keysentry/vm"))
}

/// `cargo xtask vm-kernels`.
pub fn kernels(args: &KernelsArgs) -> Result<()> {
    toolchain::ensure_packages(VM_PACKAGES)?;
    for spec in args.kernel.specs() {
        let k = kernel(spec, args.refresh)?;
        println!(
            "vm: kernel {}: {} {} ({}), {} module(s) to load",
            k.name,
            k.package,
            k.version,
            k.vmlinuz.display(),
            k.modules.len()
        );
    }
    Ok(())
}

/// The cached kernel `spec`, fetched first when missing (or `refresh`).
pub fn kernel(spec: &'static KernelSpec, refresh: bool) -> Result<Kernel> {
    let dir = cache_dir()?.join(spec.name);
    let manifest = dir.join("manifest");
    let current = fs::read_to_string(&manifest).is_ok_and(|t| {
        t.lines()
            .any(|l| l == format!("guest_modules={}", GUEST_MODULES.join(" ")))
    });
    if refresh || !current {
        fetch_kernel(spec, &dir).with_context(|| format!("fetching kernel {}", spec.name))?;
    }
    let text = fs::read_to_string(&manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    let fields: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let field = |key: &str| {
        fields
            .get(key)
            .map(|v| v.to_string())
            .with_context(|| format!("{} has no `{key}=` line", manifest.display()))
    };
    let modules = field("modules")?
        .split_whitespace()
        .map(|m| dir.join("modules").join(m))
        .collect::<Vec<_>>();
    let k = Kernel {
        name: spec.name,
        package: field("package")?,
        version: field("version")?,
        release: field("release")?,
        vmlinuz: dir.join("vmlinuz"),
        modules,
    };
    for f in std::iter::once(&k.vmlinuz).chain(&k.modules) {
        if !f.is_file() {
            bail!(
                "{} is missing from the kernel cache: run `cargo xtask vm-kernels --refresh`",
                f.display()
            );
        }
    }
    Ok(k)
}

/// apt-get/apt-cache with a private state for `suite` under the cache: the
/// host's apt sources and lists are left alone.
fn apt(tool: &str, aptdir: &Path) -> Command {
    let mut c = Command::new(tool);
    for (key, value) in [
        ("Dir::Etc::SourceList", aptdir.join("sources.list")),
        ("Dir::Etc::SourceParts", aptdir.join("sources.list.d")),
        ("Dir::State::Lists", aptdir.join("lists")),
        ("Dir::Cache", aptdir.join("cache")),
    ] {
        c.arg("-o").arg(format!("{key}={}", value.display()));
    }
    c.args([
        "-o",
        "Acquire::Languages=none",
        "-o",
        "APT::Sandbox::User=root",
        "-q",
    ]);
    c
}

fn fetch_kernel(spec: &KernelSpec, dir: &Path) -> Result<()> {
    let started = Instant::now();
    let cache = dir.parent().context("kernel cache dir has no parent")?;
    let aptdir = cache.join("apt").join(spec.suite);
    for sub in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
        fs::create_dir_all(aptdir.join(sub))?;
    }
    fs::write(
        aptdir.join("sources.list"),
        format!("deb [signed-by={KEYRING}] {ARCHIVE} {} main\n", spec.suite),
    )?;
    println!(
        "vm: fetching Debian {} cloud kernel ({} {} main) into {}",
        spec.name,
        ARCHIVE,
        spec.suite,
        dir.display()
    );
    cmd::run(apt("apt-get", &aptdir).arg("update"))?;

    // The metapackage depends on the versioned kernel package.
    let depends = cmd::output(apt("apt-cache", &aptdir).args(["depends", META_PACKAGE]))
        .with_context(|| {
            format!(
                "`apt-cache depends {META_PACKAGE}` failed for {}",
                spec.suite
            )
        })?;
    let package = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .with_context(|| {
            format!(
                "{META_PACKAGE} in {} depends on no linux-image: {depends}",
                spec.suite
            )
        })?
        .to_owned();
    let show = cmd::output(apt("apt-cache", &aptdir).args(["show", "--no-all-versions", &package]))
        .with_context(|| format!("`apt-cache show {package}` failed"))?;
    let version = show
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .with_context(|| format!("`apt-cache show {package}` has no Version"))?
        .to_owned();
    let sha256 = show
        .lines()
        .find_map(|l| l.strip_prefix("SHA256: "))
        .unwrap_or("?")
        .to_owned();

    let tmp = cache.join(format!("{}.tmp", spec.name));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    cmd::run(
        apt("apt-get", &aptdir)
            .current_dir(&tmp)
            .args(["download", &format!("{package}={version}")]),
    )?;
    let deb = fs::read_dir(&tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    let root = tmp.join("root");
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;

    let vmlinuz = fs::read_dir(root.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("{} has no boot/vmlinuz-*", deb.display()))?;
    let release = vmlinuz.file_name().unwrap().to_string_lossy()["vmlinuz-".len()..].to_owned();
    // trixie ships modules in usr/lib/modules; depmod -b wants lib/modules.
    if !root.join("lib").exists() && root.join("usr/lib/modules").is_dir() {
        std::os::unix::fs::symlink("usr/lib", root.join("lib"))?;
    }
    cmd::run(Command::new("depmod").arg("-b").arg(&root).arg(&release))?;

    let out = tmp.join("out");
    fs::create_dir_all(out.join("modules"))?;
    fs::copy(&vmlinuz, out.join("vmlinuz"))?;
    let mut modules: Vec<String> = Vec::new();
    for m in GUEST_MODULES {
        let deps = cmd::output(Command::new("modprobe").arg("-d").arg(&root).args([
            "-S",
            &release,
            "--show-depends",
            m,
        ]))
        .with_context(|| format!("modprobe cannot resolve {m} for {release}"))?;
        for line in deps.lines() {
            // "insmod /path/x.ko.xz" or "builtin x"
            let Some(path) = line.strip_prefix("insmod ").map(|p| p.trim()) else {
                continue;
            };
            let base = Path::new(path).file_name().unwrap().to_string_lossy();
            let name = base
                .trim_end_matches(".xz")
                .trim_end_matches(".zst")
                .trim_end_matches(".gz")
                .to_owned();
            if modules.iter().any(|n| n.ends_with(&format!("-{name}"))) {
                continue;
            }
            let file = format!("{:02}-{name}", modules.len() + 1);
            let plain = fs::File::create(out.join("modules").join(&file))?;
            let tool = match () {
                _ if path.ends_with(".xz") => "xz",
                _ if path.ends_with(".zst") => "zstd",
                _ if path.ends_with(".gz") => "gzip",
                _ => "cat",
            };
            let mut c = Command::new(tool);
            if tool != "cat" {
                c.arg("-dc");
            }
            let st = c.arg(path).stdout(plain).status()?;
            if !st.success() {
                bail!("`{tool} -dc {path}` failed ({st})");
            }
            modules.push(file);
        }
    }
    fs::write(
        out.join("manifest"),
        format!(
            "package={package}\nversion={version}\nrelease={release}\nsha256={sha256}\nsuite={}\nmodules={}\nguest_modules={}\n",
            spec.suite,
            modules.join(" "),
            GUEST_MODULES.join(" ")
        ),
    )?;
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::rename(&out, dir)?;
    fs::remove_dir_all(&tmp)?;
    println!(
        "vm: kernel {}: {package} {version} fetched and unpacked in {}",
        spec.name,
        secs(started.elapsed())
    );
    Ok(())
}

/// The prebuilt test executables, `file` name to path, and the helper
/// binaries, from `cargo test -p tests --no-run`.
struct Artifacts {
    tests: Vec<(String, PathBuf)>,
    bins: Vec<PathBuf>,
}

fn build_test_artifacts(root: &Path) -> Result<Artifacts> {
    let mut c = build::cargo(root);
    c.args([
        "test",
        "-p",
        "tests",
        "--release",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    println!("$ {}", cmd::describe(&c));
    let out = c
        .stderr(Stdio::inherit())
        .output()
        .context("cannot start cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the integration tests failed ({})", out.status);
    }
    let mut a = Artifacts {
        tests: Vec::new(),
        bins: Vec::new(),
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        let kinds = msg["target"]["kind"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let name = msg["target"]["name"].as_str().unwrap_or("?").to_owned();
        if kinds.iter().any(|k| k == "test") {
            a.tests.push((name, PathBuf::from(exe)));
        } else if kinds.iter().any(|k| k == "bin") && msg["profile"]["test"] == false {
            a.bins.push(PathBuf::from(exe));
        }
    }
    a.tests.sort();
    a.tests.dedup();
    if a.tests.is_empty() {
        bail!("cargo test --no-run reported no integration test executables");
    }
    Ok(a)
}

/// `(file, test name, executable)` of every test the filter selects, from
/// each executable's `--list`.
fn list_tests(a: &Artifacts, filter: Option<&str>) -> Result<Vec<(String, String, PathBuf)>> {
    let mut all = Vec::new();
    for (file, exe) in &a.tests {
        let out = cmd::output(Command::new(exe).args(["--list", "--format", "terse"]))
            .with_context(|| format!("`{} --list` failed", exe.display()))?;
        for line in out.lines() {
            if let Some(name) = line.strip_suffix(": test") {
                let full = format!("{file}::{name}");
                // NAME,NAME,...: any of them.
                if filter.is_none_or(|f| f.split(',').any(|f| full.contains(f))) {
                    all.push((file.clone(), name.to_owned(), exe.clone()));
                }
            }
        }
    }
    Ok(all)
}

/// `cargo xtask vm-test`: setup, build, then one VM per kernel.
pub fn vm_test(root: &Path, args: &VmTestArgs) -> Result<()> {
    toolchain::setup()?;
    build::ebpf(root)?;
    build::sensor(root)?;
    run_matrix(root, args)
}

/// One VM per selected kernel (binaries assumed built); fails when any test
/// failed or a VM did not finish.
pub fn run_matrix(root: &Path, args: &VmTestArgs) -> Result<()> {
    if !cmd::is_root()? {
        bail!("the VM tests fetch kernels with apt and must run as root");
    }
    toolchain::ensure_packages(VM_PACKAGES)?;
    let artifacts = build_test_artifacts(root)?;
    let tests = list_tests(&artifacts, args.filter.as_deref())?;
    if tests.is_empty() {
        bail!("no integration test matches {:?}", args.filter);
    }
    // Kernels first (a fetch prints apt's output), then the VMs: at the
    // same time unless --sequential (the verifier, single-threaded, is
    // most of a VM's time, so two VMs use two host cores).
    let mut kernels = Vec::new();
    for spec in args.kernel.specs() {
        let t = Instant::now();
        let k = kernel(spec, false)?;
        if t.elapsed() > Duration::from_secs(1) {
            println!("vm: kernel {} ready in {}", k.name, secs(t.elapsed()));
        }
        kernels.push(k);
    }
    let outcomes: Vec<(&str, Result<VmSummary>)> = if args.sequential {
        kernels
            .iter()
            .map(|k| (k.name, run_vm(root, k, &artifacts, &tests, args)))
            .collect()
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = kernels
                .iter()
                .map(|k| {
                    (
                        k.name,
                        s.spawn(|| run_vm(root, k, &artifacts, &tests, args)),
                    )
                })
                .collect();
            handles
                .into_iter()
                .map(|(name, h)| {
                    let r = h
                        .join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("the VM thread panicked")));
                    (name, r)
                })
                .collect()
        })
    };
    let mut failed = Vec::new();
    println!("\nvm matrix:");
    for (name, outcome) in outcomes {
        match outcome {
            Ok(s) => {
                if s.failed > 0 || s.missing > 0 {
                    failed.push(name);
                }
                println!("  {}", s.line);
            }
            Err(e) => {
                failed.push(name);
                println!("  {name}: VM failed: {e:#}");
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "integration tests failed on kernel(s) {}",
            failed.join(", ")
        );
    }
    Ok(())
}

struct VmSummary {
    failed: usize,
    missing: usize,
    line: String,
}

/// Copies host files into the initramfs tree at their own paths, with the
/// shared-library closure of ELF files.
struct Tree {
    root: PathBuf,
}

impl Tree {
    /// Every file under `dir` (following symlinks), except the entries
    /// named in `skip`.
    fn add_dir(&self, dir: &Path, skip: &[&str]) -> Result<()> {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path
                .file_name()
                .is_some_and(|n| skip.iter().any(|s| n == *s))
            {
                continue;
            }
            if path.is_dir() {
                self.add_dir(&path, skip)?;
            } else if path.is_file() {
                self.add(&path)?;
            }
        }
        Ok(())
    }

    fn add(&self, src: &Path) -> Result<()> {
        let dst = self.root.join(src.strip_prefix("/").unwrap_or(src));
        if dst.symlink_metadata().is_ok() {
            return Ok(());
        }
        fs::create_dir_all(dst.parent().unwrap())?;
        // Following symlinks: library sonames become plain files.
        fs::copy(src, &dst)
            .with_context(|| format!("cannot copy {} into the VM", src.display()))?;
        let mut magic = [0u8; 4];
        if fs::File::open(src)?.read_exact(&mut magic).is_ok() && &magic == b"\x7fELF" {
            // `ldd` fails on static executables: nothing to add then.
            if let Some(out) = cmd::output(Command::new("ldd").arg(src)) {
                for line in out.lines() {
                    let lib = match line.split_once("=>") {
                        Some((_, rest)) => rest.split_whitespace().next(),
                        None => line.split_whitespace().next(),
                    };
                    if let Some(lib) = lib.filter(|l| l.starts_with('/')) {
                        self.add(Path::new(lib))?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The guest's /init: mounts, modules, loopback, then /ks/run.sh with its
/// output on the virtio-serial port named `ks.out`.
const INIT: &str = r#"#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
chmod 1777 /tmp
mount -t securityfs securityfs /sys/kernel/security
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
ip link set lo up
ulimit -l unlimited
for m in /ks/modules/*; do [ -e "$m" ] && { insmod "$m" || echo "init: insmod $m failed"; }; done
OUT=/dev/console
for d in /sys/class/virtio-ports/*; do
  [ "$(cat $d/name 2>/dev/null)" = ks.out ] && OUT=/dev/${d##*/}
done
echo "init: output to $OUT"
sh /ks/run.sh </dev/null >"$OUT" 2>&1
echo "@@ks done $?" >"$OUT"
sync
poweroff -f
"#;

fn run_vm(
    root: &Path,
    k: &Kernel,
    a: &Artifacts,
    tests: &[(String, String, PathBuf)],
    args: &VmTestArgs,
) -> Result<VmSummary> {
    let work = cmd::target_dir(root).join("vm").join(k.name);
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    let tree = Tree {
        root: work.join("initramfs"),
    };
    for d in [
        "bin",
        "sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "etc",
        "root",
        "ks/modules",
    ] {
        fs::create_dir_all(tree.root.join(d))?;
    }
    let sensor = build::sensor_binary(root);
    tree.add(&sensor)?;
    for (_, exe) in &a.tests {
        tree.add(exe)?;
    }
    for bin in &a.bins {
        tree.add(bin)?;
    }
    // Host tools the tests run, the real ones rather than busybox applets
    // (tests check exe paths); a tool the host lacks is skipped by the test
    // that needs it, in the VM as on the host.
    for tool in GUEST_TOOLS {
        let tool = Path::new(tool);
        if tool.exists() {
            tree.add(tool)?;
        }
    }
    for (dir, skip) in GUEST_DIRS {
        let dir = Path::new(dir);
        if dir.is_dir() {
            tree.add_dir(dir, skip)?;
        }
    }
    // The recordings the replay tests read, at their host path.
    let fixtures = root.join("tests/fixtures");
    if fixtures.is_dir() {
        tree.add_dir(&fixtures, &[])?;
    }
    let busybox = Path::new("/bin/busybox");
    fs::copy(busybox, tree.root.join("bin/busybox"))?;
    let applets = cmd::output(Command::new(busybox).arg("--list"))
        .context("`busybox --list` failed (apt-get install busybox-static)")?;
    // /bin/sh is the host's dash: busybox's sh runs its own applets in
    // place of programs (GNU tar's `sh -c gzip` would run busybox gzip).
    if Path::new(HOST_SH).is_file() {
        tree.add(Path::new(HOST_SH))?;
        std::os::unix::fs::symlink(HOST_SH, tree.root.join("bin/sh"))?;
    }
    // Applets go in /bin only, after /usr/bin on PATH: the real tools win.
    for applet in applets.lines().filter(|l| !l.is_empty()) {
        let link = tree.root.join("bin").join(applet);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink("/bin/busybox", &link)?;
        }
    }
    for m in &k.modules {
        fs::copy(m, tree.root.join("ks/modules").join(m.file_name().unwrap()))?;
    }
    fs::write(
        tree.root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(tree.root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    fs::write(tree.root.join("etc/hostname"), "ks-vm\n")?;
    let init = tree.root.join("init");
    fs::write(&init, INIT)?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;

    // Each test runs alone (its own process, as `cargo test` would with
    // --test-threads=1), from the tests package directory.
    let mut script = String::from("#!/bin/sh\n");
    writeln!(
        script,
        "export KEYSENTRY_BIN='{}' KEYSENTRY_TEST_DEADLINE_SECS={} RUST_BACKTRACE=1",
        sensor.display(),
        args.deadline
    )?;
    // The sensor's log filter passes through (e.g. `sensor::kernel::loader=debug`
    // logs each program's verified_insns and load time).
    if let Ok(filter) = std::env::var("KEYSENTRY_LOG") {
        writeln!(
            script,
            "export KEYSENTRY_LOG='{}'",
            filter.replace('\'', "")
        )?;
    }
    if !args.no_fail_fast {
        script.push_str("KS_FAIL_FAST=1\n");
    }
    let pkg = root.join("tests");
    fs::create_dir_all(tree.root.join(pkg.strip_prefix("/").unwrap_or(&pkg)))?;
    // prometheus.rs reads the deploy files (rules, scrape config, rule tests).
    tree.add_dir(&root.join("deploy"), &[])?;
    writeln!(script, "cd '{}' || exit 126", pkg.display())?;
    writeln!(
        script,
        "echo \"@@ks boot $(cut -d' ' -f1 /proc/uptime) $(uname -r)\""
    )?;
    script.push_str(
        r#"t() {
  echo "@@ks start $1 $2"
  t0=$(cut -d' ' -f1 /proc/uptime)
  timeout -s KILL "$4" "$3" --exact "$2" --test-threads=1 --nocapture
  rc=$?
  echo "@@ks end $1 $2 $rc $t0 $(cut -d' ' -f1 /proc/uptime)"
  if [ "$rc" != 0 ] && [ "$KS_FAIL_FAST" = 1 ]; then
    echo "@@ks fail-fast"
    exit 1
  fi
}
"#,
    );
    for (file, name, exe) in tests {
        writeln!(
            script,
            "t {file} {name} '{}' {}",
            exe.display(),
            args.test_timeout
        )?;
    }
    fs::write(tree.root.join("ks/run.sh"), script)?;

    let cpio = work.join("initramfs.cpio");
    let pack = format!(
        "cd '{}' && find . -print0 | cpio --null -o -H newc --quiet > '{}'",
        tree.root.display(),
        cpio.display()
    );
    cmd::run(Command::new("sh").args(["-c", &pack]))?;
    let size = fs::metadata(&cpio)?.len();
    fs::remove_dir_all(&tree.root)?;

    let out = work.join("out");
    let console = work.join("console.log");
    fs::write(&out, "")?;
    // no_timer_check: on a loaded host, TCG's emulated timer can miss the
    // kernel's IO-APIC timer check, which then panics at boot.
    let cmdline = format!(
        "console=ttyS0 panic=-1 oops=panic loglevel=4 no_timer_check lsm={LSM} rdinit=/init"
    );
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-machine",
        "q35",
    ])
    .args(["-m", &args.mem, "-smp", &args.cpus.to_string()])
    .arg("-kernel")
    .arg(&k.vmlinuz)
    .arg("-initrd")
    .arg(&cpio)
    .args(["-append", &cmdline])
    .args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ])
    .arg("-serial")
    .arg(format!("file:{}", console.display()))
    .args(["-device", "virtio-serial-pci", "-chardev"])
    .arg(format!("file,id=out,path={}", out.display()))
    .args(["-device", "virtserialport,chardev=out,name=ks.out"]);
    println!(
        "\n==> vm {}: {} {} ({}), {} tests, initramfs {} MiB, {} vCPU, {} memory, TCG",
        k.name,
        k.package,
        k.version,
        k.release,
        tests.len(),
        size >> 20,
        args.cpus,
        args.mem
    );
    println!("$ {}", cmd::describe(&qemu));
    // A guest that never reached its tests (a boot-time panic) gets one
    // more try.
    let mut attempt = 1;
    let (started, mut reader, status, timed_out) = loop {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(args.timeout_min * 60);
        fs::write(&out, "")?;
        let mut child = qemu
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(work.join("qemu.log"))?)
            .spawn()
            .context("cannot start qemu-system-x86_64")?;
        let mut reader = Reader::new(k.name, &out)?;
        let mut timed_out = false;
        let status = loop {
            reader.poll(started)?;
            if let Some(st) = child.try_wait()? {
                break Some(st);
            }
            if Instant::now() > deadline {
                timed_out = true;
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        if reader.boot.is_none() && !timed_out && attempt == 1 {
            let log = fs::read_to_string(&console).unwrap_or_default();
            let panic = log
                .lines()
                .find(|l| l.contains("Kernel panic"))
                .unwrap_or("");
            println!(
                "[{}] the guest did not boot (qemu {status:?}) {panic}: booting again",
                k.name
            );
            attempt += 1;
            continue;
        }
        break (started, reader, status, timed_out);
    };
    reader.poll(started)?;
    reader.flush_partial();
    let wall = started.elapsed();

    let r = &reader.results;
    let count = |s: &str| r.iter().filter(|t| t.status == s).count();
    let (passed, failed, skipped) = (count("PASS"), count("FAIL"), count("SKIP"));
    let missing = tests.len() - r.len();
    // One print: the other kernel's VM may be writing at the same time.
    let mut table = format!(
        "\n--- vm {} results ({} {}) ---\n",
        k.name, k.package, k.version
    );
    for t in r {
        let reason = t.reason.as_deref().map(|s| format!("  ({s})"));
        let secs = format!("{:.1}s", t.secs);
        writeln!(
            table,
            "  {:4} {secs:>7}  {}{}",
            t.status,
            t.test,
            reason.unwrap_or_default()
        )?;
    }
    for (file, name, _) in &tests[r.len().min(tests.len())..] {
        writeln!(table, "  NOT RUN          {file}::{name}")?;
    }
    let boot = reader.boot.map_or("?".to_owned(), secs);
    let line = format!(
        "{} ({}): {passed} passed, {failed} failed, {skipped} skipped{} | boot {boot}, wall {}",
        k.name,
        k.release,
        if missing > 0 {
            format!(", {missing} not run")
        } else {
            String::new()
        },
        secs(wall)
    );
    writeln!(table, "{line}")?;
    print!("{table}");
    if timed_out || reader.done.is_none() {
        let log = fs::read_to_string(&console).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        println!(
            "--- {} console tail ({}) ---\n{}",
            k.name,
            console.display(),
            lines[lines.len().saturating_sub(40)..].join("\n")
        );
        if timed_out {
            bail!("VM {} timed out after {} min", k.name, args.timeout_min);
        }
        bail!(
            "VM {} ended (qemu {:?}) before its tests finished",
            k.name,
            status
        );
    }
    Ok(VmSummary {
        failed,
        missing,
        line,
    })
}

/// A test's own report that it skipped all of itself (`skipped: WHY` or
/// `SKIPPED: WHY`) or a part (`SKIPPED <what>: WHY`).
struct Skip {
    whole: bool,
    text: String,
}

impl Skip {
    fn parse(line: &str) -> Option<Skip> {
        let line = line.trim_start();
        // With --nocapture libtest's "test NAME ... " and the test's first
        // line of output share a line.
        let line = match line
            .strip_prefix("test ")
            .and_then(|l| l.split_once(" ... "))
        {
            Some((_, out)) => out.trim_start(),
            None => line,
        };
        let rest = line
            .strip_prefix("skipped")
            .or_else(|| line.strip_prefix("SKIPPED"))?;
        if let Some(why) = rest.strip_prefix(':') {
            Some(Skip {
                whole: true,
                text: why.trim().to_owned(),
            })
        } else {
            rest.strip_prefix(' ').map(|part| Skip {
                whole: false,
                text: part.trim().to_owned(),
            })
        }
    }
}

struct TestResult {
    test: String,
    status: &'static str,
    secs: f64,
    reason: Option<String>,
}

/// Follows the guest's output file: prints lines as they come and turns
/// the `@@ks` markers into results.
struct Reader {
    name: &'static str,
    file: fs::File,
    pos: u64,
    partial: Vec<u8>,
    current: Option<(String, Vec<Skip>)>,
    results: Vec<TestResult>,
    boot: Option<Duration>,
    done: Option<i32>,
}

impl Reader {
    fn new(name: &'static str, path: &Path) -> Result<Self> {
        Ok(Reader {
            name,
            file: fs::File::open(path)?,
            pos: 0,
            partial: Vec::new(),
            current: None,
            results: Vec::new(),
            boot: None,
            done: None,
        })
    }

    fn poll(&mut self, started: Instant) -> Result<()> {
        self.file.seek(SeekFrom::Start(self.pos))?;
        let mut buf = Vec::new();
        self.pos += self.file.read_to_end(&mut buf)? as u64;
        self.partial.extend_from_slice(&buf);
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            let line = String::from_utf8_lossy(&line).trim_end().to_owned();
            self.line(&line, started);
        }
        Ok(())
    }

    fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            let line = String::from_utf8_lossy(&self.partial).into_owned();
            self.partial.clear();
            println!("[{}] {line}", self.name);
        }
    }

    fn line(&mut self, line: &str, started: Instant) {
        let Some(marker) = line.strip_prefix("@@ks ") else {
            // A test that cannot run on this kernel says why and returns.
            if let Some((_, skips)) = &mut self.current
                && let Some(skip) = Skip::parse(line)
            {
                skips.push(skip);
            }
            println!("[{}] {line}", self.name);
            return;
        };
        let f: Vec<&str> = marker.split_whitespace().collect();
        match f.as_slice() {
            ["boot", uptime, release] => {
                self.boot = Some(started.elapsed());
                println!(
                    "[{}] booted {release} in {} (guest uptime {uptime}s)",
                    self.name,
                    secs(started.elapsed())
                );
            }
            ["start", file, name] => {
                self.current = Some((format!("{file}::{name}"), Vec::new()));
                println!("[{}] --- {file}::{name}", self.name);
            }
            ["end", file, name, rc, t0, t1] => {
                let secs = t1.parse::<f64>().unwrap_or(0.0) - t0.parse::<f64>().unwrap_or(0.0);
                let skips = self.current.take().map(|(_, s)| s).unwrap_or_default();
                let whole = skips.iter().find(|s| s.whole).map(|s| s.text.clone());
                let parts: Vec<&str> = skips
                    .iter()
                    .filter(|s| !s.whole)
                    .map(|s| s.text.as_str())
                    .collect();
                let (status, reason) = match (*rc, whole) {
                    ("0", Some(r)) => ("SKIP", Some(r)),
                    ("0", None) if !parts.is_empty() => (
                        "PASS",
                        Some(format!("partly skipped: {}", parts.join("; "))),
                    ),
                    ("0", None) => ("PASS", None),
                    ("137", _) => ("FAIL", Some("killed by the per-test timeout".to_owned())),
                    (rc, _) => ("FAIL", Some(format!("exit status {rc}"))),
                };
                println!(
                    "[{}] {status} {file}::{name} in {secs:.1}s{}",
                    self.name,
                    reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                );
                self.results.push(TestResult {
                    test: format!("{file}::{name}"),
                    status,
                    secs,
                    reason,
                });
            }
            ["done", rc] => self.done = rc.parse().ok(),
            ["fail-fast"] => {
                println!(
                    "[{}] stopping at the first failure (--no-fail-fast runs the rest)",
                    self.name
                )
            }
            _ => println!("[{}] {line}", self.name),
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::Skip;

    #[test]
    fn skip_lines_alone_or_after_libtests_test_prefix() {
        let s = Skip::parse("SKIPPED: openssl is not installed").unwrap();
        assert!(s.whole);
        assert_eq!(s.text, "openssl is not installed");
        let s = Skip::parse("test a_copy ... SKIPPED: openssl is not installed").unwrap();
        assert!(s.whole);
        assert_eq!(s.text, "openssl is not installed");
        let s = Skip::parse("test x ... SKIPPED gcore: not installed").unwrap();
        assert!(!s.whole);
        assert_eq!(s.text, "gcore: not installed");
        assert!(Skip::parse("test x ... ok").is_none());
        assert!(Skip::parse("[keysentry] ready").is_none());
    }
}
