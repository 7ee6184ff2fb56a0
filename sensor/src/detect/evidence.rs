//! How strong the evidence that a written file is a copy of tracked
//! material is, and the severity it earns (docs/scoring.md, "Copies").
//! A process that once read a key and later writes a log line has not
//! copied the key; `cp` of a dump has copied it.

use crate::alert::Severity;

/// Bytes of a dump's copy that count as a substantial part of it.
const DUMP_PART: i64 = 4096;
/// Below this a write carries too little to hold any key.
const TINY: i64 = 64;

/// What is known of a copy when its writer closed it (or exited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyEvidence {
    /// The lineage starts at a dump (else at a key file).
    pub dump: bool,
    /// The writer read the source itself (or is an archiver fed by it).
    pub direct: bool,
    /// Processes between the source's reader and this writer (children,
    /// pipes): 0 when direct.
    pub hops: u32,
    /// Bytes the file holds (or the writer wrote, whichever is larger).
    pub bytes: i64,
    /// The source's size when known (0: unknown).
    pub source_bytes: i64,
    /// Written by an archiver (tar, gzip, zip...) or named like an archive:
    /// compressed, so its size says nothing.
    pub archive: bool,
}

impl CopyEvidence {
    /// Did the writer write about as much as the source holds: at least
    /// half of it (a dump: half, or 4 KiB, whichever is less)?
    pub fn full(&self) -> bool {
        if self.archive {
            return true;
        }
        if self.source_bytes <= 0 {
            return self.bytes >= TINY;
        }
        let need = if self.dump {
            (self.source_bytes / 2).min(DUMP_PART)
        } else {
            self.source_bytes / 2
        };
        self.bytes >= need.max(1)
    }

    /// Severity and detector score, or None for a copy only counted (a
    /// partial write several hops away). Scores sit low enough in each
    /// band that the actor weights (recent start, interactive shell) do
    /// not lift them into the next one.
    pub fn grade(&self) -> Option<(Severity, u32)> {
        let full = self.full();
        Some(match (self.dump, self.direct, self.hops, full) {
            (true, true, _, true) => (Severity::Critical, 90),
            (false, true, _, true) => (Severity::High, 75),
            (_, true, _, false) => (Severity::Low, 25),
            (true, false, 1, true) => (Severity::High, 70),
            (false, false, 1, true) => (Severity::Medium, 50),
            (_, false, _, true) => (Severity::Low, 25),
            (_, false, _, false) => return None,
        })
    }

    /// The evidence in words, for the alert's message.
    pub fn words(&self) -> String {
        let who = if self.direct {
            "written by the process that read it".to_string()
        } else if self.hops == 1 {
            "one process away from its reader".to_string()
        } else {
            format!("{} processes away from its reader", self.hops)
        };
        let size = if self.archive {
            "an archive".to_string()
        } else if self.source_bytes > 0 {
            format!("{} of {} bytes", self.bytes, self.source_bytes)
        } else {
            format!("{} bytes", self.bytes)
        };
        format!("{who}, {size}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(dump: bool, hops: u32, bytes: i64, source_bytes: i64) -> CopyEvidence {
        CopyEvidence {
            dump,
            direct: hops == 0,
            hops,
            bytes,
            source_bytes,
            archive: false,
        }
    }

    #[test]
    fn a_direct_full_copy_is_high_or_critical() {
        assert_eq!(
            ev(true, 0, 1 << 20, 1 << 20).grade(),
            Some((Severity::Critical, 90))
        );
        assert_eq!(ev(false, 0, 1704, 1704).grade(), Some((Severity::High, 75)));
        // A base64 copy is larger than its source.
        assert_eq!(ev(false, 0, 2300, 1704).grade(), Some((Severity::High, 75)));
        // 4 KiB of a 100 MiB dump is a substantial part of it.
        assert_eq!(
            ev(true, 0, 4096, 100 << 20).grade().unwrap().0,
            Severity::Critical
        );
    }

    #[test]
    fn a_log_line_of_a_key_reader_is_low() {
        assert_eq!(ev(false, 0, 40, 2048).grade(), Some((Severity::Low, 25)));
        assert_eq!(ev(true, 0, 40, 1 << 20).grade(), Some((Severity::Low, 25)));
    }

    #[test]
    fn distant_hops_are_low_or_only_counted() {
        assert_eq!(
            ev(true, 1, 1 << 20, 1 << 20).grade(),
            Some((Severity::High, 70))
        );
        assert_eq!(
            ev(false, 1, 2048, 2048).grade(),
            Some((Severity::Medium, 50))
        );
        assert_eq!(ev(false, 2, 2048, 2048).grade(), Some((Severity::Low, 25)));
        assert_eq!(ev(false, 1, 40, 2048).grade(), None);
        assert_eq!(ev(true, 3, 40, 1 << 20).grade(), None);
    }

    #[test]
    fn an_archive_is_a_copy_whatever_its_size() {
        let mut e = ev(false, 1, 45, 2048);
        e.archive = true;
        e.direct = true;
        assert_eq!(e.grade(), Some((Severity::High, 75)));
        assert!(e.words().contains("an archive"));
    }

    #[test]
    fn an_unknown_source_size_needs_more_than_a_few_bytes() {
        assert!(ev(false, 0, 64, 0).full());
        assert!(!ev(false, 0, 10, 0).full());
    }
}
