//! Local responses: a filter answering itself from the request headers, the request body and
//! the response headers, with and without a gRPC status, with "absent" (null, 0) arguments;
//! and a filter closing the request stream instead.

use crate::capture;
use crate::check::Check;
use crate::check::{Env, eq};
use crate::error::{Context, Result};
use crate::host_env;
use crate::net::client::{self, Reply};
use crate::net::upstream::{Answer, Upstream};
use crate::observe::Run;
use crate::probes;
use crate::proxy_env::{self, Proxy};

const PROBE: &str = "local-response";
const CLOSED: &str = "closed";

pub fn checks() -> Vec<Check> {
    const SEND: &str = "spec v0.2.1 proxy_send_local_response: the host answers with this status, headers and body instead of forwarding";
    vec![
        eq("local.headers", "status=403 x-local=1 body=denied-by-probe", SEND)
            .proves(&["proxy_send_local_response", "proxy_on_request_headers"]),
        eq("local.headers_upstream", "not reached", SEND).only(Env::Proxy).proves(&["proxy_send_local_response"]),
        eq("local.grpc", "status=200 grpc-status=7 x-local=grpc", "spec v0.2.1 proxy_send_local_response: grpc_status, when set, answers as gRPC (Envoy sets grpc-status)")
            .proves(&["proxy_send_local_response"]),
        eq("local.null_args_status", "OK", "spec v0.2.1 / SDKs: a null pointer with length 0 is absent data, not an invalid memory access")
            .proves(&["proxy_send_local_response"]),
        eq("local.null_args", "status=204 x-local= body=", SEND).proves(&["proxy_send_local_response"]),
        eq("local.body", "status=413 x-local=body body=too-much", "Envoy: a local reply may be sent from the request body callback")
            .proves(&["proxy_send_local_response", "proxy_on_request_body"]),
        eq("local.response_headers", "status=502 x-local=response body=replaced-response",
            "spec v0.2.1 HTTP streams: proxy_send_local_response is allowed until response headers went downstream")
            .proves(&["proxy_send_local_response", "proxy_on_response_headers"]),
        eq("local.close_stream_status", "OK", "spec v0.2.1 proxy_close_stream: OK on success").proves(&["proxy_close_stream", "proxy_stream_type_t"]),
        eq("local.close_stream_outcome", CLOSED, "Envoy (Context::closeStream): closing HTTP_REQUEST resets the stream; no response is sent")
            .proves(&["proxy_close_stream"]),
    ]
}

fn describe(status: u32, x_local: &str, body: &[u8], grpc: Option<u32>) -> String {
    match grpc {
        Some(code) => format!("status={status} grpc-status={code} x-local={x_local}"),
        None => format!(
            "status={status} x-local={x_local} body={}",
            String::from_utf8_lossy(body)
        ),
    }
}

fn describe_local(local: Option<wasmesh_host::LocalResponse>) -> String {
    match local {
        Some(l) => {
            let x_local = l
                .headers
                .iter()
                .find(|(k, _)| k == "x-local")
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            describe(l.status, &x_local, &l.body, l.grpc_status)
        }
        None => "no local response".into(),
    }
}

fn describe_reply(reply: &Reply) -> String {
    let grpc = reply.header("grpc-status").and_then(|g| g.parse().ok());
    describe(
        u32::from(reply.status),
        &reply.header("x-local").unwrap_or_default(),
        &reply.body,
        grpc,
    )
}

fn request(mode: &str) -> [(&str, &str); 4] {
    [
        (":method", "POST"),
        (":path", "/local"),
        (":authority", "conformance.local"),
        ("x-probe-mode", mode),
    ]
}

pub fn host() -> Result<Run> {
    let loaded = host_env::load(probes::rust(PROBE)?, "local-response", "")?;
    let mut run = Run::default();
    for (mode, id) in [
        ("headers", "local.headers"),
        ("grpc", "local.grpc"),
        ("null-args", "local.null_args"),
    ] {
        let mut stream = loaded.harness.http_stream().doing("a stream")?;
        stream
            .send_request_headers(&request(mode), true)
            .doing("request headers")?;
        run.obs.add(id, describe_local(stream.local_response()));
    }
    let mut stream = loaded.harness.http_stream().doing("a stream")?;
    stream
        .send_request_headers(&request("body"), false)
        .doing("request headers")?;
    stream
        .send_request_body(b"payload", true)
        .doing("request body")?;
    run.obs
        .add("local.body", describe_local(stream.local_response()));

    let mut stream = loaded.harness.http_stream().doing("a stream")?;
    stream
        .send_request_headers(&request("response-headers"), true)
        .doing("request headers")?;
    stream
        .send_response_headers(&[(":status", "200")], false)
        .doing("response headers")?;
    run.obs.add(
        "local.response_headers",
        describe_local(stream.local_response()),
    );

    let mut stream = loaded.harness.http_stream().doing("a stream")?;
    stream
        .send_request_headers(&request("close-stream"), true)
        .doing("request headers")?;
    // The host's part: telling the embedder, which resets the stream (the proxy's part).
    let closed = if stream.inner().data.close_requested {
        CLOSED
    } else {
        "not closed"
    };
    run.obs.add("local.close_stream_outcome", closed);
    drop(stream);
    run.harness(&loaded.harness);
    Ok(run)
}

pub async fn proxy() -> Result<Run> {
    let wasm = probes::rust(PROBE)?;
    let upstream = Upstream::start(|_| Answer::ok("local", "from-upstream")).await?;
    let name = capture::unique("local-response");
    let yaml = proxy_env::config(
        upstream.addr,
        &proxy_env::plugin(&name, wasm, "", ""),
        "",
        "",
        "",
    );
    let mut run = Run::default();
    Proxy::with(&yaml, async |proxy: &Proxy| {
        let mode = |m: &'static str| [("x-probe-mode", m)];
        let before = upstream.hits();
        let reply = proxy.get("/local", &mode("headers")).await?;
        run.obs.add("local.headers", describe_reply(&reply));
        let reached = if upstream.hits() == before {
            "not reached"
        } else {
            "reached"
        };
        run.obs.add("local.headers_upstream", reached);
        let reply = proxy.get("/local", &mode("grpc")).await?;
        run.obs.add("local.grpc", describe_reply(&reply));
        let reply = proxy.get("/local", &mode("null-args")).await?;
        run.obs.add("local.null_args", describe_reply(&reply));
        let reply = proxy
            .send(
                "POST",
                "/local",
                &mode("body"),
                client::full("payload"),
                false,
            )
            .await?;
        run.obs.add("local.body", describe_reply(&reply));
        let reply = proxy.get("/local", &mode("response-headers")).await?;
        run.obs
            .add("local.response_headers", describe_reply(&reply));
        let outcome = match proxy.get("/local", &mode("close-stream")).await {
            Err(_) => CLOSED.to_string(),
            Ok(reply) => format!("answered {}", reply.status),
        };
        run.obs.add("local.close_stream_outcome", outcome);
        Ok(())
    })
    .await?;
    run.lines(&name);
    Ok(run)
}
