//! mTLS identity against hostile clients: certificates that are expired, not yet valid, made
//! for servers only, signed by another CA, self-signed copies of an allowed identity, and
//! allowed certificates whose SPIFFE ID the stock `rbac` filter denies — plus clients without
//! a certificate that forge `x-forwarded-client-cert`. None of them reaches the upstream; the
//! allowed identity does.

mod support;

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use support::*;

const FRONTEND: &str = "spiffe://mesh.test/ns/web/sa/frontend";
const INTRUDER: &str = "spiffe://mesh.test/ns/web/sa/intruder";

/// A CA of this test's own, to make the odd certificates `support::Pki` does not.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    dir: std::path::PathBuf,
}

/// A calendar day as (year, month, day).
type Day = (i32, u8, u8);

/// What a client certificate looks like.
struct Spec<'a> {
    name: &'a str,
    uri: Option<&'a str>,
    /// (not before, not after).
    validity: Option<(Day, Day)>,
    /// Client authentication among its extended key usages.
    client_auth: bool,
}

impl<'a> Spec<'a> {
    fn client(name: &'a str, uri: &'a str) -> Self {
        Spec {
            name,
            uri: Some(uri),
            validity: None,
            client_auth: true,
        }
    }
}

impl Ca {
    fn new(dir: &std::path::Path, name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("ca key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("ca cert");
        std::fs::write(dir.join(format!("{name}.pem")), issuer.pem()).expect("write ca");
        Ca {
            issuer,
            dir: dir.to_path_buf(),
        }
    }

    fn params(spec: &Spec) -> rcgen::CertificateParams {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, spec.name);
        if let Some(uri) = spec.uri {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(uri.try_into().expect("uri")));
        }
        if let Some(((y1, m1, d1), (y2, m2, d2))) = spec.validity {
            params.not_before = rcgen::date_time_ymd(y1, m1, d1);
            params.not_after = rcgen::date_time_ymd(y2, m2, d2);
        }
        params.extended_key_usages = if spec.client_auth {
            vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth]
        } else {
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth]
        };
        params
    }

    fn write(&self, name: &str, cert: &rcgen::Certificate, key: &rcgen::KeyPair) -> Leaf {
        let cert_path = self.dir.join(format!("{name}.pem"));
        let key_path = self.dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        Leaf {
            cert: cert_path.display().to_string(),
            key: key_path.display().to_string(),
        }
    }

    /// A certificate this CA signs.
    fn issue(&self, spec: &Spec) -> Leaf {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = Ca::params(spec)
            .signed_by(&key, &self.issuer)
            .expect("sign");
        self.write(spec.name, &cert, &key)
    }

    /// A self-signed certificate that looks like one this CA would sign.
    fn forge(&self, spec: &Spec) -> Leaf {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = Ca::params(spec).self_signed(&key).expect("self-sign");
        self.write(spec.name, &cert, &key)
    }
}

fn config(server: &Leaf, ca: &str, require: bool, upstream: std::net::SocketAddr) -> String {
    format!(
        r#"
listeners:
  - name: tls
    address: "127.0.0.1:0"
    route_config: main
    filter_chain: authz
    header_read_timeout: 2s
    forward_client_cert: true
    tls:
      certificates:
        - cert_file: "{cert}"
          key_file: "{key}"
          server_names: ["proxy.test"]
      client_ca_file: "{ca}"
      require_client_cert: {require}
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
        deadline: 1s
        config:
          action: ALLOW
          policies:
            frontend:
              permissions: [{{ any: true }}]
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

/// A rustls client trusting `ca_pem` (the proxy's CA), presenting `client` if any.
fn client(ca_pem: &str, client: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca_pem).expect("ca file") {
        roots.add(cert.expect("ca cert")).expect("add ca");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let mut config = match client {
        Some(leaf) => {
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(&leaf.cert)
                .expect("cert file")
                .collect::<Result<Vec<_>, _>>()
                .expect("certs");
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&leaf.key).expect("key");
            builder
                .with_client_auth_cert(certs, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// What happened to one request: refused at the TLS layer (handshake or first exchange — TLS
/// 1.3 finishes the client's side first), or answered with a status.
#[derive(Debug, PartialEq)]
enum Fate {
    Refused,
    Status(u16),
}

async fn attempt(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    headers: &[(&str, &str)],
) -> Fate {
    let Ok(tls) = tls_connect(addr, "proxy.test", config).await else {
        return Fate::Refused;
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await
    else {
        return Fate::Refused;
    };
    tokio::spawn(conn);
    match sender.send_request(request("GET", "/", headers)).await {
        Ok(response) => Fate::Status(response.status().as_u16()),
        Err(_) => Fate::Refused,
    }
}

#[tokio::test]
async fn only_a_valid_certificate_with_an_allowed_identity_reaches_the_upstream() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new(dir.path(), "mesh-ca");
    let rogue_ca = Ca::new(dir.path(), "rogue-ca");
    let server = {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["proxy.test".to_string()]).expect("params");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &ca.issuer).expect("sign");
        ca.write("proxy", &cert, &key)
    };
    let ca_file = dir.path().join("mesh-ca.pem").display().to_string();
    let upstream = Upstream::named("backend").await;

    let good = ca.issue(&Spec::client("frontend", FRONTEND));
    let cases: Vec<(&str, Option<Leaf>, Fate)> = vec![
        ("no certificate", None, Fate::Refused),
        (
            "expired",
            Some(ca.issue(&Spec {
                validity: Some(((2001, 1, 1), (2002, 1, 1))),
                ..Spec::client("expired", FRONTEND)
            })),
            Fate::Refused,
        ),
        (
            "not valid yet",
            Some(ca.issue(&Spec {
                validity: Some(((2999, 1, 1), (3000, 1, 1))),
                ..Spec::client("future", FRONTEND)
            })),
            Fate::Refused,
        ),
        (
            "made for servers only",
            Some(ca.issue(&Spec {
                client_auth: false,
                ..Spec::client("server-only", FRONTEND)
            })),
            Fate::Refused,
        ),
        (
            "signed by another CA",
            Some(rogue_ca.issue(&Spec::client("rogue", FRONTEND))),
            Fate::Refused,
        ),
        (
            "self-signed with the allowed identity",
            Some(ca.forge(&Spec::client("forged", FRONTEND))),
            Fate::Refused,
        ),
        (
            "valid, but an identity the policy denies",
            Some(ca.issue(&Spec::client("intruder", INTRUDER))),
            Fate::Status(403),
        ),
    ];

    for require in [true, false] {
        let proxy = Proxy::start(&config(&server, &ca_file, require, upstream.addr));
        let addr = proxy.addr("tls");
        for (name, leaf, fate) in &cases {
            let hits = upstream.hits();
            // Without a required certificate, a client that presents none is let in and
            // judged by the policy, which finds no identity: 403.
            let expected = match (require, leaf) {
                (false, None) => Fate::Status(403),
                _ => match fate {
                    Fate::Refused => Fate::Refused,
                    Fate::Status(s) => Fate::Status(*s),
                },
            };
            // The forged header claims the allowed identity; only the TLS peer counts.
            let forged = format!("By=spiffe://mesh.test;URI={FRONTEND}");
            let got = attempt(
                addr,
                client(&ca_file, leaf.as_ref()),
                &[("x-forwarded-client-cert", forged.as_str())],
            )
            .await;
            assert_eq!(got, expected, "require={require}: {name}");
            assert_eq!(
                upstream.hits(),
                hits,
                "require={require}: {name} reached the upstream"
            );
        }
        assert_eq!(
            attempt(addr, client(&ca_file, Some(&good)), &[]).await,
            Fate::Status(200),
            "require={require}: the allowed identity"
        );
        let xfcc = upstream.last_seen().headers["x-forwarded-client-cert"]
            .to_str()
            .expect("ascii")
            .to_string();
        assert!(xfcc.contains(&format!("URI={FRONTEND}")), "{xfcc}");
        assert_eq!(
            xfcc.matches("URI=").count(),
            1,
            "only the proxy's own XFCC went upstream: {xfcc}"
        );
    }
}
