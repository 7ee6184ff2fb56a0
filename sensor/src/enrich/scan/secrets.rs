//! The exact bytes of the host's own private keys, as they can sit in a
//! key holder's memory: the PEM text and each of its lines, the DER, and
//! the raw private values (an Ed25519 seed, an EC scalar, RSA's d, p, q,
//! dp, dq and qinv, big-endian and in the little-endian word order
//! OpenSSL's and RustCrypto's big numbers keep on x86_64). The core
//! handler zeroes every occurrence in a key holder's core. Held in memory
//! that is zeroed when dropped; never printed: each pattern carries only
//! the file and public fingerprint it belongs to.

use std::path::Path;

use der::Decode;
use zeroize::Zeroizing;

use crate::enrich::scan::{ScanLimits, scan_reader};

/// Shortest pattern searched for: shorter runs of bytes match by chance.
pub const MIN_PATTERN: usize = 16;

/// One secret byte string of a key file.
pub struct Secret {
    pub bytes: Zeroizing<Vec<u8>>,
    /// Index into `Secrets::keys`.
    pub key: usize,
}

/// A key file the secrets come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    pub file: String,
    pub fingerprint: Option<String>,
}

#[derive(Default)]
pub struct Secrets {
    pub keys: Vec<KeyRef>,
    pub patterns: Vec<Secret>,
}

impl Secrets {
    /// Learns the secrets of the key file `path` whose content is `text`.
    /// Returns how many patterns it added.
    pub fn add_file(&mut self, path: &Path, text: &[u8]) -> usize {
        let fingerprint = scan_reader(text, &ScanLimits::default())
            .ok()
            .and_then(|r| r.findings.into_iter().find_map(|f| f.fingerprint));
        let key = self.keys.len();
        let before = self.patterns.len();
        let mut out = Vec::new();
        collect(text, &mut out);
        for bytes in out {
            if bytes.len() >= MIN_PATTERN && !self.patterns.iter().any(|p| *p.bytes == *bytes) {
                self.patterns.push(Secret { bytes, key });
            }
        }
        let added = self.patterns.len() - before;
        if added > 0 {
            self.keys.push(KeyRef {
                file: path.to_string_lossy().into_owned(),
                fingerprint,
            });
        }
        added
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

type Out = Vec<Zeroizing<Vec<u8>>>;

fn push(out: &mut Out, b: &[u8]) {
    out.push(Zeroizing::new(b.to_vec()));
}

/// A big-endian unsigned integer: itself (leading zeros cut) and its
/// bytes reversed.
fn push_uint(out: &mut Out, be: &[u8]) {
    let start = be.iter().position(|&b| b != 0).unwrap_or(be.len());
    let be = &be[start..];
    push(out, be);
    let mut le = Zeroizing::new(be.to_vec());
    le.reverse();
    out.push(le);
}

/// Every pattern of a key file's content (PEM, DER or OpenSSH).
fn collect(text: &[u8], out: &mut Out) {
    let Ok(s) = std::str::from_utf8(text) else {
        der_key(text, out);
        return;
    };
    if s.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
        armour(s, out);
        openssh(s, out);
        return;
    }
    let Ok(blocks) = pem::parse_many(text) else {
        return;
    };
    if blocks.is_empty() {
        der_key(text, out);
        return;
    }
    armour(s, out);
    for b in blocks {
        if b.tag().contains("PRIVATE KEY") {
            push(out, b.contents());
            der_key(b.contents(), out);
        }
    }
}

/// The PEM text of each private-key block (not a certificate beside it):
/// the block whole and each body line.
fn armour(s: &str, out: &mut Out) {
    let mut block = String::new();
    let mut inside = false;
    for line in s.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("-----BEGIN ") && line.contains("PRIVATE KEY") {
            inside = true;
            block.clear();
        }
        if inside {
            block.push_str(line);
            block.push('\n');
            if !line.starts_with("-----") && !line.contains(':') {
                push(out, line.as_bytes());
            }
        }
        if line.starts_with("-----END ") && inside {
            inside = false;
            push(out, block.as_bytes());
            // The same block with CRLF line ends.
            push(out, block.replace('\n', "\r\n").as_bytes());
        }
    }
    zeroize::Zeroize::zeroize(&mut block);
}

/// A DER private key (PKCS#8, PKCS#1, SEC1) and the raw values in it.
fn der_key(der: &[u8], out: &mut Out) {
    if let Ok(info) = pkcs8::PrivateKeyInfo::from_der(der) {
        push(out, der);
        let inner = info.private_key;
        push(out, inner);
        // Ed25519/X25519/Ed448/X448: an OCTET STRING around the raw key.
        if let Ok(raw) = der::asn1::OctetStringRef::from_der(inner) {
            push(out, raw.as_bytes());
        }
        rsa(inner, out);
        ec(inner, out);
        return;
    }
    if rsa(der, out) || ec(der, out) {
        push(out, der);
    }
}

fn rsa(der: &[u8], out: &mut Out) -> bool {
    let Ok(k) = pkcs1::RsaPrivateKey::from_der(der) else {
        return false;
    };
    for v in [
        k.private_exponent,
        k.prime1,
        k.prime2,
        k.exponent1,
        k.exponent2,
        k.coefficient,
    ] {
        push_uint(out, v.as_bytes());
    }
    true
}

fn ec(der: &[u8], out: &mut Out) -> bool {
    let Ok(k) = sec1::EcPrivateKey::from_der(der) else {
        return false;
    };
    push_uint(out, k.private_key);
    true
}

/// An unencrypted OpenSSH private key's raw values.
fn openssh(s: &str, out: &mut Out) {
    let Ok(k) = ssh_key::PrivateKey::from_openssh(s) else {
        return;
    };
    use ssh_key::private::KeypairData;
    match k.key_data() {
        KeypairData::Ed25519(kp) => push(out, kp.private.as_ref()),
        KeypairData::Rsa(kp) => {
            for m in [
                &kp.private.d,
                &kp.private.p,
                &kp.private.q,
                &kp.private.iqmp,
            ] {
                push_uint(out, m.as_bytes());
            }
        }
        KeypairData::Ecdsa(kp) => push_uint(out, kp.private_key_bytes()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ed25519 key in PKCS#8 PEM (RFC 8410's example key).
    const ED25519: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";

    #[test]
    fn an_ed25519_key_gives_its_pem_der_and_seed() {
        let mut s = Secrets::default();
        assert!(s.add_file(Path::new("/k/ed.key"), ED25519.as_bytes()) > 0);
        let pem = pem::parse(ED25519).unwrap();
        let der = pem.contents();
        let seed = &der[der.len() - 32..];
        let has = |b: &[u8]| s.patterns.iter().any(|p| *p.bytes == *b);
        assert!(has(der));
        assert!(has(seed));
        assert!(has(ED25519.as_bytes()));
        assert!(has(
            b"MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC"
        ));
        assert_eq!(s.keys[0].file, "/k/ed.key");
        assert!(
            s.keys[0]
                .fingerprint
                .as_deref()
                .unwrap()
                .starts_with("SHA256:")
        );
        assert!(s.patterns.iter().all(|p| p.bytes.len() >= MIN_PATTERN));
    }

    #[test]
    fn a_certificate_beside_the_key_is_no_secret() {
        let cert = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUAAAAAAAAAAAAAAAAAAAAAAAAAAAwCgYIKoZIzj0EAwIw\n-----END CERTIFICATE-----\n";
        let mut s = Secrets::default();
        s.add_file(
            Path::new("/k/bundle.pem"),
            format!("{cert}{ED25519}").as_bytes(),
        );
        assert!(
            !s.patterns
                .iter()
                .any(|p| p.bytes.windows(8).any(|w| w == b"MIIBszCC"))
        );
        assert!(s.patterns.iter().any(|p| *p.bytes == *ED25519.as_bytes()));
    }

    #[test]
    fn a_file_that_is_no_key_gives_nothing() {
        let mut s = Secrets::default();
        assert_eq!(
            s.add_file(Path::new("/x"), b"hello world, no key here at all\n"),
            0
        );
        assert!(s.keys.is_empty());
    }

    #[test]
    fn big_numbers_are_searched_in_both_byte_orders() {
        let mut out = Out::new();
        push_uint(&mut out, &[0, 0, 1, 2, 3]);
        assert_eq!(*out[0], vec![1, 2, 3]);
        assert_eq!(*out[1], vec![3, 2, 1]);
    }
}
