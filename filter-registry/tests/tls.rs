//! The registry over TLS and the client's HTTPS: certificate verification with an extra CA,
//! the plain-HTTP-first probe of loopback registries never downgrading a TLS server, and the
//! token service over HTTPS.

mod support;

use std::collections::BTreeMap;

use support::{module, pki};
use wasmesh_registry::auth::{Credentials, DockerConfig};
use wasmesh_registry::client::{Client, ClientConfig, ClientError, ImageRef};
use wasmesh_registry::server::{RegistryConfig, ServeError, TlsFiles, serve_tls};

#[tokio::test]
async fn push_and_pull_over_tls_with_an_extra_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path());
    let reg = serve_tls(
        RegistryConfig {
            root: dir.path().join("store"),
            listen: "127.0.0.1:0".parse().unwrap(),
            push_token: Some("p".into()),
            pull_token: None,
        },
        TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        },
    )
    .await
    .unwrap();
    let port = reg.local_addr().port();

    // Credentials from a Docker config: the 401 names an https realm, the token service
    // answers over TLS too.
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        serde_json::json!({"auths": {
            format!("127.0.0.1:{port}"): {"username": "u", "password": "p"},
            format!("localhost:{port}"): {"username": "u", "password": "p"},
        }})
        .to_string(),
    )
    .unwrap();
    let c = Client::new(ClientConfig {
        ca_file: Some(ca.clone()),
        credentials: Credentials::DockerConfig(DockerConfig::load(&config).unwrap()),
        ..ClientConfig::default()
    })
    .unwrap();
    let wasm = module(3000, 1);
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let r = ImageRef::parse(&format!("{host}/filters/tls:v1")).unwrap();
        let d = c.push(&r, &wasm, &BTreeMap::new()).await.unwrap();
        let pulled = c.pull(&r).await.unwrap();
        assert_eq!(
            (pulled.manifest_digest, pulled.wasm.clone()),
            (d, wasm.clone())
        );
        assert_eq!(c.list_tags(&r).await.unwrap(), vec!["v1"]);
    }

    // Without the CA: the certificate is refused, and the client does not fall back to
    // plain HTTP against a TLS server.
    let untrusting = Client::new(ClientConfig::default()).unwrap();
    let r = ImageRef::parse(&format!("127.0.0.1:{port}/filters/tls:v1")).unwrap();
    let err = untrusting.pull(&r).await.unwrap_err();
    assert!(matches!(err, ClientError::Http { .. }), "{err}");
    assert!(
        err.to_string().contains("https://") && err.to_string().contains("certificate"),
        "{err}"
    );

    // A CA file that holds no certificate is a configuration error.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let err = Client::new(ClientConfig {
        ca_file: Some(empty),
        ..ClientConfig::default()
    })
    .err()
    .unwrap();
    assert!(matches!(err, ClientError::Config(_)), "{err}");
    reg.shutdown().await;

    // Unreadable certificate files are named.
    let err = serve_tls(
        RegistryConfig {
            root: dir.path().join("store"),
            listen: "127.0.0.1:0".parse().unwrap(),
            push_token: None,
            pull_token: None,
        },
        TlsFiles {
            cert: dir.path().join("missing.pem"),
            key,
        },
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, ServeError::Tls(_)), "{err}");
    assert!(err.to_string().contains("missing.pem"), "{err}");
}
