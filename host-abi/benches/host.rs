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
    let mut headers = request_headers();
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
