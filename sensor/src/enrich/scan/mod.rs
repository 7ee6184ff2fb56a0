//! Key-material scanner: finds private keys in arbitrary bytes (key files,
//! ELF core dumps, archives stored uncompressed, memory images) and reports
//! their kind and public-key fingerprint, never their bytes.
//!
//! Recognised: PEM (PKCS#1, SEC1, DSA, PKCS#8, encrypted PKCS#8, legacy
//! `Proc-Type` encryption, OpenSSH, PGP private blocks), raw DER (PKCS#1,
//! PKCS#8, SEC1, DSA, PKCS#12 PFX), binary `openssh-key-v1`, and JWK with a
//! private part. See docs/scanner.md.
//!
//! Streaming: the input is read in windows of `chunk` bytes that overlap by
//! `max_key` bytes (plus `lookback` bytes kept before the window), so memory
//! stays constant whatever the size. Each anchor (the byte pattern a
//! candidate is found by) belongs to exactly one window, and a key of up to
//! `max_key` bytes starting at an anchor is whole in that window; anchors
//! inside a key already reported are skipped, so nothing is reported twice.

mod derkeys;
pub mod fingerprint;
mod jwk;
mod openssh;
mod pem;
pub mod secrets;
mod worker;

pub use worker::{
    MAX_SCAN_BYTES, SCAN_QUEUE, SCAN_TIMEOUT, ScanChannels, ScanJob, ScanResult, scan_keys,
    scan_tracked, start_scanner,
};

/// What the pipeline keeps of a scan of a tracked file (recorded, so a
/// replay reuses it instead of reading the file again).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScanOutcome {
    /// Keys found.
    pub found: usize,
    /// What the file is ("elf-core", ...).
    pub format: Option<String>,
    /// The findings as JSON (never key bytes).
    pub findings: serde_json::Value,
    /// Whether a key found is one of the origin key file's (None: no origin,
    /// or no key could be read from it).
    #[serde(default)]
    pub origin_match: Option<bool>,
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tracked_tests;

use std::{
    fs::File,
    io::{ErrorKind, Read},
    path::{Path, PathBuf},
};

use memchr::memmem;
use serde::Serialize;

/// One private key found. Holds no key bytes: kind, encoding, position and
/// public-key fingerprints only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `rsa`, `ec-p256`, `ec-p384`, `ec-p521`, `ec-secp256k1`, `ec`
    /// (unknown curve), `ed25519`, `x25519`, `ed448`, `x448`, `dsa`,
    /// `sk-ed25519`, `sk-ec-p256`, `pgp`, `symmetric` (JWK `oct`), or
    /// `unknown` (encrypted containers that hide the algorithm).
    pub kind: &'static str,
    /// `pem`, `pkcs1-der`, `pkcs8-der`, `sec1-der`, `dsa-der`, `pkcs12`,
    /// `openssh` (PEM-armoured or binary), `jwk`.
    pub format: &'static str,
    /// Byte offset of the key's first byte in the input.
    pub offset: u64,
    /// Length of the encoded key in the input.
    pub length: u64,
    /// The private part is encrypted (passphrase).
    pub encrypted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bits: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curve: Option<&'static str>,
    /// `SHA256:` + unpadded base64 of SHA-256 over the DER
    /// SubjectPublicKeyInfo of the public key, when it can be derived.
    pub fingerprint: Option<String>,
    /// OpenSSH keys: the `ssh-keygen -l` fingerprint (SHA-256 of the SSH
    /// public key blob), same text form.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_fingerprint: Option<String>,
    /// The PEM label (`RSA PRIVATE KEY`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pem_label: Option<&'static str>,
    /// Why a key that was recognised could not be read whole (a PEM with
    /// no END line, say): the finding stands, without a fingerprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<&'static str>,
}

/// What one file or stream holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanReport {
    /// `elf-core` (ELF with e_type ET_CORE), `elf`, `pem`, `openssh`,
    /// `json`, `gzip`, `zstd`, `xz`, `bzip2`, `zip`, `tar`, `text`,
    /// `data` (anything else), or `empty`.
    pub file_kind: &'static str,
    /// Bytes read.
    pub bytes: u64,
    /// Keys found, by offset.
    pub findings: Vec<Finding>,
    /// Findings beyond `ScanLimits::max_findings`, counted, not listed.
    pub findings_dropped: u64,
}

/// Bounds on memory and output.
#[derive(Debug, Clone)]
pub struct ScanLimits {
    /// Bytes read per window.
    pub chunk: usize,
    /// Largest key (encoded) recognised whole; windows overlap by this.
    pub max_key: usize,
    /// Bytes kept before a window for structures found by an anchor inside
    /// them (a JWK's `{` before its `"kty"`).
    pub lookback: usize,
    /// Findings listed per report.
    pub max_findings: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        ScanLimits {
            chunk: 1 << 20,
            max_key: 64 << 10,
            lookback: 8 << 10,
            max_findings: 1000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("read error at offset {offset}: {source}")]
    Read { offset: u64, source: std::io::Error },
    #[error("invalid scan limits: {0}")]
    Limits(&'static str),
}

pub type Result<T> = std::result::Result<T, ScanError>;

/// Scan the file at `path`.
pub fn scan_path(path: &Path, limits: &ScanLimits) -> Result<ScanReport> {
    let file = File::open(path).map_err(|source| ScanError::Open {
        path: path.to_owned(),
        source,
    })?;
    scan_reader(file, limits)
}

/// Scan a byte stream in bounded memory (`chunk + max_key + lookback`).
pub fn scan_reader(mut r: impl Read, limits: &ScanLimits) -> Result<ScanReport> {
    if limits.chunk == 0 || limits.max_key < 256 {
        return Err(ScanError::Limits("chunk must be > 0 and max_key >= 256"));
    }
    let cap = limits.lookback + limits.chunk + limits.max_key;
    let mut buf = vec![0u8; cap];
    let mut len = 0usize; // valid bytes in buf
    let mut base = 0u64; // absolute offset of buf[0]
    let mut own_start = 0u64; // first anchor offset this window owns
    let mut eof = false;
    let mut scanner = Scanner::new(limits);
    let mut file_kind = None;
    loop {
        while len < cap && !eof {
            match r.read(&mut buf[len..]) {
                Ok(0) => eof = true,
                Ok(n) => len += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ScanError::Read {
                        offset: base + len as u64,
                        source,
                    });
                }
            }
        }
        if file_kind.is_none() {
            file_kind = Some(kind_of(&buf[..len]));
        }
        let end = base + len as u64;
        let own_end = if eof {
            end
        } else {
            end - limits.max_key as u64
        };
        scanner.window(&buf[..len], base, own_start, own_end);
        if eof {
            break;
        }
        // Keep `lookback` bytes before the next owned range and the overlap.
        let keep_from = (own_end - limits.lookback as u64).max(base);
        let drop = (keep_from - base) as usize;
        buf.copy_within(drop..len, 0);
        len -= drop;
        base = keep_from;
        own_start = own_end;
    }
    let bytes = base + len as u64;
    let mut file_kind = file_kind.unwrap_or("empty");
    if let Some(first) = scanner.findings.first()
        && first.offset == 0
        && matches!(file_kind, "data" | "text")
    {
        file_kind = match first.format {
            "pkcs12" => "pkcs12",
            "jwk" => "json",
            _ => "der",
        };
    }
    Ok(ScanReport {
        file_kind,
        bytes,
        findings: scanner.findings,
        findings_dropped: scanner.dropped,
    })
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Anchor {
    Pem,
    Der,
    OpenSsh,
    Jwk,
}

struct Scanner<'l> {
    limits: &'l ScanLimits,
    pem: memmem::Finder<'static>,
    der: memmem::Finder<'static>,
    openssh: memmem::Finder<'static>,
    jwk: memmem::Finder<'static>,
    /// Anchors before this absolute offset are inside a reported key.
    covered_until: u64,
    findings: Vec<Finding>,
    dropped: u64,
    candidates: Vec<(usize, Anchor)>,
}

impl<'l> Scanner<'l> {
    fn new(limits: &'l ScanLimits) -> Self {
        Scanner {
            limits,
            pem: memmem::Finder::new(pem::ANCHOR),
            // INTEGER of length 1: the version of every DER structure here.
            der: memmem::Finder::new(b"\x02\x01"),
            openssh: memmem::Finder::new(openssh::MAGIC),
            jwk: memmem::Finder::new(jwk::ANCHOR),
            covered_until: 0,
            findings: Vec::new(),
            dropped: 0,
            candidates: Vec::new(),
        }
    }

    /// Scan the anchors of `buf` (absolute offset `base`) that lie in
    /// `[own_start, own_end)`.
    fn window(&mut self, buf: &[u8], base: u64, own_start: u64, own_end: u64) {
        let lo = (own_start - base) as usize;
        let hi = (own_end - base) as usize;
        let hay = &buf[lo..];
        self.candidates.clear();
        for (finder, anchor) in [
            (&self.pem, Anchor::Pem),
            (&self.der, Anchor::Der),
            (&self.openssh, Anchor::OpenSsh),
            (&self.jwk, Anchor::Jwk),
        ] {
            for pos in finder.find_iter(hay) {
                if lo + pos >= hi {
                    break;
                }
                self.candidates.push((lo + pos, anchor));
            }
        }
        self.candidates.sort_unstable();
        let candidates = std::mem::take(&mut self.candidates);
        for &(pos, anchor) in &candidates {
            if base + (pos as u64) < self.covered_until {
                continue;
            }
            let max = self.limits.max_key;
            let hit = match anchor {
                Anchor::Pem => pem::at_anchor(buf, pos, max),
                Anchor::Der => derkeys::at_anchor(buf, pos, max),
                Anchor::OpenSsh => openssh::structure_len(&buf[pos..], max).and_then(|len| {
                    openssh::parse(&buf[pos..pos + len], "openssh").map(|f| (pos, len, f))
                }),
                Anchor::Jwk => jwk::at_anchor(buf, pos, self.limits.lookback, max),
            };
            if let Some((start, len, mut f)) = hit {
                f.offset = base + start as u64;
                f.length = len as u64;
                self.covered_until = self.covered_until.max(f.offset + f.length);
                if self.findings.len() < self.limits.max_findings {
                    self.findings.push(f);
                } else {
                    self.dropped += 1;
                }
            }
        }
        self.candidates = candidates;
    }
}

/// What the first bytes say the file is.
fn kind_of(head: &[u8]) -> &'static str {
    if head.is_empty() {
        return "empty";
    }
    if head.len() >= 18 && head.starts_with(b"\x7fELF") {
        let e_type = match head[5] {
            2 => u16::from_be_bytes([head[16], head[17]]),
            _ => u16::from_le_bytes([head[16], head[17]]),
        };
        return if e_type == 4 { "elf-core" } else { "elf" };
    }
    let magic: &[(&[u8], &str)] = &[
        (b"\x1f\x8b", "gzip"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (b"\xfd7zXZ\0", "xz"),
        (b"BZh", "bzip2"),
        (b"PK\x03\x04", "zip"),
        (openssh::MAGIC, "openssh"),
    ];
    if let Some((_, k)) = magic.iter().find(|(m, _)| head.starts_with(m)) {
        return k;
    }
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return "tar";
    }
    let text = head.trim_ascii_start();
    if text.starts_with(b"-----BEGIN ") {
        return "pem";
    }
    let sample = &head[..head.len().min(4096)];
    let printable = match std::str::from_utf8(sample) {
        Ok(s) => s
            .chars()
            .all(|c| !c.is_control() || c.is_ascii_whitespace()),
        // A sample cut inside a multi-byte character.
        Err(e) => e.valid_up_to() + 4 > sample.len() && e.error_len().is_none(),
    };
    if printable && (text.starts_with(b"{") || text.starts_with(b"[")) {
        "json"
    } else if printable {
        "text"
    } else {
        "data"
    }
}
