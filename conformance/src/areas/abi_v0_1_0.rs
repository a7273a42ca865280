//! ABI v0.1.0: a module declaring it, its two-argument header callbacks, and the functions only
//! v0.1.0 has (`proxy_get_configuration`, `proxy_continue_request`, `proxy_continue_response`,
//! `proxy_clear_route_cache`).

use crate::areas::foreign::ROUTE_B;
use crate::areas::headers::counts_agree;
use crate::areas::lifecycle::version;
use crate::capture;
use crate::check::{Check, Expect, eq};
use crate::error::{Context, Result};
use crate::host_env;
use crate::net::upstream::Upstream;
use crate::observe::Run;
use crate::probes;
use crate::proxy_env::{self, Proxy};

const PROBE: &str = "abi-v0-1-0";
const CONFIG: &str = "v010-config";
const REROUTED: &str = "route cache cleared";

pub fn checks() -> Vec<Check> {
    const V010: &str = "spec abi-versions/v0.1.0/README.md";
    vec![
        eq("v010.abi", "0.1.0", "spec abi-versions/README.md: a module exporting proxy_abi_version_0_1_0 is an ABI v0.1.0 module")
            .proves(&["proxy_abi_version_0_1_0"]),
        eq("v010.get_configuration", "OK v010-config", "spec v0.1.0 proxy_get_configuration: the plugin configuration")
            .proves(&["proxy_get_configuration"]),
        Check::new("v010.request_headers_args", Expect::Holds("num_headers = the pairs in the map", counts_agree), "spec v0.1.0 proxy_on_request_headers(context_id, num_headers)")
            .proves(&["proxy_on_request_headers (v0.1.0: 2 arguments)"]),
        Check::new("v010.response_headers_args", Expect::Holds("num_headers = the pairs in the map", counts_agree), "spec v0.1.0 proxy_on_response_headers(context_id, num_headers)")
            .proves(&["proxy_on_response_headers (v0.1.0: 2 arguments)"]),
        eq("v010.continue_request_status", "OK", V010).proves(&["proxy_continue_request"]),
        eq("v010.resumed_request", "request", "spec v0.1.0 proxy_continue_request: the paused request goes on, as edited")
            .proves(&["proxy_continue_request"]),
        eq("v010.continue_response_status", "OK", V010).proves(&["proxy_continue_response"]),
        eq("v010.resumed_response", "response", "spec v0.1.0 proxy_continue_response: the paused response goes on, as edited")
            .proves(&["proxy_continue_response"]),
        eq("v010.clear_route_cache_status", "OK", V010).proves(&["proxy_clear_route_cache"]),
        eq("v010.rerouted", REROUTED, "spec v0.1.0 proxy_clear_route_cache: the request is routed again")
            .proves(&["proxy_clear_route_cache"]),
    ]
}

fn request(mode: &str) -> [(&str, &str); 4] {
    [
        (":method", "GET"),
        (":path", "/v010"),
        (":authority", "conformance.local"),
        ("x-probe-mode", mode),
    ]
}

pub fn host() -> Result<Run> {
    let loaded = host_env::load(probes::rust(PROBE)?, "abi-v0-1-0", CONFIG)?;
    let h = &loaded.harness;
    let mut run = Run::default();
    run.obs.add("v010.abi", version(h.plugin().abi_version()));

    let mut stream = h.http_stream().doing("a stream")?;
    stream
        .send_request_headers(&request("pause-request"), true)
        .doing("request headers")?;
    h.tick().doing("a tick")?;
    run.obs.add(
        "v010.resumed_request",
        stream.request_header("x-v010-resumed").unwrap_or_default(),
    );

    let mut stream = h.http_stream().doing("a stream")?;
    stream
        .send_request_headers(&request("pause-response"), true)
        .doing("request headers")?;
    stream
        .send_response_headers(&[(":status", "200")], false)
        .doing("response headers")?;
    h.tick().doing("a tick")?;
    run.obs.add(
        "v010.resumed_response",
        stream.response_header("x-v010-resumed").unwrap_or_default(),
    );

    let mut stream = h.http_stream().doing("a stream")?;
    stream
        .send_request_headers(&request("reroute"), true)
        .doing("request headers")?;
    let rerouted = if stream.route_cache_cleared() {
        REROUTED
    } else {
        "not cleared"
    };
    run.obs.add("v010.rerouted", rerouted);
    drop(stream);
    run.harness(&loaded.harness);
    Ok(run)
}

pub async fn proxy() -> Result<Run> {
    let wasm = probes::rust(PROBE)?;
    let upstream = Upstream::named("a").await?;
    let other = Upstream::named("b").await?;
    let name = capture::unique("abi-v0-1-0");
    let clusters = format!("  - name: b\n    endpoints: [\"{}\"]\n", other.addr);
    let yaml = proxy_env::config(
        upstream.addr,
        &proxy_env::plugin(&name, wasm, CONFIG, ""),
        ROUTE_B,
        &clusters,
        "",
    );
    let mut run = Run::default();
    Proxy::with(&yaml, async |proxy: &Proxy| {
        run.obs
            .add("v010.abi", proxy.abi_version("probe", &name).await?);
        proxy
            .get("/v010", &[("x-probe-mode", "pause-request")])
            .await?;
        run.obs.add(
            "v010.resumed_request",
            upstream.last()?.header("x-v010-resumed"),
        );
        let reply = proxy
            .get("/v010", &[("x-probe-mode", "pause-response")])
            .await?;
        run.obs.add(
            "v010.resumed_response",
            reply.header("x-v010-resumed").unwrap_or_default(),
        );
        let reply = proxy.get("/v010", &[("x-probe-mode", "reroute")]).await?;
        let rerouted = if reply.header("x-upstream").as_deref() == Some("b") {
            REROUTED
        } else {
            "routed as before"
        };
        run.obs.add("v010.rerouted", rerouted);
        Ok(())
    })
    .await?;
    run.lines(&name);
    Ok(run)
}
