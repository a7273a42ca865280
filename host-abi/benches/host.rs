//! The host's costs that matter per request and per reload, on the stock `headers` filter (it
//! sets one request and one response header, as a typical policy filter touches headers):
//!
//! - `request/N filters`: one request through a chain of N plugins — stream contexts created,
//!   `on_request_headers` in order and `on_response_headers` in reverse over a realistic header
//!   map, contexts ended (`on_done`, `on_log`, `on_delete`) — as the proxy does it, without the
//!   network. The difference between N and 0 is what the filters add.
//! - `replica/instantiate`: one VM replica built from a compiled module (instantiate, WASI
//!   start, `on_vm_start`, `on_configure`): what a reload or a crashed replica costs.
//! - memory per replica: resident memory grown by building replicas, printed once.
//! - `stock/<filter>`: one request through each stock filter alone, configured as in its
//!   README (jwt-authn verifying an EdDSA token a client resends, so its cache answers; rbac
//!   matching a policy; ratelimit taking a token) — the per-request cost of each, to compare
//!   with `request/0 filters`.
//!
//! Run with `cargo bench -p wasmesh-host --bench host`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use wasmesh_host::{Host, HostConfig, HttpStream, Plugin, PluginConfig, StreamEnv};

struct NoAttributes;

impl StreamEnv for NoAttributes {
    fn property(&self, _path: &[&str]) -> Option<Vec<u8>> {
        None
    }
}

const CONFIG: &str =
    r#"{"request": {"set": {"x-policy": "on"}}, "response": {"set": {"x-served-by": "wasmesh"}}}"#;

fn plugin_config(name: &str, replicas: usize) -> PluginConfig {
    let mut config = PluginConfig::new(name);
    config.plugin_config = CONFIG.as_bytes().to_vec();
    config.replicas = replicas;
    config.deadline = Duration::from_secs(1);
    config
}

fn request_headers() -> Vec<(String, Vec<u8>)> {
    [
        (":method", "GET"),
        (":path", "/api/v1/users/42?verbose=1"),
        (":authority", "api.example.com"),
        (":scheme", "http"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        ("x-forwarded-for", "10.0.0.7"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "0b7e3f52-6f0b-4a53-9c3f-2f1f0f2e9a11"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
    .collect()
}

fn response_headers() -> Vec<(String, Vec<u8>)> {
    [
        (":status", "200"),
        ("content-type", "application/json"),
        ("content-length", "512"),
        ("date", "Mon, 23 Nov 2026 10:00:00 GMT"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
    .collect()
}

/// One request's header phases through `chain`, as the proxy runs them.
fn one_request(chain: &[Arc<Plugin>], env: &Arc<dyn StreamEnv>) {
    request_with(chain, env, &[]);
}

/// The request's headers with `extra` ones (a token, say) added.
fn request_headers_with(extra: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    let mut headers = request_headers();
    headers.extend(
        extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
    );
    headers
}

/// One request with `extra` request headers through `chain`.
fn request_with(chain: &[Arc<Plugin>], env: &Arc<dyn StreamEnv>, extra: &[(&str, &str)]) {
    let mut headers = request_headers_with(extra);
    let mut streams: Vec<HttpStream> = Vec::with_capacity(chain.len());
    for plugin in chain {
        let mut stream = plugin.http_stream(env.clone()).expect("stream");
        stream.data.request_headers = std::mem::take(&mut headers);
        stream.on_request_headers(true).expect("request headers");
        headers = std::mem::take(&mut stream.data.request_headers);
        streams.push(stream);
    }
    let mut headers = response_headers();
    for stream in streams.iter_mut().rev() {
        stream.data.response_headers = std::mem::take(&mut headers);
        stream.on_response_headers(true).expect("response headers");
        headers = std::mem::take(&mut stream.data.response_headers);
    }
    std::hint::black_box(&headers);
    drop(streams);
}

/// An EdDSA-signed JWT and the JWKS that verifies it, from a fixed key.
fn jwt() -> (String, String) {
    use base64::Engine as _;
    use ed25519_dalek::Signer as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let header = b64(br#"{"alg":"EdDSA","typ":"JWT","kid":"bench"}"#);
    let claims =
        b64(br#"{"iss":"https://issuer.bench","aud":"bench","sub":"user-42","exp":4102444800}"#);
    let signed = format!("{header}.{claims}");
    let signature = b64(&key.sign(signed.as_bytes()).to_bytes());
    let jwks = format!(
        r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"bench","x":"{}"}}]}}"#,
        b64(key.verifying_key().as_bytes())
    );
    (format!("{signed}.{signature}"), jwks)
}

/// A stock filter's name, its configuration, and request headers it wants.
type Stock = (&'static str, String, Vec<(&'static str, String)>);

/// Each stock filter, configured as its README shows.
fn stock_filters() -> Vec<Stock> {
    let (token, jwks) = jwt();
    vec![
        ("headers", CONFIG.to_string(), vec![]),
        (
            "ratelimit",
            r#"{"rules": [{"name": "per-key", "key": {"type": "header", "name": "x-api-key"},
                "bucket": {"max_tokens": 1000000000, "tokens_per_fill": 1000000, "fill_interval": "1s"}}]}"#
                .to_string(),
            vec![("x-api-key", "k1".to_string())],
        ),
        (
            "jwt-authn",
            format!(
                r#"{{"providers": {{"bench": {{"issuer": "https://issuer.bench", "audiences": ["bench"],
                    "local_jwks": {jwks}, "claim_to_headers": [{{"header_name": "x-jwt-sub", "claim_name": "sub"}}]}}}},
                    "rules": [{{"match": {{"prefix": "/"}}, "requires": ["bench"]}}]}}"#
            ),
            vec![("authorization", format!("Bearer {token}"))],
        ),
        (
            "rbac",
            r#"{"action": "ALLOW", "policies": {"api-reads": {
                "permissions": [{"and": [{"method": "GET"}, {"path": {"prefix": "/api/"}}]}],
                "principals": [{"any": true}]}}}"#
                .to_string(),
            vec![],
        ),
        (
            "cors",
            r#"{"allow_origins": ["https://app.example.com", "https://*.example.com"],
                "allow_methods": ["GET", "POST"], "allow_headers": ["content-type"],
                "expose_headers": ["x-request-id"], "max_age": 600}"#
                .to_string(),
            vec![("origin", "https://app.example.com".to_string())],
        ),
        (
            "fault",
            r#"{"abort": {"http_status": 503, "percentage": 0}}"#.to_string(),
            vec![],
        ),
        (
            "traffic-split",
            r#"{"header": "x-route-variant", "variants": [{"name": "stable", "weight": 90},
                {"name": "canary", "weight": 10}]}"#
                .to_string(),
            vec![],
        ),
        (
            "retry-hints",
            r#"{"trusted_cidrs": ["10.0.0.0/8"], "max_retries_cap": 3}"#.to_string(),
            vec![],
        ),
        (
            "access-log",
            r#"{"fields": ["start_time", "method", "path", "response_code", "duration", "request_id"]}"#
                .to_string(),
            vec![],
        ),
        (
            "metrics",
            r#"{"labels": ["route", "method", "code"]}"#.to_string(),
            vec![],
        ),
        (
            "tracing",
            r#"{"collector": {"cluster": "otel"}, "service_name": "bench", "sampling_ratio": 1.0}"#
                .to_string(),
            vec![],
        ),
    ]
}

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn benches(c: &mut Criterion) {
    let wasm = std::fs::read(wasmesh_test_programs::HEADERS_WASM).expect("headers filter");
    let host = Host::new(HostConfig::default()).expect("host");
    let module = host.compile("headers", &wasm).expect("compile");
    let env: Arc<dyn StreamEnv> = Arc::new(NoAttributes);

    let mut group = c.benchmark_group("request");
    for n in [0usize, 1, 5] {
        let chain: Vec<Arc<Plugin>> = (0..n)
            .map(|i| {
                host.load_compiled(plugin_config(&format!("headers-{i}"), 1), &module)
                    .expect("plugin")
            })
            .collect();
        group.bench_function(format!("{n} filters"), |b| {
            b.iter(|| one_request(&chain, &env))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("stock");
    for (name, config, extra) in stock_filters() {
        let Some(path) = wasmesh_test_programs::try_filter(name) else {
            continue;
        };
        let wasm = std::fs::read(path).expect("stock filter");
        let module = host.compile(name, &wasm).expect("compile");
        let mut plugin = plugin_config(name, 1);
        plugin.plugin_config = config.into_bytes();
        let chain = vec![
            host.load_compiled(plugin, &module)
                .unwrap_or_else(|e| panic!("{name}: {e}")),
        ];
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        // A filter that refused the request (a 401, a 403) would be measured on a shorter path.
        let mut stream = chain[0].http_stream(env.clone()).expect("stream");
        stream.data.request_headers = request_headers_with(&extra);
        stream.on_request_headers(true).expect("request headers");
        if let Some(answer) = stream.take_local_response() {
            panic!(
                "{name} answered {} itself: {}",
                answer.status, answer.details
            );
        }
        drop(stream);
        group.bench_function(name, |b| b.iter(|| request_with(&chain, &env, &extra)));
    }
    group.finish();

    c.bench_function("replica/instantiate", |b| {
        b.iter(|| {
            host.load_compiled(plugin_config("replica", 1), &module)
                .expect("plugin")
        })
    });

    // Memory: build many replicas and see how resident memory grew.
    const REPLICAS: usize = 64;
    if let Some(before) = resident_bytes() {
        let plugin = host
            .load_compiled(plugin_config("memory", REPLICAS), &module)
            .expect("replicas");
        // One request per replica, so each has run its stream paths once.
        for _ in 0..REPLICAS {
            one_request(std::slice::from_ref(&plugin), &env);
        }
        if let Some(after) = resident_bytes() {
            println!(
                "memory per replica: {:.2} MiB resident ({} replicas of the headers filter, {} KiB module)",
                after.saturating_sub(before) as f64 / REPLICAS as f64 / (1024.0 * 1024.0),
                REPLICAS,
                wasm.len() / 1024
            );
        }
        drop(plugin);
    }
}

criterion_group! {
    name = host;
    config = Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(host);
