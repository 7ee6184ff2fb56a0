//! The scanner thread's reads of tracked files (`worker.rs`): never
//! block, never follow, only the tracked inode, holes skipped.

use std::path::Path;

use super::tests::samples;
use super::*;

/// A fresh directory under the temporary directory, removed at drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("ks-scan-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ids(p: &Path) -> (u32, u64) {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(p).unwrap();
    (crate::enrich::devnum::kdev(md.dev()), md.ino())
}

fn tracked(p: &Path, kd: u32, ino: u64) -> std::result::Result<ScanReport, String> {
    scan_tracked(None, p, kd, ino, &ScanLimits::default(), SCAN_TIMEOUT)
}

#[test]
fn a_tracked_file_is_scanned_only_as_the_regular_file_it_was() {
    let d = TempDir::new("tracked");
    let key = &samples()[0];
    let copy = d.0.join("copy");
    std::fs::write(&copy, &key.bytes).unwrap();
    let (kd, ino) = ids(&copy);
    assert_eq!(tracked(&copy, kd, ino).unwrap().findings.len(), 1);

    // Another file renamed over the tracked name: another inode, refused.
    let other = d.0.join("other");
    std::fs::write(&other, &key.bytes).unwrap();
    std::fs::rename(&other, &copy).unwrap();
    let e = tracked(&copy, kd, ino).unwrap_err();
    assert!(e.contains("not the tracked regular file"), "{e}");

    // A symlink to the tracked file itself: not followed.
    let (kd, ino) = ids(&copy);
    let link = d.0.join("link");
    std::os::unix::fs::symlink(&copy, &link).unwrap();
    assert!(tracked(&link, kd, ino).is_err());

    // A FIFO put there (nobody writes it): refused at once, no hang; a
    // device (/dev/zero reads forever) likewise.
    let fifo = d.0.join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path only.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let (kd, ino) = ids(&fifo);
    assert!(tracked(&fifo, kd, ino).is_err());
    let zero = Path::new("/dev/zero");
    let (kd, ino) = ids(zero);
    assert!(tracked(zero, kd, ino).is_err());
}

#[test]
fn a_sparse_file_is_read_by_its_data_not_its_size() {
    // 1 TiB long, one key at 512 GiB: the holes are skipped (SEEK_DATA),
    // so the scan reads a few pages instead of a terabyte of zeros.
    use std::os::unix::fs::FileExt;
    let d = TempDir::new("sparse");
    let p = d.0.join("core");
    let f = std::fs::File::create(&p).unwrap();
    if f.set_len(1 << 40).is_err() {
        println!("SKIP: {} cannot hold a 1 TiB sparse file", d.0.display());
        return;
    }
    let key = &samples()[0];
    f.write_all_at(&key.bytes, 512 << 30).unwrap();
    drop(f);
    let (kd, ino) = ids(&p);
    let r = tracked(&p, kd, ino).unwrap();
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].fingerprint, key.fingerprint);
}
