//! The rbac filter as built for wasm32-wasip1, run on wasmesh's host through the SDK's test
//! harness: each kind of permission and principal, the combinators, both actions, shadow mode,
//! the claims the jwt-authn filter publishes, and configuration errors.

use wasmesh_sdk_test::{Action, Error, Harness, LogLevel, Stream};

fn load(config: &str) -> Harness {
    Harness::builder(wasmesh_test_programs::filter("rbac"))
        .name("rbac")
        .plugin_config(config)
        .load()
        .expect("configuration accepted")
}

const FRONTEND: &str = "spiffe://mesh.test/ns/web/sa/frontend";
const BATCH: &str = "spiffe://mesh.test/ns/jobs/sa/batch";

/// A stream with `method path` and `headers`, after the filter saw the request headers;
/// `peer` is the verified client certificate's URI SAN (mTLS), if any.
fn send(
    h: &Harness,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    peer: Option<&str>,
) -> (Action, Stream) {
    let mut s = h.http_stream().expect("stream");
    s.set_property("connection.mtls", peer.is_some());
    if let Some(uri) = peer {
        s.set_property("connection.uri_san_peer_certificate", uri);
        s.set_property("connection.subject_peer_certificate", "CN=workload");
    }
    let mut all = vec![
        (":method", method),
        (":path", path),
        (":authority", "api.test"),
        (":scheme", "https"),
    ];
    all.extend_from_slice(headers);
    let action = s.send_request_headers(&all, true).expect("request headers");
    (action, s)
}

fn assert_denied(action: Action, s: &Stream) {
    assert_eq!(action, Action::Pause, "a denied request stops");
    let local = s.local_response().expect("a 403");
    assert_eq!(local.status, 403);
    assert_eq!(
        String::from_utf8_lossy(&local.body),
        "RBAC: access denied\n"
    );
}

fn assert_allowed(action: Action, s: &Stream) {
    assert_eq!(action, Action::Continue, "{:?}", s.local_response());
    assert!(s.local_response().is_none());
}

const SPIFFE_POLICIES: &str = r#"{"action": "ALLOW", "policies": {
    "frontend-reads": {
        "permissions": [{"and": [{"method": "GET"}, {"path": {"prefix": "/api/"}}]}],
        "principals": [{"authenticated": {"principal_name": {"exact": "spiffe://mesh.test/ns/web/sa/frontend"}}}]},
    "jobs-write-reports": {
        "permissions": [{"and": [{"or": [{"method": "POST"}, {"method": "PUT"}]},
                                  {"path": {"regex": "/reports/[0-9]+"}}]}],
        "principals": [{"authenticated": {"principal_name": {"prefix": "spiffe://mesh.test/ns/jobs/"}}}]}}}"#;

#[test]
fn allow_policies_match_spiffe_ids_methods_and_paths() {
    let h = load(SPIFFE_POLICIES);
    let (a, s) = send(&h, "GET", "/api/users?page=2", &[], Some(FRONTEND));
    assert_allowed(a, &s);
    let (a, s) = send(&h, "PUT", "/reports/17", &[], Some(BATCH));
    assert_allowed(a, &s);

    let (a, s) = send(&h, "DELETE", "/api/users", &[], Some(FRONTEND));
    assert_denied(a, &s);
    let (a, s) = send(&h, "GET", "/api/users", &[], Some(BATCH));
    assert_denied(a, &s);
    let (a, s) = send(&h, "PUT", "/reports/17/x", &[], Some(BATCH));
    assert_denied(a, &s);
    let (a, s) = send(&h, "GET", "/api/users", &[], None);
    assert_denied(a, &s);

    assert_eq!(
        h.metric("policy=.=frontend-reads;.;rbac_allowed_total"),
        Some(1)
    );
    assert_eq!(
        h.metric("policy=.=jobs-write-reports;.;rbac_allowed_total"),
        Some(1)
    );
    assert_eq!(h.metric("policy=.=;.;rbac_denied_total"), Some(4));
}

#[test]
fn without_mtls_no_peer_is_authenticated() {
    let h = load(
        r#"{"action": "ALLOW", "policies": {"any-peer": {
            "permissions": [{"any": true}], "principals": [{"authenticated": {}}]}}}"#,
    );
    let (a, s) = send(&h, "GET", "/", &[], Some(BATCH));
    assert_allowed(a, &s);
    // A URI SAN without a verified certificate (connection.mtls false) counts for nothing.
    let mut s = h.http_stream().expect("stream");
    s.set_property("connection.mtls", false);
    s.set_property("connection.uri_san_peer_certificate", FRONTEND);
    let a = s
        .send_request_headers(&[(":method", "GET"), (":path", "/")], true)
        .expect("headers");
    assert_denied(a, &s);
}

#[test]
fn deny_policies_block_source_networks_and_let_the_rest_through() {
    let h = load(
        r#"{"action": "DENY", "policies": {"blocked-nets": {
            "permissions": [{"any": true}],
            "principals": [{"source_ip": "203.0.113.0/24"}, {"source_ip": "2001:db8::/32"}]}}}"#,
    );
    for (source, denied) in [
        ("203.0.113.9:5555", true),
        ("[2001:db8::7]:443", true),
        ("[::ffff:203.0.113.10]:80", true),
        ("198.51.100.1:5555", false),
        ("[2001:db9::1]:443", false),
    ] {
        h.set_property("source.address", source);
        let (a, s) = send(&h, "GET", "/", &[], None);
        if denied {
            assert_denied(a, &s);
        } else {
            assert_allowed(a, &s);
        }
    }
    assert_eq!(
        h.metric("policy=.=blocked-nets;.;rbac_denied_total"),
        Some(3)
    );
    assert_eq!(h.metric("policy=.=;.;rbac_allowed_total"), Some(2));
}

#[test]
fn jwt_claims_published_by_jwt_authn_are_principals() {
    let h = load(
        r#"{"action": "ALLOW", "policies": {
            "admins": {"permissions": [{"any": true}],
                       "principals": [{"jwt_claim": {"name": "groups", "exact": "admin"}}]},
            "own-profile": {"permissions": [{"path": {"exact": "/me"}}],
                            "principals": [{"and": [{"jwt_claim": {"name": "sub", "prefix": "user-"}},
                                                    {"jwt_claim": {"name": "org.tier", "exact": "2"}}]}]}}}"#,
    );
    let with_claims = |claims: &str, path: &str| {
        let mut s = h.http_stream().expect("stream");
        s.set_property("wasmesh.jwt.claims", claims);
        let a = s
            .send_request_headers(&[(":method", "GET"), (":path", path)], true)
            .expect("headers");
        (a, s)
    };
    let (a, s) = with_claims(r#"{"sub": "x", "groups": ["dev", "admin"]}"#, "/anything");
    assert_allowed(a, &s);
    let (a, s) = with_claims(
        r#"{"sub": "user-7", "groups": ["dev"], "org": {"tier": 2}}"#,
        "/me",
    );
    assert_allowed(a, &s);
    let (a, s) = with_claims(r#"{"sub": "user-7", "org": {"tier": 1}}"#, "/me");
    assert_denied(a, &s);
    let (a, s) = with_claims(r#"{"sub": "user-7", "groups": "dev"}"#, "/anything");
    assert_denied(a, &s);
    let (a, s) = with_claims("not json", "/anything");
    assert_denied(a, &s);
    let (a, s) = send(&h, "GET", "/anything", &[], None);
    assert_denied(a, &s);
}

#[test]
fn headers_ports_and_not() {
    let h = load(
        r#"{"action": "ALLOW", "policies": {
            "internal-port": {"permissions": [{"destination_port": 9443}],
                              "principals": [{"header": {"name": "X-Team", "present": true}}]},
            "canary-not-delete": {"permissions": [{"and": [{"header": {"name": "x-env", "exact": "canary"}},
                                                           {"not": {"method": "DELETE"}}]}],
                                  "principals": [{"not": {"header": {"name": "x-blocked", "present": true}}}]}}}"#,
    );
    h.set_property("destination.port", 8443);
    let (a, s) = send(&h, "GET", "/", &[("x-env", "canary")], None);
    assert_allowed(a, &s);
    let (a, s) = send(&h, "DELETE", "/", &[("x-env", "canary")], None);
    assert_denied(a, &s);
    let (a, s) = send(
        &h,
        "GET",
        "/",
        &[("x-env", "canary"), ("x-blocked", "1")],
        None,
    );
    assert_denied(a, &s);
    let (a, s) = send(&h, "GET", "/", &[("x-team", "payments")], None);
    assert_denied(a, &s);
    h.set_property("destination.port", 9443);
    let (a, s) = send(&h, "GET", "/", &[("x-team", "payments")], None);
    assert_allowed(a, &s);
    assert_eq!(
        h.metric("policy=.=internal-port;.;rbac_allowed_total"),
        Some(1)
    );
}

#[test]
fn shadow_mode_logs_and_counts_without_enforcing() {
    let shadowed = SPIFFE_POLICIES.replacen(
        r#""action": "ALLOW","#,
        r#""action": "ALLOW", "shadow": true,"#,
        1,
    );
    let h = load(&shadowed);
    let (a, s) = send(&h, "DELETE", "/api/users", &[], Some(FRONTEND));
    assert_allowed(a, &s);
    let (a, s) = send(&h, "GET", "/api/users", &[], Some(FRONTEND));
    assert_allowed(a, &s);
    assert_eq!(h.metric("policy=.=;.;rbac_shadow_denied_total"), Some(1));
    assert_eq!(
        h.metric("policy=.=frontend-reads;.;rbac_shadow_allowed_total"),
        Some(1)
    );
    assert_eq!(
        h.metric("policy=.=;.;rbac_denied_total"),
        None,
        "nothing enforced"
    );
    let logs: Vec<String> = h
        .logs()
        .into_iter()
        .filter(|l| l.level == LogLevel::Info)
        .map(|l| l.message)
        .collect();
    assert_eq!(
        logs,
        [
            "shadow: would deny DELETE /api/users (no policy matched)",
            "shadow: would allow GET /api/users (policy \"frontend-reads\")",
        ]
    );

    let deny = load(
        r#"{"action": "DENY", "shadow": true, "policies": {"no-deletes": {
            "permissions": [{"method": "DELETE"}], "principals": [{"any": true}]}}}"#,
    );
    let (a, s) = send(&deny, "DELETE", "/x", &[], None);
    assert_allowed(a, &s);
    assert_eq!(
        deny.metric("policy=.=no-deletes;.;rbac_shadow_denied_total"),
        Some(1)
    );
    assert!(
        deny.logs()
            .iter()
            .any(|l| l.message == "shadow: would deny DELETE /x (policy \"no-deletes\")")
    );
}

#[test]
fn allow_with_no_policies_denies_everything() {
    let h = load(r#"{"action": "ALLOW"}"#);
    let (a, s) = send(&h, "GET", "/", &[], Some(FRONTEND));
    assert_denied(a, &s);
    let h = load(r#"{"action": "DENY"}"#);
    let (a, s) = send(&h, "GET", "/", &[], None);
    assert_allowed(a, &s);
}

#[test]
fn configuration_errors_name_the_field_in_the_log() {
    for (config, expect) in [
        ("", "configuration: missing field `action`"),
        (
            r#"{"action": "allow"}"#,
            "configuration field `action`: unknown variant `allow`",
        ),
        (
            r#"{"action": "ALLOW", "policies": {"p": {"permissions": [{"path": {"regex": "(unclosed"}}], "principals": [{"any": true}]}}}"#,
            "configuration field `policies.p.permissions[0].path.regex`: bad regex",
        ),
        (
            r#"{"action": "ALLOW", "policies": {"p": {"permissions": [{"any": true}], "principals": [{"source_ip": "10.0.0.300/8"}]}}}"#,
            "configuration field `policies.p.principals[0].source_ip`: \"10.0.0.300/8\" is not an IP address or CIDR range",
        ),
        (
            r#"{"action": "ALLOW", "policies": {"p": {"permissions": [{"any": true}], "principals": [{"not": {"jwt_claim": {"name": "sub"}}}]}}}"#,
            "configuration field `policies.p.principals[0].not.jwt_claim`: a jwt_claim match needs exactly one of",
        ),
        (
            r#"{"action": "ALLOW", "policies": {"p": {"permissions": [{"any": true}]}}}"#,
            "configuration field `policies.p`: missing field `principals`",
        ),
        (
            r#"{"action": "ALLOW", "policies": {"p": {"permissions": [{"any": true}], "principals": [{"any": true}], "extra": 1}}}"#,
            "configuration field `policies.p.extra`: unknown field `extra`",
        ),
    ] {
        let err = Harness::builder(wasmesh_test_programs::filter("rbac"))
            .name("rbac")
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
