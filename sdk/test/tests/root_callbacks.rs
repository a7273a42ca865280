//! Root-context callbacks that act on behalf of streams or of a starting filter: a tick
//! answering several paused streams in turn, a callout sent from `on_configure`, and a refusal
//! that quotes the filter's own words. Each check fails if the host gets the case wrong.

use std::time::Duration;

use wasmesh_sdk_test::{Action, Error, Harness, HarnessBuilder, LocalResponse};

fn probe() -> HarnessBuilder {
    Harness::builder(wasmesh_test_programs::PROBE_WASM).name("probe")
}

fn held(code: &str) -> Vec<(&str, &str)> {
    vec![
        (":method", "GET"),
        (":path", "/"),
        (":authority", "test"),
        ("x-probe-hold", code),
    ]
}

#[test]
fn one_tick_answers_each_held_stream_with_its_own_status() {
    let h = probe().plugin_config("tick").load().expect("load");
    let mut first = h.http_stream().expect("stream");
    let mut second = h.http_stream().expect("stream");
    assert_eq!(
        first
            .send_request_headers(&held("201"), true)
            .expect("headers"),
        Action::Pause
    );
    assert_eq!(
        second
            .send_request_headers(&held("429"), true)
            .expect("headers"),
        Action::Pause
    );
    assert!(first.is_paused() && second.is_paused());

    // One root callback switches to the first paused stream, answers it, then switches to
    // the second: each answer must land on its own stream.
    h.tick().expect("tick");
    let (a, b) = (
        first.local_response().expect("first answered"),
        second.local_response().expect("second answered"),
    );
    assert_eq!((a.status, a.body.as_slice()), (201, &b"held 201"[..]));
    assert_eq!((b.status, b.body.as_slice()), (429, &b"held 429"[..]));
    let context = |r: &LocalResponse| {
        r.headers
            .iter()
            .find(|(k, _)| k == "x-held-context")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_ne!(
        context(&a),
        context(&b),
        "answers carry their own context ids"
    );
}

#[test]
fn a_callout_sent_from_on_configure_is_answered() {
    let h = probe()
        .plugin_config("callout-on-configure")
        .upstreams(&["backend"])
        .load()
        .expect("load");
    let pending = h.pending_callouts();
    assert_eq!(
        pending.len(),
        1,
        "on_configure sent one callout: {pending:?}"
    );
    assert_eq!(pending[0].upstream, "backend");
    assert_eq!(pending[0].header(":path").as_deref(), Some("/config"));

    h.respond(pending[0].id, 200, &[], b"settings v2")
        .expect("respond");
    assert_eq!(
        h.shared_data("probe_configure_callout").as_deref(),
        Some(&b"settings v2"[..]),
        "the root context's on_http_call_response ran with the answer"
    );
}

#[test]
fn a_refused_configuration_quotes_what_the_filter_logged() {
    let err = match probe().plugin_config("reject").load() {
        Ok(_) => panic!("configuration \"reject\" must be refused"),
        Err(err) => err,
    };
    assert!(matches!(err, Error::Load { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("proxy_on_configure returned false")
            && message.contains("the filter said: probe: configuration \"reject\" refused"),
        "{message}"
    );
}

#[test]
fn a_stream_can_set_and_clear_the_tick_period() {
    let h = probe().load().expect("load");
    assert_eq!(h.tick_period(), None);
    let mut s = h.http_stream().expect("stream");
    s.send_request_headers(
        &[
            (":method", "GET"),
            (":path", "/"),
            (":authority", "test"),
            ("x-probe-set-tick", "25"),
        ],
        true,
    )
    .expect("headers");
    assert_eq!(h.tick_period(), Some(Duration::from_millis(25)));
    let mut s = h.http_stream().expect("stream");
    s.send_request_headers(
        &[
            (":method", "GET"),
            (":path", "/"),
            (":authority", "test"),
            ("x-probe-set-tick", "0"),
        ],
        true,
    )
    .expect("headers");
    assert_eq!(h.tick_period(), None);
}
