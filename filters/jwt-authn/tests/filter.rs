//! The jwt-authn filter as built for wasm32-wasip1, run on wasmesh's host through the SDK's
//! test harness. Keys are generated and tokens signed here with native crates (RSA, P-256,
//! Ed25519), so every verification is a real one; the JWKS fetch is a callout the test
//! answers, with the clock and ticks under the test's control.

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac;
use rsa::rand_core::OsRng;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use wasmesh_sdk_test::{Action, Error, Harness, HeaderMap, LogLevel, Stream};

const ISSUER: &str = "https://idp.test";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// One signing key of each algorithm, made once for the whole test binary.
struct Signers {
    rsa: rsa::pkcs1v15::SigningKey<sha2::Sha256>,
    rsa_public: rsa::RsaPublicKey,
    ec: p256::ecdsa::SigningKey,
    ed: ed25519_dalek::SigningKey,
}

fn signers() -> &'static Signers {
    static SIGNERS: OnceLock<Signers> = OnceLock::new();
    SIGNERS.get_or_init(|| {
        let private = rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("rsa key");
        Signers {
            rsa_public: private.to_public_key(),
            rsa: rsa::pkcs1v15::SigningKey::new(private),
            ec: p256::ecdsa::SigningKey::random(&mut OsRng),
            ed: ed25519_dalek::SigningKey::generate(&mut OsRng),
        }
    })
}

fn rsa_jwk(kid: &str) -> Value {
    let public = &signers().rsa_public;
    json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
           "n": b64(&public.n().to_bytes_be()), "e": b64(&public.e().to_bytes_be())})
}

fn ec_jwk(kid: &str) -> Value {
    let point = signers().ec.verifying_key().to_encoded_point(false);
    json!({"kty": "EC", "crv": "P-256", "kid": kid,
           "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y"))})
}

fn ed_jwk(kid: &str, key: &ed25519_dalek::SigningKey) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(key.verifying_key().as_bytes())})
}

fn jwks() -> Value {
    json!({"keys": [rsa_jwk("rsa-1"), ec_jwk("ec-1"), ed_jwk("ed-1", &signers().ed)]})
}

/// A compact JWS of `claims` with `header`, signed by `sign`.
fn jws(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

fn rs256(kid: &str, claims: &Value) -> String {
    jws(
        &json!({"alg": "RS256", "typ": "JWT", "kid": kid}),
        claims,
        |m| signers().rsa.sign(m).to_vec(),
    )
}

fn es256(kid: &str, claims: &Value) -> String {
    jws(&json!({"alg": "ES256", "kid": kid}), claims, |m| {
        let sig: p256::ecdsa::Signature = signers().ec.sign(m);
        sig.to_bytes().to_vec()
    })
}

fn eddsa_with(key: &ed25519_dalek::SigningKey, kid: &str, claims: &Value) -> String {
    jws(&json!({"alg": "EdDSA", "kid": kid}), claims, |m| {
        key.sign(m).to_bytes().to_vec()
    })
}

fn eddsa(kid: &str, claims: &Value) -> String {
    eddsa_with(&signers().ed, kid, claims)
}

/// Seconds since the epoch on the harness's clock.
fn now(h: &Harness) -> u64 {
    h.now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn claims(h: &Harness) -> Value {
    json!({"iss": ISSUER, "aud": "api", "sub": "alice", "exp": now(h) + 300,
           "groups": ["dev", "ops"], "tier": {"level": 3}})
}

/// A provider with the generated keys inline, plus `extra` fields.
fn provider(extra: &str) -> String {
    format!(
        r#"{{"issuer": "{ISSUER}", "audiences": ["api"], "local_jwks": {}{extra}}}"#,
        jwks()
    )
}

fn load(config: &str) -> Harness {
    Harness::builder(wasmesh_test_programs::filter("jwt-authn"))
        .name("jwt")
        .plugin_config(config)
        .load()
        .expect("configuration accepted")
}

/// A config with one provider `corp` required everywhere but `/public`.
fn corp(extra: &str) -> Harness {
    load(&format!(
        r#"{{"providers": {{"corp": {}}}, "realm": "api.test",
             "rules": [{{"match": {{"prefix": "/public"}}}},
                       {{"match": {{"prefix": "/"}}, "requires": ["corp"]}}]}}"#,
        provider(extra)
    ))
}

fn send(h: &Harness, path: &str, headers: &[(&str, &str)]) -> (Action, Stream) {
    let mut s = h.http_stream().expect("stream");
    let mut all = vec![
        (":method", "GET"),
        (":path", path),
        (":authority", "api.test"),
        (":scheme", "https"),
    ];
    all.extend_from_slice(headers);
    let action = s.send_request_headers(&all, true).expect("request headers");
    (action, s)
}

fn bearer(h: &Harness, token: &str) -> (Action, Stream) {
    send(
        h,
        "/orders",
        &[("authorization", &format!("Bearer {token}"))],
    )
}

/// The local response's status and `www-authenticate`, asserting the stream stopped.
fn refused(action: Action, s: &Stream) -> (u32, Option<String>) {
    assert_eq!(action, Action::Pause, "a refused request stops");
    let local = s.local_response().expect("a local response");
    let challenge = local
        .headers
        .iter()
        .find(|(k, _)| k == "www-authenticate")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
    (local.status, challenge)
}

fn assert_invalid(h: &Harness, token: &str, description: &str) {
    let (action, s) = bearer(h, token);
    let (status, challenge) = refused(action, &s);
    assert_eq!(status, 401);
    assert_eq!(
        challenge.as_deref(),
        Some(
            format!(
                "Bearer realm=\"api.test\", error=\"invalid_token\", error_description=\"{description}\""
            )
            .as_str()
        )
    );
    let body = s.local_response().expect("local").body;
    assert_eq!(String::from_utf8_lossy(&body), format!("{description}\n"));
}

fn denied(h: &Harness, reason: &str) -> Option<i64> {
    h.metric(&format!(
        "provider=.=corp;.;reason=.={reason};.;jwt_authn_denied_total"
    ))
}

#[test]
fn rs256_es256_and_eddsa_tokens_verify_and_publish_their_claims() {
    let h = corp(
        r#", "claim_to_headers": [{"header_name": "x-jwt-claim-sub", "claim_name": "sub"},
                                    {"header_name": "x-groups", "claim_name": "groups"},
                                    {"header_name": "x-tier", "claim_name": "tier.level"}]"#,
    );
    let claims = claims(&h);
    for token in [
        rs256("rsa-1", &claims),
        es256("ec-1", &claims),
        eddsa("ed-1", &claims),
    ] {
        let (action, s) = bearer(&h, &token);
        assert_eq!(action, Action::Continue, "{:?}", s.local_response());
        assert_eq!(
            s.request_header("authorization"),
            None,
            "stripped by default"
        );
        assert_eq!(
            s.request_header("x-jwt-claim-sub").as_deref(),
            Some("alice")
        );
        assert_eq!(s.request_header("x-groups").as_deref(), Some("dev,ops"));
        assert_eq!(s.request_header("x-tier").as_deref(), Some("3"));
        assert_eq!(
            s.filter_state("wasmesh.jwt.sub").as_deref(),
            Some(&b"alice"[..])
        );
        assert_eq!(
            s.filter_state("wasmesh.jwt.provider").as_deref(),
            Some(&b"corp"[..])
        );
        let published: Value =
            serde_json::from_slice(&s.filter_state("wasmesh.jwt.claims").expect("claims"))
                .expect("JSON");
        assert_eq!(published, claims);
    }
    assert_eq!(
        h.metric("provider=.=corp;.;jwt_authn_allowed_total"),
        Some(3)
    );
}

#[test]
fn keys_without_a_kid_in_the_token_are_tried_by_algorithm() {
    let h = corp("");
    let token = jws(&json!({"alg": "ES256"}), &claims(&h), |m| {
        let sig: p256::ecdsa::Signature = signers().ec.sign(m);
        sig.to_bytes().to_vec()
    });
    assert_eq!(bearer(&h, &token).0, Action::Continue);
}

#[test]
fn expired_and_not_yet_valid_tokens_honour_the_clock_skew() {
    let h = corp(r#", "clock_skew_seconds": 30"#);
    let t = now(&h);
    let with = |exp: u64, nbf: u64| {
        let mut c = claims(&h);
        c["exp"] = json!(exp);
        c["nbf"] = json!(nbf);
        eddsa("ed-1", &c)
    };
    assert_eq!(
        bearer(&h, &with(t - 29, t)).0,
        Action::Continue,
        "within the skew"
    );
    assert_invalid(&h, &with(t - 30, t), "the token is expired");
    assert_eq!(bearer(&h, &with(t + 60, t + 30)).0, Action::Continue);
    assert_invalid(&h, &with(t + 60, t + 31), "the token is not valid yet");

    // The same token, valid now, expires as the clock moves.
    let token = with(t + 100, t);
    assert_eq!(bearer(&h, &token).0, Action::Continue);
    h.advance(Duration::from_secs(129));
    assert_eq!(bearer(&h, &token).0, Action::Continue);
    h.advance(Duration::from_secs(1));
    assert_invalid(&h, &token, "the token is expired");
    assert_eq!(denied(&h, "expired"), Some(2));
    assert_eq!(denied(&h, "not_yet_valid"), Some(1));
}

#[test]
fn wrong_issuer_or_audience_is_refused() {
    let h = corp("");
    let mut c = claims(&h);
    c["iss"] = json!("https://elsewhere.test");
    assert_invalid(
        &h,
        &rs256("rsa-1", &c),
        "the token's issuer is not accepted",
    );
    let mut c = claims(&h);
    c["aud"] = json!(["web", "mobile"]);
    assert_invalid(
        &h,
        &es256("ec-1", &c),
        "the token's audience is not accepted",
    );
    let mut c = claims(&h);
    c["aud"] = json!(["web", "api"]);
    assert_eq!(bearer(&h, &es256("ec-1", &c)).0, Action::Continue);
    assert_eq!(denied(&h, "bad_issuer"), Some(1));
    assert_eq!(denied(&h, "bad_audience"), Some(1));
}

#[test]
fn bad_signatures_and_unknown_kids_are_refused() {
    let h = corp("");
    let c = claims(&h);
    // Signed by another Ed25519 key under a known kid.
    let other = ed25519_dalek::SigningKey::generate(&mut OsRng);
    assert_invalid(
        &h,
        &eddsa_with(&other, "ed-1", &c),
        "the token's signature does not verify",
    );
    // A valid token whose payload was swapped.
    let good = rs256("rsa-1", &c);
    let parts: Vec<&str> = good.split('.').collect();
    let mut forged = c.clone();
    forged["sub"] = json!("admin");
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        b64(forged.to_string().as_bytes()),
        parts[2]
    );
    assert_invalid(&h, &swapped, "the token's signature does not verify");
    // A kid the set does not have.
    assert_invalid(
        &h,
        &eddsa_with(&other, "ed-2", &c),
        "the token's key id is unknown",
    );
    // Garbage.
    assert_invalid(&h, "not.a.token", "the token is malformed");
    assert_eq!(denied(&h, "bad_signature"), Some(2));
    assert_eq!(denied(&h, "unknown_kid"), Some(1));
    assert_eq!(denied(&h, "malformed"), Some(1));
}

#[test]
fn algorithm_confusion_is_refused() {
    let h = corp("");
    let c = claims(&h);
    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","kid":"rsa-1"}"#),
        b64(c.to_string().as_bytes())
    );
    assert_invalid(&h, &unsigned, "the token's algorithm is not accepted");
    // HS256 keyed with what an attacker knows: the published public key set.
    let secret = jwks().to_string();
    let hs256 = jws(&json!({"alg": "HS256", "kid": "rsa-1"}), &c, |m| {
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
        mac.update(m);
        mac.finalize().into_bytes().to_vec()
    });
    assert_invalid(&h, &hs256, "the token's algorithm is not accepted");
    // A real ES256 signature presented under the RSA key's kid: that key only does RS256.
    let crossed = jws(&json!({"alg": "ES256", "kid": "rsa-1"}), &c, |m| {
        let sig: p256::ecdsa::Signature = signers().ec.sign(m);
        sig.to_bytes().to_vec()
    });
    assert_invalid(&h, &crossed, "the token's signature does not verify");
    assert_eq!(denied(&h, "unsupported_alg"), Some(2));
}

#[test]
fn missing_tokens_and_allow_missing() {
    let h = load(&format!(
        r#"{{"providers": {{"corp": {}}},
             "rules": [{{"match": {{"path": "/maybe"}}, "requires": ["corp"], "allow_missing": true}},
                       {{"match": {{"prefix": "/public"}}}},
                       {{"match": {{"prefix": "/"}}, "requires": ["corp"]}}]}}"#,
        provider("")
    ));
    let (action, s) = send(&h, "/orders", &[]);
    let (status, challenge) = refused(action, &s);
    assert_eq!(status, 401);
    assert_eq!(
        challenge.as_deref(),
        Some("Bearer realm=\"wasmesh\""),
        "no error code without a token (RFC 6750 §3.1)"
    );
    // A header in another scheme is no token either.
    let (action, s) = send(&h, "/orders", &[("authorization", "Basic YTpi")]);
    assert_eq!(refused(action, &s).0, 401);
    assert_eq!(denied(&h, "missing"), Some(2));

    assert_eq!(send(&h, "/public/x", &[]).0, Action::Continue);
    assert_eq!(send(&h, "/maybe", &[]).0, Action::Continue);
    assert_eq!(
        send(&h, "/maybe?x=1", &[]).0,
        Action::Continue,
        "query ignored"
    );
    let (action, s) = send(&h, "/maybe", &[("authorization", "Bearer x.y.z")]);
    assert_eq!(
        refused(action, &s).0,
        401,
        "a present token must still verify"
    );
    let token = eddsa("ed-1", &claims(&h));
    let (action, s) = send(
        &h,
        "/maybe",
        &[("authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(action, Action::Continue);
    assert_eq!(
        s.filter_state("wasmesh.jwt.sub").as_deref(),
        Some(&b"alice"[..])
    );
}

#[test]
fn tokens_from_other_headers_and_query_parameters_forwarded_or_stripped() {
    let h = load(&format!(
        r#"{{"providers": {{
              "header": {},
              "param": {}}},
            "rules": [{{"match": {{"prefix": "/h"}}, "requires": ["header"]}},
                      {{"match": {{"prefix": "/p"}}, "requires": ["param"]}}]}}"#,
        provider(r#", "from_headers": [{"name": "X-Token", "value_prefix": ""}], "forward": true"#),
        provider(r#", "from_params": ["jwt"]"#),
    ));
    let token = eddsa("ed-1", &claims(&h));
    let (action, s) = send(&h, "/h", &[("x-token", &token)]);
    assert_eq!(action, Action::Continue);
    assert_eq!(
        s.request_header("x-token").as_deref(),
        Some(token.as_str()),
        "forwarded"
    );
    let (action, _) = send(&h, "/h", &[("authorization", &format!("Bearer {token}"))]);
    assert_eq!(
        action,
        Action::Pause,
        "the header provider does not look at Authorization"
    );

    let (action, s) = send(&h, &format!("/p/x?a=1&jwt={token}&b=2"), &[]);
    assert_eq!(action, Action::Continue);
    assert_eq!(
        s.request_header(":path").as_deref(),
        Some("/p/x?a=1&b=2"),
        "stripped"
    );
    let (action, _) = send(&h, "/p/x", &[("x-token", &token)]);
    assert_eq!(action, Action::Pause);
}

#[test]
fn the_default_locations_are_bearer_and_access_token() {
    let h = corp(r#", "forward": true"#);
    let token = es256("ec-1", &claims(&h));
    let (action, s) = send(&h, &format!("/orders?access_token={token}"), &[]);
    assert_eq!(action, Action::Continue);
    assert!(
        s.request_header(":path")
            .is_some_and(|p| p.contains("access_token=")),
        "forwarded"
    );
}

#[test]
fn claim_headers_cannot_be_forged_by_the_client() {
    let h = corp(
        r#", "claim_to_headers": [{"header_name": "x-jwt-claim-sub", "claim_name": "sub"}, {"header_name": "x-absent", "claim_name": "nope"}]"#,
    );
    let (action, s) = send(
        &h,
        "/public/x",
        &[("x-jwt-claim-sub", "admin"), ("x-absent", "1")],
    );
    assert_eq!(action, Action::Continue);
    assert_eq!(
        s.request_header("x-jwt-claim-sub"),
        None,
        "removed where no token is needed"
    );
    let token = rs256("rsa-1", &claims(&h));
    let (action, s) = send(
        &h,
        "/orders",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-jwt-claim-sub", "admin"),
            ("x-absent", "1"),
        ],
    );
    assert_eq!(action, Action::Continue);
    assert_eq!(s.request_header_values("x-jwt-claim-sub"), ["alice"]);
    assert_eq!(
        s.request_header("x-absent"),
        None,
        "an absent claim sets nothing"
    );
}

#[test]
fn a_rule_may_accept_any_of_several_providers() {
    let other = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let h = load(&format!(
        r#"{{"providers": {{
              "corp": {},
              "partner": {{"issuer": "https://partner.test", "local_jwks": {{"keys": [{}]}}}}}},
            "rules": [{{"match": {{"prefix": "/shared"}}, "requires": ["corp", "partner"]}},
                      {{"match": {{"prefix": "/"}}, "requires": ["corp"]}}]}}"#,
        provider(""),
        ed_jwk("partner-1", &other),
    ));
    let partner = eddsa_with(
        &other,
        "partner-1",
        &json!({"iss": "https://partner.test", "sub": "bob", "exp": now(&h) + 60}),
    );
    let (action, s) = send(
        &h,
        "/shared/x",
        &[("authorization", &format!("Bearer {partner}"))],
    );
    assert_eq!(action, Action::Continue);
    assert_eq!(
        s.filter_state("wasmesh.jwt.provider").as_deref(),
        Some(&b"partner"[..])
    );
    let (action, s) = send(
        &h,
        "/private",
        &[("authorization", &format!("Bearer {partner}"))],
    );
    assert_eq!(refused(action, &s).0, 401, "only corp here");
    let corp = eddsa("ed-1", &claims(&h));
    let (action, s) = send(
        &h,
        "/shared/x",
        &[("authorization", &format!("Bearer {corp}"))],
    );
    assert_eq!(action, Action::Continue);
    assert_eq!(
        s.filter_state("wasmesh.jwt.provider").as_deref(),
        Some(&b"corp"[..])
    );
    assert_eq!(
        h.metric("provider=.=partner;.;jwt_authn_allowed_total"),
        Some(1)
    );
}

fn remote(refresh: &str) -> Harness {
    load(&format!(
        r#"{{"providers": {{"corp": {{"issuer": "{ISSUER}",
              "remote_jwks": {{"cluster": "idp", "path": "/.well-known/jwks.json",
                               "authority": "idp.test", "timeout": "2s", "jwks_refresh": "{refresh}"}}}}}},
             "rules": [{{"match": {{"prefix": "/"}}, "requires": ["corp"]}}], "realm": "api.test"}}"#
    ))
}

fn fetches(h: &Harness, result: &str) -> Option<i64> {
    h.metric(&format!(
        "provider=.=corp;.;result=.={result};.;jwt_authn_jwks_fetches_total"
    ))
}

#[test]
fn remote_jwks_is_fetched_refreshed_rotated_and_kept_on_failure() {
    let h = remote("60s");
    assert_eq!(h.tick_period(), Some(Duration::from_secs(1)));
    assert!(
        h.callouts().is_empty(),
        "fetched on the first tick, not while configuring"
    );
    h.tick().expect("first tick");
    let pending = h.pending_callouts();
    assert_eq!(pending.len(), 1, "fetched on the first tick");
    let fetch = &pending[0];
    assert_eq!(fetch.upstream, "idp");
    assert_eq!(fetch.header(":method").as_deref(), Some("GET"));
    assert_eq!(
        fetch.header(":path").as_deref(),
        Some("/.well-known/jwks.json")
    );
    assert_eq!(fetch.header(":authority").as_deref(), Some("idp.test"));
    assert_eq!(fetch.timeout, Duration::from_secs(2));

    // Before the keys arrive: 503, not a verdict on the token.
    let token = eddsa("ed-1", &claims(&h));
    let (action, s) = bearer(&h, &token);
    assert_eq!(refused(action, &s), (503, None));
    let local = s.local_response().expect("local");
    assert!(
        local
            .headers
            .iter()
            .any(|(k, v)| k == "retry-after" && v == b"1")
    );
    assert_eq!(denied(&h, "jwks_unavailable"), Some(1));
    h.tick().expect("tick");
    assert_eq!(
        h.callouts().len(),
        1,
        "no second fetch while one is under way"
    );

    h.respond(
        fetch.id,
        200,
        &[("content-type", "application/json")],
        jwks().to_string().as_bytes(),
    )
    .expect("respond");
    assert_eq!(bearer(&h, &token).0, Action::Continue);
    assert_eq!(fetches(&h, "ok"), Some(1));
    assert!(
        h.logs()
            .iter()
            .any(|l| l.level == LogLevel::Info && l.message == "provider corp: loaded 3 keys"),
        "{:?}",
        h.logs()
    );

    // Not refreshed before jwks_refresh, refreshed after.
    h.advance(Duration::from_secs(59));
    h.tick().expect("tick");
    assert!(h.pending_callouts().is_empty());
    h.advance(Duration::from_secs(1));
    h.tick().expect("tick");
    let refresh = h.pending_callouts();
    assert_eq!(refresh.len(), 1, "refreshed after 60s");

    // A failed refresh keeps the keys loaded before.
    h.respond(refresh[0].id, 500, &[], b"oops")
        .expect("respond");
    assert_eq!(fetches(&h, "failed"), Some(1));
    assert!(h.logs().iter().any(|l| l.level == LogLevel::Warn
        && l.message == "provider corp: JWKS fetch failed: the JWKS endpoint answered 500; keeping the keys loaded before"));
    let token = eddsa("ed-1", &claims(&h));
    assert_eq!(bearer(&h, &token).0, Action::Continue);

    // Retried a second later; this time the key has been rotated.
    h.advance(Duration::from_secs(1));
    h.tick().expect("tick");
    let retry = h.pending_callouts();
    assert_eq!(retry.len(), 1, "retried after a failure");
    let rotated = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let new_set = json!({"keys": [ed_jwk("ed-2", &rotated)]});
    h.respond(retry[0].id, 200, &[], new_set.to_string().as_bytes())
        .expect("respond");
    assert_eq!(fetches(&h, "ok"), Some(2));
    assert_invalid(&h, &token, "the token's key id is unknown");
    assert_eq!(
        bearer(&h, &eddsa_with(&rotated, "ed-2", &claims(&h))).0,
        Action::Continue
    );
}

#[test]
fn failed_fetches_back_off_and_bad_documents_count_as_failures() {
    let h = remote("30s");
    h.tick().expect("first tick");
    let first = h.pending_callouts();
    h.fail_callout(first[0].id).expect("fail");
    assert!(h.logs().iter().any(|l| l.message
        == "provider corp: JWKS fetch failed: the fetch failed or timed out; no keys yet"));
    h.tick().expect("tick");
    assert!(h.pending_callouts().is_empty(), "not again at once");
    h.advance(Duration::from_secs(1));
    h.tick().expect("tick");
    let second = h.pending_callouts();
    assert_eq!(second.len(), 1, "after 1s");
    h.respond(second[0].id, 200, &[], b"<html>not json</html>")
        .expect("respond");
    h.advance(Duration::from_secs(1));
    h.tick().expect("tick");
    assert!(h.pending_callouts().is_empty(), "the back-off doubled");
    h.advance(Duration::from_secs(1));
    h.tick().expect("tick");
    let third = h.pending_callouts();
    assert_eq!(third.len(), 1, "after 2s");
    h.respond(
        third[0].id,
        200,
        &[],
        br#"{"keys": [{"kty": "oct", "k": "AAAA"}]}"#,
    )
    .expect("respond");
    assert_eq!(fetches(&h, "failed"), Some(3));
    let (action, s) = bearer(&h, &eddsa("ed-1", &claims(&h)));
    assert_eq!(refused(action, &s).0, 503);
}

#[test]
fn an_unanswered_fetch_is_given_up_and_retried() {
    let h = remote("60s");
    h.tick().expect("first tick");
    let lost = h.pending_callouts();
    assert_eq!(lost.len(), 1);
    h.advance(Duration::from_secs(2));
    h.tick().expect("tick");
    assert_eq!(h.callouts().len(), 1, "still waiting within timeout + 1s");
    h.advance(Duration::from_secs(1));
    h.tick().expect("tick");
    assert_eq!(fetches(&h, "failed"), Some(1));
    h.advance(Duration::from_secs(1));
    h.tick().expect("tick");
    let retry = h.pending_callouts();
    assert_eq!(retry.len(), 2, "a new fetch after the back-off");
    // The late answer to the first one is not taken; the new one is.
    h.respond(lost[0].id, 200, &[], jwks().to_string().as_bytes())
        .expect("respond");
    assert_eq!(fetches(&h, "ok"), None);
    let fresh = retry
        .iter()
        .find(|c| c.id != lost[0].id)
        .expect("new fetch");
    h.respond(fresh.id, 200, &[], jwks().to_string().as_bytes())
        .expect("respond");
    assert_eq!(fetches(&h, "ok"), Some(1));
    assert_eq!(bearer(&h, &eddsa("ed-1", &claims(&h))).0, Action::Continue);
}

#[test]
fn an_unknown_cluster_is_retried_on_ticks() {
    let h = Harness::builder(wasmesh_test_programs::filter("jwt-authn"))
        .name("jwt")
        .upstreams(&["other"])
        .plugin_config(
            r#"{"providers": {"corp": {"remote_jwks": {"cluster": "idp", "path": "/jwks"}}}}"#,
        )
        .load()
        .expect("loads; the cluster may appear later");
    h.tick().expect("first tick");
    assert!(h.callouts().is_empty());
    assert_eq!(fetches(&h, "failed"), Some(1));
    assert!(h.logs().iter().any(|l| {
        l.level == LogLevel::Warn
            && l.message
                .starts_with("provider corp: cannot fetch the JWKS from cluster idp")
    }));
    h.advance(Duration::from_secs(1));
    h.tick().expect("tick");
    assert_eq!(fetches(&h, "failed"), Some(2), "tried again");
}

#[test]
fn configuration_errors_name_the_field_in_the_log() {
    for (config, expect) in [
        (
            r#"{"providers": {"a": {}}}"#.to_string(),
            "configuration field `providers.a`: a provider needs local_jwks or remote_jwks",
        ),
        (
            r#"{"providers": {"a": {"local_jwks": {"keys": [{"kty": "oct", "k": "AA"}]}}}}"#
                .to_string(),
            "configuration field `providers.a.local_jwks`: the JWKS has no usable key",
        ),
        (
            format!(
                r#"{{"providers": {{"a": {}}}, "rules": [{{"match": {{"prefix": "/"}}, "requires": ["b"]}}]}}"#,
                provider("")
            ),
            "configuration field `rules[0].requires[0]`: no provider \"b\"",
        ),
        (
            format!(r#"{{"providers": {{"a": {}}}, "rule": []}}"#, provider("")),
            "configuration field `rule`: unknown field `rule`",
        ),
        (
            format!(
                r#"{{"providers": {{"a": {}}}}}"#,
                provider(r#", "jwt_cache_config": {"jwt_max_token_size": 0}"#)
            ),
            "configuration field `providers.a.jwt_cache_config.jwt_max_token_size`: must not be zero",
        ),
        (
            format!(
                r#"{{"providers": {{"a": {}}}}}"#,
                provider(r#", "jwt_cache_config": {"size": 10}"#)
            ),
            "configuration field `providers.a.jwt_cache_config.size`: unknown field `size`",
        ),
        (
            format!(
                r#"{{"providers": {{"a": {}}}}}"#,
                provider(r#", "jwt_cache_config": {"jwt_cache_size": -1}"#)
            ),
            "configuration field `providers.a.jwt_cache_config.jwt_cache_size`: invalid value",
        ),
        ("{".to_string(), "configuration"),
    ] {
        let err = Harness::builder(wasmesh_test_programs::filter("jwt-authn"))
            .name("jwt")
            .plugin_config(config.as_str())
            .load()
            .err()
            .unwrap_or_else(|| panic!("{config} must be refused"));
        assert!(matches!(err, Error::Load { .. }), "{err}");
        assert!(
            err.logs()
                .iter()
                .any(|l| l.level == LogLevel::Error && l.message.starts_with(expect)),
            "{config}: {:?}",
            err.logs()
        );
    }
}

fn lookups(h: &Harness, provider: &str, result: &str) -> Option<i64> {
    h.metric(&format!(
        "provider=.={provider};.;result=.={result};.;jwt_authn_cache_lookups_total"
    ))
}

/// The request as the filter passed it on, and what it published.
#[derive(Debug, PartialEq)]
struct PassedOn {
    headers: HeaderMap,
    /// `wasmesh.jwt.claims`, `.sub`, `.provider`.
    state: [Option<Vec<u8>>; 3],
}

fn passed_on(s: &Stream) -> PassedOn {
    PassedOn {
        headers: s.request_headers(),
        state: [
            "wasmesh.jwt.claims",
            "wasmesh.jwt.sub",
            "wasmesh.jwt.provider",
        ]
        .map(|key| s.filter_state(key)),
    }
}

#[test]
fn a_cached_token_is_passed_on_exactly_as_a_verified_one() {
    let h = corp(
        r#", "claim_to_headers": [{"header_name": "x-jwt-claim-sub", "claim_name": "sub"},
                                    {"header_name": "x-groups", "claim_name": "groups"},
                                    {"header_name": "x-tier", "claim_name": "tier.level"}]"#,
    );
    let claims = claims(&h);
    for token in [
        rs256("rsa-1", &claims),
        es256("ec-1", &claims),
        eddsa("ed-1", &claims),
    ] {
        let request: &[(&str, &str)] = &[
            ("authorization", &format!("Bearer {token}")),
            ("x-jwt-claim-sub", "admin"),
            ("x-other", "kept"),
        ];
        let (action, first) = send(&h, "/orders?x=1", request);
        assert_eq!(action, Action::Continue);
        let (action, second) = send(&h, "/orders?x=1", request);
        assert_eq!(action, Action::Continue);
        let missed = passed_on(&first);
        assert_eq!(passed_on(&second), missed, "hit and miss pass on the same");
        assert_eq!(second.request_header("authorization"), None);
        assert_eq!(second.request_header_values("x-jwt-claim-sub"), ["alice"]);
        let published: Value =
            serde_json::from_slice(missed.state[0].as_deref().expect("claims")).expect("JSON");
        assert_eq!(published, claims);
    }
    // The same from the query parameter: stripped on a hit too.
    let mut c = claims.clone();
    c["jti"] = json!("query");
    let token = rs256("rsa-1", &c);
    let path = format!("/orders?a=1&access_token={token}");
    let (_, first) = send(&h, &path, &[]);
    let (action, second) = send(&h, &path, &[]);
    assert_eq!(action, Action::Continue);
    assert_eq!(passed_on(&second), passed_on(&first));
    assert_eq!(
        second.request_header(":path").as_deref(),
        Some("/orders?a=1")
    );

    assert_eq!(
        lookups(&h, "corp", "miss"),
        Some(4),
        "each token verified once"
    );
    assert_eq!(lookups(&h, "corp", "hit"), Some(4));
    assert_eq!(
        h.metric("provider=.=corp;.;jwt_authn_allowed_total"),
        Some(8)
    );
}

#[test]
fn a_cached_token_is_refused_once_it_expires() {
    let h = corp(r#", "clock_skew_seconds": 30"#);
    let mut c = claims(&h);
    c["exp"] = json!(now(&h) + 100);
    let token = eddsa("ed-1", &c);
    assert_eq!(bearer(&h, &token).0, Action::Continue);
    h.advance(Duration::from_secs(129));
    assert_eq!(
        bearer(&h, &token).0,
        Action::Continue,
        "a hit within the skew"
    );
    assert_eq!(lookups(&h, "corp", "hit"), Some(1));
    h.advance(Duration::from_secs(1));
    assert_invalid(&h, &token, "the token is expired");
    assert_eq!(lookups(&h, "corp", "hit"), Some(2), "refused on a hit");
    // Dropped from the cache: the next time it is looked at in full, and refused again.
    assert_invalid(&h, &token, "the token is expired");
    assert_eq!(lookups(&h, "corp", "hit"), Some(2));
    assert_eq!(lookups(&h, "corp", "miss"), Some(2));
    assert_eq!(denied(&h, "expired"), Some(2));

    // And a token not valid yet is not cached: it passes later, verified then.
    let mut c = claims(&h);
    c["nbf"] = json!(now(&h) + 31);
    let early = eddsa("ed-1", &c);
    assert_invalid(&h, &early, "the token is not valid yet");
    h.advance(Duration::from_secs(1));
    assert_eq!(bearer(&h, &early).0, Action::Continue);
    assert_eq!(lookups(&h, "corp", "miss"), Some(4));
}

#[test]
fn new_keys_empty_the_cache() {
    let h = remote("60s");
    h.tick().expect("first tick");
    let fetch = h.pending_callouts();
    h.respond(fetch[0].id, 200, &[], jwks().to_string().as_bytes())
        .expect("respond");
    let token = eddsa("ed-1", &claims(&h));
    let no_kid = jws(&json!({"alg": "EdDSA"}), &claims(&h), |m| {
        signers().ed.sign(m).to_bytes().to_vec()
    });
    for t in [&token, &token, &no_kid, &no_kid] {
        assert_eq!(bearer(&h, t).0, Action::Continue);
    }
    assert_eq!(lookups(&h, "corp", "hit"), Some(2));
    assert_eq!(lookups(&h, "corp", "miss"), Some(2));

    // The same keys again: the cache is emptied all the same (a refresh is rare; a miss is cheap
    // next to keeping a token a new set may not vouch for).
    h.advance(Duration::from_secs(60));
    h.tick().expect("tick");
    let refresh = h.pending_callouts();
    h.respond(refresh[0].id, 200, &[], jwks().to_string().as_bytes())
        .expect("respond");
    assert_eq!(bearer(&h, &token).0, Action::Continue);
    assert_eq!(lookups(&h, "corp", "miss"), Some(3), "verified again");

    // Rotation that keeps the kid but changes the key: the cached tokens were signed by a
    // key that is gone, and are refused at once.
    h.advance(Duration::from_secs(60));
    h.tick().expect("tick");
    let rotation = h.pending_callouts();
    let rotated = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let new_set = json!({"keys": [ed_jwk("ed-1", &rotated)]});
    h.respond(rotation[0].id, 200, &[], new_set.to_string().as_bytes())
        .expect("respond");
    assert_eq!(fetches(&h, "ok"), Some(3));
    assert_invalid(&h, &token, "the token's signature does not verify");
    assert_invalid(&h, &no_kid, "the token's signature does not verify");
    let fresh = eddsa_with(&rotated, "ed-1", &claims(&h));
    assert_eq!(bearer(&h, &fresh).0, Action::Continue);
    assert_eq!(bearer(&h, &fresh).0, Action::Continue);
    assert_eq!(
        lookups(&h, "corp", "hit"),
        Some(3),
        "only the new token hit"
    );

    // A set without the kid at all.
    h.advance(Duration::from_secs(60));
    h.tick().expect("tick");
    let removal = h.pending_callouts();
    let other = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let new_set = json!({"keys": [ed_jwk("ed-2", &other)]});
    h.respond(removal[0].id, 200, &[], new_set.to_string().as_bytes())
        .expect("respond");
    assert_invalid(&h, &fresh, "the token's key id is unknown");
    assert_eq!(lookups(&h, "corp", "hit"), Some(3));
}

#[test]
fn a_failed_refresh_keeps_the_cache() {
    let h = remote("60s");
    h.tick().expect("first tick");
    let fetch = h.pending_callouts();
    h.respond(fetch[0].id, 200, &[], jwks().to_string().as_bytes())
        .expect("respond");
    let token = eddsa("ed-1", &claims(&h));
    assert_eq!(bearer(&h, &token).0, Action::Continue);
    h.advance(Duration::from_secs(60));
    h.tick().expect("tick");
    let refresh = h.pending_callouts();
    h.respond(refresh[0].id, 503, &[], b"").expect("respond");
    assert_eq!(fetches(&h, "failed"), Some(1));
    assert_eq!(bearer(&h, &token).0, Action::Continue);
    assert_eq!(
        lookups(&h, "corp", "hit"),
        Some(1),
        "the keys stayed, and so did the tokens verified with them"
    );
}

#[test]
fn the_cache_keeps_the_most_recently_used_tokens() {
    let h = corp(r#", "jwt_cache_config": {"jwt_cache_size": 2}"#);
    let token = |sub: &str| {
        let mut c = claims(&h);
        c["sub"] = json!(sub);
        eddsa("ed-1", &c)
    };
    let mut expected = (0, 0);
    for (step, (sub, hit)) in [
        ("t1", false),
        ("t2", false),
        ("t1", true),  // t1 is now the most recently used
        ("t3", false), // t2 makes room
        ("t1", true),
        ("t2", false), // verified again; t3 makes room
        ("t1", true),
        ("t3", false),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(bearer(&h, &token(sub)).0, Action::Continue);
        if hit {
            expected.0 += 1;
        } else {
            expected.1 += 1;
        }
        let seen = (
            lookups(&h, "corp", "hit").unwrap_or(0),
            lookups(&h, "corp", "miss").unwrap_or(0),
        );
        assert_eq!(seen, expected, "step {step}: {sub}");
    }
}

#[test]
fn size_zero_turns_the_cache_off_and_long_tokens_are_not_cached() {
    let h = corp(r#", "jwt_cache_config": {"jwt_cache_size": 0}"#);
    let token = rs256("rsa-1", &claims(&h));
    for _ in 0..3 {
        assert_eq!(bearer(&h, &token).0, Action::Continue);
    }
    assert_eq!(
        h.metric("provider=.=corp;.;jwt_authn_allowed_total"),
        Some(3)
    );
    assert_eq!(lookups(&h, "corp", "hit"), None, "no lookups at all");
    assert_eq!(lookups(&h, "corp", "miss"), None);

    let h = corp(r#", "jwt_cache_config": {"jwt_max_token_size": 400}"#);
    let long = rs256("rsa-1", &claims(&h));
    assert!(
        long.len() > 400,
        "an RS256 signature alone is 342 characters"
    );
    let short = eddsa(
        "ed-1",
        &json!({"iss": ISSUER, "aud": "api", "exp": now(&h) + 60}),
    );
    assert!(short.len() <= 400, "{}", short.len());
    for t in [&long, &long, &short, &short] {
        assert_eq!(bearer(&h, t).0, Action::Continue);
    }
    assert_eq!(lookups(&h, "corp", "miss"), Some(1), "only the short one");
    assert_eq!(lookups(&h, "corp", "hit"), Some(1));
}

#[test]
fn a_forged_token_is_never_served_from_the_cache() {
    let h =
        corp(r#", "claim_to_headers": [{"header_name": "x-jwt-claim-sub", "claim_name": "sub"}]"#);
    let c = claims(&h);
    let good = rs256("rsa-1", &c);
    assert_eq!(bearer(&h, &good).0, Action::Continue);
    assert_eq!(bearer(&h, &good).0, Action::Continue);
    assert_eq!(lookups(&h, "corp", "hit"), Some(1), "cached");

    let (signed, signature) = good.rsplit_once('.').expect("three parts");
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    bytes[0] ^= 1;
    let elsewhere = signers().rsa.sign(b"another message").to_vec();
    let forgeries = [
        // The cached token's header and claims, one bit of the signature flipped.
        format!("{signed}.{}", b64(&bytes)),
        // The same header and claims with the same key's signature of something else.
        format!("{signed}.{}", b64(&elsewhere)),
        // The cached signature under the same claims with one more.
        {
            let mut more = c.clone();
            more["admin"] = json!(true);
            let (header, _) = signed.split_once('.').expect("two parts");
            format!("{header}.{}.{signature}", b64(more.to_string().as_bytes()))
        },
    ];
    for forged in &forgeries {
        for _ in 0..2 {
            assert_invalid(&h, forged, "the token's signature does not verify");
        }
    }
    assert_eq!(
        lookups(&h, "corp", "miss"),
        Some(1 + 2 * forgeries.len() as i64),
        "every forgery looked up, missed and verified in full, every time: none was cached"
    );
    assert_eq!(
        denied(&h, "bad_signature"),
        Some(2 * forgeries.len() as i64)
    );
    // The cached token is untouched by them.
    let (action, s) = bearer(&h, &good);
    assert_eq!(action, Action::Continue);
    assert_eq!(
        s.request_header("x-jwt-claim-sub").as_deref(),
        Some("alice")
    );
    assert_eq!(lookups(&h, "corp", "hit"), Some(2));
}

#[test]
fn each_provider_checks_a_cached_token_against_its_own_issuer_and_audiences() {
    // Two providers with the same keys: a token cached by one is nothing to the other.
    let h = load(&format!(
        r#"{{"providers": {{"api": {}, "web": {{"issuer": "{ISSUER}", "audiences": ["web"], "local_jwks": {}}}}},
             "rules": [{{"match": {{"prefix": "/api"}}, "requires": ["api"]}},
                       {{"match": {{"prefix": "/web"}}, "requires": ["web"]}},
                       {{"match": {{"prefix": "/any"}}, "requires": ["web", "api"]}}],
             "realm": "api.test"}}"#,
        provider(""),
        jwks(),
    ));
    let token = eddsa("ed-1", &claims(&h)); // aud: api
    let auth = format!("Bearer {token}");
    for _ in 0..2 {
        assert_eq!(
            send(&h, "/api", &[("authorization", &auth)]).0,
            Action::Continue
        );
    }
    assert_eq!(lookups(&h, "api", "hit"), Some(1));
    for _ in 0..2 {
        let (action, s) = send(&h, "/web", &[("authorization", &auth)]);
        assert_eq!(refused(action, &s).0, 401);
    }
    assert_eq!(lookups(&h, "web", "miss"), Some(2), "never cached for web");
    assert_eq!(lookups(&h, "web", "hit"), None);
    // Where either will do, web refuses it in full and api accepts it from its cache.
    let (action, s) = send(&h, "/any", &[("authorization", &auth)]);
    assert_eq!(action, Action::Continue);
    assert_eq!(
        s.filter_state("wasmesh.jwt.provider").as_deref(),
        Some(&b"api"[..])
    );
    assert_eq!(lookups(&h, "web", "miss"), Some(3));
    assert_eq!(lookups(&h, "api", "hit"), Some(2));
}
