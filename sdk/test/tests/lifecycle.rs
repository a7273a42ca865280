//! How a stream ends and where it runs: `Stream::finish` runs `on_log` and the work it
//! causes and reports a trap there (dropping a stream cannot); `replicas(n)` runs the plugin
//! on several VM replicas that take streams in turn and share the plugin's shared data and
//! metrics. The filter is `tests/fixture`, built by `build_wasm`.

use wasmesh_sdk_test::{Action, Error, FailureKind, Harness, HarnessBuilder, LogLevel, Stream};

fn fixture() -> HarnessBuilder {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixture");
    let wasm = wasmesh_sdk_test::build_wasm(dir).expect("the fixture builds");
    Harness::builder(wasm).name("fixture").vm_id("fixture-vm")
}

fn send(h: &Harness, extra: &[(&str, &str)]) -> Stream {
    let mut s = h.http_stream().expect("stream");
    let mut headers = vec![(":method", "GET"), (":path", "/"), (":authority", "api")];
    headers.extend_from_slice(extra);
    let action = s.send_request_headers(&headers, true).expect("headers");
    assert_eq!(action, Action::Continue);
    s
}

fn text(value: Option<Vec<u8>>) -> Option<String> {
    value.map(|v| String::from_utf8_lossy(&v).into_owned())
}

#[test]
fn finish_runs_on_log_and_what_it_caused() {
    let h = fixture().load().expect("load");
    let first = send(&h, &[("x-log-enqueue", "first")]);
    let second = send(&h, &[("x-log-enqueue", "second")]);
    assert_eq!(h.shared_data("fixture-logged"), None, "nothing logged yet");

    // `on_log` enqueues; the root context's `on_queue_ready` has run by the time `finish`
    // returns.
    second.finish().expect("finish");
    assert_eq!(
        text(h.shared_data("fixture-logged")).as_deref(),
        Some("second")
    );
    first.finish().expect("finish");
    assert_eq!(
        text(h.shared_data("fixture-logged")).as_deref(),
        Some("second,first")
    );
}

#[test]
fn finish_reports_a_trap_in_on_log() {
    let h = fixture().load().expect("load");
    let s = send(&h, &[("x-trap-log", "")]);
    let err = s.finish().expect_err("on_log traps");
    let Error::Filter(failure) = &err else {
        panic!("expected a filter failure, got {err}");
    };
    assert_eq!(failure.kind, FailureKind::Trap, "{err}");
    assert!(!failure.message.is_empty(), "{err}");
    assert!(
        h.logs().iter().any(|l| l.level == LogLevel::Critical
            && l.message.contains("trap in on_log, as x-trap-log asked")),
        "the filter's panic message is in its log: {:?}",
        h.logs()
    );

    // The replica is rebuilt for the next stream, as in the proxy: a new root context that
    // took the next replica number.
    let s = send(&h, &[]);
    assert_eq!(s.request_header("x-replica").as_deref(), Some("1"));
    s.finish().expect("a healthy stream finishes");
}

#[test]
fn a_stream_that_ends_well_finishes_with_ok_and_dropping_still_ends_it() {
    let h = fixture()
        .plugin_config(r#"{"prefix": "fx_"}"#)
        .load()
        .expect("load");
    let finished = send(&h, &[]);
    let dropped = send(&h, &[]);
    assert_eq!(h.metric("fx_open_streams"), Some(2));
    finished.finish().expect("finish");
    assert_eq!(h.metric("fx_open_streams"), Some(1));
    drop(dropped);
    assert_eq!(
        h.metric("fx_open_streams"),
        Some(0),
        "on_log ran on drop too"
    );
}

#[test]
fn replicas_take_streams_in_turn_and_share_data_and_metrics() {
    let h = fixture()
        .replicas(3)
        .plugin_config(r#"{"prefix": "fx_"}"#)
        .load()
        .expect("load");
    assert_eq!(h.replicas(), 3);
    let mut seen = Vec::new();
    for n in 0..7usize {
        assert_eq!(h.next_replica(), n % 3);
        let s = send(&h, &[]);
        assert_eq!(s.replica(), n % 3);
        seen.push((
            s.request_header("x-replica"),
            s.request_header("x-replica-streams"),
            s.request_header("x-shared-streams"),
        ));
        s.finish().expect("finish");
    }
    let want: Vec<(Option<String>, Option<String>, Option<String>)> = (0..7usize)
        .map(|n| {
            (
                Some((n % 3).to_string()),
                Some((n / 3 + 1).to_string()),
                Some((n + 1).to_string()),
            )
        })
        .collect();
    // Each replica has its own root context (its number, its own count of streams); the
    // shared count and the metrics are the plugin's.
    assert_eq!(seen, want);
    assert_eq!(h.metric("fx_requests_total"), Some(7));
    assert_eq!(
        text(h.shared_data("fixture-replicas")).as_deref(),
        Some("3")
    );
}

#[test]
fn one_replica_unless_asked_and_zero_means_one() {
    let h = fixture().load().expect("load");
    assert_eq!((h.replicas(), h.next_replica()), (1, 0));
    let h = fixture().replicas(0).load().expect("load");
    assert_eq!(h.replicas(), 1);
    for _ in 0..2 {
        let s = send(&h, &[]);
        assert_eq!(s.request_header("x-replica").as_deref(), Some("0"));
        assert_eq!(s.replica(), 0);
    }
}
