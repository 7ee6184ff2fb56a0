//! Keys generated at test time (never host tools, except the PKCS#12 case
//! which uses the openssl CLI when present and says so when not), embedded
//! in megabytes of random bytes, found with the fingerprint computed
//! independently from the generating crate's public key.

use std::{io::Cursor, sync::OnceLock};

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD},
};
use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};
use sha2::{Digest, Sha256};

use super::*;

fn spki_fp(spki_der: &[u8]) -> String {
    format!(
        "SHA256:{}",
        STANDARD_NO_PAD.encode(Sha256::digest(spki_der))
    )
}

struct Keys {
    rsa: rsa::RsaPrivateKey,
    p256: p256::SecretKey,
    p384: p384::SecretKey,
    ed: ed25519_dalek::SigningKey,
    ssh_ed: ssh_key::PrivateKey,
    ssh_rsa: ssh_key::PrivateKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = rand::rngs::OsRng;
        Keys {
            rsa: rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap(),
            p256: p256::SecretKey::random(&mut rng),
            p384: p384::SecretKey::random(&mut rng),
            ed: ed25519_dalek::SigningKey::generate(&mut rng),
            ssh_ed: ssh_key::PrivateKey::random(&mut rng, ssh_key::Algorithm::Ed25519).unwrap(),
            ssh_rsa: ssh_key::PrivateKey::from(
                ssh_key::private::RsaKeypair::try_from(
                    rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap(),
                )
                .unwrap(),
            ),
        }
    })
}

/// One encoded key to embed and what the scanner must say about it.
pub(super) struct Sample {
    name: &'static str,
    pub(super) bytes: Vec<u8>,
    /// The DER (or binary) key inside `bytes`, for the no-leak check.
    secret: Vec<u8>,
    kind: &'static str,
    format: &'static str,
    encrypted: bool,
    pub(super) fingerprint: Option<String>,
    ssh_fingerprint: Option<String>,
}

fn sample(
    name: &'static str,
    bytes: impl Into<Vec<u8>>,
    secret: impl Into<Vec<u8>>,
    kind: &'static str,
    format: &'static str,
    fingerprint: Option<String>,
) -> Sample {
    Sample {
        name,
        bytes: bytes.into(),
        secret: secret.into(),
        kind,
        format,
        encrypted: false,
        fingerprint,
        ssh_fingerprint: None,
    }
}

pub(super) fn samples() -> Vec<Sample> {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let k = keys();
    let mut rng = rand::rngs::OsRng;
    let mut out = Vec::new();

    // RSA 2048.
    let rsa_fp = spki_fp(
        k.rsa
            .to_public_key()
            .to_public_key_der()
            .unwrap()
            .as_bytes(),
    );
    let pkcs1 = k.rsa.to_pkcs1_der().unwrap();
    let pkcs8 = k.rsa.to_pkcs8_der().unwrap();
    let fp = Some(rsa_fp.clone());
    out.push(sample(
        "rsa pkcs1 pem",
        k.rsa.to_pkcs1_pem(LineEnding::LF).unwrap().as_bytes(),
        pkcs1.as_bytes(),
        "rsa",
        "pem",
        fp.clone(),
    ));
    out.push(sample(
        "rsa pkcs1 der",
        pkcs1.as_bytes(),
        pkcs1.as_bytes(),
        "rsa",
        "pkcs1-der",
        fp.clone(),
    ));
    out.push(sample(
        "rsa pkcs8 pem",
        k.rsa.to_pkcs8_pem(LineEnding::CRLF).unwrap().as_bytes(),
        pkcs8.as_bytes(),
        "rsa",
        "pem",
        fp.clone(),
    ));
    out.push(sample(
        "rsa pkcs8 der",
        pkcs8.as_bytes(),
        pkcs8.as_bytes(),
        "rsa",
        "pkcs8-der",
        fp.clone(),
    ));
    let enc = k
        .rsa
        .to_pkcs8_encrypted_pem(&mut rng, b"hunter2", LineEnding::LF)
        .unwrap();
    let mut s = sample(
        "rsa encrypted pkcs8 pem",
        enc.as_bytes(),
        pkcs8.as_bytes(),
        "unknown",
        "pem",
        None,
    );
    s.encrypted = true;
    out.push(s);
    // Legacy OpenSSL encryption: headers, then an opaque body.
    let mut body = vec![0u8; 1200];
    rng.fill_bytes(&mut body);
    let legacy = format!(
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\n{}\n-----END RSA PRIVATE KEY-----\n",
        STANDARD
            .encode(&body)
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut s = sample("rsa legacy encrypted pem", legacy, body, "rsa", "pem", None);
    s.encrypted = true;
    out.push(s);
    // The same PEM as a JSON string value (escaped newlines).
    let escaped = format!(
        "{{\"private_key\": \"{}\"}}",
        k.rsa
            .to_pkcs8_pem(LineEnding::LF)
            .unwrap()
            .replace('\n', "\\n")
    );
    out.push(sample(
        "rsa pem in json",
        escaped,
        pkcs8.as_bytes(),
        "rsa",
        "pem",
        fp.clone(),
    ));
    // JWK.
    {
        use rsa::traits::{PrivateKeyParts, PublicKeyParts};
        let jwk = format!(
            "{{\"kty\":\"RSA\",\"n\":\"{}\",\"e\":\"{}\",\"d\":\"{}\",\"alg\":\"RS256\"}}",
            URL_SAFE_NO_PAD.encode(k.rsa.n().to_bytes_be()),
            URL_SAFE_NO_PAD.encode(k.rsa.e().to_bytes_be()),
            URL_SAFE_NO_PAD.encode(k.rsa.d().to_bytes_be()),
        );
        out.push(sample(
            "rsa jwk",
            jwk,
            k.rsa.d().to_bytes_be(),
            "rsa",
            "jwk",
            fp.clone(),
        ));
    }

    // EC P-256 and P-384: SEC1 and PKCS#8.
    let p256_fp = Some(spki_fp(
        k.p256.public_key().to_public_key_der().unwrap().as_bytes(),
    ));
    let sec1 = k.p256.to_sec1_der().unwrap();
    out.push(sample(
        "p256 sec1 pem",
        k.p256.to_sec1_pem(LineEnding::LF).unwrap().as_bytes(),
        sec1.as_slice(),
        "ec-p256",
        "pem",
        p256_fp.clone(),
    ));
    out.push(sample(
        "p256 sec1 der",
        sec1.as_slice(),
        sec1.as_slice(),
        "ec-p256",
        "sec1-der",
        p256_fp.clone(),
    ));
    let p8 = k.p256.to_pkcs8_der().unwrap();
    out.push(sample(
        "p256 pkcs8 der",
        p8.as_bytes(),
        p8.as_bytes(),
        "ec-p256",
        "pkcs8-der",
        p256_fp.clone(),
    ));
    out.push(sample(
        "p256 pkcs8 pem",
        k.p256.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
        p8.as_bytes(),
        "ec-p256",
        "pem",
        p256_fp.clone(),
    ));
    {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let point = k.p256.public_key().to_encoded_point(false);
        let jwk = format!(
            "{{\n  \"kty\": \"EC\",\n  \"crv\": \"P-256\",\n  \"x\": \"{}\",\n  \"y\": \"{}\",\n  \"d\": \"{}\"\n}}",
            URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            URL_SAFE_NO_PAD.encode(point.y().unwrap()),
            URL_SAFE_NO_PAD.encode(k.p256.to_bytes()),
        );
        out.push(sample(
            "p256 jwk",
            jwk,
            k.p256.to_bytes().to_vec(),
            "ec-p256",
            "jwk",
            p256_fp.clone(),
        ));
    }
    let p384_fp = Some(spki_fp(
        k.p384.public_key().to_public_key_der().unwrap().as_bytes(),
    ));
    let sec1 = k.p384.to_sec1_der().unwrap();
    out.push(sample(
        "p384 sec1 der",
        sec1.as_slice(),
        sec1.as_slice(),
        "ec-p384",
        "sec1-der",
        p384_fp.clone(),
    ));
    let p8 = k.p384.to_pkcs8_der().unwrap();
    out.push(sample(
        "p384 pkcs8 pem",
        k.p384.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
        p8.as_bytes(),
        "ec-p384",
        "pem",
        p384_fp.clone(),
    ));

    // Ed25519: PKCS#8 (the scanner derives the public key from the seed).
    let ed_fp = Some(spki_fp(
        k.ed.verifying_key().to_public_key_der().unwrap().as_bytes(),
    ));
    let p8 = k.ed.to_pkcs8_der().unwrap();
    out.push(sample(
        "ed25519 pkcs8 der",
        p8.as_bytes(),
        p8.as_bytes(),
        "ed25519",
        "pkcs8-der",
        ed_fp.clone(),
    ));
    out.push(sample(
        "ed25519 pkcs8 pem",
        k.ed.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
        p8.as_bytes(),
        "ed25519",
        "pem",
        ed_fp.clone(),
    ));
    let jwk = format!(
        "{{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"d\":\"{}\",\"x\":\"{}\"}}",
        URL_SAFE_NO_PAD.encode(k.ed.to_bytes()),
        URL_SAFE_NO_PAD.encode(k.ed.verifying_key().to_bytes()),
    );
    out.push(sample(
        "ed25519 jwk",
        jwk,
        k.ed.to_bytes().to_vec(),
        "ed25519",
        "jwk",
        ed_fp.clone(),
    ));

    // OpenSSH: armoured, binary (as in memory), encrypted.
    for (name_pem, name_bin, key, kind) in [
        (
            "ssh ed25519 pem",
            "ssh ed25519 binary",
            &k.ssh_ed,
            "ed25519",
        ),
        ("ssh rsa pem", "ssh rsa binary", &k.ssh_rsa, "rsa"),
    ] {
        let ssh_fp = Some(key.fingerprint(ssh_key::HashAlg::Sha256).to_string());
        let spki = match key.public_key().key_data() {
            ssh_key::public::KeyData::Ed25519(pk) => {
                let vk = ed25519_dalek::VerifyingKey::from_bytes(&pk.0).unwrap();
                spki_fp(vk.to_public_key_der().unwrap().as_bytes())
            }
            ssh_key::public::KeyData::Rsa(pk) => {
                let pk = rsa::RsaPublicKey::new(
                    rsa::BigUint::from_bytes_be(pk.n.as_positive_bytes().unwrap()),
                    rsa::BigUint::from_bytes_be(pk.e.as_positive_bytes().unwrap()),
                )
                .unwrap();
                spki_fp(pk.to_public_key_der().unwrap().as_bytes())
            }
            _ => unreachable!(),
        };
        let bin = key.to_bytes().unwrap().to_vec();
        let mut s = sample(
            name_pem,
            key.to_openssh(ssh_key::LineEnding::LF).unwrap().as_bytes(),
            bin.clone(),
            kind,
            "openssh",
            Some(spki.clone()),
        );
        s.ssh_fingerprint = ssh_fp.clone();
        out.push(s);
        let mut s = sample(
            name_bin,
            bin.clone(),
            bin.clone(),
            kind,
            "openssh",
            Some(spki.clone()),
        );
        s.ssh_fingerprint = ssh_fp.clone();
        out.push(s);
        if kind == "ed25519" {
            let enc = key.encrypt(&mut rng, "hunter2").unwrap();
            let mut s = sample(
                "ssh ed25519 encrypted",
                enc.to_openssh(ssh_key::LineEnding::LF).unwrap().as_bytes(),
                bin,
                kind,
                "openssh",
                Some(spki),
            );
            s.ssh_fingerprint = ssh_fp;
            s.encrypted = true;
            out.push(s);
        }
    }
    out
}

/// Random filler: xorshift seeded from `rng` (fast even unoptimised).
fn random(len: usize, rng: &mut StdRng) -> Vec<u8> {
    let mut x = rng.next_u64() | 1;
    let mut v = vec![0u8; len];
    for c in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
    v
}

fn small_limits() -> ScanLimits {
    ScanLimits {
        chunk: 256 << 10,
        ..ScanLimits::default()
    }
}

/// Embeds every sample in 6 MiB of random bytes (one straddling each of
/// the first window boundaries) and checks each is found, with nothing
/// else.
#[test]
fn finds_every_key_in_random_bytes() {
    let samples = samples();
    let seed = rand::thread_rng().r#gen::<u64>();
    println!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut data = random(6 << 20, &mut rng);
    let limits = small_limits();
    // Window boundaries of the owned ranges: multiples of `chunk` (plus
    // lookback) minus the overlap; place keys across some of them.
    let mut placed = Vec::new();
    let slot = data.len() / samples.len();
    for (i, s) in samples.iter().enumerate() {
        let lo = i * slot;
        let off = if i < 4 {
            // Straddle the window edges: start just before own_end.
            let edge = (limits.lookback + limits.chunk) * (i + 1) - limits.max_key;
            let edge = edge.saturating_sub(limits.lookback * i);
            edge.clamp(lo, lo + slot - s.bytes.len() - 1) - s.bytes.len() / 2
        } else {
            lo + rng.gen_range(0..slot - s.bytes.len())
        };
        let off = off.max(lo);
        data[off..off + s.bytes.len()].copy_from_slice(&s.bytes);
        placed.push(off as u64);
    }
    for limits in [small_limits(), ScanLimits::default()] {
        let report = scan_reader(Cursor::new(&data), &limits).unwrap();
        assert_eq!(report.bytes, data.len() as u64);
        assert_eq!(report.file_kind, "data");
        for (s, &off) in samples.iter().zip(&placed) {
            let f = report
                .findings
                .iter()
                .find(|f| f.offset >= off && f.offset < off + s.bytes.len() as u64)
                .unwrap_or_else(|| {
                    panic!("{}: not found at {off} ({:#?})", s.name, report.findings)
                });
            assert_eq!(f.kind, s.kind, "{}", s.name);
            assert_eq!(f.format, s.format, "{}", s.name);
            assert_eq!(f.encrypted, s.encrypted, "{}", s.name);
            assert_eq!(f.fingerprint, s.fingerprint, "{}", s.name);
            assert_eq!(f.ssh_fingerprint, s.ssh_fingerprint, "{}", s.name);
            assert_eq!(f.incomplete, None, "{}", s.name);
        }
        assert_eq!(
            report.findings.len(),
            samples.len(),
            "one finding per key, nothing else: {:#?}",
            report.findings
        );
        assert_no_key_bytes(&report, &samples);
    }
}

/// Each sample alone, as a whole file: the file kind, and the same result.
#[test]
fn each_key_alone() {
    for s in samples() {
        let report = scan_reader(Cursor::new(&s.bytes), &ScanLimits::default()).unwrap();
        assert_eq!(
            report.findings.len(),
            1,
            "{}: {:#?}",
            s.name,
            report.findings
        );
        let f = &report.findings[0];
        assert_eq!(
            (f.kind, f.fingerprint.clone()),
            (s.kind, s.fingerprint.clone()),
            "{}",
            s.name
        );
        let start = memmem::find(&s.bytes, b"-----BEGIN").filter(|_| s.name.contains("json"));
        assert_eq!(f.offset, start.unwrap_or(0) as u64, "{}", s.name);
        assert_no_key_bytes(&report, std::slice::from_ref(&s));
    }
}

/// No 16-byte window of a key's DER, nor of its base64, appears in the
/// JSON or Debug of a report.
fn assert_no_key_bytes(report: &ScanReport, samples: &[Sample]) {
    let json = serde_json::to_string(report).unwrap();
    let debug = format!("{report:?} {report:#?}");
    for out in [json.as_bytes(), debug.as_bytes()] {
        for s in samples {
            for secret in [
                s.secret.clone(),
                STANDARD.encode(&s.secret).into_bytes(),
                URL_SAFE_NO_PAD.encode(&s.secret).into_bytes(),
            ] {
                for w in secret.windows(16).step_by(4) {
                    assert!(
                        memmem::find(out, w).is_none(),
                        "{}: key bytes in the output",
                        s.name
                    );
                }
            }
        }
    }
}

#[test]
fn random_bytes_give_nothing() {
    let mut rng = StdRng::seed_from_u64(rand::thread_rng().r#gen());
    let data = random(16 << 20, &mut rng);
    let report = scan_reader(Cursor::new(&data), &small_limits()).unwrap();
    assert_eq!(report.findings, vec![]);
    assert_eq!(report.file_kind, "data");
}

#[test]
fn programs_and_libraries_give_nothing() {
    let mut scanned = 0;
    for path in [
        "/bin/ls",
        "/usr/bin/ssh-keygen",
        "/usr/lib/x86_64-linux-gnu/libcrypto.so.3",
    ] {
        let path = Path::new(path);
        if !path.exists() {
            println!("skipping {}: not installed", path.display());
            continue;
        }
        let report = scan_path(path, &ScanLimits::default()).unwrap();
        assert_eq!(report.file_kind, "elf", "{}", path.display());
        assert_eq!(report.findings, vec![], "{}", path.display());
        scanned += 1;
    }
    assert!(scanned > 0, "no program to scan");
}

#[test]
fn tells_an_elf_core_apart() {
    // An ELF64 little-endian header with e_type = ET_CORE, then a key.
    let mut core = vec![0u8; 64];
    core[..4].copy_from_slice(b"\x7fELF");
    core[4] = 2;
    core[5] = 1;
    core[16] = 4;
    let mut rng = StdRng::seed_from_u64(1);
    core.extend(random(1 << 20, &mut rng));
    let s = &samples()[1]; // rsa pkcs1 der
    core.extend_from_slice(&s.bytes);
    core.extend(random(4096, &mut rng));
    let report = scan_reader(Cursor::new(&core), &ScanLimits::default()).unwrap();
    assert_eq!(report.file_kind, "elf-core");
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].offset, 64 + (1 << 20));
    assert_eq!(report.findings[0].fingerprint, s.fingerprint);
    core[16] = 2; // ET_EXEC
    assert_eq!(
        scan_reader(Cursor::new(&core), &ScanLimits::default())
            .unwrap()
            .file_kind,
        "elf"
    );
}

#[test]
fn a_truncated_pem_is_reported_incomplete() {
    let s = &samples()[0]; // rsa pkcs1 pem
    let cut = &s.bytes[..s.bytes.len() / 2];
    let report = scan_reader(Cursor::new(cut), &ScanLimits::default()).unwrap();
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].kind, "rsa");
    assert_eq!(report.findings[0].incomplete, Some("no END line"));
    assert_eq!(report.findings[0].fingerprint, None);
    assert_eq!(report.file_kind, "pem");
}

#[test]
fn many_copies_are_capped_and_counted() {
    let s = &samples()[12]; // p256 sec1 der
    let data: Vec<u8> = s.bytes.repeat(20);
    let limits = ScanLimits {
        max_findings: 5,
        ..ScanLimits::default()
    };
    let report = scan_reader(Cursor::new(&data), &limits).unwrap();
    assert_eq!(report.findings.len(), 5);
    assert_eq!(report.findings_dropped, 15);
}

#[test]
fn errors_name_the_file() {
    let err = scan_path(Path::new("/nonexistent/key.pem"), &ScanLimits::default()).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/key.pem"), "{err}");
}

/// PKCS#12 files made by the openssl CLI (no well-kept Rust writer):
/// skipped, saying so, when openssl is not installed.
#[test]
fn pkcs12_from_openssl() {
    use p256::pkcs8::{EncodePublicKey, LineEnding};
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use std::process::Command;
    if Command::new("openssl").arg("version").output().is_err() {
        println!("SKIPPED pkcs12_from_openssl: openssl CLI not installed");
        return;
    }
    let k = keys();
    let dir = std::env::temp_dir().join(format!("ks-scan-p12-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("k.pem");
    std::fs::write(&key, k.rsa.to_pkcs1_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
    let cert = dir.join("c.pem");
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let p = |f: &Path| f.to_str().unwrap().to_owned();
    run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &p(&key),
        "-subj",
        "/CN=ks",
        "-days",
        "1",
        "-out",
        &p(&cert),
    ]);
    let enc = dir.join("enc.p12");
    run(&[
        "pkcs12",
        "-export",
        "-inkey",
        &p(&key),
        "-in",
        &p(&cert),
        "-passout",
        "pass:hunter2",
        "-out",
        &p(&enc),
    ]);
    let clear = dir.join("clear.p12");
    run(&[
        "pkcs12",
        "-export",
        "-inkey",
        &p(&key),
        "-in",
        &p(&cert),
        "-keypbe",
        "NONE",
        "-certpbe",
        "NONE",
        "-nomac",
        "-passout",
        "pass:",
        "-out",
        &p(&clear),
    ]);
    let rsa_fp = spki_fp(
        k.rsa
            .to_public_key()
            .to_public_key_der()
            .unwrap()
            .as_bytes(),
    );

    let mut rng = StdRng::seed_from_u64(2);
    for (file, kind, encrypted, fingerprint) in [
        (&enc, "unknown", true, None),
        (&clear, "rsa", false, Some(rsa_fp)),
    ] {
        let p12 = std::fs::read(file).unwrap();
        let alone = scan_path(file, &ScanLimits::default()).unwrap();
        assert_eq!(alone.file_kind, "pkcs12");
        let mut data = random(3 << 20, &mut rng);
        let off = (1 << 20) + 12345;
        data[off..off + p12.len()].copy_from_slice(&p12);
        let report = scan_reader(Cursor::new(&data), &small_limits()).unwrap();
        for r in [&alone, &report] {
            assert_eq!(r.findings.len(), 1, "{}: {:#?}", file.display(), r.findings);
            let f = &r.findings[0];
            assert_eq!((f.kind, f.format, f.encrypted), (kind, "pkcs12", encrypted));
            assert_eq!(f.fingerprint, fingerprint);
        }
        assert_eq!(report.findings[0].offset, off as u64);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
