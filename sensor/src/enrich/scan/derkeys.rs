//! Raw DER private keys: PKCS#1 RSA, PKCS#8 (v1 and v2), SEC1 EC, OpenSSL's
//! DSA structure and PKCS#12 PFX. Candidates start at a SEQUENCE header
//! followed by a small version INTEGER; each is parsed strictly (minimal DER,
//! the whole SEQUENCE consumed, known algorithm, plausible sizes) so random
//! bytes do not pass.

use der::{
    Decode, Encode, Reader, SliceReader, Tag, Tagged,
    asn1::{AnyRef, ObjectIdentifier, OctetStringRef, UintRef},
};

use super::{Finding, fingerprint as fp};

const PKCS7_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const PKCS7_SIGNED: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const KEY_BAG: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.1");

/// The DER key whose version INTEGER (`02 01 vv`) starts at `anchor` in
/// `buf`: tries each SEQUENCE header form that can end right before it.
/// Returns the start, the length and the finding (offset left 0).
pub fn at_anchor(buf: &[u8], anchor: usize, max_len: usize) -> Option<(usize, usize, Finding)> {
    let version = *buf.get(anchor + 2)?;
    let next = *buf.get(anchor + 3)?;
    // After the version: n (INTEGER) for PKCS#1/DSA, the AlgorithmIdentifier
    // or ContentInfo (SEQUENCE) for PKCS#8/PFX, the key (OCTET STRING) for SEC1.
    if !matches!(next, 0x02 | 0x30 | 0x04) || !matches!(version, 0 | 1 | 3) {
        return None;
    }
    for hdr in 2..=5usize {
        let Some(start) = anchor.checked_sub(hdr) else {
            break;
        };
        if buf[start] != 0x30 {
            continue;
        }
        let Some(body) = header_len(&buf[start + 1..anchor]) else {
            continue;
        };
        let total = hdr + body;
        if total > max_len || start + total > buf.len() {
            continue;
        }
        let der = &buf[start..start + total];
        if let Some(f) = parse(der, version) {
            return Some((start, total, f));
        }
    }
    None
}

/// The length a DER length field (exactly `len_bytes`) encodes, when it is
/// minimal.
fn header_len(len_bytes: &[u8]) -> Option<usize> {
    match *len_bytes {
        [l] if l < 0x80 => Some(l as usize),
        [0x81, l] if l >= 0x80 => Some(l as usize),
        [0x82, a, b] if a != 0 => Some(u16::from_be_bytes([a, b]) as usize),
        [0x83, a, b, c] if a != 0 => Some(u32::from_be_bytes([0, a, b, c]) as usize),
        _ => None,
    }
}

fn parse(der: &[u8], version: u8) -> Option<Finding> {
    match version {
        0 => pkcs8(der, "pkcs8-der")
            .or_else(|| pkcs1(der, "pkcs1-der"))
            .or_else(|| dsa(der, "dsa-der")),
        1 => sec1(der, "sec1-der")
            .or_else(|| pkcs8(der, "pkcs8-der"))
            .or_else(|| pkcs1(der, "pkcs1-der")),
        3 => pfx(der),
        _ => None,
    }
}

fn finding(kind: &'static str, format: &'static str) -> Finding {
    Finding {
        kind,
        format,
        offset: 0,
        length: 0,
        encrypted: false,
        bits: None,
        curve: None,
        fingerprint: None,
        ssh_fingerprint: None,
        pem_label: None,
        incomplete: None,
    }
}

/// PKCS#1 RSAPrivateKey.
pub fn pkcs1(der: &[u8], format: &'static str) -> Option<Finding> {
    let key = pkcs1::RsaPrivateKey::from_der(der).ok()?;
    rsa_finding(&key, format)
}

fn rsa_finding(key: &pkcs1::RsaPrivateKey<'_>, format: &'static str) -> Option<Finding> {
    let bits = fp::bit_len(key.modulus.as_bytes());
    let e = key.public_exponent.as_bytes();
    // Plausible RSA: a modulus of at least 256 bits, an odd exponent > 1,
    // primes about half the modulus.
    let pbits = fp::bit_len(key.prime1.as_bytes());
    if bits < 256
        || e.last().is_none_or(|b| b & 1 == 0)
        || e == [1]
        || pbits < bits / 2 - 8
        || pbits > bits / 2 + 8
    {
        return None;
    }
    let mut f = finding("rsa", format);
    f.bits = Some(bits);
    f.fingerprint = fp::rsa(key.modulus, key.public_exponent);
    Some(f)
}

/// PKCS#8 PrivateKeyInfo / OneAsymmetricKey.
pub fn pkcs8(der: &[u8], format: &'static str) -> Option<Finding> {
    let info = pkcs8::PrivateKeyInfo::from_der(der).ok()?;
    pkcs8_finding(&info, format)
}

fn pkcs8_finding(info: &pkcs8::PrivateKeyInfo<'_>, format: &'static str) -> Option<Finding> {
    let oid = info.algorithm.oid;
    if oid == fp::RSA {
        let key = pkcs1::RsaPrivateKey::from_der(info.private_key).ok()?;
        rsa_finding(&key, format)
    } else if oid == fp::EC {
        let curve = info.algorithm.parameters_oid().ok()?;
        let key = sec1::EcPrivateKey::from_der(info.private_key).ok()?;
        let public = info.public_key.or(key.public_key);
        Some(ec_finding(&curve, key.private_key, public, format))
    } else if oid == fp::ED25519 || oid == fp::X25519 || oid == fp::ED448 || oid == fp::X448 {
        let (kind, len) = match () {
            _ if oid == fp::ED25519 => ("ed25519", 32),
            _ if oid == fp::X25519 => ("x25519", 32),
            _ if oid == fp::ED448 => ("ed448", 57),
            _ => ("x448", 56),
        };
        let seed = OctetStringRef::from_der(info.private_key).ok()?;
        if seed.as_bytes().len() != len || info.algorithm.parameters.is_some() {
            return None;
        }
        let mut f = finding(kind, format);
        f.fingerprint = match info.public_key {
            Some(pk) => fp::edwards(oid, pk),
            None if oid == fp::ED25519 => {
                fp::ed25519_public_from_seed(seed.as_bytes()).and_then(|pk| fp::edwards(oid, &pk))
            }
            None => None,
        };
        Some(f)
    } else if oid == fp::DSA {
        // The public y = g^x mod p is not derived (no big-integer
        // arithmetic here): reported without a fingerprint.
        let params = info.algorithm.parameters?;
        let mut r = SliceReader::new(params.value()).ok()?;
        let p: UintRef = r.decode().ok()?;
        let _q: UintRef = r.decode().ok()?;
        let _g: UintRef = r.decode().ok()?;
        r.finish(()).ok()?;
        UintRef::from_der(info.private_key).ok()?;
        let mut f = finding("dsa", format);
        f.bits = Some(fp::bit_len(p.as_bytes()));
        Some(f)
    } else {
        None
    }
}

/// A finding for an EC private key on `curve`: the fingerprint from the
/// public point when present, else derived from the scalar.
fn ec_finding(
    curve: &ObjectIdentifier,
    scalar: &[u8],
    public: Option<&[u8]>,
    format: &'static str,
) -> Finding {
    let (kind, name, bits) = fp::curve_name(curve);
    let mut f = finding(kind, format);
    f.curve = name;
    f.bits = bits;
    f.fingerprint = match public {
        Some(point) => fp::ec(curve, point),
        None => fp::ec_public_from_scalar(curve, scalar).and_then(|p| fp::ec(curve, &p)),
    };
    f
}

/// SEC1 ECPrivateKey (OpenSSL's "EC PRIVATE KEY").
pub fn sec1(der: &[u8], format: &'static str) -> Option<Finding> {
    let key = sec1::EcPrivateKey::from_der(der).ok()?;
    let len = key.private_key.len();
    if !(20..=66).contains(&len) {
        return None;
    }
    match key.parameters.and_then(|p| p.named_curve()) {
        Some(curve) => Some(ec_finding(&curve, key.private_key, key.public_key, format)),
        None => {
            // No curve named (as the RustCrypto crates write SEC1): the
            // curve whose derived public point equals the stored one.
            let derived = key.public_key.and_then(|public| {
                [fp::P256, fp::P384].into_iter().find(|c| {
                    fp::ec_public_from_scalar(c, key.private_key).as_deref() == Some(public)
                })
            });
            if let Some(curve) = derived {
                return Some(ec_finding(&curve, key.private_key, key.public_key, format));
            }
            let mut f = finding("ec", format);
            f.bits = Some(len as u32 * 8);
            Some(f)
        }
    }
}

/// OpenSSL's DSA private key: SEQUENCE { 0, p, q, g, y, x }.
pub fn dsa(der: &[u8], format: &'static str) -> Option<Finding> {
    let mut r = SliceReader::new(der).ok()?;
    let (p, q, g, y) = r
        .sequence(|r| {
            let v: u8 = r.decode()?;
            let p: UintRef = r.decode()?;
            let q: UintRef = r.decode()?;
            let g: UintRef = r.decode()?;
            let y: UintRef = r.decode()?;
            let _x: UintRef = r.decode()?;
            if v != 0 {
                return Err(der::Tag::Integer.value_error());
            }
            Ok((p, q, g, y))
        })
        .ok()?;
    r.finish(()).ok()?;
    let pbits = fp::bit_len(p.as_bytes());
    let qbits = fp::bit_len(q.as_bytes());
    if pbits < 512 || !(160..=256).contains(&qbits) {
        return None;
    }
    let mut f = finding("dsa", format);
    f.bits = Some(pbits);
    f.fingerprint = fp::dsa(p, q, g, y);
    Some(f)
}

/// The items of a SEQUENCE (or SET) TLV.
fn items(any: AnyRef<'_>) -> Option<Vec<AnyRef<'_>>> {
    let mut r = SliceReader::new(any.value()).ok()?;
    let mut out = Vec::new();
    while !r.is_finished() {
        out.push(r.decode().ok()?);
    }
    Some(out)
}

/// The content of `[0] EXPLICIT` (the single TLV inside it).
fn explicit0(any: AnyRef<'_>) -> Option<AnyRef<'_>> {
    if any.tag()
        != (Tag::ContextSpecific {
            constructed: true,
            number: der::TagNumber::N0,
        })
    {
        return None;
    }
    AnyRef::from_der(any.value()).ok()
}

/// PKCS#12 PFX { 3, ContentInfo, MacData? }. Keys in a `keyBag` are in
/// clear and reported like PKCS#8; a `pkcs8ShroudedKeyBag` (or content
/// encrypted as a whole) is reported as an encrypted key of unknown kind.
/// DER only (BER indefinite lengths are not parsed).
pub fn pfx(der: &[u8]) -> Option<Finding> {
    let top = AnyRef::from_der(der).ok()?;
    if top.tag() != Tag::Sequence {
        return None;
    }
    let parts = items(top)?;
    if !(2..=3).contains(&parts.len()) || u8::try_from(parts[0]).ok()? != 3 {
        return None;
    }
    let ci = items(parts[1])?;
    let ctype = ObjectIdentifier::try_from(*ci.first()?).ok()?;
    if ctype != PKCS7_DATA && ctype != PKCS7_SIGNED {
        return None;
    }
    let mut f = finding("unknown", "pkcs12");
    f.encrypted = true;
    if ctype != PKCS7_DATA || ci.len() != 2 {
        return Some(f);
    }
    let Some(auth_safe) = explicit0(ci[1])
        .and_then(|os| OctetStringRef::try_from(os).ok())
        .and_then(|os| AnyRef::from_der(os.as_bytes()).ok())
    else {
        return Some(f);
    };
    for content in items(auth_safe).unwrap_or_default() {
        let Some(ci) = items(content) else { continue };
        let Some(Ok(oid)) = ci.first().map(|o| ObjectIdentifier::try_from(*o)) else {
            continue;
        };
        if oid != PKCS7_DATA || ci.len() != 2 {
            continue; // encryptedData / envelopedData: opaque
        }
        let Some(bags) = explicit0(ci[1])
            .and_then(|os| OctetStringRef::try_from(os).ok())
            .and_then(|os| AnyRef::from_der(os.as_bytes()).ok())
            .and_then(items)
        else {
            continue;
        };
        for bag in bags {
            let Some(bag) = items(bag) else { continue };
            let Some(Ok(id)) = bag.first().map(|o| ObjectIdentifier::try_from(*o)) else {
                continue;
            };
            // A pkcs8ShroudedKeyBag stays "unknown", encrypted.
            if id == KEY_BAG {
                let der = bag.get(1).and_then(|v| explicit0(*v))?.to_der().ok()?;
                let info = pkcs8::PrivateKeyInfo::from_der(&der).ok()?;
                return pkcs8_finding(&info, "pkcs12");
            }
        }
    }
    Some(f)
}

/// EncryptedPrivateKeyInfo { AlgorithmIdentifier, OCTET STRING }.
pub fn encrypted_pkcs8(der: &[u8]) -> bool {
    let Ok(top) = AnyRef::from_der(der) else {
        return false;
    };
    match items(top).as_deref() {
        Some([alg, data]) => {
            alg.tag() == Tag::Sequence
                && data.tag() == Tag::OctetString
                && items(*alg)
                    .and_then(|a| a.first().map(|o| ObjectIdentifier::try_from(*o).is_ok()))
                    .unwrap_or(false)
        }
        _ => false,
    }
}
