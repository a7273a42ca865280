//! Verifying one compact JWS (RFC 7515 §7.1) as a JWT (RFC 7519): structure, algorithm, key,
//! signature, then the time and identity claims. The signature is checked before any claim is
//! believed; the order of the remaining checks decides which reason a bad token is counted
//! under.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::jwks::{Alg, KeySet};

/// Longest token looked at; anything longer is malformed (real JWTs are well under 8 KiB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Not three base64url parts, or a header or payload that is not a JSON object, or a
    /// time claim that is not a number.
    Malformed,
    /// `alg` is not RS256, ES256 or EdDSA (`none` and HMAC included), or `crit` is present.
    UnsupportedAlg,
    /// The token names a `kid` the key set does not have.
    UnknownKid,
    /// No key of the token's algorithm verifies the signature.
    BadSignature,
    Expired,
    NotYetValid,
    BadIssuer,
    BadAudience,
}

impl Failure {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Failure::Malformed => "malformed",
            Failure::UnsupportedAlg => "unsupported_alg",
            Failure::UnknownKid => "unknown_kid",
            Failure::BadSignature => "bad_signature",
            Failure::Expired => "expired",
            Failure::NotYetValid => "not_yet_valid",
            Failure::BadIssuer => "bad_issuer",
            Failure::BadAudience => "bad_audience",
        }
    }

    /// The `error_description` and body text.
    pub fn description(self) -> &'static str {
        match self {
            Failure::Malformed => "the token is malformed",
            Failure::UnsupportedAlg => "the token's algorithm is not accepted",
            Failure::UnknownKid => "the token's key id is unknown",
            Failure::BadSignature => "the token's signature does not verify",
            Failure::Expired => "the token is expired",
            Failure::NotYetValid => "the token is not valid yet",
            Failure::BadIssuer => "the token's issuer is not accepted",
            Failure::BadAudience => "the token's audience is not accepted",
        }
    }
}

/// What a token must satisfy besides its signature.
pub struct Expect<'a> {
    /// The required `iss`, if any.
    pub issuer: Option<&'a str>,
    /// `aud` must contain one of these (when not empty).
    pub audiences: &'a [String],
    /// Leeway for `exp` and `nbf`, seconds.
    pub clock_skew: u64,
    /// Now, seconds since the Unix epoch.
    pub now: u64,
}

/// A token that passed every check.
#[derive(Debug)]
pub struct Verified {
    /// The payload's claims.
    pub claims: Map<String, Value>,
    /// The payload exactly as signed (JSON), for passing on.
    pub payload: Vec<u8>,
}

fn decode_object(part: &str) -> Result<(Vec<u8>, Map<String, Value>), Failure> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Failure::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok((bytes, map)),
        _ => Err(Failure::Malformed),
    }
}

/// A NumericDate claim (RFC 7519 §2): absent, or a number of seconds (fractions allowed).
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, Failure> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(Failure::Malformed),
        Some(_) => Err(Failure::Malformed),
    }
}

/// Checks `token` against `keys` and `expect`: [`verify_signature`], then [`check_claims`].
pub fn verify(token: &str, keys: &KeySet, expect: &Expect<'_>) -> Result<Verified, Failure> {
    let verified = verify_signature(token, keys)?;
    check_claims(&verified.claims, expect)?;
    Ok(verified)
}

/// Checks what depends only on the token and the key set: structure, algorithm, key id and
/// signature. What it returns is not yet a token to accept: [`check_claims`] decides that,
/// against the time and the provider.
pub fn verify_signature(token: &str, keys: &KeySet) -> Result<Verified, Failure> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Failure::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Failure::Malformed);
    };
    let (_, header_json) = decode_object(header)?;
    let (payload_bytes, claims) = decode_object(payload)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| Failure::Malformed)?;

    let alg = header_json
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Alg::from_name)
        .ok_or(Failure::UnsupportedAlg)?;
    // Extensions this filter does not understand must make the token invalid (RFC 7515 §4.1.11).
    if header_json.contains_key("crit") {
        return Err(Failure::UnsupportedAlg);
    }
    let kid = match header_json.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.as_str()),
        Some(_) => return Err(Failure::Malformed),
    };
    if let Some(kid) = kid
        && !keys.has_kid(kid)
    {
        return Err(Failure::UnknownKid);
    }
    // The signing input is the two encoded parts exactly as they arrived.
    let signed = &token[..header.len() + 1 + payload.len()];
    if !keys
        .candidates(alg, kid)
        .any(|key| key.verifier.verify(signed.as_bytes(), &signature))
    {
        return Err(Failure::BadSignature);
    }
    Ok(Verified {
        claims,
        payload: payload_bytes,
    })
}

/// Checks the claims of a token whose signature verified: `exp` and `nbf` against `now` with
/// the skew, then `iss` and `aud`. Cheap; run for every request, cached tokens included.
pub fn check_claims(claims: &Map<String, Value>, expect: &Expect<'_>) -> Result<(), Failure> {
    let now = expect.now as f64;
    let skew = expect.clock_skew as f64;
    if let Some(exp) = numeric_date(claims, "exp")?
        && now >= exp + skew
    {
        return Err(Failure::Expired);
    }
    if let Some(nbf) = numeric_date(claims, "nbf")?
        && now + skew < nbf
    {
        return Err(Failure::NotYetValid);
    }
    if let Some(issuer) = expect.issuer
        && claims.get("iss").and_then(Value::as_str) != Some(issuer)
    {
        return Err(Failure::BadIssuer);
    }
    if !expect.audiences.is_empty() {
        let accepted = |aud: &str| expect.audiences.iter().any(|a| a == aud);
        let ok = match claims.get("aud") {
            Some(Value::String(aud)) => accepted(aud),
            Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(accepted),
            _ => false,
        };
        if !ok {
            return Err(Failure::BadAudience);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::Signer;

    use super::*;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn signing_key() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[9; 32])
    }

    fn keys() -> KeySet {
        let x = b64(signing_key().verifying_key().as_bytes());
        let doc =
            serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1", "x": x}]});
        KeySet::parse(&doc).expect("keys").0
    }

    fn sign(header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = signing_key().sign(input.as_bytes());
        format!("{input}.{}", b64(&sig.to_bytes()))
    }

    const NOW: u64 = 1_700_000_000;

    fn expect<'a>(audiences: &'a [String]) -> Expect<'a> {
        Expect {
            issuer: Some("https://issuer"),
            audiences,
            clock_skew: 30,
            now: NOW,
        }
    }

    fn check(claims: Value) -> Result<Verified, Failure> {
        let header = serde_json::json!({"alg": "EdDSA", "kid": "k1"});
        verify(&sign(&header, &claims), &keys(), &expect(&["api".into()]))
    }

    #[test]
    fn a_good_token_verifies_with_fractional_times_and_audience_lists() {
        let v = check(
            serde_json::json!({"iss": "https://issuer", "aud": ["other", "api"],
                                         "exp": NOW as f64 + 0.5, "nbf": NOW, "sub": "alice"}),
        )
        .expect("valid");
        assert_eq!(v.claims["sub"], "alice");
    }

    #[test]
    fn time_claims_honour_the_skew() {
        let base = |exp: u64, nbf: u64| serde_json::json!({"iss": "https://issuer", "aud": "api", "exp": exp, "nbf": nbf});
        assert!(
            check(base(NOW - 29, NOW)).is_ok(),
            "expired within the skew"
        );
        assert_eq!(
            check(base(NOW - 30, NOW)).err(),
            Some(Failure::Expired),
            "exp + skew is already too late"
        );
        assert!(
            check(base(NOW + 60, NOW + 30)).is_ok(),
            "nbf within the skew"
        );
        assert_eq!(
            check(base(NOW + 60, NOW + 31)).err(),
            Some(Failure::NotYetValid)
        );
        assert_eq!(
            check(serde_json::json!({"iss": "https://issuer", "aud": "api", "exp": "soon"})).err(),
            Some(Failure::Malformed)
        );
    }

    #[test]
    fn identity_claims() {
        assert_eq!(
            check(serde_json::json!({"iss": "https://evil", "aud": "api"})).err(),
            Some(Failure::BadIssuer)
        );
        assert_eq!(
            check(serde_json::json!({"iss": "https://issuer", "aud": "web"})).err(),
            Some(Failure::BadAudience)
        );
        assert_eq!(
            check(serde_json::json!({"iss": "https://issuer"})).err(),
            Some(Failure::BadAudience),
            "a missing aud does not match"
        );
    }

    #[test]
    fn structure_algorithm_and_key() {
        let claims = serde_json::json!({"iss": "https://issuer", "aud": "api"});
        let good = sign(&serde_json::json!({"alg": "EdDSA"}), &claims);
        let run = |t: &str| verify(t, &keys(), &expect(&["api".into()])).err();
        assert_eq!(
            run(&good),
            None,
            "no kid: every key of the algorithm is tried"
        );
        for bad in ["a.b", "a.b.c.d", "", "x.y.z", &format!("{good}=")] {
            assert_eq!(run(bad), Some(Failure::Malformed), "{bad}");
        }
        let unsigned = format!(
            "{}.{}.",
            b64(br#"{"alg":"none"}"#),
            b64(claims.to_string().as_bytes())
        );
        assert_eq!(run(&unsigned), Some(Failure::UnsupportedAlg));
        let crit = sign(
            &serde_json::json!({"alg": "EdDSA", "crit": ["exp"]}),
            &claims,
        );
        assert_eq!(run(&crit), Some(Failure::UnsupportedAlg));
        let other_kid = sign(&serde_json::json!({"alg": "EdDSA", "kid": "k2"}), &claims);
        assert_eq!(run(&other_kid), Some(Failure::UnknownKid));
        let wrong_alg = sign(&serde_json::json!({"alg": "ES256", "kid": "k1"}), &claims);
        assert_eq!(run(&wrong_alg), Some(Failure::BadSignature), "no ES256 key");
        let (head, _) = good.rsplit_once('.').expect("three parts");
        let tampered_payload = format!(
            "{}.{}.{}",
            head.split('.').next().expect("header"),
            b64(br#"{"iss":"https://issuer","aud":"api","admin":true}"#),
            good.rsplit('.').next().expect("sig")
        );
        assert_eq!(run(&tampered_payload), Some(Failure::BadSignature));
        assert_eq!(
            run(&"a".repeat(MAX_TOKEN_LEN + 1)),
            Some(Failure::Malformed)
        );
    }
}
