//! The "mesh" end-to-end test: the stock filters chained in the real proxy in front of two
//! versions of a service, everything over mutual TLS, each behaviour checked on the wire.
//!
//! - The proxy's listener serves TLS and requires a client certificate from the mesh CA; the
//!   clients are `frontend` and `intruder`, each with its own SPIFFE ID.
//! - The two upstream services, `shop-v1` and `shop-v2`, serve TLS and require the proxy's
//!   client certificate from the same CA (upstream mTLS). Each answers with its name and echoes
//!   the headers it received.
//! - The listener's chain: jwt-authn (an inline Ed25519 JWKS; the test signs
//!   the tokens) → rbac (the frontend's SPIFFE ID *and* the token's `groups` containing
//!   `shoppers`, read from the `wasmesh.jwt.claims` filter state jwt-authn set) → ratelimit
//!   (a bucket per JWT `sub`, read from the `wasmesh.jwt.sub` filter state) → traffic-split
//!   (90/10 stable/canary, sticky by the verified subject, re-routing to `shop-v1`/`shop-v2`)
//!   → tracing (OTLP/HTTP JSON to a test collector) → access-log, last: as in Envoy, every
//!   filter of the chain logs every request, so it also logs the 401s, 403s and 429s that
//!   filters before it answered.
//! - The proxy runs two workers, each with its own VM replica of every filter; a user's bucket
//!   is spent over two connections known (from `/stats`) to be on different workers.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rcgen::SigningKey;
use serde_json::{Value, json};
use support::*;

const FRONTEND: &str = "spiffe://mesh.test/ns/web/sa/frontend";
const INTRUDER: &str = "spiffe://mesh.test/ns/web/sa/intruder";
const PROXY_ID: &str = "spiffe://mesh.test/ns/mesh/sa/edge-proxy";
const ISSUER: &str = "https://idp.mesh.test";
const REALM: &str = "shop.mesh.test";
/// Each user's bucket: this many requests, with no refill while the test runs.
const LIMIT: usize = 20;
/// Users whose first request shows the split.
const SPLIT_USERS: usize = 400;

/// Everything the scenario runs: the PKI, the token signer, the upstreams and collectors, and
/// the proxy in front of them.
struct Mesh {
    pki: Pki,
    frontend_tls: Arc<rustls::ClientConfig>,
    intruder_tls: Arc<rustls::ClientConfig>,
    signer: rcgen::KeyPair,
    shop_v1: Upstream,
    shop_v2: Upstream,
    otel: Upstream,
    logs: Upstream,
    proxy: Proxy,
    /// Every request the test sent through the proxy: its (unique) path and the status the
    /// client got, to be matched against the access log.
    sent: Mutex<Vec<(String, u16)>>,
    _dir: tempfile::TempDir,
}

/// One keep-alive HTTP/1.1 connection to the proxy over mTLS.
struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    async fn send(&mut self, req: http::Request<Full<Bytes>>) -> Got {
        self.sender.ready().await.expect("connection still open");
        let response = self.sender.send_request(req).await.expect("response");
        collect(response).await
    }
}

/// What an upstream service said it received.
struct Echo {
    service: String,
    headers: HashMap<String, String>,
}

impl Echo {
    fn of(got: &Got) -> Echo {
        let body: Value = serde_json::from_slice(&got.body)
            .unwrap_or_else(|e| panic!("an echo from a shop service ({e}): {}", got.text()));
        let headers = body["headers"]
            .as_object()
            .expect("echoed headers")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        Echo {
            service: body["service"].as_str().expect("service").to_string(),
            headers,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A shop service: answers 200 with `x-upstream: NAME` and, as JSON, its name, the path and
/// every request header it received.
async fn shop(name: &'static str, tls: Arc<rustls::ServerConfig>) -> Upstream {
    Upstream::serve(Some(tls), move |seen: Seen| async move {
        let headers: BTreeMap<String, String> = seen
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = json!({"service": name, "path": seen.path, "headers": headers});
        Response::builder()
            .status(StatusCode::OK)
            .header("x-upstream", name)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("reply")
    })
    .await
}

/// A TLS server config that requires a client certificate signed by the mesh CA.
fn mtls_server(pki: &Pki, leaf: &Leaf) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der()).expect("add ca");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(&leaf.cert)
        .expect("cert file")
        .collect::<Result<Vec<_>, _>>()
        .expect("certs");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&leaf.key).expect("key");
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .expect("server cert");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Whether a TLS server refused this client: at the handshake or, since TLS 1.3 finishes the
/// client's side first, at the first request.
async fn refused(addr: SocketAddr, name: &str, config: Arc<rustls::ClientConfig>) -> bool {
    match tls_connect(addr, name, config).await {
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

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A compact JWS (EdDSA) over `claims`.
fn sign(key: &rcgen::KeyPair, claims: &Value) -> String {
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": "mesh-1"});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = key.sign(input.as_bytes()).expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn claims(sub: &str, groups: &[&str]) -> Value {
    json!({"iss": ISSUER, "aud": "shop", "sub": sub, "groups": groups, "exp": now() + 600})
}

fn plugin(name: &str, filter: &str, config: &Value) -> String {
    format!(
        "      - name: {name}\n        source: \"file://{}\"\n        deadline: 1s\n        config: {config}\n",
        wasmesh_test_programs::filter(filter)
    )
}

impl Mesh {
    async fn start() -> Mesh {
        let dir = tempfile::tempdir().expect("dir");
        let pki = Pki::new(dir.path());
        let edge = pki.leaf("edge-proxy", &["shop.mesh.test"], Some(PROXY_ID));
        let frontend = pki.leaf("frontend", &[], Some(FRONTEND));
        let intruder = pki.leaf("intruder", &[], Some(INTRUDER));
        let v1_cert = pki.leaf("shop-v1", &["shop-v1.mesh.test"], None);
        let v2_cert = pki.leaf("shop-v2", &["shop-v2.mesh.test"], None);
        let shop_v1 = shop("shop-v1", mtls_server(&pki, &v1_cert)).await;
        let shop_v2 = shop("shop-v2", mtls_server(&pki, &v2_cert)).await;
        let otel = Upstream::with(|_| async {
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(b"{}")))
                .expect("reply")
        })
        .await;
        let logs = Upstream::with(|_| async { reply(StatusCode::NO_CONTENT, "logs", "") }).await;

        let signer = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519 key");
        let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "mesh-1", "use": "sig",
                                    "x": URL_SAFE_NO_PAD.encode(signer.public_key_raw())}]});
        let chain = [
            plugin(
                "jwt",
                "jwt-authn",
                &json!({
                    "realm": REALM,
                    "providers": {"mesh-idp": {
                        "issuer": ISSUER,
                        "audiences": ["shop"],
                        "local_jwks": jwks,
                        "claim_to_headers": [{"header_name": "x-jwt-claim-sub", "claim_name": "sub"}],
                    }},
                    "rules": [{"match": {"prefix": "/"}, "requires": ["mesh-idp"]}],
                }),
            ),
            plugin(
                "rbac",
                "rbac",
                &json!({
                    "action": "ALLOW",
                    "policies": {"shoppers": {
                        "permissions": [{"any": true}],
                        "principals": [{"and": [
                            {"authenticated": {"principal_name": {"exact": FRONTEND}}},
                            {"jwt_claim": {"name": "groups", "exact": "shoppers"}},
                        ]}],
                    }},
                }),
            ),
            plugin(
                "ratelimit",
                "ratelimit",
                &json!({
                    "rules": [{
                        "name": "per-user",
                        "key": {"type": "jwt_claim", "claim": "sub", "property": "wasmesh.jwt.sub"},
                        "bucket": {"max_tokens": LIMIT, "fill_interval": "1h"},
                    }],
                }),
            ),
            plugin(
                "split",
                "traffic-split",
                &json!({
                    "header": "x-route-variant",
                    "variants": [{"name": "stable", "weight": 90}, {"name": "canary", "weight": 10}],
                    "sticky": {"type": "header", "name": "x-jwt-claim-sub"},
                }),
            ),
            plugin(
                "tracing",
                "tracing",
                &json!({
                    "collector": {"cluster": "otel", "authority": "collector:4318"},
                    "service_name": "mesh-edge",
                    "batch": {"max_spans": 100, "flush_interval_ms": 100},
                }),
            ),
            plugin(
                "access",
                "access-log",
                &json!({
                    "fields": ["method", "path", "response_code", "upstream_cluster"],
                    "custom_fields": {"sub": "%PROPERTY(wasmesh.jwt.sub)%"},
                    "collector": {"cluster": "logs", "path": "/v1/logs", "batch_size": 100,
                                  "flush_interval": "100ms"},
                }),
            ),
        ]
        .concat();
        let upstream_tls = |sni: &str| {
            format!(
                "    tls:\n      sni: {sni}\n      ca_file: \"{ca}\"\n      cert_file: \"{cert}\"\n      key_file: \"{key}\"\n",
                ca = pki.ca_file(),
                cert = edge.cert,
                key = edge.key,
            )
        };
        let yaml = format!(
            r#"
listeners:
  - name: mesh
    address: "127.0.0.1:0"
    route_config: shop
    filter_chain: mesh
    tls:
      certificates:
        - cert_file: "{cert}"
          key_file: "{key}"
          server_names: ["shop.mesh.test"]
      client_ca_file: "{ca}"
      require_client_cert: true
      alpn: ["http/1.1"]
routes:
  - name: shop
    virtual_hosts:
      - name: shop
        domains: ["*"]
        routes:
          - name: shop-canary
            match:
              prefix: "/"
              headers: [{{ name: x-route-variant, exact: canary }}]
            cluster: shop-v2
          - name: shop-stable
            match: {{ prefix: "/" }}
            cluster: shop-v1
clusters:
  - name: shop-v1
    endpoints: ["{v1}"]
{v1_tls}  - name: shop-v2
    endpoints: ["{v2}"]
{v2_tls}  - name: otel
    endpoints: ["{otel}"]
  - name: logs
    endpoints: ["{logs}"]
filter_chains:
  - name: mesh
    plugins:
{chain}admin:
  address: "127.0.0.1:0"
"#,
            cert = edge.cert,
            key = edge.key,
            ca = pki.ca_file(),
            v1 = shop_v1.addr,
            v2 = shop_v2.addr,
            v1_tls = upstream_tls("shop-v1.mesh.test"),
            v2_tls = upstream_tls("shop-v2.mesh.test"),
            otel = otel.addr,
            logs = logs.addr,
        );
        let proxy = Proxy::start_with_args(&yaml, &["--concurrency", "2"]);
        Mesh {
            frontend_tls: client_tls(&pki, &["http/1.1"], Some(&frontend)),
            intruder_tls: client_tls(&pki, &["http/1.1"], Some(&intruder)),
            signer,
            shop_v1,
            shop_v2,
            otel,
            logs,
            proxy,
            sent: Mutex::new(Vec::new()),
            pki,
            _dir: dir,
        }
    }

    /// A bearer token for `sub` in `groups`, signed by the mesh's key.
    fn bearer(&self, sub: &str, groups: &[&str]) -> String {
        format!("Bearer {}", sign(&self.signer, &claims(sub, groups)))
    }

    async fn connect(&self, tls: &Arc<rustls::ClientConfig>) -> Client {
        let tls = tls_connect(self.proxy.addr("mesh"), "shop.mesh.test", tls.clone())
            .await
            .expect("mTLS handshake with the proxy");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("h1 handshake");
        tokio::spawn(conn);
        Client { sender }
    }

    /// GET `path` (unique per request) on `client`, noting what came back for the access-log
    /// check.
    async fn get(&self, client: &mut Client, path: &str, headers: &[(&str, &str)]) -> Got {
        let got = client.send(request("GET", path, headers)).await;
        self.sent
            .lock()
            .expect("sent")
            .push((path.to_string(), got.status.as_u16()));
        got
    }

    /// GET `path` as the frontend with a token for `sub` in the `shoppers` group.
    async fn shopper(&self, client: &mut Client, sub: &str, path: &str) -> Got {
        let bearer = self.bearer(sub, &["shoppers"]);
        self.get(client, path, &[("authorization", &bearer)]).await
    }

    fn stats(&self) -> String {
        get_admin_text(self.proxy.admin.expect("admin"), "/stats")
    }

    fn upstream_hits(&self) -> usize {
        self.shop_v1.hits() + self.shop_v2.hits()
    }
}

#[tokio::test]
async fn mesh_of_chained_filters_over_mtls() {
    let mesh = Mesh::start().await;
    upstreams_require_client_certificates(&mesh).await;
    authentication_and_authorization(&mesh).await;
    let variants = split_ninety_ten_sticky_per_user(&mesh).await;
    traces_continue_the_callers_and_reach_the_collector(&mesh, &variants).await;
    one_bucket_per_user_across_both_workers(&mesh).await;
    access_log_has_every_request_with_its_status(&mesh).await;
}

/// The shop services accept only clients with a certificate from the mesh CA, so every 200
/// through the proxy below shows the proxy presented its own.
async fn upstreams_require_client_certificates(mesh: &Mesh) {
    for (upstream, name) in [
        (&mesh.shop_v1, "shop-v1.mesh.test"),
        (&mesh.shop_v2, "shop-v2.mesh.test"),
    ] {
        assert!(
            refused(
                upstream.addr,
                name,
                client_tls(&mesh.pki, &["http/1.1"], None)
            )
            .await,
            "{name} must refuse a client without a certificate"
        );
        // The same client with a mesh certificate gets through: the certificate was what
        // was missing.
        let tls = tls_connect(upstream.addr, name, mesh.frontend_tls.clone())
            .await
            .expect("mTLS handshake with the shop service");
        let got = send_on(TokioIo::new(tls), request("GET", "/direct", &[]), false).await;
        assert_eq!(got.status, StatusCode::OK);
    }
    assert_eq!((mesh.shop_v1.hits(), mesh.shop_v2.hits()), (1, 1));
}

/// 401 without a token or with a forged one, 403 for the intruder's certificate with a valid
/// token and for the frontend with a token outside the `shoppers` group; none of them reaches
/// a shop. A valid token from the frontend reaches one, without the token and with the
/// verified subject.
async fn authentication_and_authorization(mesh: &Mesh) {
    let hits = mesh.upstream_hits();
    assert!(
        refused(
            mesh.proxy.addr("mesh"),
            "shop.mesh.test",
            client_tls(&mesh.pki, &["http/1.1"], None)
        )
        .await,
        "the proxy must refuse a client without a certificate"
    );
    let mut frontend = mesh.connect(&mesh.frontend_tls).await;

    let got = mesh.get(&mut frontend, "/cart/no-token", &[]).await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED, "{}", got.text());
    assert_eq!(
        got.header("www-authenticate"),
        Some(format!("Bearer realm=\"{REALM}\"").as_str())
    );

    let forger = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519 key");
    let forged = format!(
        "Bearer {}",
        sign(&forger, &claims("mallory", &["shoppers"]))
    );
    let got = mesh
        .get(&mut frontend, "/cart/forged", &[("authorization", &forged)])
        .await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED, "{}", got.text());
    assert_eq!(
        got.header("www-authenticate"),
        Some(
            format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"the token's signature does not verify\""
            )
            .as_str()
        )
    );

    let mut intruder = mesh.connect(&mesh.intruder_tls).await;
    let bearer = mesh.bearer("ivan", &["shoppers"]);
    let got = mesh
        .get(
            &mut intruder,
            "/cart/intruder",
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(
        got.status,
        StatusCode::FORBIDDEN,
        "a valid token from the wrong peer: {}",
        got.text()
    );
    assert_eq!(got.text().trim_end(), "RBAC: access denied");

    let browser = mesh.bearer("bob", &["browsers"]);
    let got = mesh
        .get(
            &mut frontend,
            "/cart/no-group",
            &[("authorization", &browser)],
        )
        .await;
    assert_eq!(
        got.status,
        StatusCode::FORBIDDEN,
        "the right peer without the group claim: {}",
        got.text()
    );
    assert_eq!(mesh.upstream_hits(), hits, "refused requests reach no shop");

    // A client cannot claim another subject by sending the claim header itself.
    let bearer = mesh.bearer("alice", &["shoppers", "admins"]);
    let got = mesh
        .get(
            &mut frontend,
            "/cart/alice",
            &[("authorization", &bearer), ("x-jwt-claim-sub", "admin")],
        )
        .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    let echo = Echo::of(&got);
    assert!(
        ["shop-v1", "shop-v2"].contains(&echo.service.as_str()),
        "{}",
        echo.service
    );
    assert_eq!(got.header("x-upstream"), Some(echo.service.as_str()));
    assert_eq!(echo.header("x-jwt-claim-sub"), Some("alice"));
    assert_eq!(
        echo.header("authorization"),
        None,
        "the token is not forwarded"
    );
    assert_eq!(mesh.upstream_hits(), hits + 1);

    let stats = mesh.stats();
    for line in [
        "wasmesh_filter_jwt_authn_denied_total{plugin=\"jwt\",provider=\"mesh-idp\",reason=\"missing\"} 1",
        "wasmesh_filter_jwt_authn_denied_total{plugin=\"jwt\",provider=\"mesh-idp\",reason=\"bad_signature\"} 1",
        "wasmesh_filter_rbac_denied_total{plugin=\"rbac\",policy=\"\"} 2",
        "wasmesh_filter_rbac_allowed_total{plugin=\"rbac\",policy=\"shoppers\"} 1",
    ] {
        assert!(stats.contains(line), "no {line} in\n{stats}");
    }
}

/// Each of `SPLIT_USERS` users' first request goes to `shop-v1` (stable) or `shop-v2`
/// (canary) by the 90/10 weights applied to a hash of the verified subject; a user's later
/// requests go where the first did. Returns each user's service.
async fn split_ninety_ten_sticky_per_user(mesh: &Mesh) -> BTreeMap<String, String> {
    let mut client = mesh.connect(&mesh.frontend_tls).await;
    let mut served = BTreeMap::new();
    for i in 0..SPLIT_USERS {
        let sub = format!("user-{i}");
        let got = mesh
            .shopper(&mut client, &sub, &format!("/cart/split/{i}"))
            .await;
        assert_eq!(got.status, StatusCode::OK, "{sub}: {}", got.text());
        let echo = Echo::of(&got);
        let variant = match echo.service.as_str() {
            "shop-v1" => "stable",
            "shop-v2" => "canary",
            other => panic!("served by {other}"),
        };
        assert_eq!(
            echo.header("x-route-variant"),
            Some(variant),
            "the variant's route picked the cluster"
        );
        assert_eq!(echo.header("x-jwt-claim-sub"), Some(sub.as_str()));
        served.insert(sub, echo.service);
    }
    // The users are fixed, so the count is the same on every run. A hash that spreads keys
    // uniformly lands 400 users outside 8..=84 canaries (expected 40, standard deviation 6)
    // with probability below 1e-10 (binomial tails), so any fair 90/10 split passes, while
    // 50/50 (about 200) or all-stable (0) cannot.
    let canary = served.values().filter(|s| *s == "shop-v2").count();
    assert!(
        (8..=84).contains(&canary),
        "{canary} of {SPLIT_USERS} users on the canary"
    );

    // Sticky: every tenth user again, same service.
    for i in (0..SPLIT_USERS).step_by(10) {
        let sub = format!("user-{i}");
        let got = mesh
            .shopper(&mut client, &sub, &format!("/cart/split/{i}/again"))
            .await;
        assert_eq!(got.status, StatusCode::OK, "{sub}: {}", got.text());
        assert_eq!(Echo::of(&got).service, served[&sub], "{sub} moved");
    }

    // Every request that reached shop-v2 through the proxy was sent there by the filter's
    // sticky choice (one shop-v2 hit was the direct check).
    let stats = mesh.stats();
    let line = format!(
        "wasmesh_filter_traffic_split_requests_total{{plugin=\"split\",variant=\"canary\",reason=\"sticky\"}} {}",
        mesh.shop_v2.hits() - 1
    );
    assert!(stats.contains(&line), "no {line} in\n{stats}");
    served
}

/// A request carrying a W3C `traceparent` reaches its shop with the same trace id and the
/// proxy's new span as the parent; the test collector receives that span as OTLP/HTTP JSON,
/// child of the caller's span, named after the route the split re-matched.
async fn traces_continue_the_callers_and_reach_the_collector(
    mesh: &Mesh,
    served: &BTreeMap<String, String>,
) {
    let mut client = mesh.connect(&mesh.frontend_tls).await;
    let one_on = |service: &str| {
        served
            .iter()
            .find(|(_, s)| *s == service)
            .map(|(sub, _)| sub.clone())
            .unwrap_or_else(|| panic!("a user on {service}"))
    };
    // (user, caller's trace id, caller's span id, route the request must take)
    let calls = [
        (
            one_on("shop-v1"),
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
            "shop-stable",
        ),
        (
            one_on("shop-v2"),
            "0af7651916cd43dd8448eb211c80319c",
            "b7ad6b7169203331",
            "shop-canary",
        ),
    ];
    let mut proxy_spans = Vec::new();
    for (sub, trace, parent, _) in &calls {
        let bearer = mesh.bearer(sub, &["shoppers"]);
        let traceparent = format!("00-{trace}-{parent}-01");
        let got = mesh
            .get(
                &mut client,
                &format!("/cart/traced/{trace}"),
                &[
                    ("authorization", &bearer),
                    ("traceparent", &traceparent),
                    ("tracestate", "mesh=test"),
                ],
            )
            .await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.text());
        let echo = Echo::of(&got);
        let upstream_parent = echo.header("traceparent").expect("traceparent upstream");
        let fields: Vec<&str> = upstream_parent.split('-').collect();
        assert_eq!(fields.len(), 4, "{upstream_parent}");
        assert_eq!(
            (fields[0], fields[1], fields[3]),
            ("00", *trace, "01"),
            "same trace, still sampled: {upstream_parent}"
        );
        assert_eq!(fields[2].len(), 16, "{upstream_parent}");
        assert_ne!(
            fields[2], *parent,
            "the proxy's own span is the upstream's parent"
        );
        assert_eq!(echo.header("tracestate"), Some("mesh=test"));
        proxy_spans.push(fields[2].to_string());
    }

    let arrived = eventually(Duration::from_secs(10), async || {
        let spans = exported_spans(&mesh.otel);
        calls
            .iter()
            .all(|(_, trace, _, _)| spans.iter().any(|(_, span)| span["traceId"] == *trace))
    })
    .await;
    let spans = exported_spans(&mesh.otel);
    assert!(arrived, "the collector got {spans:?}");
    let export = mesh.otel.last_seen();
    assert_eq!(
        (export.method.as_str(), export.path.as_str()),
        ("POST", "/v1/traces")
    );
    for ((_, trace, parent, route), span_id) in calls.iter().zip(&proxy_spans) {
        let matching: Vec<_> = spans
            .iter()
            .filter(|(_, span)| span["traceId"] == *trace)
            .collect();
        assert_eq!(matching.len(), 1, "one span for the request: {matching:?}");
        let (resource, span) = matching[0];
        assert_eq!(
            resource["attributes"][0],
            json!({"key": "service.name", "value": {"stringValue": "mesh-edge"}})
        );
        assert_eq!(span["parentSpanId"], *parent, "child of the caller's span");
        assert_eq!(
            span["spanId"],
            span_id.as_str(),
            "the upstream's parent is this span"
        );
        assert_eq!(span["kind"], 2, "a server span");
        assert_eq!(span["name"], format!("GET {route}"));
        assert_eq!(attribute(span, "http.route")["stringValue"], *route);
        assert_eq!(attribute(span, "http.status_code")["intValue"], "200");
    }
}

/// Every span in every export request the collector received, with its resource.
fn exported_spans(collector: &Upstream) -> Vec<(Value, Value)> {
    let seen = collector.seen.lock().expect("seen").clone();
    let mut spans = Vec::new();
    for export in seen {
        let Ok(body) = serde_json::from_slice::<Value>(&export.body) else {
            continue;
        };
        for resource_spans in body["resourceSpans"].as_array().into_iter().flatten() {
            let resource = &resource_spans["resource"];
            for scope_spans in resource_spans["scopeSpans"]
                .as_array()
                .into_iter()
                .flatten()
            {
                for span in scope_spans["spans"].as_array().into_iter().flatten() {
                    spans.push((resource.clone(), span.clone()));
                }
            }
        }
    }
    spans
}

fn attribute(span: &Value, key: &str) -> Value {
    span["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|kv| kv["key"] == key))
        .map(|kv| kv["value"].clone())
        .unwrap_or(Value::Null)
}

/// `wasmesh_worker_connections_total` of workers 0 and 1.
fn worker_connections(stats: &str) -> [u64; 2] {
    let mut counts = [0; 2];
    for (worker, count) in counts.iter_mut().enumerate() {
        let name = format!("wasmesh_worker_connections_total{{worker=\"{worker}\"}} ");
        *count = stats
            .lines()
            .find_map(|line| line.strip_prefix(name.as_str()))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
    }
    counts
}

/// Opens connections one at a time until one is known to be on worker 0 and one on worker 1:
/// the workers count each connection they accept, so the counter that moved says which.
async fn a_connection_on_each_worker(mesh: &Mesh) -> [Client; 2] {
    let mut on: [Option<Client>; 2] = [None, None];
    // The kernel spreads connections over the workers' sockets by a hash of the 4-tuple:
    // 64 tries all landing on one worker has a chance of 2^-63.
    for _ in 0..64 {
        let before = worker_connections(&mesh.stats());
        let client = mesh.connect(&mesh.frontend_tls).await;
        // Counted at accept, before the proxy's side of the handshake: done by now.
        let mut after = before;
        let counted = eventually(Duration::from_secs(5), async || {
            after = worker_connections(&mesh.stats());
            after.iter().sum::<u64>() > before.iter().sum::<u64>()
        })
        .await;
        assert!(
            counted,
            "the connection was not counted: {before:?} {after:?}"
        );
        let delta = [after[0] - before[0], after[1] - before[1]];
        let worker = match delta {
            [1, 0] => 0,
            [0, 1] => 1,
            other => panic!("one connection, counted {other:?}"),
        };
        on[worker].get_or_insert(client);
        if on.iter().all(Option::is_some) {
            return on.map(|client| client.expect("checked"));
        }
    }
    panic!("64 connections, all on one worker");
}

/// A user's bucket of `LIMIT` requests is spent alternating between a connection on worker 0
/// and one on worker 1 (each with its own VM replica of the filter): exactly `LIMIT` pass —
/// a bucket per worker would let twice as many through — and the next ones get 429 with
/// `Retry-After` and `x-ratelimit-*` on both, while another user still passes on both.
async fn one_bucket_per_user_across_both_workers(mesh: &Mesh) {
    let mut clients = a_connection_on_each_worker(mesh).await;
    let hits = mesh.upstream_hits();
    let mut statuses = Vec::new();
    for i in 0..2 * LIMIT + 2 {
        let got = mesh
            .shopper(&mut clients[i % 2], "carol", &format!("/cart/limit/{i}"))
            .await;
        statuses.push(got.status.as_u16());
        assert_eq!(
            got.header("x-ratelimit-limit"),
            Some(LIMIT.to_string().as_str()),
            "request {i}"
        );
        if got.status == StatusCode::OK {
            // One bucket: what is left goes down by one whichever worker served.
            assert_eq!(
                got.header("x-ratelimit-remaining"),
                Some((LIMIT - 1 - i).to_string().as_str()),
                "request {i}"
            );
        } else {
            assert_eq!(got.status, StatusCode::TOO_MANY_REQUESTS, "request {i}");
            assert_eq!(got.header("x-ratelimit-remaining"), Some("0"));
            let retry: u64 = got
                .header("retry-after")
                .and_then(|v| v.parse().ok())
                .expect("retry-after in seconds");
            assert!((1..=3600).contains(&retry), "{retry}");
            assert_eq!(
                got.header("x-ratelimit-reset"),
                Some(retry.to_string().as_str())
            );
            assert_eq!(got.text().trim_end(), "rate limited");
        }
    }
    let allowed = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(allowed, LIMIT, "allowed across both workers: {statuses:?}");
    assert!(
        statuses[..LIMIT].iter().all(|s| *s == 200) && statuses[LIMIT..].iter().all(|s| *s == 429),
        "{statuses:?}"
    );
    assert_eq!(
        mesh.upstream_hits(),
        hits + LIMIT,
        "limited requests reach no shop"
    );

    for (worker, client) in clients.iter_mut().enumerate() {
        let got = mesh
            .shopper(client, "dave", &format!("/cart/other-user/{worker}"))
            .await;
        assert_eq!(
            got.status,
            StatusCode::OK,
            "another user on worker {worker}"
        );
    }
    let stats = mesh.stats();
    let line = format!(
        "wasmesh_filter_ratelimit_limited_total{{plugin=\"ratelimit\",rule=\"per-user\"}} {}",
        LIMIT + 2
    );
    assert!(stats.contains(&line), "no {line} in\n{stats}");
}

/// The access-log collector gets one JSON line per request the test sent through the proxy,
/// with the status the client saw — the 401s, 403s and 429s that filters before the access
/// log answered included (it never saw those requests, yet logs them) — the verified subject (filter state jwt-authn set, read when the
/// request ends) and, for allowed requests, the cluster the split chose.
async fn access_log_has_every_request_with_its_status(mesh: &Mesh) {
    let sent = mesh.sent.lock().expect("sent").clone();
    let all = eventually(Duration::from_secs(10), async || {
        logged_lines(&mesh.logs).len() >= sent.len()
    })
    .await;
    let lines = logged_lines(&mesh.logs);
    assert!(all, "{} lines for {} requests", lines.len(), sent.len());
    assert_eq!(lines.len(), sent.len(), "one line per request");
    let by_path: HashMap<&str, &Value> = lines
        .iter()
        .map(|line| (line["path"].as_str().expect("a path"), line))
        .collect();
    for (path, status) in &sent {
        let line = by_path
            .get(path.as_str())
            .unwrap_or_else(|| panic!("no line for {path}"));
        assert_eq!(line["method"], "GET", "{line}");
        assert_eq!(line["response_code"], *status, "{line}");
    }
    let line = |path: &str| by_path[path];
    assert_eq!(line("/cart/no-token")["sub"], Value::Null);
    assert_eq!(line("/cart/intruder")["sub"], "ivan");
    assert_eq!(line("/cart/no-group")["sub"], "bob");
    assert_eq!(line("/cart/alice")["sub"], "alice");
    assert_eq!(line(&format!("/cart/limit/{LIMIT}"))["sub"], "carol");
    for status in [401, 403, 429, 200] {
        assert!(
            lines.iter().any(|l| l["response_code"] == status),
            "a {status} line"
        );
    }
    let mut clusters: HashMap<&str, usize> = HashMap::new();
    for i in 0..SPLIT_USERS {
        let line = line(&format!("/cart/split/{i}"));
        assert_eq!(line["sub"], format!("user-{i}"));
        *clusters
            .entry(line["upstream_cluster"].as_str().expect("a cluster"))
            .or_default() += 1;
    }
    assert_eq!(clusters.len(), 2, "both clusters logged: {clusters:?}");
    assert!(clusters.contains_key("shop-v1") && clusters.contains_key("shop-v2"));
    let post = mesh.logs.last_seen();
    assert_eq!(
        (post.method.as_str(), post.path.as_str()),
        ("POST", "/v1/logs")
    );
    assert_eq!(post.headers["content-type"], "application/x-ndjson");
}

/// Every line the access-log collector has received so far.
fn logged_lines(collector: &Upstream) -> Vec<Value> {
    collector
        .seen
        .lock()
        .expect("seen")
        .iter()
        .flat_map(|post| {
            String::from_utf8_lossy(&post.body)
                .lines()
                .map(|l| serde_json::from_str(l).expect("a JSON line"))
                .collect::<Vec<Value>>()
        })
        .collect()
}
