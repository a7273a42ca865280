//! Client authentication: Docker `config.json` credentials and identity tokens through the
//! registry's token service, static tokens, and hostile challenges (SSRF guard, no loops).

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use support::{module, registry_with};
use wasmesh_registry::auth::Credentials;
use wasmesh_registry::client::{Client, ClientConfig, ClientError, ImageRef};

fn client_with(credentials: Credentials) -> Client {
    Client::new(ClientConfig {
        credentials,
        ..ClientConfig::default()
    })
    .unwrap()
}

fn docker_config(dir: &std::path::Path, entries: serde_json::Value) -> Credentials {
    let path = dir.join(format!("config-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&path, serde_json::json!({ "auths": entries }).to_string()).unwrap();
    Credentials::load(Some(&path), None).unwrap()
}

#[tokio::test]
async fn docker_config_credentials_through_the_token_service() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry_with(&dir.path().join("store"), Some("p"), Some("q")).await;
    let host = reg.local_addr().to_string();
    let r = ImageRef::parse(&format!("{host}/filters/auth:v1")).unwrap();
    let wasm = module(500, 1);

    // `auth` (base64 user:password) with the push token: push and pull.
    let pusher = client_with(docker_config(
        dir.path(),
        serde_json::json!({ format!("http://{host}/"): {"auth": BASE64.encode("me:p")} }),
    ));
    let d = pusher.push(&r, &wasm, &BTreeMap::new()).await.unwrap();
    assert_eq!(pusher.pull(&r).await.unwrap().wasm, wasm);
    assert_eq!(pusher.resolve(&r).await.unwrap(), d);
    assert_eq!(pusher.list_tags(&r).await.unwrap(), vec!["v1"]);

    // An identity token (an OAuth2 refresh token) with the pull token: pull only.
    let puller = client_with(docker_config(
        dir.path(),
        serde_json::json!({ host.clone(): {"identitytoken": "q"} }),
    ));
    assert_eq!(puller.pull(&r).await.unwrap().wasm, wasm);
    let err = puller
        .push(&r, &module(10, 2), &BTreeMap::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized { .. }), "{err}");

    // Wrong password: the token service says no, and the error says so.
    let wrong = client_with(docker_config(
        dir.path(),
        serde_json::json!({ host.clone(): {"username": "me", "password": "nope"} }),
    ));
    let err = wrong.pull(&r).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Unauthorized { detail, .. } if detail.contains("token service refused")),
        "{err}"
    );
    // Credentials for another registry only: anonymous here, and refused.
    let elsewhere = client_with(docker_config(
        dir.path(),
        serde_json::json!({ "other.example": {"auth": BASE64.encode("me:q")} }),
    ));
    assert!(matches!(
        elsewhere.pull(&r).await.unwrap_err(),
        ClientError::Unauthorized { .. }
    ));

    // A static token goes straight in as Bearer; a token from the flag wins over a file.
    let token = client_with(Credentials::load(None, Some("q".into())).unwrap());
    assert_eq!(token.pull(&r).await.unwrap().manifest_digest, d);
    reg.shutdown().await;
}

/// A hostile "registry": every request is answered `401` with the challenge `challenge`
/// makes from the server's own address, except `/token`, answered 200 with `token_body`.
/// Counts requests per kind.
struct Hostile {
    addr: std::net::SocketAddr,
    registry_hits: Arc<AtomicUsize>,
    token_hits: Arc<AtomicUsize>,
}

async fn hostile(
    challenge: impl Fn(std::net::SocketAddr) -> String,
    token_body: &'static str,
) -> Hostile {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let challenge = challenge(addr);
    let registry_hits = Arc::new(AtomicUsize::new(0));
    let token_hits = Arc::new(AtomicUsize::new(0));
    let (rh, th) = (registry_hits.clone(), token_hits.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (challenge, rh, th) = (challenge.clone(), rh.clone(), th.clone());
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (challenge, rh, th) = (challenge.clone(), rh.clone(), th.clone());
                        async move {
                            let mut resp = Response::new(Full::new(Bytes::new()));
                            if req.uri().path() == "/token" {
                                th.fetch_add(1, Ordering::SeqCst);
                                *resp.body_mut() =
                                    Full::new(Bytes::from_static(token_body.as_bytes()));
                            } else {
                                rh.fetch_add(1, Ordering::SeqCst);
                                *resp.status_mut() = StatusCode::UNAUTHORIZED;
                                resp.headers_mut()
                                    .insert("www-authenticate", challenge.parse().unwrap());
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Hostile {
        addr,
        registry_hits,
        token_hits,
    }
}

#[tokio::test]
async fn hostile_challenges_are_refused_without_loops() {
    let dir = tempfile::tempdir().unwrap();
    let creds = docker_config(
        dir.path(),
        serde_json::json!({ "127.0.0.1": {"auth": BASE64.encode("me:secret")} }),
    );
    for (realm, reason) in [
        ("file:///etc/passwd", "only http and https"),
        ("gopher://127.0.0.1:70/x", "only http and https"),
        ("http://169.254.169.254/latest/meta-data/iam", "link-local"),
        (
            "https://metadata.google.internal/computeMetadata/v1/",
            "metadata",
        ),
        ("http://auth.example/token", "plain-HTTP realm"),
    ] {
        let h = hostile(|_| format!(r#"Bearer realm="{realm}",service="x""#), "{}").await;
        let r = ImageRef::parse(&format!("{}/x:v1", h.addr)).unwrap();
        let err = client_with(creds.clone()).pull(&r).await.unwrap_err();
        assert!(
            matches!(&err, ClientError::Realm { reason: why, .. } if why.contains(reason)),
            "{realm}: {err}"
        );
        assert_eq!(h.registry_hits.load(Ordering::SeqCst), 1, "{realm}");
    }

    // A token service whose tokens never work: exactly one retry, then a clear error.
    let h = hostile(
        |addr| {
            format!(r#"Bearer realm="http://{addr}/token",service="x",scope="repository:x:pull""#)
        },
        r#"{"token":"useless","expires_in":300}"#,
    )
    .await;
    let r = ImageRef::parse(&format!("{}/x:v1", h.addr)).unwrap();
    let c = client_with(creds.clone());
    let err = c.pull(&r).await.unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized { .. }), "{err}");
    assert_eq!(
        h.registry_hits.load(Ordering::SeqCst),
        2,
        "one try, one retry"
    );
    assert_eq!(h.token_hits.load(Ordering::SeqCst), 1);
    // The refused token is not kept: the next call asks the token service again.
    let _ = c.pull(&r).await.unwrap_err();
    assert_eq!(h.token_hits.load(Ordering::SeqCst), 2);

    // A token service answering nonsense.
    let h = hostile(
        |addr| format!(r#"Bearer realm="http://{addr}/token""#),
        "<html>not json</html>",
    )
    .await;
    let r = ImageRef::parse(&format!("{}/x:v1", h.addr)).unwrap();
    let err = client_with(creds.clone()).pull(&r).await.unwrap_err();
    assert!(err.to_string().contains("not JSON"), "{err}");

    // A challenge with no scheme the client knows: refused, no retry.
    let h = hostile(|_| "Negotiate abc".to_string(), "{}").await;
    let r = ImageRef::parse(&format!("{}/x:v1", h.addr)).unwrap();
    let err = client_with(creds).pull(&r).await.unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized { .. }), "{err}");
    assert_eq!(h.registry_hits.load(Ordering::SeqCst), 1);
}
