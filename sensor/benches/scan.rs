//! Key scanner throughput on one core: a 256 MiB file of random bytes with
//! a few keys embedded (PEM, DER, OpenSSH, JWK), scanned from disk by
//! `scan_path` (the page cache warm: the scanner, not the disk, is
//! measured). Reports MB/s (10^6 bytes/s). Run by `cargo xtask bench`.

use std::{io::Write, time::Instant};

use sensor::enrich::scan::{ScanLimits, scan_path};

const SIZE: usize = 256 << 20;

fn main() {
    let dir = std::env::temp_dir().join(format!("ks-scan-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("random.bin");
    // xorshift: fast, and random enough that anchors appear at their
    // random-data rate.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut data = vec![0u8; SIZE];
    for chunk in data.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    let keys: [&[u8]; 4] = [
        // Throwaway keys made for this benchmark only.
        b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ0o2LkpTHOfF3CKJ4n9W1ipS3JCm0Nfs1gJ3gx8m1gq\n-----END PRIVATE KEY-----\n",
        &[
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
            21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
        ],
        br#"{"kty":"OKP","crv":"Ed25519","d":"nSjYuSlMc58XcIonif1bWKlLckKbQ1-zWAneDHybWCo","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#,
        b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB\n-----END PRIVATE KEY-----\n",
    ];
    for (i, k) in keys.iter().enumerate() {
        let off = (i + 1) * SIZE / 5 + 777;
        data[off..off + k.len()].copy_from_slice(k);
    }
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(&data))
        .expect("write bench file");
    drop(data);

    let limits = ScanLimits::default();
    let mut best = f64::MAX;
    let mut found = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let report = scan_path(&path, &limits).expect("scan");
        best = best.min(t.elapsed().as_secs_f64());
        found = report.findings.len();
    }
    std::fs::remove_dir_all(&dir).ok();
    println!(
        "scan: {} MiB random data with {} keys embedded, {} found, best of 5: {:.0} MB/s on one core",
        SIZE >> 20,
        keys.len(),
        found,
        SIZE as f64 / best / 1e6
    );
    assert_eq!(found, keys.len(), "the benchmark's keys were not all found");
}
