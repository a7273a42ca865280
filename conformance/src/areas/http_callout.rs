//! HTTP callouts: `proxy_http_call` through the host to a cluster, the answer in
//! `proxy_on_http_call_response` (headers, body, trailers), the paused request edited and
//! resumed or answered from it, a paused response resumed, failures and refusals.

use std::time::Duration;

use wasmesh_host::CalloutResponse;

use crate::areas::headers::counts_agree;
use crate::capture;
use crate::check::{Check, Env, Expect, eq};
use crate::error::{Context, Result};
use crate::host_env;
use crate::net::tcp::{Hang, dead_addr};
use crate::net::upstream::{Answer, Upstream};
use crate::observe::Run;
use crate::probes;
use crate::proxy_env::{self, Proxy};

const PROBE: &str = "http-callout";
const BODY: &str = "callout-response-body";
const SENT: &str = "callout POST /callout?x=1 x-callout-req=1 body=ping";

pub fn checks() -> Vec<Check> {
    const CALL: &str = "spec v0.2.1 proxy_http_call: sends the request to the upstream (Envoy: a cluster) and returns a token";
    const ANSWER: &str = "spec v0.2.1 proxy_on_http_call_response: headers (HTTP_CALL_RESPONSE_HEADERS), body (HTTP_CALL_RESPONSE_BODY) and trailers (HTTP_CALL_RESPONSE_TRAILERS) of the answer";
    const RESUME: &str = "spec v0.2.1: the root callback switches to the paused stream (proxy_set_effective_context), edits it and resumes it (proxy_continue_stream)";
    vec![
        eq("callout.ok_dispatch", "OK", CALL).proves(&["proxy_http_call"]),
        eq("callout.sent", SENT, CALL).proves(&["proxy_http_call"]),
        Check::new("callout.response_num_headers", Expect::Holds("num_headers = the pairs in the map", counts_agree), ANSWER)
            .proves(&["proxy_on_http_call_response", "proxy_get_header_map_pairs", "proxy_map_type_t"]),
        eq("callout.response_status", "200", ANSWER).proves(&["proxy_on_http_call_response", "proxy_get_header_map_value"]),
        eq("callout.response_header", "yes", ANSWER).proves(&["proxy_get_header_map_value", "proxy_map_type_t"]),
        eq("callout.response_body_size", "21", ANSWER).proves(&["proxy_on_http_call_response"]),
        eq("callout.response_body", BODY, ANSWER).proves(&["proxy_get_buffer_bytes", "proxy_buffer_type_t"]),
        eq("callout.response_num_trailers", "1", ANSWER).proves(&["proxy_on_http_call_response"]),
        eq("callout.response_trailer", "t", ANSWER).proves(&["proxy_get_header_map_value", "proxy_map_type_t"]),
        eq("callout.sent_status_header", "200", RESUME)
            .proves(&["proxy_set_effective_context", "proxy_continue_stream", "proxy_stream_type_t", "proxy_action_t"]),
        eq("callout.deny", "status=403 body=denied-after-callout", "Envoy: a paused request may be answered locally from the callout's answer")
            .proves(&["proxy_send_local_response", "proxy_on_http_call_response"]),
        eq("callout.dead_num_headers", "0", "spec v0.2.1 proxy_on_http_call_response: num_headers 0 when the call failed (Envoy: connection failure)")
            .proves(&["proxy_on_http_call_response"]),
        eq("callout.timeout_num_headers", "0", "Envoy: a call that times out is answered with no headers")
            .only(Env::Proxy)
            .proves(&["proxy_http_call", "proxy_on_http_call_response"]),
        eq("callout.unknown_cluster_status", "BAD_ARGUMENT", "Envoy (Context::httpCall): an unknown cluster is BAD_ARGUMENT")
            .proves(&["proxy_http_call", "proxy_status_t"]),
        eq("callout.missing_path_status", "BAD_ARGUMENT", "Envoy (Context::httpCall): headers without :path are BAD_ARGUMENT")
            .proves(&["proxy_http_call", "proxy_status_t"]),
        eq("callout.response_resumed", "yes", RESUME).proves(&["proxy_continue_stream", "proxy_stream_type_t", "proxy_on_response_headers"]),
    ]
}

fn request(mode: &str) -> [(&str, &str); 4] {
    [
        (":method", "GET"),
        (":path", "/callout"),
        (":authority", "conformance.local"),
        ("x-probe-mode", mode),
    ]
}

fn answer() -> CalloutResponse {
    CalloutResponse {
        headers: vec![
            (":status".into(), b"200".to_vec()),
            ("x-callout-resp".into(), b"yes".to_vec()),
        ],
        body: BODY.as_bytes().to_vec(),
        trailers: vec![("x-callout-trailer".into(), b"t".to_vec())],
    }
}

pub fn host() -> Result<Run> {
    let loaded = host_env::load_with(probes::rust(PROBE)?, "http-callout", |b| {
        b.upstreams(&["callout", "callout-dead", "callout-hang"])
    })?;
    let h = &loaded.harness;
    let mut run = Run::default();
    let pending = |what: &str| -> Result<wasmesh_sdk_test::Callout> {
        h.pending_callouts()
            .pop()
            .doing(&format!("the callout for {what}"))
    };

    let mut stream = h.http_stream().doing("a stream")?;
    stream
        .send_request_headers(&request("ok"), true)
        .doing("request headers")?;
    let callout = pending("ok")?;
    run.obs.add(
        "callout.sent",
        format!(
            "{} {} {} x-callout-req={} body={}",
            callout.upstream,
            callout.header(":method").unwrap_or_default(),
            callout.header(":path").unwrap_or_default(),
            callout.header("x-callout-req").unwrap_or_default(),
            String::from_utf8_lossy(&callout.body)
        ),
    );
    h.respond_with(callout.id, answer())
        .doing("answering the callout")?;
    run.obs.add(
        "callout.sent_status_header",
        stream
            .request_header("x-callout-status")
            .unwrap_or_default(),
    );

    let mut stream = h.http_stream().doing("a stream")?;
    stream
        .send_request_headers(&request("deny"), true)
        .doing("request headers")?;
    h.respond_with(pending("deny")?.id, answer())
        .doing("answering the callout")?;
    let deny = stream
        .local_response()
        .map(|l| {
            format!(
                "status={} body={}",
                l.status,
                String::from_utf8_lossy(&l.body)
            )
        })
        .unwrap_or_else(|| "no local response".into());
    run.obs.add("callout.deny", deny);

    let mut stream = h.http_stream().doing("a stream")?;
    stream
        .send_request_headers(&request("dead"), true)
        .doing("request headers")?;
    h.fail_callout(pending("dead")?.id)
        .doing("failing the callout")?;

    for mode in ["unknown-cluster", "missing-path"] {
        let mut stream = h.http_stream().doing("a stream")?;
        stream
            .send_request_headers(&request(mode), true)
            .doing("request headers")?;
    }

    let mut stream = h.http_stream().doing("a stream")?;
    stream
        .send_request_headers(&request("pause-response"), true)
        .doing("request headers")?;
    stream
        .send_response_headers(&[(":status", "200")], false)
        .doing("response headers")?;
    h.respond_with(pending("pause-response")?.id, answer())
        .doing("answering the callout")?;
    run.obs.add(
        "callout.response_resumed",
        stream
            .response_header("x-callout-resumed")
            .unwrap_or_default(),
    );
    drop(stream);
    run.harness(&loaded.harness);
    Ok(run)
}

pub async fn proxy() -> Result<Run> {
    let wasm = probes::rust(PROBE)?;
    let upstream = Upstream::named("backend").await?;
    let callout = Upstream::start(|_| Answer {
        status: 200,
        headers: vec![("x-callout-resp".into(), "yes".into())],
        body: BODY.as_bytes().to_vec(),
        trailers: vec![("x-callout-trailer".into(), "t".into())],
    })
    .await?;
    let hang = Hang::start().await?;
    let dead = dead_addr()?;
    let name = capture::unique("http-callout");
    let clusters = format!(
        "  - name: callout\n    endpoints: [\"{}\"]\n    protocol: http2\n  - name: callout-dead\n    endpoints: [\"{dead}\"]\n    connect_timeout: 1s\n  - name: callout-hang\n    endpoints: [\"{}\"]\n",
        callout.addr, hang.addr
    );
    let yaml = proxy_env::config(
        upstream.addr,
        &proxy_env::plugin(&name, wasm, "", ""),
        "",
        &clusters,
        "",
    );
    let mut run = Run::default();
    Proxy::with(&yaml, async |proxy: &Proxy| {
        let mode = |m: &'static str| [("x-probe-mode", m)];
        proxy.get("/callout", &mode("ok")).await?;
        let seen = callout.last()?;
        run.obs.add(
            "callout.sent",
            format!(
                "callout {} {} x-callout-req={} body={}",
                seen.method,
                seen.path,
                seen.header("x-callout-req"),
                String::from_utf8_lossy(&seen.body)
            ),
        );
        run.obs.add(
            "callout.sent_status_header",
            upstream.last()?.header("x-callout-status"),
        );
        let reply = proxy.get("/callout", &mode("deny")).await?;
        run.obs.add(
            "callout.deny",
            format!("status={} body={}", reply.status, reply.text()),
        );
        for m in ["dead", "timeout", "unknown-cluster", "missing-path"] {
            proxy.get("/callout", &mode(m)).await?;
        }
        let reply = proxy.get("/callout", &mode("pause-response")).await?;
        run.obs.add(
            "callout.response_resumed",
            reply.header("x-callout-resumed").unwrap_or_default(),
        );
        Ok(())
    })
    .await?;
    // The timeout's answer comes by itself; everything else was answered before its reply.
    capture::wait_for(
        &name,
        "callout.timeout_num_headers",
        Duration::from_secs(10),
    )
    .await;
    run.lines(&name);
    Ok(run)
}
