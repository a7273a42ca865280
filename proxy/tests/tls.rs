//! TLS end to end: termination with ALPN h2 and http/1.1, SNI certificate selection, mTLS
//! acceptance and rejection with the peer's SPIFFE ID passed on, and TLS to the upstream.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use support::*;

fn tls_listener(
    server: &Leaf,
    other: &Leaf,
    mtls: Option<&str>,
    upstream: std::net::SocketAddr,
) -> String {
    let client_ca = match mtls {
        Some(ca) => format!("      client_ca_file: \"{ca}\"\n      require_client_cert: true\n"),
        None => String::new(),
    };
    format!(
        r#"
listeners:
  - name: tls
    address: "127.0.0.1:0"
    route_config: main
    forward_client_cert: true
    tls:
      certificates:
        - cert_file: "{cert}"
          key_file: "{key}"
          server_names: ["proxy.test"]
        - cert_file: "{ocert}"
          key_file: "{okey}"
          server_names: ["*.other.test"]
{client_ca}routes:
  - name: main
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{ prefix: "/" }}
            cluster: backend
clusters:
  - name: backend
    endpoints: ["{upstream}"]
"#,
        cert = server.cert,
        key = server.key,
        ocert = other.cert,
        okey = other.key,
    )
}

/// Whether the proxy refused this client: at the handshake or, since TLS 1.3 finishes the
/// client's side first, at the first request.
async fn refused(addr: std::net::SocketAddr, config: std::sync::Arc<rustls::ClientConfig>) -> bool {
    match tls_connect(addr, "proxy.test", config).await {
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

fn req(path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(format!("https://proxy.test{path}"))
        .body(Full::new(Bytes::new()))
        .expect("request")
}

#[tokio::test]
async fn tls_alpn_h2_and_http11() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::new(dir.path());
    let server = pki.leaf("proxy", &["proxy.test"], None);
    let other = pki.leaf("other", &["www.other.test"], None);
    let upstream = Upstream::named("alpha").await;
    let proxy = Proxy::start(&tls_listener(&server, &other, None, upstream.addr));

    let tls = tls_connect(
        proxy.addr("tls"),
        "proxy.test",
        client_tls(&pki, &["h2"], None),
    )
    .await
    .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let got = send_on(TokioIo::new(tls), req("/a"), true).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.version, Version::HTTP_2);
    assert_eq!(upstream.last_seen().headers["x-forwarded-proto"], "https");

    let tls = tls_connect(
        proxy.addr("tls"),
        "proxy.test",
        client_tls(&pki, &["http/1.1"], None),
    )
    .await
    .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let got = send_on(TokioIo::new(tls), request("GET", "/b", &[]), false).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.version, Version::HTTP_11);
}

#[tokio::test]
async fn sni_selects_the_matching_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::new(dir.path());
    let server = pki.leaf("proxy", &["proxy.test"], None);
    let other = pki.leaf("other", &["www.other.test"], None);
    let upstream = Upstream::named("alpha").await;
    let proxy = Proxy::start(&tls_listener(&server, &other, None, upstream.addr));
    // The client verifies the name, so completing the handshake proves which cert was served.
    let tls = tls_connect(
        proxy.addr("tls"),
        "www.other.test",
        client_tls(&pki, &["http/1.1"], None),
    )
    .await;
    assert!(
        tls.is_ok(),
        "wildcard entry served for www.other.test: {:?}",
        tls.err()
    );
    let tls = tls_connect(
        proxy.addr("tls"),
        "proxy.test",
        client_tls(&pki, &["http/1.1"], None),
    )
    .await;
    assert!(tls.is_ok());
}

#[tokio::test]
async fn mtls_accepts_good_client_and_rejects_others() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::new(dir.path());
    let server = pki.leaf("proxy", &["proxy.test"], None);
    let other = pki.leaf("other", &["www.other.test"], None);
    let client = pki.leaf(
        "client",
        &[],
        Some("spiffe://mesh.test/ns/default/sa/frontend"),
    );
    let upstream = Upstream::named("alpha").await;
    let ca = pki.ca_file();
    let proxy = Proxy::start(&tls_listener(&server, &other, Some(&ca), upstream.addr));

    let tls = tls_connect(
        proxy.addr("tls"),
        "proxy.test",
        client_tls(&pki, &["h2"], Some(&client)),
    )
    .await
    .expect("handshake with a client cert");
    let got = send_on(TokioIo::new(tls), req("/"), true).await;
    assert_eq!(got.status, StatusCode::OK);
    let xfcc = upstream.last_seen().headers["x-forwarded-client-cert"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        xfcc.contains("URI=spiffe://mesh.test/ns/default/sa/frontend"),
        "{xfcc}"
    );

    // No certificate: TLS 1.3 completes the client's side of the handshake first, so the
    // rejection shows as an error on the first read or write at the latest.
    let hits_before = upstream.hits();
    let rejected = refused(proxy.addr("tls"), client_tls(&pki, &["http/1.1"], None)).await;
    assert!(
        rejected,
        "a client without a certificate must not get through"
    );

    // A certificate from another CA.
    let rogue_dir = tempfile::tempdir().expect("dir");
    let rogue_pki = Pki::new(rogue_dir.path());
    let rogue = rogue_pki.leaf("rogue", &[], Some("spiffe://evil/x"));
    let rejected = refused(
        proxy.addr("tls"),
        client_tls(&pki, &["http/1.1"], Some(&rogue)),
    )
    .await;
    assert!(
        rejected,
        "a client certificate from an unknown CA must be refused"
    );
    assert_eq!(
        upstream.hits(),
        hits_before,
        "rejected clients never reach the upstream"
    );
}

#[tokio::test]
async fn upstream_tls_with_sni_ca_and_h2() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::new(dir.path());
    let backend = pki.leaf("backend", &["backend.internal"], None);
    let upstream = Upstream::serve(Some(server_tls(&backend)), |seen: Seen| async move {
        reply(StatusCode::OK, "secure", &format!("{:?}", seen.version))
    })
    .await;
    let cluster = format!(
        "    protocol: http2\n    tls:\n      sni: backend.internal\n      ca_file: \"{}\"\n",
        pki.ca_file()
    );
    let proxy = Proxy::start(&simple_config(&cluster, &[upstream.addr], ""));
    let got = get(proxy.addr("main"), "/").await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.text(), "HTTP/2.0");

    // The wrong SNI fails verification: the proxy answers 503 rather than trusting it.
    let cluster = format!(
        "    tls:\n      sni: wrong.internal\n      ca_file: \"{}\"\n",
        pki.ca_file()
    );
    let proxy = Proxy::start(&simple_config(&cluster, &[upstream.addr], ""));
    let got = get(proxy.addr("main"), "/").await;
    assert_eq!(
        got.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        got.text()
    );
}

/// Filters see the TLS version the session negotiated (`connection.tls_version`), not a
/// constant: a TLS 1.2-only client shows `TLSv1.2`, a default one `TLSv1.3`.
#[tokio::test]
async fn filters_see_the_negotiated_tls_version() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::new(dir.path());
    let server = pki.leaf("proxy", &["proxy.test"], None);
    let other = pki.leaf("other", &["www.other.test"], None);
    let upstream = Upstream::named("alpha").await;
    let config = tls_listener(&server, &other, None, upstream.addr).replace(
        "    route_config: main\n",
        "    route_config: main\n    filter_chain: probe\n",
    ) + &format!(
        "filter_chains:\n  - name: probe\n    plugins:\n      - name: probe\n        source: \"file://{}\"\n",
        wasmesh_test_programs::PROBE_WASM
    );
    let proxy = Proxy::start(&config);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der()).expect("ca");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls12 = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("tls 1.2")
        .with_root_certificates(roots)
        .with_no_client_auth();
    for (config, expected) in [
        (std::sync::Arc::new(tls12), "TLSv1.2"),
        (client_tls(&pki, &["http/1.1"], None), "TLSv1.3"),
    ] {
        let tls = tls_connect(proxy.addr("tls"), "proxy.test", config)
            .await
            .expect("handshake");
        let got = send_on(
            TokioIo::new(tls),
            request(
                "GET",
                "/",
                &[("x-probe-property", "connection.tls_version")],
            ),
            false,
        )
        .await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(upstream.last_seen().headers["x-property"], expected);
    }
}

/// The DER of the first certificate in a PEM file.
fn der_of(pem_file: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(pem_file)
        .expect("certificate")
        .to_vec()
}

/// The certificate a new connection to the proxy is served.
async fn served(pki: &Pki, addr: std::net::SocketAddr) -> Option<Vec<u8>> {
    let tls = tls_connect(addr, "proxy.test", client_tls(pki, &["http/1.1"], None))
        .await
        .ok()?;
    let served = tls.get_ref().1.peer_certificates()?.first()?.to_vec();
    Some(served)
}

/// Replaces `leaf`'s files with a new certificate and key the way rotation tools do: each file
/// written beside its target, then renamed over it.
fn rotate(pki: &Pki, leaf: &Leaf, name: &str, dns_names: &[&str]) {
    let next = pki.leaf(name, dns_names, None);
    std::fs::rename(&next.cert, &leaf.cert).expect("rename cert");
    std::fs::rename(&next.key, &leaf.key).expect("rename key");
}

/// Certificates rotated on disk, as cert-manager or a secret update does, reach new connections
/// with no restart and no configuration change; a connection already open keeps its session;
/// a key that does not load is refused and the serving certificate stays.
#[tokio::test]
async fn rotated_listener_certificates_reach_new_connections() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::new(dir.path());
    let server = pki.leaf("proxy", &["proxy.test"], None);
    let other = pki.leaf("other", &["www.other.test"], None);
    let upstream = Upstream::named("alpha").await;
    let config =
        tls_listener(&server, &other, None, upstream.addr) + "admin:\n  address: \"127.0.0.1:0\"\n";
    let proxy = Proxy::start(&config);
    let addr = proxy.addr("tls");
    let first = der_of(&server.cert);
    assert_eq!(served(&pki, addr).await.as_deref(), Some(&first[..]));

    let open = tls_connect(addr, "proxy.test", client_tls(&pki, &["http/1.1"], None))
        .await
        .expect("handshake");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(open))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let response = sender.send_request(req("/before")).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);

    rotate(&pki, &server, "proxy-next", &["proxy.test"]);
    let second = der_of(&server.cert);
    assert_ne!(first, second);
    let rotated = eventually(Duration::from_secs(20), async || {
        served(&pki, addr).await.as_deref() == Some(&second[..])
    })
    .await;
    assert!(rotated, "new connections get the rotated certificate");
    sender.ready().await.expect("the open connection survives");
    let response = sender.send_request(req("/after")).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let admin = proxy.admin.expect("admin");
    let stats = get_admin_text(admin, "/stats");
    assert!(
        metric(&stats, "wasmesh_tls_reload_total{result=\"applied\"}") >= 1.0,
        "{stats}"
    );

    // A key that does not load: refused, reported, and the running certificate stays.
    std::fs::write(&server.key, "not a key\n").expect("write");
    let reported = eventually(Duration::from_secs(20), async || {
        get_admin_text(admin, "/config/status").contains(&server.key)
    })
    .await;
    assert!(reported, "{}", get_admin_text(admin, "/config/status"));
    assert_eq!(served(&pki, addr).await.as_deref(), Some(&second[..]));

    // A file caught mid-rotation does not hold up a reload of everything else, and the reload
    // says what it left as it was.
    let (status, body) = admin_call(admin, "PUT", "/config", &config);
    assert_eq!(status, 200, "{body}");
    assert_eq!(served(&pki, addr).await.as_deref(), Some(&second[..]));
    let (_, status) = admin_call(admin, "GET", "/config/status", "");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(status["last_error"], serde_json::Value::Null, "{status}");
    let warnings = status["last_warnings"].as_array().expect("warnings");
    assert!(
        warnings.len() == 1
            && warnings[0]
                .as_str()
                .is_some_and(|w| w.contains(&server.key)),
        "{status}"
    );

    // Files in order again: they rotate in, and the warning goes.
    rotate(&pki, &server, "proxy-third", &["proxy.test"]);
    let third = der_of(&server.cert);
    let rotated = eventually(Duration::from_secs(20), async || {
        served(&pki, addr).await.as_deref() == Some(&third[..])
    })
    .await;
    assert!(rotated, "the third certificate is served");
    let (_, status) = admin_call(admin, "GET", "/config/status", "");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(status["last_warnings"], serde_json::json!([]), "{status}");
}

/// An upstream's CA file, rotated on disk, is what the next upstream connection is verified
/// against: trusting the wrong CA fails (503) until the right one is written.
#[tokio::test]
async fn rotated_upstream_ca_reaches_new_upstream_connections() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::new(dir.path());
    let backend = pki.leaf("backend", &["backend.internal"], None);
    let upstream = Upstream::serve(Some(server_tls(&backend)), |_: Seen| async move {
        reply(StatusCode::OK, "secure", "ok")
    })
    .await;
    let other_dir = tempfile::tempdir().expect("dir");
    let other_ca = Pki::new(other_dir.path());
    let trusted = dir.path().join("trusted.pem");
    std::fs::copy(other_ca.ca_file(), &trusted).expect("copy");
    let cluster = format!(
        "    tls:\n      sni: backend.internal\n      ca_file: \"{}\"\n",
        trusted.display()
    );
    let proxy = Proxy::start(&simple_config(&cluster, &[upstream.addr], ""));
    let got = get(proxy.addr("main"), "/").await;
    assert_eq!(
        got.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        got.text()
    );

    let next = dir.path().join("trusted.pem.next");
    std::fs::copy(pki.ca_file(), &next).expect("copy");
    std::fs::rename(&next, &trusted).expect("rename");
    let trusted_now = eventually(Duration::from_secs(20), async || {
        get(proxy.addr("main"), "/").await.status == StatusCode::OK
    })
    .await;
    assert!(trusted_now, "the rotated CA verifies the upstream");
}
