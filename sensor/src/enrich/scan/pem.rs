//! PEM-armoured private keys: every `-----BEGIN ... PRIVATE KEY-----`
//! label (PKCS#1, SEC1, DSA, PKCS#8, encrypted PKCS#8, OpenSSH, legacy
//! `Proc-Type: 4,ENCRYPTED` headers), also when the newlines are JSON/C
//! escapes (`\n`), as in service-account files and config strings.

use memchr::memmem;

use super::{Finding, derkeys, openssh};

pub const ANCHOR: &[u8] = b"-----BEGIN ";

/// Labels reported, with the kind when the label alone tells it.
const LABELS: &[(&str, &str)] = &[
    ("RSA PRIVATE KEY", "rsa"),
    ("EC PRIVATE KEY", "ec"),
    ("DSA PRIVATE KEY", "dsa"),
    ("PRIVATE KEY", "unknown"),
    ("ENCRYPTED PRIVATE KEY", "unknown"),
    ("OPENSSH PRIVATE KEY", "unknown"),
    ("ANY PRIVATE KEY", "unknown"),
    ("PGP PRIVATE KEY BLOCK", "pgp"),
];

/// The PEM block at `anchor`: its start, length and finding. A private-key
/// BEGIN line whose block cannot be read (cut, corrupted) is still
/// reported, with `incomplete` saying why.
pub fn at_anchor(buf: &[u8], anchor: usize, max_len: usize) -> Option<(usize, usize, Finding)> {
    let after = anchor + ANCHOR.len();
    let line = &buf[after..buf.len().min(after + 40)];
    let close = memmem::find(line, b"-----")?;
    let label = std::str::from_utf8(&line[..close]).ok()?;
    let &(label, kind) = LABELS.iter().find(|(l, _)| *l == label)?;
    let begin_end = after + close + 5;
    if !has_body(&buf[begin_end..buf.len().min(begin_end + 256)]) {
        // A BEGIN line alone: the marker string in a program (ssh-keygen,
        // libraries), not a key.
        return None;
    }
    let mut f = Finding {
        kind,
        format: "pem",
        offset: 0,
        length: 0,
        encrypted: label == "ENCRYPTED PRIVATE KEY",
        bits: None,
        curve: None,
        fingerprint: None,
        ssh_fingerprint: None,
        pem_label: Some(label),
        incomplete: None,
    };
    let window = &buf[begin_end..buf.len().min(anchor + max_len)];
    let end_marker = format!("-----END {label}-----");
    let Some(end) = memmem::find(window, end_marker.as_bytes()) else {
        f.incomplete = Some("no END line");
        return Some((anchor, begin_end - anchor, f));
    };
    let total = begin_end - anchor + end + end_marker.len();
    let text = &buf[anchor..anchor + total];
    let unescaped;
    let text = if memmem::find(text, b"\\n").is_some() {
        unescaped = unescape(text);
        &unescaped[..]
    } else {
        text
    };
    let Ok(block) = pem::parse(text) else {
        f.incomplete = Some("malformed PEM");
        return Some((anchor, total, f));
    };
    let der = block.contents();
    if block
        .headers()
        .get("Proc-Type")
        .is_some_and(|v| v.contains("ENCRYPTED"))
    {
        f.encrypted = true;
        return Some((anchor, total, f));
    }
    let parsed = match label {
        "RSA PRIVATE KEY" => derkeys::pkcs1(der, "pem"),
        "EC PRIVATE KEY" => derkeys::sec1(der, "pem"),
        "DSA PRIVATE KEY" => derkeys::dsa(der, "pem"),
        "PRIVATE KEY" | "ANY PRIVATE KEY" => derkeys::pkcs8(der, "pem"),
        "OPENSSH PRIVATE KEY" => der
            .starts_with(openssh::MAGIC)
            .then(|| openssh::parse(der, "openssh"))
            .flatten(),
        "ENCRYPTED PRIVATE KEY" => derkeys::encrypted_pkcs8(der).then_some(f.clone()),
        _ => Some(f.clone()),
    };
    match parsed {
        Some(mut p) => {
            p.pem_label = Some(label);
            if label == "OPENSSH PRIVATE KEY" {
                p.format = "openssh";
            }
            Some((anchor, total, p))
        }
        None => {
            f.incomplete = Some("undecodable key");
            Some((anchor, total, f))
        }
    }
}

/// Whether a base64 body (or RFC 1421 headers) follows a BEGIN line.
fn has_body(rest: &[u8]) -> bool {
    let rest = strip_newlines(rest);
    if rest.starts_with(b"Proc-Type:") || rest.starts_with(b"Comment:") {
        return true;
    }
    rest.len() >= 64
        && rest[..64]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
}

fn strip_newlines(mut s: &[u8]) -> &[u8] {
    loop {
        s = match s {
            [b'\r' | b'\n', rest @ ..] => rest,
            [b'\\', b'n' | b'r', rest @ ..] => rest,
            _ => return s,
        };
    }
}

/// `\n`, `\r`, `\/` escapes of a PEM embedded in a JSON or C string.
fn unescape(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match (text[i], text.get(i + 1)) {
            (b'\\', Some(b'n')) => {
                out.push(b'\n');
                i += 2;
            }
            (b'\\', Some(b'r')) => i += 2,
            (b'\\', Some(b'/')) => {
                out.push(b'/');
                i += 2;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}
