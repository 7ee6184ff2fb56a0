//! The quarantine's side of the core handler: the core read at full
//! speed into a file under a cap, its oldest neighbours removed to stay
//! under it, and the redaction's search and zeroing over the stored core,
//! in bounded memory.

use std::{
    fs::File,
    io::{ErrorKind, Read, Write},
    os::{
        fd::OwnedFd,
        unix::{fs::FileExt, fs::MetadataExt},
    },
    path::Path,
};

use aho_corasick::AhoCorasick;

use crate::enrich::rootfiles::unlink_in;

/// Removes the oldest regular files of `dir` (at `path`) other than
/// `keep` until what is left is at most `cap` bytes. Returns the names
/// removed.
pub fn evict(dir: &OwnedFd, path: &Path, cap: u64, keep: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(path) else {
        return Vec::new();
    };
    let mut files: Vec<(i64, u64, String)> = rd
        .flatten()
        .filter_map(|e| {
            let md = e.metadata().ok()?;
            md.is_file().then(|| {
                (
                    md.mtime(),
                    md.len(),
                    e.file_name().to_string_lossy().into_owned(),
                )
            })
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    files.sort();
    let mut removed = Vec::new();
    for (_, len, name) in files {
        if total <= cap {
            break;
        }
        if name == keep {
            continue;
        }
        unlink_in(dir, &name);
        total -= len;
        removed.push(name);
    }
    removed
}

/// Copies what it reads into `out`, up to `cap` bytes: reading past the
/// cap is an error (`over` set).
pub struct Tee<'a, R> {
    pub r: R,
    pub out: Option<&'a mut File>,
    pub bytes: u64,
    pub cap: u64,
    pub over: bool,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.r.read(buf)?;
        if self.bytes + n as u64 > self.cap {
            self.over = true;
            return Err(std::io::Error::other("the core is over the cap"));
        }
        if let Some(out) = self.out.as_mut() {
            out.write_all(&buf[..n])?;
        }
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Reads `r` to its end, discarding it (at most `cap` bytes).
pub fn drain(r: impl Read, cap: u64) -> (u64, bool) {
    let mut t = Tee {
        r,
        out: None,
        bytes: 0,
        cap,
        over: false,
    };
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match t.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    (t.bytes, t.over)
}

/// Every occurrence of a pattern of `ac` in `f` (`max_len`: the longest
/// pattern): (offset, length, pattern index), in bounded memory.
pub fn find_all(
    f: &File,
    ac: &AhoCorasick,
    max_len: usize,
) -> std::io::Result<Vec<(u64, u64, usize)>> {
    const CHUNK: usize = 1 << 20;
    let overlap = max_len.saturating_sub(1);
    let mut buf = vec![0u8; CHUNK + overlap];
    let mut base = 0u64; // file offset of buf[0]
    let mut len = 0usize;
    let mut out = Vec::new();
    loop {
        let n = read_full_at(f, &mut buf[len..], base + len as u64)?;
        let eof = n < buf.len() - len;
        len += n;
        // A match inside the overlap kept for the next window is found
        // again there: the dedup below keeps one.
        for m in ac.find_overlapping_iter(&buf[..len]) {
            out.push((
                base + m.start() as u64,
                m.len() as u64,
                m.pattern().as_usize(),
            ));
        }
        if eof {
            break;
        }
        let keep = overlap.min(len);
        buf.copy_within(len - keep..len, 0);
        base += (len - keep) as u64;
        len = keep;
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn read_full_at(f: &File, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Overwrites `[off, off + len)` of `f` with zeros.
pub fn zero(f: &File, off: u64, len: u64) -> std::io::Result<()> {
    let zeros = [0u8; 4096];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], off + done)?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::enrich::rootfiles::{create_in, root_dir};

    /// A directory of the test's own (`test`): the unit tests run in
    /// parallel, and one removing a shared directory removed another's
    /// files under it.
    fn tempfile_dir(test: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ks-quarantine-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn patterns_are_found_across_chunk_boundaries_once_each() {
        let dir = tempfile_dir("chunks");
        let p = dir.join("f");
        let mut data = vec![7u8; (1 << 20) + 100];
        let pat = b"0123456789abcdefXYZ";
        let at = [0usize, (1 << 20) - 5, (1 << 20) + 50];
        for a in at {
            data[a..a + pat.len()].copy_from_slice(pat);
        }
        std::fs::write(&p, &data).unwrap();
        let f = File::open(&p).unwrap();
        let ac = AhoCorasick::new([&pat[..]]).unwrap();
        let found = find_all(&f, &ac, pat.len()).unwrap();
        let offs: Vec<u64> = found.iter().map(|m| m.0).collect();
        assert_eq!(offs, at.iter().map(|&a| a as u64).collect::<Vec<_>>());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_quarantine_removes_its_oldest_cores_down_to_the_cap() {
        if !nix::unistd::Uid::effective().is_root() {
            println!("SKIPPED: the quarantine must be root's; run as root");
            return;
        }
        let top = tempfile_dir("evict");
        let base = top.join("q-evict");
        let _ = std::fs::remove_dir_all(&base);
        let dir = root_dir(&base, true).unwrap();
        let now = std::time::SystemTime::now();
        for (i, name) in ["old", "mid", "new"].iter().enumerate() {
            let f = create_in(&dir, name).unwrap();
            f.set_len(1000).unwrap();
            f.set_modified(now - std::time::Duration::from_secs(100 - i as u64 * 10))
                .unwrap();
        }
        // The oldest go first; the core being written stays, whatever its age.
        let removed = evict(&dir, &base, 2000, "old");
        assert_eq!(removed, vec!["mid".to_string()]);
        assert!(base.join("old").exists() && base.join("new").exists());
        assert!(evict(&dir, &base, 2000, "new").is_empty());
        std::fs::remove_dir_all(&top).unwrap();
    }

    #[test]
    fn reading_past_the_cap_fails_and_says_so() {
        let data = vec![1u8; 5000];
        let mut t = Tee {
            r: &data[..],
            out: None,
            bytes: 0,
            cap: 4096,
            over: false,
        };
        let mut sink = std::io::sink();
        assert!(std::io::copy(&mut t, &mut sink).is_err());
        assert!(t.over);
        let (n, over) = drain(&data[..], 10_000);
        assert_eq!((n, over), (5000, false));
    }
}
