//! The ratelimit filter as built for wasm32-wasip1, run on wasmesh's host through the SDK's
//! test harness: buckets per key refilled by the harness's clock, rules and keys, the
//! headers, metrics, buckets shared by VM replicas (in turn and racing on threads), the
//! global mode against answers the test gives, and configuration errors.

use std::sync::Arc;
use std::time::Duration;

use wasmesh_host::{HttpStream, Plugin, PluginConfig, StreamEnv};
use wasmesh_sdk_test::{Action, Error, Harness, LogLevel, Stream};

fn wasm() -> &'static str {
    wasmesh_test_programs::filter("ratelimit")
}

fn load(config: &str) -> Harness {
    Harness::builder(wasm())
        .name("ratelimit")
        .plugin_config(config)
        .load()
        .expect("configuration accepted")
}

/// Sends a request from `ip` with `extra` headers; returns the stream and its action.
fn send(
    h: &Harness,
    ip: &str,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> (Stream, Action) {
    let mut s = h.http_stream().expect("stream");
    s.set_property("source.address", format!("{ip}:40000"));
    let mut all = vec![
        (":method", method),
        (":path", path),
        (":authority", "api.example.com"),
    ];
    all.extend_from_slice(extra);
    let action = s.send_request_headers(&all, true).expect("request headers");
    (s, action)
}

fn get(h: &Harness, ip: &str) -> (Stream, Action) {
    send(h, ip, "GET", "/", &[])
}

/// The status of the local response, or 200 if the request went on.
fn status(s: &Stream, action: Action) -> u32 {
    match s.local_response() {
        Some(local) => {
            assert_eq!(action, Action::Pause);
            local.status
        }
        None => {
            assert_eq!(action, Action::Continue);
            200
        }
    }
}

fn local_header(s: &Stream, name: &str) -> Option<String> {
    s.local_response().and_then(|l| {
        l.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    })
}

const PER_IP: &str = r#"{"rules": [{"name": "per-ip", "key": {"type": "client_ip"},
    "bucket": {"max_tokens": 2, "tokens_per_fill": 1, "fill_interval": "10s"}}]}"#;

#[test]
fn buckets_per_client_ip_empty_and_refill_with_the_clock() {
    let h = load(PER_IP);
    for remaining in ["1", "0"] {
        let (mut s, action) = get(&h, "10.0.0.1");
        assert_eq!(status(&s, action), 200);
        s.send_response_headers(&[(":status", "200")], true)
            .expect("response");
        assert_eq!(s.response_header("x-ratelimit-limit").as_deref(), Some("2"));
        assert_eq!(
            s.response_header("x-ratelimit-remaining").as_deref(),
            Some(remaining)
        );
        assert_eq!(
            s.response_header("x-ratelimit-reset").as_deref(),
            Some("10")
        );
    }

    let (s, action) = get(&h, "10.0.0.1");
    assert_eq!(status(&s, action), 429);
    assert_eq!(local_header(&s, "retry-after").as_deref(), Some("10"));
    assert_eq!(local_header(&s, "x-ratelimit-limit").as_deref(), Some("2"));
    assert_eq!(
        local_header(&s, "x-ratelimit-remaining").as_deref(),
        Some("0")
    );
    assert_eq!(local_header(&s, "x-ratelimit-reset").as_deref(), Some("10"));

    let (s, action) = get(&h, "10.0.0.2");
    assert_eq!(status(&s, action), 200, "another client has its own bucket");

    h.advance(Duration::from_secs(4));
    let (s, action) = get(&h, "10.0.0.1");
    assert_eq!(status(&s, action), 429, "no fill yet");
    assert_eq!(local_header(&s, "retry-after").as_deref(), Some("6"));

    h.advance(Duration::from_secs(6));
    let (s, action) = get(&h, "10.0.0.1");
    assert_eq!(status(&s, action), 200, "one token after one interval");
    let (s, action) = get(&h, "10.0.0.1");
    assert_eq!(status(&s, action), 429, "and only one");

    h.advance(Duration::from_secs(3600));
    for _ in 0..2 {
        let (s, action) = get(&h, "10.0.0.1");
        assert_eq!(status(&s, action), 200, "a long pause refills to the size");
    }
    let (s, action) = get(&h, "10.0.0.1");
    assert_eq!(status(&s, action), 429, "never beyond the size");
}

#[test]
fn the_same_ip_on_other_ports_and_ipv6_shares_by_address() {
    let h = load(PER_IP);
    for port in [1, 2] {
        let mut s = h.http_stream().expect("stream");
        s.set_property("source.address", format!("[2001:db8::5]:{port}"));
        let action = s
            .send_request_headers(&[(":method", "GET"), (":path", "/")], true)
            .expect("headers");
        assert_eq!(status(&s, action), 200);
    }
    let (s, action) = get(&h, "[2001:db8::5]");
    assert_eq!(status(&s, action), 429, "the port is not part of the key");
    assert!(
        h.shared_data("ratelimit/ratelimit/per-ip/2001:db8::5")
            .is_some(),
        "the bucket is keyed by the address without brackets or port"
    );
}

#[test]
fn rules_match_by_path_method_and_header_and_the_tightest_is_shown() {
    let h = load(
        r#"{"rules": [
            {"name": "all", "bucket": {"max_tokens": 100, "fill_interval": "1m"}},
            {"name": "writes", "match": {"path_prefix": "/api", "methods": ["POST", "PUT"]},
             "bucket": {"max_tokens": 1, "fill_interval": "1m"}},
            {"name": "free", "match": {"headers": [{"name": "x-plan", "exact": "free"}]},
             "bucket": {"max_tokens": 3, "fill_interval": "1m"}}
        ]}"#,
    );
    let (mut s, action) = send(&h, "10.0.0.1", "POST", "/api/orders?x=1", &[]);
    assert_eq!(status(&s, action), 200);
    s.send_response_headers(&[(":status", "201")], true)
        .expect("response");
    assert_eq!(
        s.response_header("x-ratelimit-limit").as_deref(),
        Some("1"),
        "the rule closest to its limit is the one shown"
    );
    assert_eq!(
        s.response_header("x-ratelimit-remaining").as_deref(),
        Some("0")
    );

    let (_, action) = send(&h, "10.0.0.1", "POST", "/api/orders", &[]);
    assert_eq!(action, Action::Pause, "writes are over");
    let (s, action) = send(&h, "10.0.0.1", "GET", "/api/orders", &[]);
    assert_eq!(status(&s, action), 200, "another method is not a write");
    let (s, action) = send(&h, "10.0.0.1", "POST", "/health", &[]);
    assert_eq!(status(&s, action), 200, "another path is not a write");

    for _ in 0..3 {
        let (s, action) = send(&h, "10.0.0.1", "GET", "/", &[("x-plan", "free")]);
        assert_eq!(status(&s, action), 200);
    }
    let (s, action) = send(&h, "10.0.0.1", "GET", "/", &[("x-plan", "free")]);
    assert_eq!(status(&s, action), 429);
    assert_eq!(local_header(&s, "x-ratelimit-limit").as_deref(), Some("3"));
    let (s, action) = send(&h, "10.0.0.1", "GET", "/", &[("x-plan", "paid")]);
    assert_eq!(status(&s, action), 200, "paid plans are not in that rule");

    let metric = |name: &str, rule: &str| h.metric(&format!("rule=.={rule};.;{name}"));
    assert_eq!(metric("ratelimit_allowed_total", "writes"), Some(1));
    assert_eq!(metric("ratelimit_limited_total", "writes"), Some(1));
    assert_eq!(metric("ratelimit_allowed_total", "free"), Some(3));
    assert_eq!(metric("ratelimit_limited_total", "free"), Some(1));
    // Every request took a token from "all" (the limited ones too: rules run in order).
    assert_eq!(metric("ratelimit_allowed_total", "all"), Some(9));
    assert_eq!(metric("ratelimit_limited_total", "all"), None);
}

#[test]
fn keys_from_a_header_the_path_and_a_jwt_claim() {
    let b = r#""bucket": {"max_tokens": 1, "fill_interval": "1h"}"#;
    let h = load(&format!(
        r#"{{"rules": [
            {{"name": "key", "match": {{"path_prefix": "/k"}}, "key": {{"type": "header", "name": "x-api-key"}}, {b}}},
            {{"name": "path", "match": {{"path_prefix": "/p"}}, "key": {{"type": "path"}}, {b}}},
            {{"name": "user", "match": {{"path_prefix": "/u"}}, "key": {{"type": "jwt_claim", "claim": "sub"}}, {b}}},
            {{"name": "org", "match": {{"path_prefix": "/o"}}, "key": {{"type": "jwt_claim", "claim": "org", "property": "jwt.org"}}, {b}}}
        ]}}"#
    ));
    let once = |path: &str, headers: &[(&str, &str)]| {
        let (s, action) = send(&h, "10.0.0.9", "GET", path, headers);
        status(&s, action)
    };
    assert_eq!(once("/k", &[("x-api-key", "a")]), 200);
    assert_eq!(once("/k", &[("x-api-key", "a")]), 429);
    assert_eq!(once("/k", &[("x-api-key", "b")]), 200, "another key");
    assert_eq!(
        once("/k", &[]),
        200,
        "no key header: the rule does not apply (as Envoy skips the descriptor)"
    );
    assert_eq!(once("/k", &[]), 200);

    assert_eq!(once("/p/1?a=1", &[]), 200);
    assert_eq!(
        once("/p/1?a=2", &[]),
        429,
        "the query is not part of the path key"
    );
    assert_eq!(once("/p/2", &[]), 200);

    assert_eq!(once("/u", &[("x-jwt-claim-sub", "alice")]), 200);
    assert_eq!(once("/u", &[("x-jwt-claim-sub", "alice")]), 429);
    assert_eq!(once("/u", &[("x-jwt-claim-sub", "bob")]), 200);

    // A claim a previous filter left as filter state (a property of the stream).
    let org = |value: &str| {
        let mut s = h.http_stream().expect("stream");
        s.set_property("jwt.org", value);
        let action = s
            .send_request_headers(&[(":method", "GET"), (":path", "/o")], true)
            .expect("headers");
        status(&s, action)
    };
    assert_eq!(org("acme"), 200);
    assert_eq!(org("acme"), 429);
    assert_eq!(org("globex"), 200);
}

#[test]
fn headers_on_allowed_responses_can_be_turned_off() {
    let h = load(
        r#"{"headers_on_allowed": false, "rules": [{"name": "r",
            "bucket": {"max_tokens": 1, "fill_interval": "1s"}}]}"#,
    );
    let (mut s, _) = get(&h, "10.0.0.1");
    s.send_response_headers(&[(":status", "200")], true)
        .expect("response");
    assert_eq!(s.response_header("x-ratelimit-limit"), None);
    let (s, action) = get(&h, "10.0.0.1");
    assert_eq!(status(&s, action), 429);
    assert_eq!(
        local_header(&s, "x-ratelimit-remaining").as_deref(),
        Some("0"),
        "limited responses always carry them"
    );
    assert_eq!(local_header(&s, "retry-after").as_deref(), Some("1"));
}

/// Decodes a stored bucket: (tokens, last fill in ns).
fn bucket(h: &Harness, key: &str) -> (u64, u64) {
    let raw = h.shared_data(key).expect("bucket stored");
    assert_eq!(raw.len(), 16, "two little-endian u64s");
    let word = |i: usize| u64::from_le_bytes(raw[i..i + 8].try_into().expect("8 bytes"));
    (word(0), word(8))
}

#[test]
fn buckets_live_in_shared_data_where_every_stream_finds_them() {
    let h = load(PER_IP);
    let key = "ratelimit/ratelimit/per-ip/10.0.0.1";
    let (_, _) = get(&h, "10.0.0.1");
    let start = h
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_nanos() as u64;
    assert_eq!(bucket(&h, key), (1, start));
    // What another replica (or the operator) wrote is what the next request sees.
    let mut value = 0u64.to_le_bytes().to_vec();
    value.extend_from_slice(&start.to_le_bytes());
    h.set_shared_data(key, value).expect("set");
    let (s, action) = get(&h, "10.0.0.1");
    assert_eq!(status(&s, action), 429);
    h.set_shared_data(key, "garbage").expect("set");
    let (s, action) = get(&h, "10.0.0.1");
    assert_eq!(
        status(&s, action),
        200,
        "a value that is not a bucket starts a fresh one"
    );
    assert_eq!(bucket(&h, key).0, 1);
}

/// A stream environment for driving a plugin without the harness's wrapper.
struct Env(String);

impl StreamEnv for Env {
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        (path == ["source", "address"]).then(|| self.0.clone().into_bytes())
    }
}

/// The same filter loaded on the harness's host (so it shares its shared data and clock)
/// with `replicas` VM replicas, as the proxy loads it with one per worker.
fn replicated(h: &Harness, config: &str, replicas: usize) -> Arc<Plugin> {
    let mut cfg = PluginConfig::new("ratelimit");
    cfg.plugin_config = config.as_bytes().to_vec();
    cfg.replicas = replicas;
    cfg.deadline = Duration::from_secs(5);
    let wasm = std::fs::read(wasm()).expect("read wasm");
    h.host().load_plugin(cfg, &wasm).expect("load replicas")
}

/// One request on `plugin` (streams go to its replicas in turn); its status.
fn raw_request(plugin: &Arc<Plugin>, ip: &str) -> u32 {
    let mut stream: HttpStream = plugin
        .http_stream(Arc::new(Env(format!("{ip}:1"))))
        .expect("stream");
    stream.data.request_headers = vec![
        (":method".into(), b"GET".to_vec()),
        (":path".into(), b"/".to_vec()),
    ];
    let action = stream.on_request_headers(true).expect("request headers");
    match stream.take_local_response() {
        Some(local) => local.status,
        None => {
            assert_eq!(action, Action::Continue);
            200
        }
    }
}

#[test]
fn replicas_draw_from_one_bucket() {
    let config = r#"{"rules": [{"name": "per-ip", "key": {"type": "client_ip"},
        "bucket": {"max_tokens": 3, "fill_interval": "1h"}}]}"#;
    let h = load(config);
    let plugin = replicated(&h, config, 2);
    // Requests alternate between the two replicas; with a bucket per replica six would pass.
    let statuses: Vec<u32> = (0..6).map(|_| raw_request(&plugin, "10.1.1.1")).collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    // The harness's own VM is a third replica of the same vm_id: the bucket is empty there too.
    let (s, action) = get(&h, "10.1.1.1");
    assert_eq!(status(&s, action), 429);
    assert_eq!(bucket(&h, "ratelimit/ratelimit/per-ip/10.1.1.1").0, 0);
    h.advance(Duration::from_secs(3600));
    assert_eq!(
        raw_request(&plugin, "10.1.1.1"),
        200,
        "refilled for every replica"
    );
}

#[test]
fn replicas_racing_on_threads_never_overspend_a_bucket() {
    // Two threads, each with its own VM (two plugins of one vm_id on one host, as two
    // workers' replicas), take tokens from one bucket at the same time, so updates race and
    // lose compare-and-swaps. Every token is still spent exactly once; with unconditional
    // writes some takes are lost and more than `max_tokens` requests pass.
    //
    // The bucket is created first: the ABI has no "create if absent", so two replicas
    // creating one bucket at the same instant may each take a token from a full one (a
    // documented limit of one extra request per racing replica, once per bucket).
    let tokens = 1000;
    let config = format!(
        r#"{{"rules": [{{"name": "shared", "bucket": {{"max_tokens": {tokens}, "fill_interval": "1h"}}}}]}}"#
    );
    let h = load(&config);
    let vms = [replicated(&h, &config, 1), replicated(&h, &config, 1)];
    assert_eq!(raw_request(&vms[0], "10.2.2.2"), 200);
    let barrier = std::sync::Barrier::new(2);
    let passed: Vec<usize> = std::thread::scope(|scope| {
        let workers: Vec<_> = vms
            .iter()
            .map(|plugin| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    (0..tokens)
                        .filter(|_| raw_request(plugin, "10.2.2.2") == 200)
                        .count()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect()
    });
    let contended: i64 = vms
        .iter()
        .flat_map(|plugin| plugin.metrics().snapshot())
        .filter(|(name, _, _)| name.ends_with("ratelimit_contended_total"))
        .map(|(_, _, value)| value)
        .sum();
    assert_eq!(
        contended, 0,
        "the filter's retries are plenty for two replicas"
    );
    assert_eq!(
        passed.iter().sum::<usize>(),
        tokens - 1,
        "exactly the bucket's tokens pass ({passed:?} per thread)"
    );
    assert_eq!(bucket(&h, "ratelimit/ratelimit/shared").0, 0);
}

fn global(extra: &str) -> String {
    format!(
        r#"{{"global": {{"cluster": "rls", "domain": "edge"{extra}}},
            "rules": [
              {{"name": "per-ip", "key": {{"type": "client_ip"}}}},
              {{"name": "api-key", "match": {{"path_prefix": "/api"}},
                "key": {{"type": "header", "name": "x-api-key"}}, "descriptor_key": "key"}},
              {{"name": "everyone"}}
            ]}}"#
    )
}

#[test]
fn global_mode_asks_the_service_and_waits_for_its_answer() {
    let h = Harness::builder(wasm())
        .name("ratelimit")
        .plugin_config(global(r#", "timeout": "250ms""#))
        .upstreams(&["rls"])
        .load()
        .expect("load");
    let (mut s, action) = send(&h, "10.0.0.7", "GET", "/api/x", &[("x-api-key", "k-1")]);
    assert_eq!(action, Action::Pause, "waits for the service");
    assert!(s.is_paused());
    let calls = h.pending_callouts();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.upstream, "rls");
    assert_eq!(call.header(":method").as_deref(), Some("POST"));
    assert_eq!(call.header(":path").as_deref(), Some("/json"));
    assert_eq!(call.header(":authority").as_deref(), Some("rls"));
    assert_eq!(
        call.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(call.timeout, Duration::from_millis(250));
    let body: serde_json::Value = serde_json::from_slice(&call.body).expect("json body");
    assert_eq!(
        body,
        serde_json::json!({"domain": "edge", "descriptors": [
            {"entries": [{"key": "remote_address", "value": "10.0.0.7"}]},
            {"entries": [{"key": "key", "value": "k-1"}]},
            {"entries": [{"key": "generic_key", "value": "everyone"}]}
        ]})
    );
    h.respond(
        call.id,
        200,
        &[("content-type", "application/json")],
        br#"{"overallCode": "OK", "statuses": [
            {"code": "OK", "currentLimit": {"requestsPerUnit": 10, "unit": "MINUTE"}, "limitRemaining": 9},
            {"code": "OK", "currentLimit": {"requestsPerUnit": 5, "unit": "MINUTE"}, "limitRemaining": 2,
             "durationUntilReset": "41s"},
            {"code": "OK"}
        ]}"#,
    )
    .expect("respond");
    assert!(s.resumed(), "allowed: the request goes on");
    assert_eq!(s.local_response(), None);
    s.send_response_headers(&[(":status", "200")], true)
        .expect("response");
    assert_eq!(s.response_header("x-ratelimit-limit").as_deref(), Some("5"));
    assert_eq!(
        s.response_header("x-ratelimit-remaining").as_deref(),
        Some("2")
    );
    assert_eq!(
        s.response_header("x-ratelimit-reset").as_deref(),
        Some("41")
    );

    let (s, _) = send(&h, "10.0.0.7", "GET", "/other", &[]);
    let call = h.pending_callouts().pop().expect("second call");
    let body: serde_json::Value = serde_json::from_slice(&call.body).expect("json body");
    assert_eq!(
        body["descriptors"].as_array().map(Vec::len),
        Some(2),
        "only matching rules with a key are sent: {body}"
    );
    h.respond(
        call.id,
        429,
        &[],
        br#"{"overallCode": "OVER_LIMIT", "statuses": [
            {"code": "OVER_LIMIT", "currentLimit": {"requestsPerUnit": 1, "unit": "MINUTE"}},
            {"code": "OK", "currentLimit": {"requestsPerUnit": 2, "unit": "MINUTE"}, "limitRemaining": 1}
        ]}"#,
    )
    .expect("respond");
    let local = s.local_response().expect("limited");
    assert_eq!(local.status, 429);
    assert_eq!(
        local_header(&s, "x-envoy-ratelimited").as_deref(),
        Some("true")
    );
    assert_eq!(local_header(&s, "retry-after").as_deref(), Some("60"));
    assert_eq!(local_header(&s, "x-ratelimit-limit").as_deref(), Some("1"));
    assert_eq!(
        local_header(&s, "x-ratelimit-remaining").as_deref(),
        Some("0")
    );

    let metric = |name: &str, rule: &str| h.metric(&format!("rule=.={rule};.;{name}"));
    assert_eq!(metric("ratelimit_allowed_total", "per-ip"), Some(1));
    assert_eq!(metric("ratelimit_limited_total", "per-ip"), Some(1));
    assert_eq!(metric("ratelimit_allowed_total", "everyone"), Some(2));
    assert_eq!(metric("ratelimit_allowed_total", "api-key"), Some(1));
}

#[test]
fn global_mode_lets_requests_through_when_the_service_fails_unless_told_to_deny() {
    for (deny, expect) in [(false, 200), (true, 500)] {
        let h = Harness::builder(wasm())
            .name("ratelimit")
            .plugin_config(global(&format!(r#", "failure_mode_deny": {deny}"#)))
            .upstreams(&["rls"])
            .load()
            .expect("load");
        // No answer at all (unreachable, timed out).
        let (s, _) = get(&h, "10.0.0.1");
        let id = h.pending_callouts()[0].id;
        h.fail_callout(id).expect("fail");
        let got = match s.local_response() {
            Some(l) => l.status,
            None => {
                assert!(s.resumed(), "deny={deny}");
                200
            }
        };
        assert_eq!(got, expect, "deny={deny}: no answer");
        // A 503 from the service.
        let (s, _) = get(&h, "10.0.0.1");
        let id = h.pending_callouts()[0].id;
        h.respond(id, 503, &[], b"down").expect("respond");
        let got = s.local_response().map_or(200, |l| l.status);
        assert_eq!(got, expect, "deny={deny}: 503");
        assert_eq!(h.metric("ratelimit_service_errors_total"), Some(2));
        assert!(
            h.logs()
                .iter()
                .any(|l| l.level == LogLevel::Warn && l.message.contains("answered status 503")),
            "{:?}",
            h.logs()
        );
    }
}

#[test]
fn global_mode_with_a_cluster_the_proxy_does_not_have() {
    for (deny, expect) in [(false, 200), (true, 500)] {
        let h = Harness::builder(wasm())
            .name("ratelimit")
            .plugin_config(global(&format!(r#", "failure_mode_deny": {deny}"#)))
            .upstreams(&["something-else"])
            .load()
            .expect("load");
        let (s, action) = get(&h, "10.0.0.1");
        assert_eq!(status(&s, action), expect, "deny={deny}");
        assert!(h.callouts().is_empty());
        assert_eq!(h.metric("ratelimit_service_errors_total"), Some(1));
    }
}

#[test]
fn configuration_errors_name_the_field_in_the_log() {
    for (config, expect) in [
        (
            r#"{"rules": [{"name": "a"}]}"#,
            "configuration field `rules[0].bucket`: required",
        ),
        (
            r#"{"rules": [{"name": "a", "key": {"type": "jwt_claim", "claim": "sub", "cookie": "x"},
                "bucket": {"max_tokens": 1, "fill_interval": "1s"}}]}"#,
            "configuration field `rules[0].key",
        ),
        (
            r#"{"rules": [{"name": "a", "bucket": {"max_tokens": 1, "fill_interval": "1 second"}}]}"#,
            "configuration field `rules[0].bucket.fill_interval`: invalid duration",
        ),
        (
            r#"{"global": {"cluster": "rls"}}"#,
            "configuration field `global`: missing field `domain`",
        ),
        (
            r#"{"limits": []}"#,
            "configuration field `limits`: unknown field `limits`",
        ),
        ("[", "configuration"),
    ] {
        let err = Harness::builder(wasm())
            .name("ratelimit")
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
fn no_rules_let_everything_through() {
    let h = load("");
    for _ in 0..5 {
        let (mut s, action) = get(&h, "10.0.0.1");
        assert_eq!(status(&s, action), 200);
        s.send_response_headers(&[(":status", "200")], true)
            .expect("response");
        assert_eq!(s.response_header("x-ratelimit-limit"), None);
    }
}
