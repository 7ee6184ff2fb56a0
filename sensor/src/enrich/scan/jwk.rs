//! JSON Web Keys with a private part (`"d"`, or `"k"` for `oct`). The
//! object around a `"kty"` is parsed with serde_json; the private members
//! are only checked for presence, never kept.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use der::asn1::{ObjectIdentifier, UintRef};
use serde::{Deserialize, de::IgnoredAny};

use super::{Finding, fingerprint as fp};

pub const ANCHOR: &[u8] = b"\"kty\"";

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    d: Option<IgnoredAny>,
    k: Option<IgnoredAny>,
}

fn b64(s: &Option<String>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(s.as_deref()?.trim_end_matches('='))
        .ok()
}

/// The private JWK whose `"kty"` member starts at `anchor`: tries the
/// nearest few `{` before it (within `lookback` bytes). Returns its start,
/// length and finding.
pub fn at_anchor(
    buf: &[u8],
    anchor: usize,
    lookback: usize,
    max_len: usize,
) -> Option<(usize, usize, Finding)> {
    let floor = anchor.saturating_sub(lookback);
    let mut end = anchor;
    for _ in 0..4 {
        let open = floor + memchr::memrchr(b'{', &buf[floor..end])?;
        let slice = &buf[open..buf.len().min(open + max_len)];
        let mut it = serde_json::Deserializer::from_slice(slice).into_iter::<Jwk>();
        if let Some(Ok(jwk)) = it.next() {
            let len = it.byte_offset();
            if open + len > anchor {
                return finding(&jwk).map(|f| (open, len, f));
            }
        }
        end = open;
    }
    None
}

fn finding(jwk: &Jwk) -> Option<Finding> {
    let mut f = Finding {
        kind: "unknown",
        format: "jwk",
        offset: 0,
        length: 0,
        encrypted: false,
        bits: None,
        curve: None,
        fingerprint: None,
        ssh_fingerprint: None,
        pem_label: None,
        incomplete: None,
    };
    match jwk.kty.as_str() {
        "oct" if jwk.k.is_some() => {
            f.kind = "symmetric";
            return Some(f);
        }
        _ if jwk.d.is_none() => return None,
        "RSA" => {
            let n = b64(&jwk.n)?;
            let e = b64(&jwk.e)?;
            f.kind = "rsa";
            f.bits = Some(fp::bit_len(&n));
            f.fingerprint = fp::rsa(UintRef::new(&n).ok()?, UintRef::new(&e).ok()?);
        }
        "EC" => {
            let curve = match jwk.crv.as_deref()? {
                "P-256" => fp::P256,
                "P-384" => fp::P384,
                "P-521" => fp::P521,
                "secp256k1" => fp::SECP256K1,
                _ => ObjectIdentifier::new_unwrap("0.0"),
            };
            let (kind, name, bits) = fp::curve_name(&curve);
            f.kind = kind;
            f.curve = name;
            f.bits = bits;
            if let (Some(x), Some(y)) = (b64(&jwk.x), b64(&jwk.y)) {
                let mut point = Vec::with_capacity(1 + x.len() + y.len());
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                if name.is_some() {
                    f.fingerprint = fp::ec(&curve, &point);
                }
            }
        }
        "OKP" => {
            let (kind, oid) = match jwk.crv.as_deref()? {
                "Ed25519" => ("ed25519", fp::ED25519),
                "X25519" => ("x25519", fp::X25519),
                "Ed448" => ("ed448", fp::ED448),
                "X448" => ("x448", fp::X448),
                _ => return Some(f),
            };
            f.kind = kind;
            f.fingerprint = b64(&jwk.x).and_then(|x| fp::edwards(oid, &x));
        }
        _ => {}
    }
    Some(f)
}
