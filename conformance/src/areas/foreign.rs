//! Foreign functions: the host's (`sha256`, and Envoy's `declare_property` and
//! `clear_route_cache`), an unknown one, and re-routing through `clear_route_cache`.

use crate::capture;
use crate::check::{Check, eq};
use crate::error::{Context, Result};
use crate::host_env;
use crate::net::upstream::Upstream;
use crate::observe::Run;
use crate::probes;
use crate::proxy_env::{self, Proxy};

const PROBE: &str = "foreign";
const REROUTED: &str = "route cache cleared";

pub fn checks() -> Vec<Check> {
    const CALL: &str = "spec v0.2.1 proxy_call_foreign_function: calls the host's function name with the arguments, returns its result";
    vec![
        eq("foreign.sha256", "OK hex:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "wasmesh (README): foreign function sha256 returns the digest of its arguments")
            .proves(&["proxy_call_foreign_function"]),
        eq("foreign.unknown", "NOT_FOUND", "Envoy (cpp-host call_foreign_function): NOT_FOUND for a function the host does not have")
            .proves(&["proxy_call_foreign_function", "proxy_status_t"]),
        eq("foreign.declare_property", "OK (empty)", "Envoy foreign function declare_property (wasmesh: properties are untyped, so it only accepts)")
            .proves(&["proxy_call_foreign_function"]),
        eq("foreign.clear_route_cache", "OK (empty)", CALL).proves(&["proxy_call_foreign_function"]),
        eq("foreign.rerouted", REROUTED, "Envoy foreign function clear_route_cache: the request is routed again with its edited headers")
            .proves(&["proxy_call_foreign_function"]),
    ]
}

pub fn host() -> Result<Run> {
    let loaded = host_env::load(probes::rust(PROBE)?, "foreign", "")?;
    let mut stream = loaded.harness.http_stream().doing("a stream")?;
    stream
        .send_request_headers(
            &[
                (":method", "GET"),
                (":path", "/foreign"),
                (":authority", "conformance.local"),
                ("x-probe-mode", "reroute"),
            ],
            true,
        )
        .doing("request headers")?;
    let mut run = Run::default();
    let rerouted = if stream.route_cache_cleared() {
        REROUTED
    } else {
        "not cleared"
    };
    run.obs.add("foreign.rerouted", rerouted);
    drop(stream);
    run.harness(&loaded.harness);
    Ok(run)
}

/// A route sending requests with `x-route: b` to cluster `b` (before the default route).
pub const ROUTE_B: &str = "          - name: b\n            match: { prefix: \"/\", headers: [{ name: x-route, exact: b }] }\n            cluster: b\n";

pub async fn proxy() -> Result<Run> {
    let wasm = probes::rust(PROBE)?;
    let upstream = Upstream::named("a").await?;
    let other = Upstream::named("b").await?;
    let name = capture::unique("foreign");
    let clusters = format!("  - name: b\n    endpoints: [\"{}\"]\n", other.addr);
    let yaml = proxy_env::config(
        upstream.addr,
        &proxy_env::plugin(&name, wasm, "", ""),
        ROUTE_B,
        &clusters,
        "",
    );
    let mut run = Run::default();
    Proxy::with(&yaml, async |proxy: &Proxy| {
        let reply = proxy
            .get("/foreign", &[("x-probe-mode", "reroute")])
            .await?;
        let rerouted = if reply.header("x-upstream").as_deref() == Some("b") {
            REROUTED
        } else {
            "routed as before"
        };
        run.obs.add("foreign.rerouted", rerouted);
        Ok(())
    })
    .await?;
    run.lines(&name);
    Ok(run)
}
