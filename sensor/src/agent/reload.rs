//! SIGHUP: the config file re-read, validated and applied to the running
//! sensor (what a reload changes and what needs a restart:
//! docs/configuration.md, "Reloading"), and what start-up shares with it:
//! the key-name patterns compiled for the kernel, inotify watches on key
//! path directories, the command-line mode.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use aya::maps::{Array, MapData};
use sensor_common::names::{NamePattern, NamePatterns, PAT_DIR, PAT_EXACT, PAT_PREFIX, PAT_SUFFIX};

use crate::{
    agent::pipeline::Pipeline,
    config::{Config, names::NameMatch},
    detect::Policy,
    enrich::watch::Watcher,
    output::Outputs,
};

/// SIGHUP: re-reads and validates the config file and applies it: the
/// allowlist and rules (`[[allow]]`), `[[key_path]]`, `[[key_name]]`,
/// `[containers]` and `[alerts]`, `[scoring]` and `[correlation]` (open
/// incidents stay open).
/// `[metrics]`, `[[protected]]`, `[protection]`, `[dumps]`, `[flow]` and
/// `[agents]` need a restart
/// (logged when they changed). An invalid file changes nothing: the running
/// config stays and the log says why, naming the field.
pub(crate) fn reload(
    pipe: &mut Pipeline,
    cur: &mut Config,
    path: Option<&Path>,
    pats: &mut Array<MapData, NamePatterns>,
    watches: inotify::Watches,
) {
    let metrics = pipe.metrics().clone();
    let count = |result: &str| metrics.config_reloads.with_label_values(&[result]).inc();
    let Some(path) = path else {
        tracing::warn!("SIGHUP: running on the embedded default config, nothing to reload");
        return;
    };
    let invalid = |why: String| {
        // One log line (TOML errors span several).
        let why: Vec<&str> = why
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        // Counted before the log line says so: whoever reads the log
        // then finds the counter moved.
        count("invalid");
        tracing::error!(
            "config reload failed, keeping the running config: {}",
            why.join(" ")
        );
    };
    let mut new = match Config::load_trusted(path) {
        Ok(c) => c,
        Err(e) => return invalid(e.to_string()),
    };
    // Everything that can fail first; then apply.
    let new_pats = match name_patterns(&new) {
        Ok(p) => p,
        Err(e) => return invalid(format!("{}: key_name: {e:#}", path.display())),
    };
    let new_outputs = if new.alerts != cur.alerts {
        match Outputs::start(&new.alerts, metrics.clone()) {
            Ok(o) => Some(o),
            Err(e) => return invalid(format!("{}: alerts: {e:#}", path.display())),
        }
    } else {
        None
    };
    if new.key_name != cur.key_name {
        if let Err(e) = pats.set(0, new_pats, 0) {
            return invalid(format!("{}: key_name: kernel map: {e}", path.display()));
        }
        // A file that matched no pattern before may match one now.
        pipe.cx.kernel.void_verdicts();
    }
    if let Some(o) = new_outputs {
        // The old outputs finish their queues on their own threads.
        drop(std::mem::replace(&mut pipe.outputs, o));
    }
    let paths = |c: &Config| {
        c.key_path
            .iter()
            .map(|k| k.path.clone())
            .collect::<Vec<_>>()
    };
    let scoped = crate::enrich::nskeys::scoped;
    let key_paths_changed = paths(&new) != paths(cur) || scoped(&new) != scoped(cur);
    if key_paths_changed {
        // Key-path entries go (code paths' too); tracked files (flows) stay.
        pipe.cx.kernel.clear_key_paths();
        pipe.cx.watcher = Watcher::new(paths(&new));
        let delta = pipe.cx.watcher.scan();
        delta.push(&mut pipe.cx.kernel, true);
        pipe.cx.sync_raw_devs();
        pipe.cx
            .metrics
            .watched_inodes
            .set(pipe.cx.watcher.len() as i64);
        add_watches(watches.clone(), &pipe.cx.watcher.inotify_dirs());
        // Other namespaces' entries went with the map's: resolved again.
        match &pipe.cx.ns_keys {
            Some(n) => n.set_paths(scoped(&new)),
            None => pipe.cx.ns_keys = crate::enrich::nskeys::NsKeys::start(scoped(&new)),
        }
        pipe.cx.metrics.namespace_inodes.set(0);
    }
    if key_paths_changed || new.tamper != cur.tamper {
        if !key_paths_changed {
            let old: Vec<_> = pipe.cx.code.entries().map(|(k, _)| *k).collect();
            for k in old {
                pipe.cx.kernel.drop_key_entry(k.dev, k.ino);
            }
        }
        pipe.cx.set_code_paths(new.tamper.all_paths());
        pipe.cx.scan_code(false);
        pipe.cx.kernel.watch_code_names(&new.tamper.all_paths());
        add_watches(watches, &pipe.cx.code.inotify_dirs());
    }
    pipe.policy = Policy::from_config(&new);
    pipe.cx.runtimes = crate::enrich::runtimes::Runtimes::new(&new.containers);
    let allow_ids = crate::detect::allow_ids::AllowIds::new(&new);
    pipe.cx
        .kernel
        .set_allowed(allow_ids.keys(), allow_ids.exes());
    pipe.allow_ids = allow_ids;
    pipe.reconfigure_scoring(&new);
    set_cmdline_mode(&new);
    for (field, changed) in [
        ("metrics", new.metrics != cur.metrics),
        ("protected", new.protected != cur.protected),
        ("protection", new.protection != cur.protection),
        ("dumps", new.dumps != cur.dumps),
        ("flow", new.flow != cur.flow),
        ("agents", new.agents != cur.agents),
    ] {
        if changed {
            tracing::warn!("config reload: [{field}] changed; it takes effect at the next restart");
        }
    }
    new.metrics = cur.metrics.clone();
    new.protected = cur.protected.clone();
    new.protection = cur.protection.clone();
    new.dumps = cur.dumps.clone();
    new.flow = cur.flow.clone();
    new.agents = cur.agents.clone();
    *cur = new;
    count("ok");
    tracing::info!(
        "config reloaded from {}: {} key paths ({} inodes), {} key-name rules, {} allow entries, outputs: {}",
        path.display(),
        cur.key_path.len(),
        pipe.cx.watcher.len(),
        cur.key_name.len(),
        cur.allow.len(),
        pipe.outputs.names().join(", ")
    );
}

/// Compiles the key_name rules into the kernel's pattern table.
pub fn name_patterns(cfg: &Config) -> Result<NamePatterns> {
    let mut t = NamePatterns::default();
    let mut n = 0usize;
    let mut push = |m: NameMatch, rule: usize, exclude: bool| -> Result<()> {
        let (kind, text) = match m {
            NameMatch::Exact(s) => (PAT_EXACT, s),
            NameMatch::Prefix(s) => (PAT_PREFIX, s),
            NameMatch::Suffix(s) => (PAT_SUFFIX, s),
            NameMatch::Dir(s) => (PAT_DIR, s),
        };
        if n >= t.pats.len() {
            bail!("too many key_name patterns");
        }
        let p = NamePattern::new(kind, text.as_bytes(), rule as u8, exclude)
            .with_context(|| format!("key_name[{rule}]: pattern {text:?} cannot be compiled"))?;
        if kind == PAT_DIR {
            t.has_dir = 1;
        }
        t.pats[n] = p;
        n += 1;
        Ok(())
    };
    for (i, k) in cfg.key_name.iter().enumerate() {
        push(k.include(), i, false)?;
        for e in k.excludes() {
            push(e, i, true)?;
        }
    }
    t.count = n as u32;
    Ok(t)
}

/// Watches directories for files created, moved in or out, or deleted
/// (re-adding is a no-op).
pub(crate) fn add_watches(mut watches: inotify::Watches, dirs: &[PathBuf]) {
    use inotify::WatchMask;
    for d in dirs {
        let mask = WatchMask::CREATE
            | WatchMask::MOVED_TO
            | WatchMask::ATTRIB
            | WatchMask::DELETE
            | WatchMask::MOVED_FROM;
        if let Err(e) = watches.add(d, mask) {
            tracing::warn!("inotify on {}: {e}", d.display());
        }
    }
}

/// `[alerts] cmdline` (validated at load).
pub(crate) fn set_cmdline_mode(cfg: &Config) {
    crate::redact::CmdlineMode::parse(&cfg.alerts.cmdline)
        .unwrap_or(crate::redact::CmdlineMode::Redacted)
        .set();
}
