//! The host driving a real filter built from Rust with the published `proxy-wasm` SDK
//! (`test-programs/probe`), the way Envoy would: headers edited, local responses, properties,
//! shared data across replicas, metrics, and recovery from traps, runaway loops and memory bombs.

use std::sync::Arc;
use std::time::Duration;

use wasmesh_host::{Action, FailureKind, Host, HostConfig, LoadError, PluginConfig, StreamEnv};

struct Env;

impl StreamEnv for Env {
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        match path {
            ["request", "path"] => Some(b"/from-env".to_vec()),
            _ => None,
        }
    }
}

fn probe() -> Vec<u8> {
    std::fs::read(wasmesh_test_programs::PROBE_WASM).expect("probe filter was built")
}

fn load(
    host: &Host,
    config: &str,
    tweak: impl FnOnce(&mut PluginConfig),
) -> Result<Arc<wasmesh_host::Plugin>, LoadError> {
    let mut cfg = PluginConfig::new("probe");
    cfg.plugin_config = config.as_bytes().to_vec();
    cfg.vm_id = "probe-vm".into();
    tweak(&mut cfg);
    host.load_plugin(cfg, &probe())
}

fn header<'a>(map: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    map.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
}

fn request(path: &str, extra: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    let mut h = vec![
        (":method".to_string(), b"GET".to_vec()),
        (":path".to_string(), path.as_bytes().to_vec()),
        (":authority".to_string(), b"test".to_vec()),
    ];
    for (k, v) in extra {
        h.push((k.to_string(), v.as_bytes().to_vec()));
    }
    h
}

#[test]
fn edits_headers_counts_across_replicas_and_defines_metrics() {
    let host = Host::new(HostConfig::default()).expect("host");
    let plugin = load(&host, "hello", |_| {}).expect("load");
    for expected in 1..=4u32 {
        let mut s = plugin.http_stream(Arc::new(Env)).expect("stream");
        s.data.request_headers = request("/x", &[("x-remove-me", "1")]);
        assert_eq!(s.on_request_headers(true), Ok(Action::Continue));
        let h = &s.data.request_headers;
        assert_eq!(header(h, "x-probe-config"), Some(&b"hello"[..]));
        assert_eq!(header(h, "x-remove-me"), None);
        // Two replicas take turns; the count lives in host-side shared data, so it is global.
        assert_eq!(
            header(h, "x-probe-count"),
            Some(expected.to_string().as_bytes())
        );
        s.data.response_headers = vec![(":status".into(), b"200".to_vec())];
        assert_eq!(s.on_response_headers(false), Ok(Action::Continue));
        assert_eq!(
            header(&s.data.response_headers, "x-probe"),
            Some(&b"response"[..])
        );
    }
    let metrics = plugin.metrics().snapshot();
    assert!(
        metrics
            .iter()
            .any(|(name, _, v)| name == "probe_requests" && *v == 4),
        "{metrics:?}"
    );
}

#[test]
fn local_response_and_properties() {
    let host = Host::new(HostConfig::default()).expect("host");
    let plugin = load(&host, "", |_| {}).expect("load");
    let mut s = plugin.http_stream(Arc::new(Env)).expect("stream");
    s.data.request_headers = request("/local", &[]);
    assert_eq!(s.on_request_headers(true), Ok(Action::Pause));
    let local = s.take_local_response().expect("local response");
    assert_eq!(local.status, 418);
    assert_eq!(local.body, b"local reply");
    assert_eq!(header(&local.headers, "x-local"), Some(&b"yes"[..]));

    for (name, want) in [
        ("request.path", &b"/from-env"[..]),
        ("plugin_name", b"probe"),
        ("plugin_vm_id", b"probe-vm"),
    ] {
        let mut s = plugin.http_stream(Arc::new(Env)).expect("stream");
        s.data.request_headers = request("/p", &[("x-probe-property", name)]);
        assert_eq!(s.on_request_headers(true), Ok(Action::Continue));
        assert_eq!(
            header(&s.data.request_headers, "x-property"),
            Some(want),
            "{name}"
        );
    }
}

#[test]
fn on_configure_false_refuses_the_plugin() {
    let host = Host::new(HostConfig::default()).expect("host");
    match load(&host, "reject", |_| {}) {
        Err(LoadError::Rejected { callback, log, .. }) => {
            assert_eq!(callback, "proxy_on_configure");
            // The refusal quotes why, in the filter's words.
            assert!(
                log.iter()
                    .any(|l| l.contains("configuration \"reject\" refused")),
                "{log:?}"
            );
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a plugin whose on_configure fails must not load"),
    }
}

fn survives(plugin: &Arc<wasmesh_host::Plugin>, trigger: &str, kind: FailureKind) {
    let mut s = plugin.http_stream(Arc::new(Env)).expect("stream");
    s.data.request_headers = request("/", &[(trigger, "1")]);
    let err = s
        .on_request_headers(true)
        .expect_err("the filter must fail");
    assert_eq!(err.kind, kind, "{err}");
    drop(s);
    // Every replica keeps serving afterwards (the failed one is rebuilt).
    for _ in 0..4 {
        let mut s = plugin
            .http_stream(Arc::new(Env))
            .expect("stream after failure");
        s.data.request_headers = request("/", &[]);
        assert_eq!(s.on_request_headers(true), Ok(Action::Continue));
    }
}

#[test]
fn trap_is_contained_and_the_replica_rebuilt() {
    let host = Host::new(HostConfig::default()).expect("host");
    let plugin = load(&host, "", |_| {}).expect("load");
    survives(&plugin, "x-probe-trap", FailureKind::Trap);
}

#[test]
fn runaway_loop_is_stopped_by_the_deadline() {
    let host = Host::new(HostConfig::default()).expect("host");
    let plugin = load(&host, "", |c| c.deadline = Duration::from_secs(1)).expect("load");
    survives(&plugin, "x-probe-loop", FailureKind::Timeout);
}

#[test]
fn memory_bomb_is_stopped_by_the_cap() {
    let host = Host::new(HostConfig::default()).expect("host");
    let plugin = load(&host, "", |c| c.memory_limit = 16 * 1024 * 1024).expect("load");
    survives(&plugin, "x-probe-grow", FailureKind::Trap);
}

#[test]
fn precompiled_cache_is_reused() {
    let dir = tempfile_dir();
    let host = Host::new(HostConfig {
        cache_dir: Some(dir.clone()),
        ..HostConfig::default()
    })
    .expect("host");
    load(&host, "", |_| {}).expect("first load compiles");
    let cached: Vec<_> = std::fs::read_dir(&dir).expect("cache dir").collect();
    assert_eq!(cached.len(), 1, "one precompiled module on disk");
    let host2 = Host::new(HostConfig {
        cache_dir: Some(dir.clone()),
        ..HostConfig::default()
    })
    .expect("host");
    let plugin = load(&host2, "again", |_| {}).expect("second load uses the cache");
    let mut s = plugin.http_stream(Arc::new(Env)).expect("stream");
    s.data.request_headers = request("/", &[]);
    assert_eq!(s.on_request_headers(true), Ok(Action::Continue));
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmesh-host-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Polls a fresh stream until `header` satisfies `ok`; the tick and queue callbacks run on the
/// tokio runtime, so they need a moment, but nothing here asserts how long.
async fn eventually_header(
    plugin: &Arc<wasmesh_host::Plugin>,
    extra: &[(&str, &str)],
    header_name: &str,
    ok: impl Fn(&[u8]) -> bool,
) -> bool {
    for _ in 0..400 {
        let mut s = plugin.http_stream(Arc::new(Env)).expect("stream");
        s.data.request_headers = request("/", extra);
        assert_eq!(s.on_request_headers(true), Ok(Action::Continue));
        if header(&s.data.request_headers, header_name).is_some_and(&ok) {
            return true;
        }
        drop(s);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test]
async fn tick_runs_on_the_root_context() {
    let host = Host::new(HostConfig::default()).expect("host");
    let plugin = load(&host, "tick", |_| {}).expect("load");
    let ticked = eventually_header(&plugin, &[], "x-probe-ticks", |v| {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|n| n >= 3)
    })
    .await;
    assert!(ticked, "proxy_on_tick never ran three times");
}

/// The shared `probe_ticks` count, read through a fresh stream.
fn ticks(plugin: &Arc<wasmesh_host::Plugin>) -> u64 {
    let mut s = plugin.http_stream(Arc::new(Env)).expect("stream");
    s.data.request_headers = request("/", &[]);
    assert_eq!(s.on_request_headers(true), Ok(Action::Continue));
    header(&s.data.request_headers, "x-probe-ticks")
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_tick_period_set_after_configure_starts_the_timer_and_zero_stops_it() {
    let host = Host::new(HostConfig::default()).expect("host");
    // No period at configure time: the timer must start when a stream sets one.
    let plugin = load(&host, "", |c| c.replicas = 1).expect("load");
    let ticked = eventually_header(
        &plugin,
        &[("x-probe-set-tick", "10")],
        "x-probe-ticks",
        |v| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|n| n >= 3)
        },
    )
    .await;
    assert!(
        ticked,
        "a period set from a stream never started proxy_on_tick"
    );

    let mut s = plugin.http_stream(Arc::new(Env)).expect("stream");
    s.data.request_headers = request("/", &[("x-probe-set-tick", "0")]);
    assert_eq!(s.on_request_headers(true), Ok(Action::Continue));
    drop(s);
    // A tick already due may still run once; after that the count must hold still (at a
    // 10 ms period it would otherwise move between two reads 200 ms apart).
    let mut stopped = false;
    for _ in 0..50 {
        let before = ticks(&plugin);
        tokio::time::sleep(Duration::from_millis(200)).await;
        if ticks(&plugin) == before {
            stopped = true;
            break;
        }
    }
    assert!(stopped, "a period of 0 did not stop proxy_on_tick");
}

#[tokio::test]
async fn shared_queue_delivers_to_the_registering_root_context() {
    let host = Host::new(HostConfig::default()).expect("host");
    let plugin = load(&host, "", |_| {}).expect("load");
    let mut s = plugin.http_stream(Arc::new(Env)).expect("stream");
    s.data.request_headers = request("/", &[("x-probe-enqueue", "hello-queue")]);
    assert_eq!(s.on_request_headers(true), Ok(Action::Continue));
    drop(s);
    let delivered = eventually_header(&plugin, &[], "x-probe-last", |v| v == b"hello-queue").await;
    assert!(
        delivered,
        "proxy_on_queue_ready never delivered the message"
    );
}
