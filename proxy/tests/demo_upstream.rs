//! The demo upstream's benchmark modes (`wasmesh upstream --body-bytes N --tls-cert … --client-ca
//! …`): a fixed answer whatever the request carried, over HTTP/1.1 and h2c, and TLS that lets in
//! only clients with a certificate from the given CA.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use support::*;
use wasmesh_proxy::config::{Alpn, CertificateFiles, ListenerTls};
use wasmesh_proxy::demo::{UpstreamOptions, spawn_upstream_with};

fn fixed(n: usize) -> Bytes {
    Bytes::from(vec![b'x'; n])
}

#[tokio::test]
async fn fixed_body_whatever_the_request_and_protocol() {
    let options = UpstreamOptions {
        fixed_body: Some(fixed(1024)),
        tls: None,
    };
    let addr = spawn_upstream_with("bench", "127.0.0.1:0".parse().expect("addr"), options)
        .await
        .expect("bind");

    let plain = get(addr, "/anything?q=1").await;
    assert_eq!(plain.status, http::StatusCode::OK);
    assert_eq!(plain.body, fixed(1024));
    assert_eq!(plain.header("content-type"), Some("text/plain"));

    // More headers in, the same bytes out: the answer does not describe the request.
    let decorated = send(
        addr,
        request(
            "POST",
            "/other",
            &[("x-forwarded-for", "10.0.0.1"), ("x-request-id", "abc")],
        ),
        true,
    )
    .await;
    assert_eq!(decorated.version, http::Version::HTTP_2);
    assert_eq!(decorated.body, fixed(1024));

    assert_eq!(get(addr, "/healthz").await.text(), "ok\n");
}

#[tokio::test]
async fn tls_upstream_requires_a_client_certificate_from_its_ca() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::new(dir.path());
    let server = pki.leaf("upstream", &["upstream.test"], None);
    let client = pki.leaf("proxy", &[], Some("spiffe://mesh.test/proxy"));
    let settings = ListenerTls {
        certificates: vec![CertificateFiles {
            cert_file: server.cert.clone(),
            key_file: server.key.clone(),
            server_names: Vec::new(),
        }],
        client_ca_file: Some(pki.ca_file()),
        require_client_cert: true,
        alpn: Some(vec![Alpn::H2, Alpn::Http11]),
    };
    let tls = wasmesh_proxy::tls::server::build(&settings, &mut Default::default())
        .expect("tls settings");
    let options = UpstreamOptions {
        fixed_body: Some(fixed(64)),
        tls: Some(std::sync::Arc::new(tls)),
    };
    let addr = spawn_upstream_with("bench", "127.0.0.1:0".parse().expect("addr"), options)
        .await
        .expect("bind");

    for (alpn, h2) in [("http/1.1", false), ("h2", true)] {
        let stream = tls_connect(
            addr,
            "upstream.test",
            client_tls(&pki, &[alpn], Some(&client)),
        )
        .await
        .expect("handshake with a client certificate");
        let got = send_on(TokioIo::new(stream), request("GET", "/", &[]), h2).await;
        assert_eq!(got.status, http::StatusCode::OK, "{alpn}");
        assert_eq!(got.body, fixed(64), "{alpn}");
    }

    assert!(
        refused(addr, client_tls(&pki, &["http/1.1"], None)).await,
        "a client without a certificate must be refused"
    );
    let rogue_dir = tempfile::tempdir().expect("dir");
    let rogue = Pki::new(rogue_dir.path()).leaf("rogue", &[], None);
    assert!(
        refused(addr, client_tls(&pki, &["http/1.1"], Some(&rogue))).await,
        "a certificate from another CA must be refused"
    );
}

/// Whether the upstream refused this client: at the handshake or, since TLS 1.3 finishes the
/// client's side first, at the first request.
async fn refused(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> bool {
    match tls_connect(addr, "upstream.test", config).await {
        Err(_) => true,
        Ok(tls) => match hyper::client::conn::http1::handshake(TokioIo::new(tls)).await {
            Err(_) => true,
            Ok((mut sender, conn)) => {
                tokio::spawn(conn);
                sender.send_request(request("GET", "/", &[])).await.is_err()
            }
        },
    }
}
