//! Properties: every attribute path the proxy claims (README "Wasm filters"), read where Envoy
//! makes it available and compared with what the run knows (the client's and the listener's
//! addresses, the request it sent, the mTLS certificates); the host's own `plugin_*`
//! attributes; and a property set by the filter and read back.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use hyper_util::rt::TokioIo;

use crate::capture;
use crate::check::{Check, Env, Expect, Scope, eq};
use crate::error::{Context, Result};
use crate::host_env;
use crate::net::client;
use crate::net::tls::{self, Pki};
use crate::net::upstream::{Answer, Upstream};
use crate::observe::{Facts, Run};
use crate::probes;
use crate::proxy_env::{self, Proxy, ROOT_ID};

const PROBE: &str = "properties";
const VM_ID: &str = "conformance-vm";
const PATH: &str = "/props/x?q=1";
const USER_AGENT: &str = "conformance-ua";
const REFERER: &str = "https://ref.example/";
const UPSTREAM_BODY: &str = "props-body";

/// One attribute the probe reads: in which callback, the check's id, where the attribute is
/// claimed (host-abi answers the `plugin_*` attributes itself and passes the others through
/// from its embedder), and what its value is.
struct Read {
    phase: &'static str,
    path: &'static str,
    id: &'static str,
    scope: Scope,
    what: &'static str,
}

const fn read(
    phase: &'static str,
    path: &'static str,
    id: &'static str,
    scope: Scope,
    what: &'static str,
) -> Read {
    Read {
        phase,
        path,
        id,
        scope,
        what,
    }
}

const READS: &[Read] = &[
    read(
        "request_headers",
        "request.path",
        "prop.request.path",
        Scope::Both,
        "the path sent",
    ),
    read(
        "request_headers",
        "request.url_path",
        "prop.request.url_path",
        Scope::Only(Env::Proxy),
        "the path without its query",
    ),
    read(
        "request_headers",
        "request.query",
        "prop.request.query",
        Scope::Only(Env::Proxy),
        "the query sent",
    ),
    read(
        "request_headers",
        "request.method",
        "prop.request.method",
        Scope::Only(Env::Proxy),
        "`GET`",
    ),
    read(
        "request_headers",
        "request.host",
        "prop.request.host",
        Scope::Only(Env::Proxy),
        "the Host sent",
    ),
    read(
        "request_headers",
        "request.scheme",
        "prop.request.scheme",
        Scope::Only(Env::Proxy),
        "`https`",
    ),
    read(
        "request_headers",
        "request.protocol",
        "prop.request.protocol",
        Scope::Only(Env::Proxy),
        "`HTTP/1.1`",
    ),
    read(
        "request_headers",
        "request.id",
        "prop.request.id",
        Scope::Only(Env::Proxy),
        "the x-request-id the upstream got",
    ),
    read(
        "request_headers",
        "request.useragent",
        "prop.request.useragent",
        Scope::Only(Env::Proxy),
        "the User-Agent sent",
    ),
    read(
        "request_headers",
        "request.referer",
        "prop.request.referer",
        Scope::Only(Env::Proxy),
        "the Referer sent",
    ),
    read(
        "request_headers",
        "request.time",
        "prop.request.time",
        Scope::Only(Env::Proxy),
        "",
    ),
    read(
        "request_headers",
        "request.headers.x-conformance",
        "prop.request.headers.x-conformance",
        Scope::Only(Env::Proxy),
        "the header's value",
    ),
    read(
        "request_headers",
        "request.headers.x-multi",
        "prop.request.headers.x-multi",
        Scope::Only(Env::Proxy),
        "the header's two values joined with `,`",
    ),
    read(
        "request_headers",
        "source.address",
        "prop.source.address",
        Scope::Only(Env::Proxy),
        "the client's address",
    ),
    read(
        "request_headers",
        "source.port",
        "prop.source.port",
        Scope::Only(Env::Proxy),
        "the client's port (integer)",
    ),
    read(
        "request_headers",
        "destination.address",
        "prop.destination.address",
        Scope::Only(Env::Proxy),
        "the listener's address",
    ),
    read(
        "request_headers",
        "destination.port",
        "prop.destination.port",
        Scope::Only(Env::Proxy),
        "the listener's port (integer)",
    ),
    read(
        "request_headers",
        "connection.mtls",
        "prop.connection.mtls",
        Scope::Only(Env::Proxy),
        "true (one byte)",
    ),
    read(
        "request_headers",
        "connection.tls_version",
        "prop.connection.tls_version",
        Scope::Only(Env::Proxy),
        "`TLSv1.3`",
    ),
    read(
        "request_headers",
        "connection.requested_server_name",
        "prop.connection.requested_server_name",
        Scope::Only(Env::Proxy),
        "the SNI sent",
    ),
    read(
        "request_headers",
        "connection.uri_san_peer_certificate",
        "prop.connection.uri_san_peer_certificate",
        Scope::Only(Env::Proxy),
        "the client certificate's URI SAN",
    ),
    read(
        "request_headers",
        "connection.dns_san_peer_certificate",
        "prop.connection.dns_san_peer_certificate",
        Scope::Only(Env::Proxy),
        "the client certificate's DNS SAN",
    ),
    read(
        "request_headers",
        "connection.subject_peer_certificate",
        "prop.connection.subject_peer_certificate",
        Scope::Only(Env::Proxy),
        "the client certificate's subject (RFC 2253)",
    ),
    read(
        "request_headers",
        "route_name",
        "prop.route_name",
        Scope::Only(Env::Proxy),
        "`default`",
    ),
    read(
        "request_headers",
        "cluster_name",
        "prop.cluster_name",
        Scope::Only(Env::Proxy),
        "`backend`",
    ),
    read(
        "request_headers",
        "listener_name",
        "prop.listener_name",
        Scope::Only(Env::Proxy),
        "`main`",
    ),
    read(
        "request_headers",
        "plugin_name",
        "prop.plugin_name",
        Scope::Both,
        "",
    ),
    read(
        "request_headers",
        "plugin_root_id",
        "prop.plugin_root_id",
        Scope::Both,
        "",
    ),
    read(
        "request_headers",
        "plugin_vm_id",
        "prop.plugin_vm_id",
        Scope::Both,
        "",
    ),
    read(
        "request_headers",
        "conformance.no.such.attribute",
        "prop.conformance.no.such.attribute",
        Scope::Both,
        "",
    ),
    read(
        "response_headers",
        "response.code",
        "prop.response.code",
        Scope::Only(Env::Proxy),
        "200 (integer)",
    ),
    read(
        "response_headers",
        "upstream.address",
        "prop.upstream.address",
        Scope::Only(Env::Proxy),
        "the upstream's address",
    ),
    read(
        "response_headers",
        "upstream.port",
        "prop.upstream.port",
        Scope::Only(Env::Proxy),
        "the upstream's port (integer)",
    ),
    read(
        "response_headers",
        "response.headers.x-upstream",
        "prop.response.headers.x-upstream",
        Scope::Only(Env::Proxy),
        "the upstream's header",
    ),
    read(
        "log",
        "request.headers.x-conformance",
        "prop.log.request.headers.x-conformance",
        Scope::Only(Env::Proxy),
        "the request header's value",
    ),
    read(
        "log",
        "request.headers",
        "prop.log.request.headers",
        Scope::Only(Env::Proxy),
        "",
    ),
    read(
        "log",
        "response.headers.x-upstream",
        "prop.log.response.headers.x-upstream",
        Scope::Only(Env::Proxy),
        "the upstream's header",
    ),
    read(
        "log",
        "response.trailers.x-trailer",
        "prop.log.response.trailers.x-trailer",
        Scope::Only(Env::Proxy),
        "the upstream's trailer",
    ),
    read(
        "log",
        "response.code",
        "prop.log.response.code",
        Scope::Only(Env::Proxy),
        "200 (integer)",
    ),
    read(
        "log",
        "upstream.address",
        "prop.log.upstream.address",
        Scope::Only(Env::Proxy),
        "the upstream's address",
    ),
    read(
        "log",
        "upstream.port",
        "prop.log.upstream.port",
        Scope::Only(Env::Proxy),
        "the upstream's port (integer)",
    ),
    read(
        "log",
        "response.size",
        "prop.log.response.size",
        Scope::Only(Env::Proxy),
        "the response body's size (integer)",
    ),
    read(
        "log",
        "response.flags",
        "prop.log.response.flags",
        Scope::Only(Env::Proxy),
        "0 (integer)",
    ),
    read(
        "log",
        "request.size",
        "prop.log.request.size",
        Scope::Only(Env::Proxy),
        "0, the request body's size (integer)",
    ),
    read(
        "log",
        "request.duration",
        "prop.log.request.duration",
        Scope::Only(Env::Proxy),
        "",
    ),
];

/// The probe's configuration for `env`: the reads claimed there.
fn reads(env: Env) -> String {
    READS
        .iter()
        .filter(|r| r.scope.covers(env))
        .map(|r| format!("{} {}\n", r.phase, r.path))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: &str) -> String {
    format!("OK {}", hex(v.as_bytes()))
}

fn int(v: i64) -> String {
    format!("OK {}", hex(&v.to_le_bytes()))
}

/// The bytes of an `OK <hex>` observation.
fn decode_ok(value: &str) -> Option<Vec<u8>> {
    let h = value.strip_prefix("OK ")?;
    if h.len() % 2 != 0 {
        return None;
    }
    (0..h.len() / 2)
        .map(|i| u8::from_str_radix(h.get(i * 2..i * 2 + 2)?, 16).ok())
        .collect()
}

/// The 8-byte little-endian integer in an `OK <hex>` observation.
fn decode_int(value: &str) -> Option<i64> {
    Some(i64::from_le_bytes(decode_ok(value)?.try_into().ok()?))
}

fn time_in_window(value: &str, facts: &Facts) -> bool {
    let bound = |k: &str| facts.get(k).and_then(|v| v.parse::<i64>().ok());
    match (decode_int(value), bound("time.lo"), bound("time.hi")) {
        (Some(v), Some(lo), Some(hi)) => lo <= v && v <= hi,
        _ => false,
    }
}

fn non_negative_int(value: &str, _: &Facts) -> bool {
    decode_int(value).is_some_and(|v| v >= 0)
}

/// Proxy-wasm pairs (spec v0.2.1 Serialization) from an `OK <hex>` observation.
fn decode_pairs(value: &str) -> Option<Vec<(String, String)>> {
    let bytes = decode_ok(value)?;
    let word = |at: usize| -> Option<usize> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(b) as usize)
    };
    let count = word(0)?;
    let mut sizes = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        sizes.push((word(4 + i * 8)?, word(8 + i * 8)?));
    }
    let mut at = 4 + count * 8;
    let mut take = |n: usize| -> Option<String> {
        let s = String::from_utf8(bytes.get(at..at + n)?.to_vec()).ok()?;
        (bytes.get(at + n) == Some(&0)).then_some(())?;
        at += n + 1;
        Some(s)
    };
    sizes
        .into_iter()
        .map(|(k, v)| Some((take(k)?, take(v)?)))
        .collect()
}

/// The whole `request.headers` map: the request's headers as pairs, each name once, a
/// repeated header's values joined.
fn request_header_pairs(value: &str, facts: &Facts) -> bool {
    let Some(pairs) = decode_pairs(value) else {
        return false;
    };
    let has = |k: &str, v: &str| pairs.iter().any(|(pk, pv)| pk == k && pv == v);
    let once = |k: &str| pairs.iter().filter(|(pk, _)| pk == k).count() == 1;
    let request_id = facts
        .get("request_id")
        .map(String::as_str)
        .unwrap_or_default();
    has(":path", PATH)
        && has(":method", "GET")
        && has("x-conformance", "yes")
        && has("x-multi", "a,b")
        && once("x-multi")
        && has("x-request-id", request_id)
}

pub fn checks() -> Vec<Check> {
    const ATTRS: &str = "Envoy attributes (source/extensions/common/wasm/context.cc): strings raw, integers 8 bytes little-endian, booleans 1 byte";
    const PLUGIN: &str =
        "Envoy attributes: plugin_name, plugin_root_id, plugin_vm_id of the running plugin";
    let mut checks = vec![
        Check::new(
            "prop.request.path",
            Expect::Fact(
                "prop.request.path",
                "the path sent (host-abi: the one the harness gave)",
            ),
            ATTRS,
        )
        .proves(&["proxy_get_property"]),
        Check::new(
            "prop.request.time",
            Expect::Holds(
                "8 bytes, the request's start (wall clock, ns)",
                time_in_window,
            ),
            ATTRS,
        )
        .only(Env::Proxy)
        .proves(&["proxy_get_property"]),
        Check::new(
            "prop.log.request.duration",
            Expect::Holds("8 bytes, a duration (ns)", non_negative_int),
            ATTRS,
        )
        .only(Env::Proxy)
        .proves(&["proxy_get_property"]),
        Check::new(
            "prop.log.request.headers",
            Expect::Holds(
                "the request's headers as pairs, each name once (x-multi: `a,b`), \
                 x-request-id included",
                request_header_pairs,
            ),
            "Envoy attributes: request.headers is a map, serialized as proxy-wasm pairs \
             (Context::getProperty)",
        )
        .only(Env::Proxy)
        .proves(&["proxy_get_property"]),
        Check::new(
            "prop.plugin_name",
            Expect::Fact("prop.plugin_name", "the plugin's name"),
            PLUGIN,
        )
        .proves(&["proxy_get_property"]),
        Check::new(
            "prop.plugin_root_id",
            Expect::Fact("prop.plugin_root_id", "the plugin's root_id"),
            PLUGIN,
        )
        .proves(&["proxy_get_property"]),
        Check::new(
            "prop.plugin_vm_id",
            Expect::Fact("prop.plugin_vm_id", "the plugin's vm_id"),
            PLUGIN,
        )
        .proves(&["proxy_get_property"]),
        eq(
            "prop.conformance.no.such.attribute",
            "NOT_FOUND",
            "spec v0.2.1 proxy_get_property: NOT_FOUND for a path that does not exist",
        )
        .proves(&["proxy_get_property", "proxy_status_t"]),
        eq(
            "prop.set_status",
            "OK",
            "spec v0.2.1 proxy_set_property: OK on success",
        )
        .proves(&["proxy_set_property"]),
        eq(
            "prop.set_then_get",
            "OK 7631",
            "Envoy: a property set by the filter reads back (filter state)",
        )
        .proves(&["proxy_set_property", "proxy_get_property"]),
    ];
    // The rest compare with the request the suite sent, in the proxy.
    for r in READS {
        if checks.iter().any(|c| c.id == r.id) || r.scope != Scope::Only(Env::Proxy) {
            continue;
        }
        checks.push(
            Check::new(r.id, Expect::Fact(r.id, r.what), ATTRS)
                .only(Env::Proxy)
                .proves(&["proxy_get_property"]),
        );
    }
    checks
}

fn set_plugin_facts(run: &mut Run, name: &str) {
    run.fact("prop.plugin_name", text(name));
    run.fact("prop.plugin_root_id", text(ROOT_ID));
    run.fact("prop.plugin_vm_id", text(VM_ID));
}

pub fn host() -> Result<Run> {
    let config = reads(Env::HostAbi);
    let loaded = host_env::load_with(probes::rust(PROBE)?, "properties", |b| {
        b.plugin_config(config.as_str())
            .root_id(ROOT_ID)
            .vm_id(VM_ID)
            .property("request.path", PATH)
    })?;
    let mut run = Run::default();
    set_plugin_facts(&mut run, &loaded.name);
    run.fact("prop.request.path", text(PATH));
    let mut stream = loaded.harness.http_stream().doing("a stream")?;
    stream
        .send_request_headers(
            &[
                (":method", "GET"),
                (":path", PATH),
                (":authority", "conformance.local"),
            ],
            true,
        )
        .doing("request headers")?;
    stream
        .send_response_headers(&[(":status", "200")], false)
        .doing("response headers")?;
    stream
        .send_response_body(b"x", true)
        .doing("response body")?;
    drop(stream);
    run.harness(&loaded.harness);
    Ok(run)
}

fn nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub async fn proxy() -> Result<Run> {
    let wasm = probes::rust(PROBE)?;
    // The answer ends with a trailer (announced, as HTTP/1.1 needs) for `response.trailers`.
    let upstream = Upstream::start(|_| {
        let mut answer = Answer::ok("properties", UPSTREAM_BODY);
        answer.headers.push(("trailer".into(), "x-trailer".into()));
        answer.trailers = vec![("x-trailer".into(), "done".into())];
        answer
    })
    .await?;
    let dir = tempfile::tempdir().doing("a directory for the test PKI")?;
    let pki = Pki::new(dir.path())?;
    let name = capture::unique("properties");
    let plugins = proxy_env::plugin(&name, wasm, &reads(Env::Proxy), VM_ID);
    let yaml = format!(
        r#"
listeners:
  - name: main
    address: "127.0.0.1:0"
    route_config: main
    filter_chain: probe
    tls:
      certificates:
        - cert_file: "{cert}"
          key_file: "{key}"
      client_ca_file: "{ca}"
      require_client_cert: true
      alpn: [http/1.1]
routes:
  - name: main
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: default
            match: {{ prefix: "/" }}
            cluster: backend
clusters:
  - name: backend
    endpoints: ["{upstream}"]
filter_chains:
  - name: probe
    plugins:
{plugins}
admin:
  address: "127.0.0.1:0"
drain_timeout: 1s
"#,
        cert = pki.server_cert.display(),
        key = pki.server_key.display(),
        ca = pki.ca.display(),
        upstream = upstream.addr,
    );
    let mut run = Run::default();
    set_plugin_facts(&mut run, &name);
    Proxy::with(&yaml, async |proxy: &Proxy| {
        let listener: SocketAddr = proxy.listener("main")?;
        let tls = pki.connect(listener).await?;
        let local = tls.get_ref().0.local_addr().doing("the client's address")?;
        let req = client::request(
            "GET",
            PATH,
            &[
                ("user-agent", USER_AGENT),
                ("referer", REFERER),
                ("x-conformance", "yes"),
                ("x-multi", "a"),
                ("x-multi", "b"),
                // Passed on, so the upstream may send its trailer.
                ("te", "trailers"),
            ],
            client::empty(),
        )?;
        run.fact("time.lo", nanos().to_string());
        let reply = client::send_on(TokioIo::new(tls), req, false).await?;
        run.fact("time.hi", nanos().to_string());
        run.obs.add("prop.client_status", reply.status.to_string());
        let seen = upstream.last()?;
        run.fact("request_id", seen.header("x-request-id"));
        for (path, value) in [
            ("request.path", text(PATH)),
            ("request.url_path", text("/props/x")),
            ("request.query", text("q=1")),
            ("request.method", text("GET")),
            ("request.host", text("conformance.local")),
            ("request.scheme", text("https")),
            ("request.protocol", text("HTTP/1.1")),
            ("request.id", text(&seen.header("x-request-id"))),
            ("request.useragent", text(USER_AGENT)),
            ("request.referer", text(REFERER)),
            ("request.headers.x-conformance", text("yes")),
            ("request.headers.x-multi", text("a,b")),
            ("response.headers.x-upstream", text("properties")),
            ("log.request.headers.x-conformance", text("yes")),
            ("log.response.headers.x-upstream", text("properties")),
            ("log.response.trailers.x-trailer", text("done")),
            ("source.address", text(&local.to_string())),
            ("source.port", int(i64::from(local.port()))),
            ("destination.address", text(&listener.to_string())),
            ("destination.port", int(i64::from(listener.port()))),
            ("connection.mtls", "OK 01".to_string()),
            ("connection.tls_version", text("TLSv1.3")),
            ("connection.requested_server_name", text(tls::SERVER_NAME)),
            (
                "connection.uri_san_peer_certificate",
                text(tls::CLIENT_URI_SAN),
            ),
            (
                "connection.dns_san_peer_certificate",
                text(tls::CLIENT_DNS_SAN),
            ),
            (
                "connection.subject_peer_certificate",
                text(&format!("CN={}", tls::CLIENT_CN)),
            ),
            ("route_name", text("default")),
            ("cluster_name", text("backend")),
            ("listener_name", text("main")),
            ("response.code", int(200)),
            ("upstream.address", text(&upstream.addr.to_string())),
            ("upstream.port", int(i64::from(upstream.addr.port()))),
            ("log.response.code", int(200)),
            ("log.upstream.address", text(&upstream.addr.to_string())),
            ("log.upstream.port", int(i64::from(upstream.addr.port()))),
            ("log.response.size", int(UPSTREAM_BODY.len() as i64)),
            ("log.response.flags", int(0)),
            ("log.request.size", int(0)),
        ] {
            run.fact(&format!("prop.{path}"), value);
        }
        Ok(())
    })
    .await?;
    run.lines(&name);
    Ok(run)
}
