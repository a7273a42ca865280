//! The fault filter as built for wasm32-wasip1, run on wasmesh's host through the SDK's
//! test harness: delays released by ticks once the harness clock passes them, aborts with
//! HTTP and gRPC statuses, 0 % and 100 %, the header-controlled forms, delay then abort,
//! the bound on held requests, streams that go away while held, and configuration errors.

use std::time::Duration;

use wasmesh_sdk_test::{Action, Error, Harness, LogLevel, Stream};

fn load(config: &str) -> Harness {
    Harness::builder(wasmesh_test_programs::filter("fault"))
        .name("fault")
        .plugin_config(config)
        .load()
        .expect("configuration accepted")
}

fn request(h: &Harness, extra: &[(&str, &str)]) -> (Stream, Action) {
    let mut s = h.http_stream().expect("stream");
    let mut headers = vec![
        (":method", "GET"),
        (":path", "/orders"),
        (":authority", "shop.example.com"),
    ];
    headers.extend_from_slice(extra);
    let action = s.send_request_headers(&headers, true).expect("headers");
    (s, action)
}

fn header(s: &Stream, name: &str) -> Option<String> {
    s.local_response().and_then(|l| {
        l.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    })
}

#[test]
fn a_fixed_delay_holds_the_request_until_a_tick_finds_it_due() {
    let h = load(r#"{"delay": {"fixed_delay": "2s"}, "tick_interval": "5ms"}"#);
    assert_eq!(h.tick_period(), Some(Duration::from_millis(5)));
    let (mut s, action) = request(&h, &[("x-a", "1")]);
    assert_eq!(action, Action::Pause);
    assert!(s.is_paused());
    assert_eq!(h.metric("fault_delays_injected_total"), Some(1));
    assert_eq!(h.metric("fault_active_delays"), Some(1));

    h.tick().expect("tick");
    assert!(!s.resumed(), "not due yet");
    h.advance(Duration::from_millis(1999));
    h.tick().expect("tick");
    assert!(!s.resumed(), "one millisecond early");
    h.advance(Duration::from_millis(1));
    h.tick().expect("tick");
    assert!(s.resumed(), "due: released");
    assert_eq!(s.local_response(), None);
    assert_eq!(s.request_header("x-a").as_deref(), Some("1"), "untouched");
    assert_eq!(h.metric("fault_active_delays"), Some(0));

    h.tick().expect("tick");
    assert_eq!(s.resume_count(), 1, "released once");
    s.send_response_headers(&[(":status", "200")], true)
        .expect("response");
    assert_eq!(s.response_header(":status").as_deref(), Some("200"));
}

#[test]
fn held_requests_are_released_in_their_own_time() {
    let h = load(r#"{"delay": {"header_control": true}}"#);
    let (a, _) = request(&h, &[("x-fault-delay-request", "300")]);
    let (b, _) = request(&h, &[("x-fault-delay-request", "100")]);
    let (c, action) = request(&h, &[]);
    assert_eq!(
        action,
        Action::Continue,
        "no header, no fixed delay: no fault"
    );
    assert!(!c.is_paused());
    h.advance(Duration::from_millis(100));
    h.tick().expect("tick");
    assert!(b.resumed());
    assert!(!a.resumed());
    h.advance(Duration::from_millis(200));
    h.tick().expect("tick");
    assert!(a.resumed());
    assert_eq!(h.metric("fault_delays_injected_total"), Some(2));
}

#[test]
fn zero_percent_never_and_a_hundred_percent_always() {
    let never = load(
        r#"{"delay": {"fixed_delay": "1s", "percentage": 0},
            "abort": {"http_status": 503, "percentage": 0}}"#,
    );
    for _ in 0..50 {
        let (s, action) = request(&never, &[]);
        assert_eq!(action, Action::Continue);
        assert_eq!(s.local_response(), None);
    }
    assert_eq!(never.metric("fault_delays_injected_total"), None);

    let always = load(r#"{"abort": {"http_status": 503}}"#);
    assert_eq!(always.tick_period(), None, "no delays, no ticks");
    for _ in 0..50 {
        let (s, action) = request(&always, &[]);
        assert_eq!(action, Action::Pause);
        let local = s.local_response().expect("aborted");
        assert_eq!(local.status, 503);
        assert_eq!(local.body, b"fault filter abort\n");
    }
    assert_eq!(always.metric("fault_aborts_injected_total"), Some(50));
}

#[test]
fn header_controlled_aborts_and_percentages() {
    let h = load(r#"{"abort": {"header_control": true}}"#);
    let (s, action) = request(&h, &[]);
    assert_eq!(action, Action::Continue);
    assert_eq!(s.local_response(), None);

    let (s, _) = request(&h, &[("x-fault-abort-request", "418")]);
    assert_eq!(s.local_response().map(|l| l.status), Some(418));

    let (s, action) = request(
        &h,
        &[
            ("x-fault-abort-request", "418"),
            ("x-fault-abort-request-percentage", "0"),
        ],
    );
    assert_eq!(
        action,
        Action::Continue,
        "the percentage header lowers the share"
    );
    assert_eq!(s.local_response(), None);

    let (s, action) = request(&h, &[("x-fault-abort-request", "42")]);
    assert_eq!(action, Action::Continue, "not a status: ignored");
    assert_eq!(s.local_response(), None);

    let (s, _) = request(&h, &[("x-fault-abort-grpc-request", "8")]);
    let local = s.local_response().expect("aborted");
    assert_eq!(local.status, 200);
    assert_eq!(header(&s, "grpc-status").as_deref(), Some("8"));

    let fixed = load(r#"{"abort": {"http_status": 503}}"#);
    let (s, _) = request(&fixed, &[("x-fault-abort-request", "418")]);
    assert_eq!(
        s.local_response().map(|l| l.status),
        Some(503),
        "headers mean nothing without header control"
    );
}

#[test]
fn grpc_requests_get_a_grpc_status() {
    let h = load(r#"{"abort": {"http_status": 503, "grpc_status": 14}}"#);
    let (s, _) = request(&h, &[("content-type", "application/grpc+proto")]);
    let local = s.local_response().expect("aborted");
    assert_eq!(local.status, 200, "a trailers-only gRPC answer");
    assert_eq!(header(&s, "grpc-status").as_deref(), Some("14"));
    assert_eq!(
        header(&s, "content-type").as_deref(),
        Some("application/grpc")
    );
    let (s, _) = request(&h, &[("content-type", "application/json")]);
    assert_eq!(s.local_response().map(|l| l.status), Some(503));

    let grpc_only = load(r#"{"abort": {"grpc_status": 14}}"#);
    let (_, action) = request(&grpc_only, &[]);
    assert_eq!(
        action,
        Action::Continue,
        "HTTP requests are not given a gRPC status"
    );
}

#[test]
fn delayed_requests_that_are_also_aborted_are_answered_when_due() {
    let h = load(
        r#"{"delay": {"fixed_delay": "1s"},
            "abort": {"http_status": 503, "header_control": true}}"#,
    );
    // Three requests due at the same tick: two aborted with different statuses, one not
    // aborted (its abort header asks for 0 %).
    let (a, action) = request(&h, &[("x-fault-abort-request", "418")]);
    assert_eq!(action, Action::Pause);
    let (b, _) = request(&h, &[]);
    let (c, _) = request(&h, &[("x-fault-abort-request-percentage", "0")]);
    assert!(
        a.local_response().is_none(),
        "the abort waits for the delay"
    );

    h.advance(Duration::from_secs(1));
    h.tick().expect("tick");
    assert_eq!(a.local_response().map(|l| l.status), Some(418));
    assert!(c.resumed(), "the delay-only request goes on");
    assert_eq!(c.local_response(), None);
    assert!(
        b.local_response().is_none() && !b.resumed(),
        "one answer per tick (see the README)"
    );
    h.tick().expect("tick");
    assert_eq!(
        b.local_response().map(|l| l.status),
        Some(503),
        "each stream gets its own answer"
    );
    assert_eq!(a.local_response().map(|l| l.status), Some(418));
    assert_eq!(h.metric("fault_aborts_injected_total"), Some(2));
    assert_eq!(h.metric("fault_delays_injected_total"), Some(3));
    assert_eq!(h.metric("fault_active_delays"), Some(0));
}

#[test]
fn max_active_faults_bounds_the_requests_held() {
    let h = load(
        r#"{"delay": {"fixed_delay": "1s"}, "abort": {"http_status": 503, "header_control": true},
            "max_active_faults": 2}"#,
    );
    let (a, _) = request(&h, &[("x-fault-abort-request-percentage", "0")]);
    let (b, _) = request(&h, &[("x-fault-abort-request-percentage", "0")]);
    assert!(a.is_paused() && b.is_paused());
    let (c, action) = request(&h, &[]);
    assert_eq!(action, Action::Continue, "no fault at all beyond the bound");
    assert_eq!(c.local_response(), None);
    assert_eq!(h.metric("fault_active_overflow_total"), Some(1));

    h.advance(Duration::from_secs(1));
    h.tick().expect("tick");
    assert!(a.resumed() && b.resumed());
    let (d, action) = request(&h, &[("x-fault-abort-request-percentage", "0")]);
    assert_eq!(action, Action::Pause, "room again");
    assert!(d.is_paused());
}

#[test]
fn a_request_that_goes_away_while_held_is_forgotten() {
    let h = load(r#"{"delay": {"fixed_delay": "1s"}, "max_active_faults": 1}"#);
    let (a, _) = request(&h, &[]);
    assert_eq!(h.metric("fault_active_delays"), Some(1));
    drop(a);
    assert_eq!(h.metric("fault_active_delays"), Some(0));
    let (b, action) = request(&h, &[]);
    assert_eq!(action, Action::Pause, "its place is free");
    h.advance(Duration::from_secs(1));
    h.tick().expect("tick");
    assert!(b.resumed());
}

#[test]
fn configuration_errors_name_the_field_in_the_log() {
    for (config, expect) in [
        (
            r#"{"delay": {"percentage": 5}}"#,
            "configuration field `delay`: give `fixed_delay`",
        ),
        (
            r#"{"abort": {"http_status": 42}}"#,
            "configuration field `abort.http_status`: 42 is not a status",
        ),
        (
            r#"{"delay": {"fixed_delay": "2 seconds"}}"#,
            "configuration field `delay.fixed_delay`: invalid duration",
        ),
        (
            r#"{"delay": {"fixed_delay": "1s", "percentage": 150}}"#,
            "configuration field `delay.percentage`: must be between 0 and 100",
        ),
        (
            r#"{"aborts": {}}"#,
            "configuration field `aborts`: unknown field `aborts`",
        ),
    ] {
        let err = Harness::builder(wasmesh_test_programs::filter("fault"))
            .name("fault")
            .plugin_config(config)
            .load()
            .err()
            .unwrap_or_else(|| panic!("{config} must be refused"));
        assert!(matches!(err, Error::Load { .. }), "{err}");
        assert!(
            err.logs()
                .iter()
                .any(|l| l.level == LogLevel::Error && l.message.starts_with(expect)),
            "{config}: {:?}",
            err.logs()
        );
    }
}

#[test]
fn no_configuration_injects_nothing() {
    let h = load("");
    assert_eq!(h.tick_period(), None);
    let (s, action) = request(&h, &[("x-fault-abort-request", "503")]);
    assert_eq!(action, Action::Continue);
    assert_eq!(s.local_response(), None);
}
