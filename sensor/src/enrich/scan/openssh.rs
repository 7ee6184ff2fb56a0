//! OpenSSH private keys (`openssh-key-v1`): the binary form found in memory
//! and the content of "OPENSSH PRIVATE KEY" PEM. The public key is stored in
//! clear even when the private part is encrypted, so both fingerprints are
//! always known: `ssh_fingerprint` as `ssh-keygen -l` prints it, and the
//! SPKI `fingerprint` that the other formats use.

use der::asn1::UintRef;
use ssh_key::{HashAlg, PrivateKey, public::KeyData};

use super::{Finding, fingerprint as fp};

pub const MAGIC: &[u8] = b"openssh-key-v1\0";

/// The length of the openssh-key-v1 structure at the start of `buf`
/// (magic, cipher, kdf, kdf options, key count, public keys, private
/// section), when every length fits in `max_len`.
pub fn structure_len(buf: &[u8], max_len: usize) -> Option<usize> {
    let limit = buf.len().min(max_len);
    let mut pos = MAGIC.len();
    let string = |pos: &mut usize| -> Option<()> {
        let len = u32::from_be_bytes(buf.get(*pos..*pos + 4)?.try_into().ok()?) as usize;
        *pos = pos.checked_add(4 + len)?;
        (*pos <= limit).then_some(())
    };
    string(&mut pos)?; // cipher name
    string(&mut pos)?; // kdf name
    string(&mut pos)?; // kdf options
    let n = u32::from_be_bytes(buf.get(pos..pos + 4)?.try_into().ok()?);
    pos += 4;
    if n != 1 {
        return None; // OpenSSH writes exactly one key per file
    }
    string(&mut pos)?; // public key
    string(&mut pos)?; // (encrypted) private section
    Some(pos)
}

/// Parse a complete openssh-key-v1 structure.
pub fn parse(bytes: &[u8], format: &'static str) -> Option<Finding> {
    let key = PrivateKey::from_bytes(bytes).ok()?;
    let public = key.public_key();
    let mut f = Finding {
        kind: "unknown",
        format,
        offset: 0,
        length: 0,
        encrypted: key.is_encrypted(),
        bits: None,
        curve: None,
        fingerprint: None,
        ssh_fingerprint: Some(public.fingerprint(HashAlg::Sha256).to_string()),
        pem_label: None,
        incomplete: None,
    };
    match public.key_data() {
        KeyData::Ed25519(pk) => {
            f.kind = "ed25519";
            f.fingerprint = fp::edwards(fp::ED25519, pk.as_ref());
        }
        KeyData::Rsa(pk) => {
            f.kind = "rsa";
            let n = pk.n.as_positive_bytes()?;
            let e = pk.e.as_positive_bytes()?;
            f.bits = Some(fp::bit_len(n));
            f.fingerprint = fp::rsa(UintRef::new(n).ok()?, UintRef::new(e).ok()?);
        }
        KeyData::Ecdsa(pk) => {
            let curve = match pk.curve() {
                ssh_key::EcdsaCurve::NistP256 => fp::P256,
                ssh_key::EcdsaCurve::NistP384 => fp::P384,
                ssh_key::EcdsaCurve::NistP521 => fp::P521,
            };
            let (kind, name, bits) = fp::curve_name(&curve);
            f.kind = kind;
            f.curve = name;
            f.bits = bits;
            f.fingerprint = fp::ec(&curve, pk.as_sec1_bytes());
        }
        KeyData::Dsa(pk) => {
            f.kind = "dsa";
            let p = pk.p.as_positive_bytes()?;
            f.bits = Some(fp::bit_len(p));
            f.fingerprint = fp::dsa(
                UintRef::new(p).ok()?,
                UintRef::new(pk.q.as_positive_bytes()?).ok()?,
                UintRef::new(pk.g.as_positive_bytes()?).ok()?,
                UintRef::new(pk.y.as_positive_bytes()?).ok()?,
            );
        }
        KeyData::SkEd25519(_) => f.kind = "sk-ed25519",
        KeyData::SkEcdsaSha2NistP256(_) => f.kind = "sk-ec-p256",
        _ => {}
    }
    Some(f)
}
