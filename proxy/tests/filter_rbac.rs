//! The stock rbac filter in the real proxy behind an mTLS listener: a client whose certificate
//! carries an allowed SPIFFE ID reaches the upstream; one with another SPIFFE ID, verified by
//! the same CA, is answered 403 and never reaches it.

mod support;

use http::StatusCode;
use hyper_util::rt::TokioIo;
use support::*;

const FRONTEND: &str = "spiffe://mesh.test/ns/web/sa/frontend";
const INTRUDER: &str = "spiffe://mesh.test/ns/web/sa/intruder";

fn mtls_config(server: &Leaf, ca: &str, upstream: std::net::SocketAddr) -> String {
    format!(
        r#"
listeners:
  - name: tls
    address: "127.0.0.1:0"
    route_config: main
    filter_chain: authz
    tls:
      certificates:
        - cert_file: "{cert}"
          key_file: "{key}"
          server_names: ["proxy.test"]
      client_ca_file: "{ca}"
      require_client_cert: true
routes:
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
filter_chains:
  - name: authz
    plugins:
      - name: rbac
        source: "file://{wasm}"
        config:
          action: ALLOW
          policies:
            frontend:
              permissions: [{{ path: {{ prefix: "/api/" }} }}]
              principals:
                - authenticated: {{ principal_name: {{ exact: "{FRONTEND}" }} }}
admin:
  address: "127.0.0.1:0"
"#,
        cert = server.cert,
        key = server.key,
        wasm = wasmesh_test_programs::filter("rbac"),
    )
}

async fn get_as(proxy: &Proxy, pki: &Pki, client: &Leaf, path: &str) -> Got {
    let tls = tls_connect(
        proxy.addr("tls"),
        "proxy.test",
        client_tls(pki, &["http/1.1"], Some(client)),
    )
    .await
    .expect("mTLS handshake");
    send_on(TokioIo::new(tls), request("GET", path, &[]), false).await
}

#[tokio::test]
async fn rbac_allows_and_denies_by_the_peers_spiffe_id() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::new(dir.path());
    let server = pki.leaf("proxy", &["proxy.test"], None);
    let frontend = pki.leaf("frontend", &[], Some(FRONTEND));
    let intruder = pki.leaf("intruder", &[], Some(INTRUDER));
    let upstream = Upstream::named("backend").await;
    let proxy = Proxy::start(&mtls_config(&server, &pki.ca_file(), upstream.addr));

    let got = get_as(&proxy, &pki, &frontend, "/api/orders").await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.text(), "backend");
    assert_eq!(upstream.hits(), 1);
    assert_eq!(upstream.last_seen().path, "/api/orders");

    let got = get_as(&proxy, &pki, &intruder, "/api/orders").await;
    assert_eq!(got.status, StatusCode::FORBIDDEN);
    assert_eq!(got.text(), "RBAC: access denied\n");
    let got = get_as(&proxy, &pki, &frontend, "/admin").await;
    assert_eq!(
        got.status,
        StatusCode::FORBIDDEN,
        "outside the policy's paths"
    );
    assert_eq!(
        upstream.hits(),
        1,
        "denied requests never reach the upstream"
    );

    let stats = get_admin_text(proxy.admin.expect("admin"), "/stats");
    for line in [
        "wasmesh_filter_rbac_allowed_total{plugin=\"rbac\",policy=\"frontend\"} 1",
        "wasmesh_filter_rbac_denied_total{plugin=\"rbac\",policy=\"\"} 2",
    ] {
        assert!(stats.contains(line), "no {line} in\n{stats}");
    }
}
