//! The stock jwt-authn filter in the real proxy: it fetches its JWKS from a cluster of the
//! proxy (a real upstream serving the key set), then lets a request with a valid EdDSA token
//! through with the token stripped and its subject in a header, and answers 401 with an
//! RFC 6750 challenge to requests without a token, with an expired one, or with one signed by
//! another key — which never reach the upstream.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use rcgen::SigningKey;
use support::*;

/// base64url without padding (RFC 7515 §2).
fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn token(key: &rcgen::KeyPair, kid: &str, claims: &serde_json::Value) -> String {
    let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = key.sign(input.as_bytes()).expect("sign");
    format!("{input}.{}", b64(&signature))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Successful JWKS fetches so far, from the proxy's `/stats`.
fn fetched(stats: &str) -> usize {
    let name = "wasmesh_filter_jwt_authn_jwks_fetches_total{plugin=\"jwt\",provider=\"corp\",result=\"ok\"} ";
    stats
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn base64url() {
    assert_eq!(b64(b""), "");
    assert_eq!(b64(b"f"), "Zg");
    assert_eq!(b64(b"fo"), "Zm8");
    assert_eq!(b64(b"foo"), "Zm9v");
    assert_eq!(b64(&[0xfb, 0xff]), "-_8");
}

#[tokio::test]
async fn jwt_authn_verifies_tokens_against_a_fetched_jwks() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519 key");
    let jwks = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1",
                                            "x": b64(key.public_key_raw())}]})
    .to_string();
    let idp = Upstream::with(move |seen: Seen| {
        let jwks = jwks.clone();
        async move {
            match seen.path.as_str() {
                "/.well-known/jwks.json" => reply(StatusCode::OK, "idp", &jwks),
                _ => reply(StatusCode::NOT_FOUND, "idp", "no"),
            }
        }
    })
    .await;
    let backend = Upstream::named("backend").await;
    let base = simple_config(
        &format!("  - name: idp\n    endpoints: [\"{}\"]\n", idp.addr),
        &[backend.addr],
        "            filter_chain: auth\n",
    );
    let yaml = format!(
        r#"{base}
filter_chains:
  - name: auth
    plugins:
      - name: jwt
        source: "file://{wasm}"
        config:
          realm: api.test
          providers:
            corp:
              issuer: https://idp.test
              audiences: [api]
              remote_jwks: {{ cluster: idp, path: /.well-known/jwks.json, jwks_refresh: 1m }}
              claim_to_headers: [{{ header_name: x-jwt-claim-sub, claim_name: sub }}]
          rules:
            - match: {{ prefix: /public }}
            - match: {{ prefix: / }}
              requires: [corp]
"#,
        wasm = wasmesh_test_programs::filter("jwt-authn"),
    );
    let proxy = Proxy::start(&yaml);
    let addr = proxy.addr("main");
    let claims = serde_json::json!({"iss": "https://idp.test", "aud": "api", "sub": "alice",
                                    "exp": now() + 300});
    let good = format!("Bearer {}", token(&key, "k1", &claims));

    // Each VM replica (one per worker) fetches the key set by a callout on its first tick.
    let admin = proxy.admin.expect("admin");
    let replicas = std::thread::available_parallelism().map_or(1, |n| n.get());
    let loaded = eventually(Duration::from_secs(20), async || {
        fetched(&get_admin_text(admin, "/stats")) >= replicas
    })
    .await;
    assert!(loaded, "the JWKS was not loaded by every replica");
    assert!(idp.hits() >= replicas, "fetched from the idp cluster");
    for _ in 0..replicas * 2 {
        let got = send(
            addr,
            request("GET", "/orders", &[("authorization", &good)]),
            false,
        )
        .await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    }
    let seen = backend.last_seen();
    assert_eq!(seen.headers["x-jwt-claim-sub"], "alice");
    assert!(
        !seen.headers.contains_key("authorization"),
        "the token is not forwarded"
    );

    let hits = backend.hits();
    let got = get(addr, "/orders").await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        got.header("www-authenticate"),
        Some("Bearer realm=\"api.test\"")
    );

    let mut expired = claims.clone();
    expired["exp"] = serde_json::json!(now() - 3600);
    let got = send(
        addr,
        request(
            "GET",
            "/orders",
            &[(
                "authorization",
                &format!("Bearer {}", token(&key, "k1", &expired)),
            )],
        ),
        false,
    )
    .await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        got.header("www-authenticate"),
        Some(
            "Bearer realm=\"api.test\", error=\"invalid_token\", error_description=\"the token is expired\""
        )
    );

    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519 key");
    let forged = format!("Bearer {}", token(&other, "k1", &claims));
    let got = send(
        addr,
        request(
            "GET",
            "/orders",
            &[("authorization", &forged), ("x-jwt-claim-sub", "admin")],
        ),
        false,
    )
    .await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    assert!(
        got.header("www-authenticate")
            .is_some_and(|c| c.contains("signature does not verify")),
        "{:?}",
        got.headers
    );
    assert_eq!(
        backend.hits(),
        hits,
        "refused requests never reach the upstream"
    );

    let got = send(
        addr,
        request("GET", "/public/doc", &[("x-jwt-claim-sub", "admin")]),
        false,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(
        !backend.last_seen().headers.contains_key("x-jwt-claim-sub"),
        "a client cannot forge the claim header"
    );

    let stats = get_admin_text(admin, "/stats");
    for line in [
        "wasmesh_filter_jwt_authn_allowed_total{plugin=\"jwt\",provider=\"corp\"}",
        "wasmesh_filter_jwt_authn_denied_total{plugin=\"jwt\",provider=\"corp\",reason=\"missing\"} 1",
        "wasmesh_filter_jwt_authn_denied_total{plugin=\"jwt\",provider=\"corp\",reason=\"expired\"} 1",
        "wasmesh_filter_jwt_authn_denied_total{plugin=\"jwt\",provider=\"corp\",reason=\"bad_signature\"} 1",
        "wasmesh_filter_jwt_authn_jwks_fetches_total{plugin=\"jwt\",provider=\"corp\",result=\"ok\"}",
    ] {
        assert!(stats.contains(line), "no {line} in\n{stats}");
    }
}
