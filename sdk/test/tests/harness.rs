//! The harness driving the probe filter (`host-abi/test-programs/probe`, built with the
//! published `proxy-wasm` crate): every capability a filter test relies on, each checked so it
//! would fail if the capability broke.

use std::time::{Duration, UNIX_EPOCH};

use wasmesh_sdk_test::{
    Action, DEFAULT_START, Error, FailureKind, Harness, HarnessBuilder, LogLevel, MetricType,
    Stream,
};

fn probe() -> HarnessBuilder {
    Harness::builder(wasmesh_test_programs::PROBE_WASM)
        .name("probe")
        .vm_id("probe-vm")
}

fn request<'a>(path: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![(":method", "GET"), (":path", path), (":authority", "test")];
    h.extend_from_slice(extra);
    h
}

fn get(path: &str) -> Vec<(&str, &str)> {
    request(path, &[])
}

fn raw(stream: &Stream, name: &str) -> Option<Vec<u8>> {
    stream
        .request_headers()
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

#[test]
fn loads_with_plugin_and_vm_configuration_root_id_and_vm_id() {
    let h = probe()
        .plugin_config("hello")
        .vm_config("vm-settings")
        .root_id("probe-root")
        .load()
        .expect("load");
    for (property, want) in [
        ("plugin_name", "probe"),
        ("plugin_root_id", "probe-root"),
        ("plugin_vm_id", "probe-vm"),
    ] {
        let mut s = h.http_stream().expect("stream");
        let action = s
            .send_request_headers(&request("/", &[("x-probe-property", property)]), true)
            .expect("headers");
        assert_eq!(action, Action::Continue);
        assert_eq!(s.request_header("x-probe-config").as_deref(), Some("hello"));
        assert_eq!(
            s.request_header("x-probe-vm-config").as_deref(),
            Some("vm-settings")
        );
        assert_eq!(s.request_header("x-property").as_deref(), Some(want));
    }
}

#[test]
fn a_refused_configuration_is_an_error_with_the_filter_log() {
    let err = probe()
        .plugin_config("reject")
        .load()
        .err()
        .expect("on_configure refuses");
    assert!(
        matches!(&err, Error::Load { error: wasmesh_host_error, .. }
            if wasmesh_host_error.to_string().contains("proxy_on_configure returned false")),
        "{err}"
    );
    assert!(
        err.logs()
            .iter()
            .any(|l| l.level == LogLevel::Warn && l.message.contains("\"reject\" refused")),
        "{:?}",
        err.logs()
    );
    assert!(
        err.to_string().contains("[warn] probe: configuration"),
        "{err}"
    );
}

#[test]
fn headers_both_ways_metrics_and_logs() {
    let h = probe().plugin_config("cfg").load().expect("load");
    for n in 1..=2 {
        let mut s = h.http_stream().expect("stream");
        let action = s
            .send_request_headers(
                &request("/x", &[("X-Remove-Me", "1"), ("x-keep", "k")]),
                false,
            )
            .expect("request headers");
        assert_eq!(action, Action::Continue);
        assert_eq!(s.request_header("x-remove-me"), None);
        assert_eq!(s.request_header("x-keep").as_deref(), Some("k"));
        assert_eq!(s.request_header("x-probe-count"), Some(n.to_string()));
        let action = s
            .send_response_headers(&[(":status", "200")], true)
            .expect("response headers");
        assert_eq!(action, Action::Continue);
        assert_eq!(s.response_header_values("x-probe"), ["response"]);
    }
    let metrics = h.metrics();
    let requests = metrics
        .iter()
        .find(|m| m.name == "probe_requests")
        .expect("probe_requests defined");
    assert_eq!((requests.kind, requests.value), (MetricType::Counter, 2));
    assert_eq!(h.metric("probe_requests"), Some(2));
    let logs = h.logs();
    assert!(
        logs.iter()
            .any(|l| l.level == LogLevel::Info && l.message == "probe request 2"),
        "proxy_log lines: {logs:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.level == LogLevel::Info && l.message == "probe configured"),
        "stdout lines: {logs:?}"
    );
    assert!(!h.take_logs().is_empty());
    assert!(h.logs().is_empty(), "taken logs are forgotten");
}

#[test]
fn bodies_are_held_while_the_filter_pauses_and_flow_on_after() {
    let h = probe().load().expect("load");
    let mut s = h.http_stream().expect("stream");
    s.send_request_headers(&request("/", &[("x-probe-body", "1")]), false)
        .expect("headers");
    assert_eq!(
        s.send_request_body(b"hello ", false).expect("chunk"),
        Action::Pause
    );
    assert_eq!(s.request_body(), b"");
    assert_eq!(s.held_request_body(), b"hello ");
    assert_eq!(
        s.send_request_body(b"body", true).expect("last chunk"),
        Action::Continue
    );
    assert_eq!(s.request_body(), b"HELLO BODY");
    assert_eq!(s.held_request_body(), b"");

    s.send_response_headers(&[(":status", "200")], false)
        .expect("response headers");
    assert_eq!(
        s.send_response_body(b"abc", false).expect("chunk"),
        Action::Pause
    );
    assert_eq!(
        s.send_response_body(b"def", true).expect("last"),
        Action::Continue
    );
    assert_eq!(s.response_body(), b"abcdef [probed]");

    // Without x-probe-body every chunk flows on as it comes.
    let mut s = h.http_stream().expect("stream");
    s.send_request_headers(&request("/", &[]), false)
        .expect("headers");
    assert_eq!(
        s.send_request_body(b"one ", false).expect("chunk"),
        Action::Continue
    );
    assert_eq!(s.request_body(), b"one ");
    s.send_request_body(b"two", true).expect("chunk");
    assert_eq!(s.request_body(), b"one two");
}

#[test]
fn trailers_reach_the_filter() {
    let h = probe().load().expect("load");
    let mut s = h.http_stream().expect("stream");
    s.send_request_headers(&request("/", &[]), false)
        .expect("headers");
    assert_eq!(
        s.send_request_trailers(&[("x-checksum", "abc")])
            .expect("trailers"),
        Action::Continue
    );
    let trailers = s.request_trailers();
    assert!(trailers.contains(&("x-checksum".into(), b"abc".to_vec())));
    assert!(trailers.contains(&("x-probe-trailer".into(), b"request".to_vec())));
    s.send_response_headers(&[(":status", "200")], false)
        .expect("response headers");
    s.send_response_trailers(&[("grpc-status", "0")])
        .expect("response trailers");
    assert!(
        s.response_trailers()
            .contains(&("x-probe-trailer".into(), b"response".to_vec()))
    );
}

#[test]
fn local_responses_with_and_without_grpc_status() {
    let h = probe().load().expect("load");
    let mut s = h.http_stream().expect("stream");
    assert_eq!(
        s.send_request_headers(&get("/local"), true)
            .expect("headers"),
        Action::Pause
    );
    let local = s.local_response().expect("local response");
    assert_eq!(local.status, 418);
    assert_eq!(local.body, b"local reply");
    assert!(local.headers.contains(&("x-local".into(), b"yes".to_vec())));
    assert_eq!(local.grpc_status, None);
    assert!(!s.is_paused(), "an answered stream is not waiting");

    let mut s = h.http_stream().expect("stream");
    s.send_request_headers(&get("/grpc-local"), true)
        .expect("headers");
    let local = s.local_response().expect("local response");
    assert_eq!(local.grpc_status, Some(7));
    assert_eq!(local.body, b"denied");
    assert!(
        local
            .headers
            .contains(&("x-grpc-local".into(), b"yes".to_vec()))
    );
}

#[test]
fn properties_for_all_streams_and_for_one() {
    let h = probe()
        .property("request.id", "from-builder")
        .load()
        .expect("load");
    h.set_property("connection.mtls", true);
    // The probe echoes values as text (lossy); this port's 8 LE bytes are all valid UTF-8.
    h.set_property("source.port", 12345);
    h.set_property(
        "connection.uri_san_peer_certificate",
        "spiffe://mesh/ns/a/sa/b",
    );
    let read = |s: &mut Stream, name: &str| {
        s.send_request_headers(&request("/", &[("x-probe-property", name)]), true)
            .expect("headers");
        raw(s, "x-property")
    };
    let mut s = h.http_stream().expect("stream");
    assert_eq!(read(&mut s, "connection.mtls"), Some(vec![1]));
    let mut s = h.http_stream().expect("stream");
    assert_eq!(
        read(&mut s, "source.port"),
        Some(12345i64.to_le_bytes().to_vec())
    );
    let mut s = h.http_stream().expect("stream");
    assert_eq!(read(&mut s, "request.id"), Some(b"from-builder".to_vec()));

    let mut own = h.http_stream().expect("stream");
    own.set_property("connection.uri_san_peer_certificate", "spiffe://mesh/other");
    assert_eq!(
        read(&mut own, "connection.uri_san_peer_certificate"),
        Some(b"spiffe://mesh/other".to_vec())
    );
    let mut s = h.http_stream().expect("stream");
    assert_eq!(
        read(&mut s, "connection.uri_san_peer_certificate"),
        Some(b"spiffe://mesh/ns/a/sa/b".to_vec())
    );
    h.remove_property("connection.mtls");
    let mut s = h.http_stream().expect("stream");
    assert_eq!(read(&mut s, "connection.mtls"), None);
}

#[test]
fn callouts_are_shown_and_answered_and_the_stream_resumes() {
    let h = probe().upstreams(&["backend"]).load().expect("load");
    let mut s = h.http_stream().expect("stream");
    let action = s
        .send_request_headers(
            &request(
                "/",
                &[
                    ("x-probe-callout", "/check"),
                    ("x-probe-callout-body", "payload"),
                ],
            ),
            true,
        )
        .expect("headers");
    assert_eq!(action, Action::Pause);
    assert!(s.is_paused());
    assert!(!s.resumed());
    let callouts = h.pending_callouts();
    assert_eq!(callouts.len(), 1);
    let c = &callouts[0];
    assert_eq!(c.upstream, "backend");
    assert_eq!(c.header(":method").as_deref(), Some("GET"));
    assert_eq!(c.header(":path").as_deref(), Some("/check"));
    assert_eq!(c.header(":authority").as_deref(), Some("auth"));
    assert_eq!(c.body, b"payload");
    assert_eq!(c.timeout, Duration::from_secs(5));
    // While paused, the request is still readable.
    assert_eq!(
        s.request_header("x-probe-callout").as_deref(),
        Some("/check")
    );

    h.respond(c.id, 200, &[("x-from", "backend")], b"allowed")
        .expect("respond");
    assert!(s.resumed());
    assert!(!s.is_paused());
    assert_eq!(s.resume_count(), 1);
    assert_eq!(
        s.request_header("x-callout-body").as_deref(),
        Some("allowed")
    );
    assert_eq!(s.local_response(), None);
    assert!(h.pending_callouts().is_empty());
    assert_eq!(h.callouts().len(), 1, "answered callouts stay listed");
    assert!(matches!(
        h.respond(c.id, 200, &[], b""),
        Err(Error::NoSuchCallout(_))
    ));
    // The stream goes on after its resumption.
    assert_eq!(
        s.send_response_headers(&[(":status", "200")], true)
            .expect("response"),
        Action::Continue
    );
    assert_eq!(s.response_header("x-probe").as_deref(), Some("response"));
}

/// A filter that pauses at the end of the body holds it with the VM: nothing flows on until
/// it resumes, and the callout's answer may change the body meanwhile.
#[test]
fn a_body_paused_at_its_end_is_held_until_the_filter_resumes() {
    let h = probe().upstreams(&["backend"]).load().expect("load");
    let mut s = h.http_stream().expect("stream");
    s.send_request_headers(&request("/", &[("x-probe-body-callout", "/check")]), false)
        .expect("headers");
    assert_eq!(
        s.send_request_body(b"pay", false).expect("chunk"),
        Action::Pause
    );
    assert_eq!(s.held_request_body(), b"pay");
    assert_eq!(
        s.send_request_body(b"load", true).expect("last chunk"),
        Action::Pause
    );
    assert!(s.is_paused());
    assert_eq!(s.request_body(), b"");
    assert_eq!(s.held_request_body(), b"payload");
    let callouts = h.pending_callouts();
    assert_eq!(callouts.len(), 1);
    assert_eq!(callouts[0].body, b"payload");

    h.respond(callouts[0].id, 200, &[], b"checked")
        .expect("respond");
    assert!(s.resumed());
    assert!(!s.is_paused());
    assert_eq!(s.request_body(), b"checked", "as the answer left it");
    assert_eq!(s.held_request_body(), b"");
    // It stays what flowed on when the stream goes on.
    s.send_response_headers(&[(":status", "200")], true)
        .expect("response");
    assert_eq!(s.request_body(), b"checked");
}

#[test]
fn failed_and_refused_callouts() {
    let h = probe().upstreams(&["backend"]).load().expect("load");
    for fail in [true, false] {
        let mut s = h.http_stream().expect("stream");
        s.send_request_headers(&request("/", &[("x-probe-callout", "/check")]), true)
            .expect("headers");
        let id = h.pending_callouts()[0].id;
        if fail {
            h.fail_callout(id).expect("fail");
        } else {
            h.respond(id, 503, &[], b"").expect("respond");
        }
        let local = s.local_response().expect("the probe denies");
        assert_eq!(local.status, 403);
        assert_eq!(local.body, b"denied");
        assert!(!s.resumed(), "answered, not resumed");
        assert!(!s.is_paused());
    }

    let h = probe().upstreams(&["elsewhere"]).load().expect("load");
    let mut s = h.http_stream().expect("stream");
    s.send_request_headers(&request("/", &[("x-probe-callout", "/check")]), true)
        .expect("headers");
    let local = s.local_response().expect("dispatch refused");
    assert_eq!(
        (local.status, local.body.as_slice()),
        (500, &b"dispatch failed"[..])
    );
    assert!(h.callouts().is_empty());
}

#[test]
fn ticks_fire_only_when_the_test_says() {
    let h = probe().plugin_config("tick").load().expect("load");
    assert_eq!(h.tick_period(), Some(Duration::from_millis(10)));
    assert_eq!(h.shared_data("probe_ticks"), None);
    for _ in 0..3 {
        h.tick().expect("tick");
    }
    assert_eq!(h.shared_data("probe_ticks"), Some(b"3".to_vec()));

    let quiet = probe().load().expect("load");
    assert_eq!(quiet.tick_period(), None);
    assert!(matches!(quiet.tick(), Err(Error::NoTickPeriod)));
}

/// Inside a tokio runtime the host would spawn tick timers, queue notifications and callout
/// answers as tasks; the harness keeps all three synchronous. A current-thread runtime runs
/// spawned tasks only while blocked on, so anything spawned would be visibly late here.
#[test]
fn a_tokio_runtime_changes_nothing() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _inside = runtime.enter();
    let h = probe()
        .plugin_config("tick")
        .upstreams(&["backend"])
        .load()
        .expect("load");

    h.enqueue("probe", "queued").expect("enqueue");
    assert_eq!(h.shared_data("probe_last"), Some(b"queued".to_vec()));

    let mut s = h.http_stream().expect("stream");
    s.send_request_headers(&request("/", &[("x-probe-callout", "/c")]), true)
        .expect("headers");
    let id = h.pending_callouts()[0].id;
    h.respond(id, 200, &[], b"now").expect("respond");
    assert_eq!(s.request_header("x-callout-body").as_deref(), Some("now"));

    // A 10 ms tick timer, had one been started, fires several times in 100 ms.
    runtime.block_on(tokio::time::sleep(Duration::from_millis(100)));
    assert_eq!(h.shared_data("probe_ticks"), None, "no tick ran by itself");
    h.tick().expect("tick");
    assert_eq!(h.shared_data("probe_ticks"), Some(b"1".to_vec()));
}

#[test]
fn the_test_sets_and_advances_the_clock() {
    let h = probe().load().expect("load");
    let time = |h: &Harness| {
        let mut s = h.http_stream().expect("stream");
        s.send_request_headers(&request("/", &[("x-probe-time", "1")]), true)
            .expect("headers");
        (
            s.request_header("x-time-proxy"),
            s.request_header("x-time-wasi"),
            s.request_header("x-elapsed-ms"),
        )
    };
    let start = DEFAULT_START.as_nanos().to_string();
    assert_eq!(
        time(&h),
        (Some(start.clone()), Some(start), Some("0".to_string()))
    );
    assert_eq!(h.now(), UNIX_EPOCH + DEFAULT_START);

    h.advance(Duration::from_secs(90));
    let later = (DEFAULT_START + Duration::from_secs(90))
        .as_nanos()
        .to_string();
    assert_eq!(
        time(&h),
        (Some(later.clone()), Some(later), Some("90000".to_string()))
    );

    h.set_time(UNIX_EPOCH + Duration::from_secs(1_000));
    let (proxy, wasi, elapsed) = time(&h);
    assert_eq!(proxy.as_deref(), Some("1000000000000"));
    assert_eq!(wasi.as_deref(), Some("1000000000000"));
    assert_eq!(
        elapsed.as_deref(),
        Some("90000"),
        "setting the wall clock leaves the monotonic one"
    );
}

#[test]
fn shared_data_and_queues() {
    let h = probe().load().expect("load");
    let mut s = h.http_stream().expect("stream");
    s.send_request_headers(&request("/", &[]), true)
        .expect("headers");
    assert_eq!(h.shared_data("probe_count"), Some(b"1".to_vec()));

    h.set_shared_data("probe_ticks", "41").expect("set");
    let mut s = h.http_stream().expect("stream");
    s.send_request_headers(&request("/", &[]), true)
        .expect("headers");
    assert_eq!(s.request_header("x-probe-ticks").as_deref(), Some("41"));

    // From the test: on_queue_ready has run when enqueue returns.
    h.enqueue("probe", "from-test").expect("enqueue");
    assert_eq!(h.shared_data("probe_last"), Some(b"from-test".to_vec()));
    // From the filter: the notification runs once its callback has returned.
    let mut s = h.http_stream().expect("stream");
    s.send_request_headers(&request("/", &[("x-probe-enqueue", "from-filter")]), true)
        .expect("headers");
    assert_eq!(h.shared_data("probe_last"), Some(b"from-filter".to_vec()));

    let mut s = h.http_stream().expect("stream");
    s.send_request_headers(&request("/", &[("x-probe-publish", "out-1")]), true)
        .expect("headers");
    assert_eq!(
        h.dequeue("probe-out").expect("dequeue"),
        Some(b"out-1".to_vec())
    );
    assert_eq!(h.dequeue("probe-out").expect("dequeue"), None);
    assert!(matches!(
        h.enqueue("no-such-queue", "x"),
        Err(Error::Shared(_))
    ));
}

#[test]
fn a_trap_is_a_failure_and_the_filter_carries_on() {
    let h = probe().load().expect("load");
    let mut s = h.http_stream().expect("stream");
    match s.send_request_headers(&request("/", &[("x-probe-trap", "1")]), true) {
        Err(Error::Filter(failure)) => assert_eq!(failure.kind, FailureKind::Trap),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(
        h.logs()
            .iter()
            .any(|l| l.level == LogLevel::Critical && l.message.contains("probe asked to trap")),
        "{:?}",
        h.logs()
    );
    drop(s);
    let mut s = h.http_stream().expect("stream after the trap");
    assert_eq!(
        s.send_request_headers(&request("/", &[]), true)
            .expect("headers"),
        Action::Continue
    );
}

#[test]
fn build_wasm_builds_a_filter_crate() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../host-abi/test-programs/probe");
    let wasm = wasmesh_sdk_test::build_wasm(&dir).expect("build the probe");
    assert!(
        wasm.ends_with("wasm-harness/wasm32-wasip1/release/wasmesh_probe_filter.wasm"),
        "{}",
        wasm.display()
    );
    assert_eq!(wasmesh_sdk_test::build_wasm(&dir).expect("again"), wasm);
    let h = Harness::load(&wasm, "built").expect("load");
    let mut s = h.http_stream().expect("stream");
    s.send_request_headers(&request("/", &[]), true)
        .expect("headers");
    assert_eq!(s.request_header("x-probe-config").as_deref(), Some("built"));

    let not_a_crate = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let err = wasmesh_sdk_test::build_wasm(&not_a_crate).expect_err("no Cargo.toml there");
    assert!(err.to_string().contains("cargo metadata"), "{err}");
}
