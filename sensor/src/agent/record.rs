//! Recordings for `keysentry run --record FILE` and `keysentry replay FILE`.
//!
//! Format (version 1): the magic `KSREC1\n`, then records, each a u32
//! little-endian length, a one-byte type and the payload:
//! - `H` header (JSON, `Header`), first and once;
//! - `E` a raw ring-buffer record, byte for byte as the kernel wrote it;
//! - `P` a process the pipeline read from /proc while handling the next
//!   event (JSON, `ProcSnap`); `S` the same for the start snapshot;
//! - `G` a thread id's thread group (two u32 LE), read from /proc;
//! - `F` a fact the pipeline read from the system (JSON `[key, value]`:
//!   a terminal on stdin, core_pattern, a dump's format);
//! - `T` a tick of the agent's clock (u64 LE boot-time ns), when windows
//!   were pending;
//! - `K` a key-material scanner result, where the pipeline took it from
//!   the scanner thread (JSON `ScanRec`: kinds and fingerprints, never key
//!   bytes);
//! - `D` counts of repeats the kernel folded, as the sweep of its FOLD map
//!   took them (`agent/folds.rs`): u64 LE boot-time ns, then per key the
//!   48 bytes of its `FoldKey` and a u64 LE count.
//!
//! Replay takes enrichment only from the stream, so it is deterministic.
//! Command lines are recorded redacted (`redact.rs`), as alerts show them.

use std::{
    io::{BufWriter, Read, Write},
    path::Path,
    sync::Arc,
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::enrich::proctab::ProcInfo;

pub const MAGIC: &[u8; 7] = b"KSREC1\n";
pub const VERSION: u32 = 1;
/// A record bigger than this is corrupt (the ring's records are small).
const MAX_RECORD: u32 = 1 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub host: String,
    /// CLOCK_REALTIME - CLOCK_BOOTTIME at start, ns: alert timestamps.
    pub clock_offset_ns: i128,
    /// The config text in force (replay uses it unless given --config).
    pub config: String,
    pub self_pid: u32,
    /// Protected processes at start: (pid, rule).
    pub protected: Vec<(u32, u32)>,
    /// The key holders among them: (pid, the key file that made each one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<(u32, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcSnap {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
    pub exe: String,
    pub argv: Vec<String>,
    pub start_ns: u64,
    pub cgroup_id: u64,
    pub execed: bool,
    /// Recordings made before these existed: a genuine exe, no bypass.
    #[serde(default = "genuine")]
    pub exe_genuine: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_bypass: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exe_in_root: bool,
}

fn genuine() -> bool {
    true
}

impl From<&ProcInfo> for ProcSnap {
    fn from(p: &ProcInfo) -> Self {
        Self {
            pid: p.pid,
            ppid: p.ppid,
            uid: p.uid,
            comm: p.comm.clone(),
            exe: p.exe.to_string(),
            // A recording may leave the host: secrets in command lines are
            // redacted here, as in alerts (redaction is idempotent).
            argv: crate::redact::redact_argv(&p.argv),
            start_ns: p.start_ns,
            cgroup_id: p.cgroup_id,
            execed: p.execed,
            exe_genuine: p.exe_genuine,
            exe_in_root: p.exe_in_root,
            allow_bypass: p.allow_bypass.as_deref().map(str::to_string),
        }
    }
}

impl From<ProcSnap> for ProcInfo {
    fn from(p: ProcSnap) -> Self {
        Self {
            pid: p.pid,
            ppid: p.ppid,
            uid: p.uid,
            comm: p.comm,
            exe: Arc::from(p.exe),
            argv: Arc::from(p.argv),
            start_ns: p.start_ns,
            cgroup_id: p.cgroup_id,
            execed: p.execed,
            exe_genuine: p.exe_genuine,
            exe_in_root: p.exe_in_root,
            allow_bypass: p.allow_bypass.map(Arc::from),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Header(Header),
    Event(Vec<u8>),
    Proc(ProcSnap),
    Snapshot(ProcSnap),
    Tgid(u32, u32),
    Fact(String, serde_json::Value),
    Tick(u64),
    Scan(ScanRec),
    Folded(u64, Vec<(sensor_common::FoldKey, u64)>),
}

const FOLD_ITEM: usize = size_of::<sensor_common::FoldKey>() + 8;

/// A scanner result as the pipeline handled it, at `at_ns` (boot time).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScanRec {
    pub at_ns: u64,
    pub id: u32,
    pub path: String,
    /// A key file read for the key book (its fingerprints).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub book: bool,
    /// The scanner's report (kinds and fingerprints), or why it failed.
    pub report: Result<crate::enrich::scan::ScanOutcome, String>,
}

impl Record {
    pub fn encode(&self) -> Result<(u8, Vec<u8>)> {
        Ok(match self {
            Record::Header(h) => (b'H', serde_json::to_vec(h)?),
            Record::Event(b) => (b'E', b.clone()),
            Record::Proc(p) => (b'P', serde_json::to_vec(p)?),
            Record::Snapshot(p) => (b'S', serde_json::to_vec(p)?),
            Record::Tgid(t, g) => {
                let mut v = t.to_le_bytes().to_vec();
                v.extend_from_slice(&g.to_le_bytes());
                (b'G', v)
            }
            Record::Fact(k, v) => (b'F', serde_json::to_vec(&(k, v))?),
            Record::Tick(ns) => (b'T', ns.to_le_bytes().to_vec()),
            Record::Scan(r) => (b'K', serde_json::to_vec(r)?),
            Record::Folded(ns, items) => {
                let mut v = ns.to_le_bytes().to_vec();
                for (k, n) in items {
                    // SAFETY: FoldKey is repr(C) without padding.
                    let kb = unsafe {
                        std::slice::from_raw_parts(
                            k as *const sensor_common::FoldKey as *const u8,
                            size_of::<sensor_common::FoldKey>(),
                        )
                    };
                    v.extend_from_slice(kb);
                    v.extend_from_slice(&n.to_le_bytes());
                }
                (b'D', v)
            }
        })
    }

    fn decode(kind: u8, p: Vec<u8>, at: u64) -> Result<Self> {
        let fixed = |n: usize| -> Result<()> {
            if p.len() != n {
                bail!(
                    "record at byte {at}: type {} needs {n} bytes, has {}",
                    kind as char,
                    p.len()
                );
            }
            Ok(())
        };
        Ok(match kind {
            b'H' => Record::Header(
                serde_json::from_slice(&p).with_context(|| format!("header at byte {at}"))?,
            ),
            b'E' => Record::Event(p),
            b'P' => Record::Proc(
                serde_json::from_slice(&p)
                    .with_context(|| format!("process record at byte {at}"))?,
            ),
            b'S' => Record::Snapshot(
                serde_json::from_slice(&p)
                    .with_context(|| format!("snapshot record at byte {at}"))?,
            ),
            b'G' => {
                fixed(8)?;
                Record::Tgid(
                    u32::from_le_bytes(p[0..4].try_into()?),
                    u32::from_le_bytes(p[4..8].try_into()?),
                )
            }
            b'F' => {
                let (k, v): (String, serde_json::Value) = serde_json::from_slice(&p)
                    .with_context(|| format!("fact record at byte {at}"))?;
                Record::Fact(k, v)
            }
            b'T' => {
                fixed(8)?;
                Record::Tick(u64::from_le_bytes(p[..8].try_into()?))
            }
            b'K' => Record::Scan(
                serde_json::from_slice(&p).with_context(|| format!("scan record at byte {at}"))?,
            ),
            b'D' => {
                if p.len() < 8 || !(p.len() - 8).is_multiple_of(FOLD_ITEM) {
                    bail!("fold record at byte {at}: {} bytes", p.len());
                }
                let items = p[8..]
                    .chunks_exact(FOLD_ITEM)
                    .map(|c| {
                        let kb = &c[..FOLD_ITEM - 8];
                        // SAFETY: a FoldKey's bytes (repr(C), valid for any bits).
                        let k: sensor_common::FoldKey =
                            unsafe { std::ptr::read_unaligned(kb.as_ptr() as *const _) };
                        let n = u64::from_le_bytes(c[FOLD_ITEM - 8..].try_into().expect("8 bytes"));
                        (k, n)
                    })
                    .collect();
                Record::Folded(u64::from_le_bytes(p[..8].try_into()?), items)
            }
            k => bail!("record at byte {at}: unknown type {k:#x}"),
        })
    }
}

pub struct Recorder {
    out: BufWriter<std::fs::File>,
}

impl Recorder {
    /// A new recording at `path`: created, never opened if anything is
    /// there already (O_EXCL: no overwritten file, no symlink followed),
    /// readable by root only (it holds command lines and paths).
    pub fn create(path: &Path, header: &Header) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .with_context(|| {
                format!(
                    "creating recording {} (it must not exist yet)",
                    path.display()
                )
            })?;
        let mut r = Self {
            out: BufWriter::new(f),
        };
        r.out.write_all(MAGIC)?;
        r.write(&Record::Header(header.clone()))?;
        Ok(r)
    }

    pub fn write(&mut self, rec: &Record) -> Result<()> {
        let (kind, payload) = rec.encode()?;
        let len = u32::try_from(payload.len() + 1).context("record too large")?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&[kind])?;
        self.out.write_all(&payload)?;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

/// Reads a whole recording: the header, then the records in order.
pub fn read(path: &Path) -> Result<(Header, Vec<Record>)> {
    let mut data = Vec::new();
    std::fs::File::open(path)
        .with_context(|| format!("opening recording {}", path.display()))?
        .read_to_end(&mut data)?;
    parse(&data).with_context(|| format!("recording {}", path.display()))
}

pub fn parse(data: &[u8]) -> Result<(Header, Vec<Record>)> {
    if !data.starts_with(MAGIC) {
        bail!("not a keysentry recording (magic {:?} missing)", "KSREC1");
    }
    let mut at = MAGIC.len();
    let mut recs = Vec::new();
    while at < data.len() {
        if data.len() - at < 5 {
            bail!("truncated record length at byte {at}");
        }
        let len = u32::from_le_bytes(data[at..at + 4].try_into()?);
        if len == 0 || len > MAX_RECORD {
            bail!("record at byte {at}: bad length {len}");
        }
        let end = at + 4 + len as usize;
        if end > data.len() {
            bail!("record at byte {at}: truncated ({len} bytes announced)");
        }
        let kind = data[at + 4];
        recs.push(Record::decode(kind, data[at + 5..end].to_vec(), at as u64)?);
        at = end;
    }
    let mut it = recs.into_iter();
    let header = match it.next() {
        Some(Record::Header(h)) => h,
        _ => bail!("the first record is not the header"),
    };
    if header.version != VERSION {
        bail!(
            "recording version {} (this keysentry reads {VERSION})",
            header.version
        );
    }
    Ok((header, it.collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let dir = std::env::temp_dir().join(format!("ksrec-{}", std::process::id()));
        let h = Header {
            version: VERSION,
            host: "h".into(),
            clock_offset_ns: 5,
            config: String::new(),
            self_pid: 1,
            protected: vec![(2, 1)],
            holders: vec![],
        };
        let _ = std::fs::remove_file(&dir);
        let mut r = Recorder::create(&dir, &h).unwrap();
        let recs = vec![
            Record::Event(vec![1, 2, 3]),
            Record::Tgid(4, 5),
            Record::Fact("tty:1".into(), true.into()),
            Record::Fact("core_pattern".into(), serde_json::json!(["core", false])),
            Record::Tick(9),
            Record::Folded(
                11,
                vec![(
                    sensor_common::FoldKey {
                        tgid: 7,
                        kind: 10,
                        obj: 99,
                        ..Default::default()
                    },
                    41,
                )],
            ),
        ];
        for x in &recs {
            r.write(x).unwrap();
        }
        r.flush().unwrap();
        drop(r);
        let (h2, got) = read(&dir).unwrap();
        assert_eq!(h2, h);
        assert_eq!(got, recs);
        let data = std::fs::read(&dir).unwrap();
        let e = parse(&data[..data.len() - 3]).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        assert!(parse(b"nope").is_err());
        let _ = std::fs::remove_file(&dir);
    }

    /// A recording is a new file, mode 0600; an existing file or a
    /// symlink planted at its path is refused, never overwritten or
    /// followed.
    #[test]
    fn a_recording_is_created_new_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ksrec-new-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let h = Header {
            version: VERSION,
            host: "h".into(),
            clock_offset_ns: 0,
            config: String::new(),
            self_pid: 1,
            protected: vec![],
            holders: vec![],
        };
        let p = dir.join("rec");
        drop(Recorder::create(&p, &h).unwrap());
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let e = Recorder::create(&p, &h).err().unwrap();
        assert!(format!("{e:#}").contains("must not exist yet"), "{e:#}");
        let target = dir.join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(Recorder::create(&link, &h).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
