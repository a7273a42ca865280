//! JSON Web Key Sets (RFC 7517): the keys a provider verifies signatures with. A set is parsed
//! once — inline at configuration time, fetched ones when they arrive — into ready-to-use
//! verifying keys, each bound to the one algorithm it may verify, so a token can never choose
//! how its key is used (no `alg` confusion).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::traits::PublicKeyParts;
use serde::Deserialize;

/// The signature algorithms this filter verifies (RFC 7518 §3.3, §3.4; RFC 8037).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Es256,
    EdDsa,
}

impl Alg {
    /// The algorithm a JOSE `alg` names; `None` for anything else (`none`, `HS256`, `PS256`, …).
    pub fn from_name(name: &str) -> Option<Alg> {
        match name {
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            "EdDSA" => Some(Alg::EdDsa),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }
}

/// Smallest RSA modulus accepted (RFC 7518 §3.3 requires 2048 bits).
const MIN_RSA_BITS: usize = 2048;

/// A public key ready to check signatures.
pub enum Verifier {
    Rsa(rsa::pkcs1v15::VerifyingKey<sha2::Sha256>),
    P256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verifier::Rsa(_) => "Rsa",
            Verifier::P256(_) => "P256",
            Verifier::Ed25519(_) => "Ed25519",
        })
    }
}

impl Verifier {
    /// Whether `signature` is this key's signature of `message`. Signatures of the wrong
    /// length or shape are simply not valid.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        use rsa::signature::Verifier as _;
        match self {
            Verifier::Rsa(key) => rsa::pkcs1v15::Signature::try_from(signature)
                .is_ok_and(|sig| key.verify(message, &sig).is_ok()),
            // JWS carries ECDSA signatures as the fixed-size R || S (RFC 7518 §3.4), not DER.
            Verifier::P256(key) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify(message, &sig).is_ok()),
            Verifier::Ed25519(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify_strict(message, &sig).is_ok()),
        }
    }
}

/// One usable key of a set.
#[derive(Debug)]
pub struct Key {
    pub kid: Option<String>,
    /// The only algorithm this key verifies: fixed by its type and curve.
    pub alg: Alg,
    pub verifier: Verifier,
}

/// The usable keys of a JWKS.
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
}

/// Why a JWKS gave no usable key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksError(pub String);

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A JWK as published; only the members this filter reads.
#[derive(Deserialize)]
struct Jwk {
    kty: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

fn member(value: &Option<String>, name: &str) -> Result<Vec<u8>, String> {
    let text = value.as_deref().ok_or_else(|| format!("no \"{name}\""))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| format!("\"{name}\" is not base64url"))
}

impl Jwk {
    /// The key, or why it cannot be used.
    fn key(&self) -> Result<Key, String> {
        if let Some(use_) = self.use_.as_deref()
            && use_ != "sig"
        {
            return Err(format!("\"use\" is \"{use_}\", not \"sig\""));
        }
        let (alg, verifier) = match (self.kty.as_deref(), self.crv.as_deref()) {
            (Some("RSA"), _) => {
                let n = rsa::BigUint::from_bytes_be(&member(&self.n, "n")?);
                let e = rsa::BigUint::from_bytes_be(&member(&self.e, "e")?);
                let key = rsa::RsaPublicKey::new(n, e).map_err(|e| format!("bad RSA key: {e}"))?;
                if key.size() * 8 < MIN_RSA_BITS {
                    return Err(format!(
                        "RSA key of {} bits (at least {MIN_RSA_BITS} needed)",
                        key.size() * 8
                    ));
                }
                (
                    Alg::Rs256,
                    Verifier::Rsa(rsa::pkcs1v15::VerifyingKey::new(key)),
                )
            }
            (Some("EC"), Some("P-256")) => {
                let x = member(&self.x, "x")?;
                let y = member(&self.y, "y")?;
                if x.len() != 32 || y.len() != 32 {
                    return Err("P-256 coordinates must be 32 bytes".into());
                }
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                    .map_err(|_| "the point is not on P-256".to_string())?;
                (Alg::Es256, Verifier::P256(key))
            }
            (Some("OKP"), Some("Ed25519")) => {
                let x: [u8; 32] = member(&self.x, "x")?
                    .try_into()
                    .map_err(|_| "an Ed25519 key is 32 bytes".to_string())?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&x)
                    .map_err(|_| "not an Ed25519 public key".to_string())?;
                (Alg::EdDsa, Verifier::Ed25519(key))
            }
            (Some(kty), crv) => {
                return Err(match crv {
                    Some(crv) => format!("unsupported key type {kty} with curve {crv}"),
                    None => format!("unsupported key type {kty}"),
                });
            }
            (None, _) => return Err("no \"kty\"".into()),
        };
        // A key that names its algorithm may only be used with that one.
        if let Some(named) = self.alg.as_deref()
            && named != alg.name()
        {
            return Err(format!(
                "\"alg\" is {named}, but the key can only verify {}",
                alg.name()
            ));
        }
        Ok(Key {
            kid: self.kid.clone(),
            alg,
            verifier,
        })
    }
}

impl KeySet {
    /// Parses a JWKS document. Keys this filter cannot use (encryption keys, other curves,
    /// short RSA moduli) are left out and described in the second value; a set with no
    /// usable key at all is an error.
    pub fn parse(document: &serde_json::Value) -> Result<(KeySet, Vec<String>), JwksError> {
        let doc = Document::deserialize(document)
            .map_err(|e| JwksError(format!("not a JWKS ({{\"keys\": [...]}}): {e}")))?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (i, raw) in doc.keys.iter().enumerate() {
            let parsed = Jwk::deserialize(raw)
                .map_err(|e| e.to_string())
                .and_then(|jwk| {
                    let kid = jwk.kid.clone();
                    jwk.key().map_err(|e| match kid {
                        Some(kid) => format!("kid \"{kid}\": {e}"),
                        None => e,
                    })
                });
            match parsed {
                Ok(key) => keys.push(key),
                Err(why) => skipped.push(format!("keys[{i}]: {why}")),
            }
        }
        if keys.is_empty() {
            return Err(JwksError(if skipped.is_empty() {
                "the JWKS has no keys".into()
            } else {
                format!("the JWKS has no usable key ({})", skipped.join("; "))
            }));
        }
        Ok((KeySet { keys }, skipped))
    }

    /// Parses a JWKS from bytes (a fetched document).
    pub fn parse_bytes(bytes: &[u8]) -> Result<(KeySet, Vec<String>), JwksError> {
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| JwksError(format!("the JWKS is not JSON: {e}")))?;
        KeySet::parse(&value)
    }

    /// The keys a token signed with `alg` (and naming `kid`, if it does) may be checked with.
    pub fn candidates<'a>(
        &'a self,
        alg: Alg,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Key> + 'a {
        self.keys
            .iter()
            .filter(move |k| k.alg == alg && (kid.is_none() || k.kid.as_deref() == kid))
    }

    /// Whether any key carries `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn ed_key(kid: &str) -> serde_json::Value {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
                           "x": b64(key.verifying_key().as_bytes())})
    }

    #[test]
    fn usable_keys_are_kept_and_others_described() {
        let doc = serde_json::json!({"keys": [
            ed_key("a"),
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA", "kid": "p384"},
            {"kty": "RSA", "n": b64(&[0xff; 128]), "e": "AQAB", "kid": "short"},
            {"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 32]), "use": "enc", "kid": "enc"},
            {"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 32]), "alg": "RS256", "kid": "mislabelled"},
        ]});
        let (set, skipped) = KeySet::parse(&doc).expect("one usable key");
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.keys[0].kid.as_deref(), Some("a"));
        assert_eq!(set.keys[0].alg, Alg::EdDsa);
        assert_eq!(skipped.len(), 5, "{skipped:?}");
        assert!(
            skipped[0].contains("unsupported key type oct"),
            "{skipped:?}"
        );
        assert!(skipped[1].contains("curve P-384"), "{skipped:?}");
        assert!(skipped[2].contains("RSA key of 1024 bits"), "{skipped:?}");
        assert!(skipped[3].contains("not \"sig\""), "{skipped:?}");
        assert!(skipped[4].contains("can only verify EdDSA"), "{skipped:?}");
    }

    #[test]
    fn a_set_without_usable_keys_is_an_error() {
        let err = KeySet::parse(&serde_json::json!({"keys": []})).expect_err("empty");
        assert_eq!(err.0, "the JWKS has no keys");
        let err = KeySet::parse(&serde_json::json!({"keys": [{"kty": "oct"}]})).expect_err("oct");
        assert!(err.0.contains("no usable key"), "{err}");
        let err = KeySet::parse(&serde_json::json!({"kid": "x"})).expect_err("shape");
        assert!(err.0.starts_with("not a JWKS"), "{err}");
        let err = KeySet::parse_bytes(b"<html>").expect_err("not json");
        assert!(err.0.starts_with("the JWKS is not JSON"), "{err}");
    }

    #[test]
    fn candidates_follow_alg_and_kid() {
        let doc = serde_json::json!({"keys": [ed_key("a"), ed_key("b")]});
        let (set, _) = KeySet::parse(&doc).expect("keys");
        assert_eq!(set.candidates(Alg::EdDsa, None).count(), 2);
        assert_eq!(set.candidates(Alg::EdDsa, Some("b")).count(), 1);
        assert_eq!(set.candidates(Alg::EdDsa, Some("c")).count(), 0);
        assert_eq!(set.candidates(Alg::Rs256, None).count(), 0);
        assert!(set.has_kid("a") && !set.has_kid("c"));
    }
}
