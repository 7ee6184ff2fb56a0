//! The pipeline's recording hooks (`run --record`) and the replay's entry
//! (`keysentry replay`): what is written after each handled record, and
//! how a recording's records are fed back. The file format is `record.rs`.

use std::path::Path;

use anyhow::Result;

use crate::{
    agent::pipeline::Pipeline,
    agent::record::{self, Record, Recorder},
    enrich::proctab::{Fetched, ProcInfo},
};

impl Pipeline {
    /// Record to this file from now on (the header and the process table).
    pub fn record_to(&mut self, path: &Path, config_text: String) -> Result<()> {
        let mut protected: Vec<(u32, u32)> = self.cx.protector.snapshot();
        protected.sort();
        let mut holders = self.cx.protector.holders();
        holders.sort();
        let header = record::Header {
            version: record::VERSION,
            host: self.cx.host.clone(),
            clock_offset_ns: self.cx.clock.offset_ns,
            config: config_text,
            self_pid: std::process::id(),
            protected,
            holders,
        };
        let mut r = Recorder::create(path, &header)?;
        let mut procs: Vec<&ProcInfo> = self.cx.procs.iter().collect();
        procs.sort_by_key(|p| p.pid);
        for p in procs {
            r.write(&Record::Snapshot(p.into()))?;
        }
        r.flush()?;
        self.cx.procs.recording = true;
        self.cx.view.set_recording(true);
        self.recorder = Some(r);
        Ok(())
    }

    pub(crate) fn record_event(&mut self, bytes: &[u8]) {
        self.record(Record::Event(bytes.to_vec()));
    }

    /// A replay: the header's host, clock and protected set; no /proc.
    pub fn replay_from(&mut self, h: &record::Header) {
        self.cx.host = h.host.clone();
        self.cx.clock.offset_ns = h.clock_offset_ns;
        self.cx.procs.offline = true;
        self.cx.view.replaying();
        self.cx.protector.restore(&h.protected, &h.holders);
    }

    /// One record of a recording (after the header).
    pub fn replay(&mut self, rec: Record) {
        match rec {
            Record::Header(_) => {}
            Record::Event(b) => self.handle_event(&b),
            Record::Proc(p) | Record::Snapshot(p) => self.cx.procs.insert(p.into()),
            Record::Tgid(t, g) => self.cx.procs.insert_tgid(t, g),
            Record::Fact(k, v) => {
                self.cx.view.insert_recorded(k, v);
            }
            Record::Tick(ns) => self.tick_at(ns),
            Record::Scan(r) => self.scanned_at(r),
            Record::Folded(ns, items) => self.folded_at(ns, &items),
        }
    }

    /// Writes one record when recording, after the /proc reads and facts
    /// its handling made (so a replay has them before it handles the
    /// record). Callers handle first, then record. A failed write stops
    /// recording.
    pub(crate) fn record(&mut self, rec: Record) {
        self.record_with(Some(rec));
    }

    /// As `record`; None writes only the /proc reads and facts pending
    /// (at shutdown: what the final flush read, for the replay's own).
    pub(crate) fn record_with(&mut self, rec: Option<Record>) {
        let Some(r) = self.recorder.as_mut() else {
            return;
        };
        let mut recs: Vec<Record> = self
            .cx
            .procs
            .fetched
            .drain(..)
            .map(|f| match f {
                Fetched::Proc(p) => Record::Proc((&p).into()),
                Fetched::Tgid(t, g) => Record::Tgid(t, g),
            })
            .collect();
        recs.extend(self.cx.view.take_new().map(|(k, v)| Record::Fact(k, v)));
        recs.extend(rec);
        for rec in &recs {
            if let Err(e) = r.write(rec) {
                tracing::warn!("recording stopped: {e:#}");
                self.recorder = None;
                self.cx.procs.recording = false;
                self.cx.view.set_recording(false);
                return;
            }
        }
    }
}
