//! The traffic-split filter as built for wasm32-wasip1, run on wasmesh's host through the
//! SDK's test harness: weights of 100/0 and 0/100, a 90/10 split over many requests, header
//! and cookie overrides, sticky users by header, cookie and client IP, the client's own
//! variant header replaced, the route cache cleared, metrics and configuration errors.

use std::collections::HashMap;

use wasmesh_sdk_test::{Action, Error, Harness, LogLevel, Stream};

fn load(config: &str) -> Harness {
    Harness::builder(wasmesh_test_programs::filter("traffic-split"))
        .name("split")
        .plugin_config(config)
        .load()
        .expect("configuration accepted")
}

fn weights(stable: u32, canary: u32, extra: &str) -> String {
    format!(
        r#"{{"variants": [{{"name": "stable", "weight": {stable}}}, {{"name": "canary", "weight": {canary}}}]{extra}}}"#
    )
}

fn request(h: &Harness, headers: &[(&str, &str)]) -> Stream {
    let mut s = h.http_stream().expect("stream");
    let mut all = vec![
        (":method", "GET"),
        (":path", "/shop"),
        (":authority", "shop.example.com"),
    ];
    all.extend_from_slice(headers);
    assert_eq!(
        s.send_request_headers(&all, true).expect("headers"),
        Action::Continue,
        "the filter never holds a request"
    );
    s
}

fn variant(h: &Harness, headers: &[(&str, &str)]) -> String {
    request(h, headers)
        .request_header("x-route-variant")
        .expect("a variant is always written")
}

#[test]
fn all_weight_on_one_variant_sends_everything_there_and_re_routes() {
    for (stable, canary, want) in [(100, 0, "stable"), (0, 100, "canary")] {
        let h = load(&weights(stable, canary, ""));
        for _ in 0..50 {
            let s = request(&h, &[]);
            assert_eq!(s.request_header("x-route-variant").as_deref(), Some(want));
            assert!(s.route_cache_cleared(), "the route is matched again");
        }
        let metric = format!("variant=.={want};.;reason=.=weighted;.;traffic_split_requests_total");
        assert_eq!(h.metric(&metric), Some(50));
    }
}

#[test]
fn a_client_cannot_pick_its_variant_with_the_header_itself() {
    let h = load(&weights(100, 0, ""));
    let s = request(&h, &[("x-route-variant", "canary")]);
    assert_eq!(s.request_header_values("x-route-variant"), ["stable"]);
}

#[test]
fn ninety_ten_over_many_requests() {
    let h = load(&weights(90, 10, ""));
    let n = 4000;
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..n {
        *counts.entry(variant(&h, &[])).or_default() += 1;
    }
    // Expected 400 canary requests, standard deviation 19: the bounds are ten deviations
    // away, so a correct split never fails this, and a 50/50 or 100/0 split always does.
    let canary = counts.get("canary").copied().unwrap_or(0);
    assert!((210..=590).contains(&canary), "{counts:?}");
    assert_eq!(counts.values().sum::<u32>(), n);
}

#[test]
fn overrides_by_header_and_cookie_come_first() {
    let h = load(&weights(
        100,
        0,
        r#", "overrides": [
            {"header": "x-canary", "value": "always", "variant": "canary"},
            {"header": "x-beta", "variant": "canary"},
            {"cookie": "version", "value": "v2", "variant": "canary"}]"#,
    ));
    assert_eq!(variant(&h, &[("x-canary", "always")]), "canary");
    assert_eq!(variant(&h, &[("x-canary", "sometimes")]), "stable");
    assert_eq!(
        variant(&h, &[("x-beta", "")]),
        "canary",
        "presence is enough"
    );
    assert_eq!(
        variant(&h, &[("cookie", "theme=dark; version=v2")]),
        "canary"
    );
    assert_eq!(variant(&h, &[("cookie", "version=v1")]), "stable");
    assert_eq!(
        h.metric("variant=.=canary;.;reason=.=override;.;traffic_split_requests_total"),
        Some(3)
    );
}

#[test]
fn sticky_users_always_get_the_same_variant() {
    for (sticky, key_of) in [
        (
            r#"{"type": "header", "name": "x-user"}"#,
            (|u: &str| vec![("x-user", u.to_string())]) as fn(&str) -> Vec<(&'static str, String)>,
        ),
        (r#"{"type": "cookie", "name": "session"}"#, |u: &str| {
            vec![("cookie", format!("a=b; session={u}"))]
        }),
    ] {
        let h = load(&weights(50, 50, &format!(r#", "sticky": {sticky}"#)));
        let mut per_variant: HashMap<String, u32> = HashMap::new();
        for user in 0..60 {
            let id = format!("user-{user}");
            let headers = key_of(&id);
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let first = variant(&h, &headers);
            for _ in 0..5 {
                assert_eq!(variant(&h, &headers), first, "{sticky}: {id}");
            }
            *per_variant.entry(first).or_default() += 1;
        }
        assert_eq!(
            per_variant.len(),
            2,
            "{sticky}: users are spread over both variants: {per_variant:?}"
        );
    }
}

#[test]
fn sticky_by_client_ip_ignores_the_port_and_falls_back_to_the_weights() {
    let h = load(&weights(50, 50, r#", "sticky": {"type": "client_ip"}"#));
    let mut variants = std::collections::HashSet::new();
    for ip in 1..40 {
        let mut first = None;
        for port in [1000, 2000, 3000] {
            let mut s = h.http_stream().expect("stream");
            s.set_property("source.address", format!("10.9.0.{ip}:{port}"));
            s.send_request_headers(&[(":method", "GET"), (":path", "/")], true)
                .expect("headers");
            let got = s.request_header("x-route-variant").expect("variant");
            assert_eq!(*first.get_or_insert(got.clone()), got, "10.9.0.{ip}");
        }
        variants.extend(first);
    }
    assert_eq!(variants.len(), 2);

    let fallback = load(&weights(
        0,
        100,
        r#", "sticky": {"type": "header", "name": "x-user"}"#,
    ));
    assert_eq!(
        variant(&fallback, &[]),
        "canary",
        "no key: the weights decide"
    );
    assert_eq!(
        fallback.metric("variant=.=canary;.;reason=.=weighted;.;traffic_split_requests_total"),
        Some(1)
    );
}

#[test]
fn the_header_written_is_configurable() {
    let h = load(&weights(0, 1, r#", "header": "x-shop-version""#));
    let s = request(&h, &[]);
    assert_eq!(
        s.request_header("x-shop-version").as_deref(),
        Some("canary")
    );
    assert_eq!(s.request_header("x-route-variant"), None);
}

#[test]
fn configuration_errors_name_the_field_in_the_log() {
    for (config, expect) in [
        (
            r#"{"variants": [{"name": "a", "weight": 0}]}"#,
            "configuration field `variants`: the weights add up to zero",
        ),
        (
            r#"{"variants": [{"name": "a", "weight": 1}], "overrides": [{"header": "x-a", "variant": "b"}]}"#,
            "configuration field `overrides[0].variant`: \"b\" is not one of the variants",
        ),
        (
            r#"{"variants": [{"name": "a", "weight": 1}], "sticky": {"type": "header"}}"#,
            "configuration field `sticky`: missing field `name`",
        ),
        (
            r#"{"overrides": []}"#,
            "configuration: missing field `variants`",
        ),
    ] {
        let err = Harness::builder(wasmesh_test_programs::filter("traffic-split"))
            .name("split")
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
