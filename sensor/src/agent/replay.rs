//! Replay, the recording's way back in: `keysentry replay FILE` feeds the
//! records of a `run --record` recording (`record.rs`) to the same
//! `Pipeline` the live loop uses, with /proc reads off, and prints the same
//! alerts and incident records; `--trim` writes a shareable copy.

use std::path::Path;

use anyhow::Result;

use crate::{
    agent::pipeline::Pipeline,
    agent::record::{self, Record, Recorder},
    config::Config,
    detect::Policy,
    enrich::proctab::ProcessTable,
    enrich::protect::Protector,
    enrich::watch::Watcher,
    metrics::Metrics,
    output::Outputs,
};

/// `keysentry replay FILE`: the recorded events through the same
/// enrichment, rules, correlation and scoring; alerts and incident records
/// to the config's outputs (`cfg` None: the config in the recording, with
/// stdout as its only output).
/// `trim`: also write a copy of the recording without the start-snapshot
/// processes the replay never looked at (a recording to share or commit).
pub fn replay(path: &Path, cfg: Option<Config>, trim: Option<&Path>) -> Result<()> {
    let (header, records) = record::read(path)?;
    let cfg = match cfg {
        Some(c) => c,
        None => {
            let mut c = if header.config.is_empty() {
                Config::default_config()
            } else {
                Config::parse(&header.config, "the recording's config")
                    .map_err(|e| anyhow::anyhow!("{e}"))?
            };
            // A recording is data, not instructions: its config never
            // names where a replay writes (a file to create or append to,
            // a socket to send to). Alerts go to stdout; a config given
            // with --config decides otherwise.
            c.alerts.stdout = true;
            c.alerts.file = None;
            c.alerts.syslog = false;
            c
        }
    };
    super::reload::set_cmdline_mode(&cfg);
    let metrics = Metrics::new()?;
    let mut outputs = Outputs::start(&cfg.alerts, metrics.clone())?;
    outputs.blocking = true;
    let mut watcher = Watcher::new(cfg.key_path.iter().map(|k| k.path.clone()).collect());
    let _ = watcher.scan();
    let mut procs = ProcessTable::new();
    if trim.is_some() {
        procs.used = Some(Default::default());
    }
    let mut pipe = Pipeline::new(procs, watcher, Policy::from_config(&cfg), outputs, metrics)
        .with_protection(Protector::new(&cfg), Default::default())
        .with_correlation(&cfg);
    // The code paths by index (the recorded facts say which a name is at).
    pipe.cx.code = Watcher::code(cfg.tamper.all_paths());
    pipe.replay_from(&header);
    for rec in records.iter().cloned() {
        pipe.replay(rec);
    }
    pipe.finish();
    pipe.outputs.close();
    if let Some(out) = trim {
        let used = pipe.cx.procs.used.take().unwrap_or_default().into_inner();
        let mut w = Recorder::create(out, &header)?;
        let (mut dropped, mut cut) = (0usize, 0usize);
        for rec in &records {
            match rec {
                Record::Snapshot(p) => match used.get(&p.pid) {
                    None => dropped += 1,
                    Some(true) => w.write(rec)?,
                    // Only walked through (an ancestor): its command line
                    // is never shown, so it is left out.
                    Some(false) => {
                        cut += 1;
                        let mut p = p.clone();
                        p.argv.clear();
                        w.write(&Record::Snapshot(p))?;
                    }
                },
                _ => w.write(rec)?,
            }
        }
        w.flush()?;
        eprintln!(
            "keysentry: wrote {}: {dropped} start-snapshot processes the replay never \
             looked at left out, {cut} command lines of ancestors cut",
            out.display()
        );
    }
    Ok(())
}
