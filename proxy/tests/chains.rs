//! One filter chain changed on a running proxy through the admin API (`PUT /chains/{name}`,
//! `POST /chains/{name}/rollback`) and through `wasmesh chain`: the change goes live, every
//! way a change can be bad is rejected with the running chain still serving, and rollback
//! puts back what was there.

mod support;

use std::net::SocketAddr;
use std::process::Command;

use support::*;

/// A proxy config whose listener runs chain `edge` with `plugins` (YAML, indented 6).
fn config(upstream: SocketAddr, plugins: &str) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: "127.0.0.1:0"
    route_config: main
    filter_chain: edge
routes:
  - name: main
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: default
            match: {{ prefix: "/" }}
            cluster: backend
clusters:
  - name: backend
    endpoints: ["{upstream}"]
filter_chains:
  - name: edge
    plugins:
{plugins}
admin:
  address: "127.0.0.1:0"
"#
    )
}

/// The stock headers filter stamping responses with `x-stamp: STAMP`.
fn headers_plugin(stamp: &str) -> String {
    format!(
        "      - name: stamp\n        source: \"file://{}\"\n        config: {{ response: {{ set: {{ x-stamp: \"{stamp}\" }} }} }}\n",
        wasmesh_test_programs::HEADERS_WASM
    )
}

/// The same plugin as a `PUT /chains/edge` document.
fn chain_document(stamp: &str) -> String {
    format!(
        "plugins:\n{}",
        headers_plugin(stamp).replace("      ", "  ")
    )
}

async fn stamp_of(proxy: &Proxy) -> Option<String> {
    get(proxy.addr("main"), "/")
        .await
        .header("x-stamp")
        .map(str::to_string)
}

#[tokio::test]
async fn put_chain_goes_live_and_rollback_restores_the_previous_definition() {
    let upstream = Upstream::named("up").await;
    let proxy = Proxy::start(&config(upstream.addr, &headers_plugin("a")));
    let admin = proxy.admin.expect("admin");
    assert_eq!(stamp_of(&proxy).await.as_deref(), Some("a"));

    let (status, body) = admin_call(admin, "PUT", "/chains/edge", &chain_document("b"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"generation\": 2"), "{body}");
    assert_eq!(stamp_of(&proxy).await.as_deref(), Some("b"));

    let (status, body) = admin_call(admin, "GET", "/chains/edge", "");
    assert_eq!(status, 200, "{body}");
    let chain: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(chain["plugins"][0]["state"], "loaded");
    assert_eq!(chain["plugins"][0]["abi_version"], "V0_2_1");
    assert!(
        chain["plugins"][0]["sha256"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{body}"
    );

    let (status, body) = admin_call(admin, "POST", "/chains/edge/rollback", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(stamp_of(&proxy).await.as_deref(), Some("a"));

    // A rollback is not itself recorded: there is nothing further back.
    let (status, body) = admin_call(admin, "POST", "/chains/edge/rollback", "");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("no earlier definition"), "{body}");
    assert_eq!(stamp_of(&proxy).await.as_deref(), Some("a"));

    let (status, _) = admin_call(admin, "GET", "/chains/nope", "");
    assert_eq!(status, 404);
    let (status, _) = admin_call(admin, "DELETE", "/chains/edge", "");
    assert_eq!(status, 405);
}

#[tokio::test]
async fn every_bad_chain_is_rejected_and_the_running_one_keeps_serving() {
    let upstream = Upstream::named("up").await;
    let proxy = Proxy::start(&config(upstream.addr, &headers_plugin("good")));
    let admin = proxy.admin.expect("admin");
    let dir = tempfile::tempdir().expect("dir");
    let not_wasm = dir.path().join("not.wasm");
    std::fs::write(&not_wasm, b"this is not a wasm module").expect("write");

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "bad YAML",
            "plugins: [".to_string(),
            "<admin PUT /chains/edge>",
        ),
        (
            "unknown field",
            "plugins:\n  - name: p\n    source: file:///dev/null\n    colour: red\n".into(),
            "unknown field `colour`",
        ),
        (
            "missing module",
            "plugins:\n  - name: p\n    source: file:///no/such/filter.wasm\n".into(),
            "cannot read plugin file",
        ),
        (
            "a module that does not load",
            format!(
                "plugins:\n  - name: p\n    source: \"file://{}\"\n",
                not_wasm.display()
            ),
            "not a valid Wasm module",
        ),
        (
            "on_configure returning false",
            format!(
                "plugins:\n  - name: p\n    source: \"file://{}\"\n    config: {{ bogus: 1 }}\n",
                wasmesh_test_programs::HEADERS_WASM
            ),
            // The refusal quotes the filter's own log line naming the field.
            "proxy_on_configure returned false; the filter said: ",
        ),
        (
            "a pull that fails",
            "plugins:\n  - name: p\n    source: oci://127.0.0.1:9/filters/none:v1\n".into(),
            "pulling 127.0.0.1:9/filters/none:v1",
        ),
    ];
    for (i, (what, document, expected)) in cases.iter().enumerate() {
        let (status, body) = admin_call(admin, "PUT", "/chains/edge", document);
        assert_eq!(status, 400, "{what}: {body}");
        assert!(body.contains(expected), "{what}: {body}");
        if *what == "on_configure returning false" {
            assert!(
                body.contains("bogus"),
                "the filter's words name the field: {body}"
            );
        }
        assert_eq!(
            stamp_of(&proxy).await.as_deref(),
            Some("good"),
            "{what}: the running chain keeps serving"
        );
        let status = get_admin_text(admin, "/config/status");
        assert!(status.contains("\"generation\": 1"), "{what}: {status}");
        assert!(
            status.contains(&format!("\"rejected\": {}", i + 1)),
            "{what}: {status}"
        );
        assert!(
            status.contains("\"last_trigger\": \"PUT /chains/edge\""),
            "{what}: {status}"
        );
        assert!(status.contains("\"last_error\": \""), "{what}: {status}");
    }
    // Nothing rejected was recorded as history.
    let (status, _) = admin_call(admin, "POST", "/chains/edge/rollback", "");
    assert_eq!(status, 409);
}

fn wasmesh(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wasmesh"))
        .args(args)
        .env_remove("WASMESH_ADMIN")
        .output()
        .expect("run wasmesh");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn the_chain_command_sets_shows_and_rolls_back() {
    let upstream = Upstream::named("up").await;
    let proxy = Proxy::start(&config(upstream.addr, &headers_plugin("before")));
    let admin = proxy.admin.expect("admin").to_string();
    let source = format!("file://{}", wasmesh_test_programs::HEADERS_WASM);

    let (ok, out) = wasmesh(&[
        "chain",
        "set",
        "edge",
        "--plugin",
        &source,
        "--config",
        r#"{"response": {"set": {"x-stamp": "after"}}}"#,
        "--admin",
        &admin,
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("chain edge: generation 2"), "{out}");
    assert!(out.contains("wasmesh_filter_headers"), "{out}");
    assert_eq!(stamp_of(&proxy).await.as_deref(), Some("after"));

    let (ok, out) = wasmesh(&["chain", "status", "--admin", &admin]);
    assert!(ok, "{out}");
    assert!(out.contains("generation 2"), "{out}");
    assert!(out.contains("last trigger: PUT /chains/edge"), "{out}");
    assert!(out.contains("loaded"), "{out}");

    let (ok, out) = wasmesh(&[
        "chain",
        "set",
        "edge",
        "--plugin",
        "file:///no/such.wasm",
        "--admin",
        &admin,
    ]);
    assert!(!ok, "a bad chain must fail the command: {out}");
    assert!(out.contains("400"), "{out}");
    assert!(out.contains("cannot read plugin file"), "{out}");

    let (ok, out) = wasmesh(&["chain", "rollback", "edge", "--admin", &admin]);
    assert!(ok, "{out}");
    assert_eq!(stamp_of(&proxy).await.as_deref(), Some("before"));

    let (ok, out) = wasmesh(&["chain", "status", "--admin", "127.0.0.1:9"]);
    assert!(!ok);
    assert!(out.contains("cannot reach the admin API"), "{out}");
}

fn probe_plugin(config: &str) -> String {
    format!(
        "      - name: probe\n        source: \"file://{}\"\n        vm_id: probe\n        config: \"{config}\"\n",
        wasmesh_test_programs::PROBE_WASM
    )
}

/// As in Envoy, shared data belongs to the `vm_id`, not to a plugin instance: a reload that
/// replaces the plugin keeps it. The replaced plugin's root contexts are ended
/// (`proxy_on_done`) once no request uses them.
#[tokio::test]
async fn a_reload_keeps_shared_data_and_ends_the_replaced_root_contexts() {
    let upstream = Upstream::named("up").await;
    let proxy = Proxy::start(&config(upstream.addr, &probe_plugin("a")));
    let (addr, admin) = (proxy.addr("main"), proxy.admin.expect("admin"));
    for n in 1..=3 {
        get(addr, "/").await;
        assert_eq!(
            upstream.last_seen().headers["x-probe-count"],
            n.to_string().as_str()
        );
    }
    assert!(
        !upstream
            .last_seen()
            .headers
            .contains_key("x-probe-root-done")
    );

    let document = format!("plugins:\n{}", probe_plugin("b").replace("      ", "  "));
    let (status, body) = admin_call(admin, "PUT", "/chains/edge", &document);
    assert_eq!(status, 200, "{body}");
    get(addr, "/").await;
    let seen = upstream.last_seen();
    assert_eq!(seen.headers["x-probe-config"], "b", "the new plugin serves");
    assert_eq!(
        seen.headers["x-probe-count"], "4",
        "shared data survived the reload"
    );

    assert!(
        eventually(std::time::Duration::from_secs(10), async || {
            get(addr, "/").await;
            upstream
                .last_seen()
                .headers
                .get("x-probe-root-done")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok())
                .is_some_and(|n| n >= 1)
        })
        .await,
        "the replaced plugin's root contexts were never ended"
    );
}
