//! Public-key fingerprints: `SHA256:` + unpadded standard base64 of the
//! SHA-256 of the DER SubjectPublicKeyInfo (the same text form as
//! `ssh-keygen -l`, over the X.509 public key structure instead of the SSH
//! blob), and the curve and algorithm identifiers they need.

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use der::{
    Encode,
    asn1::{AnyRef, BitStringRef, ObjectIdentifier, UintRef},
};
use sha2::{Digest, Sha256};
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};

pub const RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
pub const EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
pub const DSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10040.4.1");
pub const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
pub const ED448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.113");
pub const X25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.110");
pub const X448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.111");
pub const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
pub const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
pub const P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
pub const SECP256K1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.10");

/// `SHA256:<base64, no padding>` of `bytes`.
pub fn sha256_text(bytes: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(bytes)))
}

/// Fingerprint of the SPKI { algorithm, parameters, public key }.
pub fn spki(
    alg: ObjectIdentifier,
    params: Option<AnyRef<'_>>,
    public_key: &[u8],
) -> Option<String> {
    let info = SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef {
            oid: alg,
            parameters: params,
        },
        subject_public_key: BitStringRef::from_bytes(public_key).ok()?,
    };
    Some(sha256_text(&info.to_der().ok()?))
}

/// RSA: SPKI { rsaEncryption, NULL, RSAPublicKey { n, e } }.
pub fn rsa(n: UintRef<'_>, e: UintRef<'_>) -> Option<String> {
    let public = pkcs1::RsaPublicKey {
        modulus: n,
        public_exponent: e,
    }
    .to_der()
    .ok()?;
    spki(RSA, Some(AnyRef::NULL), &public)
}

/// EC: SPKI { id-ecPublicKey, namedCurve, SEC1 point }.
pub fn ec(curve: &ObjectIdentifier, point: &[u8]) -> Option<String> {
    spki(EC, Some(AnyRef::from(curve)), point)
}

/// Ed25519 / X25519 / Ed448 / X448: SPKI { oid, absent parameters, key }.
pub fn edwards(alg: ObjectIdentifier, public_key: &[u8]) -> Option<String> {
    spki(alg, None, public_key)
}

/// DSA: SPKI { id-dsa, Dss-Parms { p, q, g }, INTEGER y }.
pub fn dsa(p: UintRef<'_>, q: UintRef<'_>, g: UintRef<'_>, y: UintRef<'_>) -> Option<String> {
    let mut params = Vec::new();
    for v in [p, q, g] {
        v.encode_to_vec(&mut params).ok()?;
    }
    let params = AnyRef::new(der::Tag::Sequence, &params).ok()?;
    let y = y.to_der().ok()?;
    spki(DSA, Some(params), &y)
}

/// The uncompressed SEC1 point of the public key for `scalar` on `curve`,
/// for the curves this build can compute on (P-256, P-384).
pub fn ec_public_from_scalar(curve: &ObjectIdentifier, scalar: &[u8]) -> Option<Vec<u8>> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    if *curve == P256 {
        let sk = p256::SecretKey::from_slice(scalar).ok()?;
        Some(sk.public_key().to_encoded_point(false).as_bytes().to_vec())
    } else if *curve == P384 {
        let sk = p384::SecretKey::from_slice(scalar).ok()?;
        Some(sk.public_key().to_encoded_point(false).as_bytes().to_vec())
    } else {
        None
    }
}

/// The Ed25519 public key of a 32-byte seed.
pub fn ed25519_public_from_seed(seed: &[u8]) -> Option<[u8; 32]> {
    let seed: &[u8; 32] = seed.try_into().ok()?;
    Some(
        ed25519_dalek::SigningKey::from_bytes(seed)
            .verifying_key()
            .to_bytes(),
    )
}

/// `kind` and key size of a named curve.
pub fn curve_name(curve: &ObjectIdentifier) -> (&'static str, Option<&'static str>, Option<u32>) {
    if *curve == P256 {
        ("ec-p256", Some("P-256"), Some(256))
    } else if *curve == P384 {
        ("ec-p384", Some("P-384"), Some(384))
    } else if *curve == P521 {
        ("ec-p521", Some("P-521"), Some(521))
    } else if *curve == SECP256K1 {
        ("ec-secp256k1", Some("secp256k1"), Some(256))
    } else {
        ("ec", None, None)
    }
}

/// Bit length of a big-endian unsigned integer.
pub fn bit_len(bytes: &[u8]) -> u32 {
    let mut b = bytes;
    while let [0, rest @ ..] = b {
        b = rest;
    }
    match b.first() {
        None => 0,
        Some(&top) => (b.len() as u32 - 1) * 8 + (8 - top.leading_zeros()),
    }
}
