//! gRPC: unary calls and streams from a filter to a cluster, every gRPC callback in order,
//! metadata and messages, `proxy_get_status` on close, cancel and close, and refusals.

use wasmesh_sdk_test::GrpcCode;

use crate::capture;
use crate::check::{Check, Env, Expect, eq};
use crate::error::{Context, Result};
use crate::host_env;
use crate::net::grpc::{GrpcServer, SeenCall};
use crate::net::upstream::Upstream;
use crate::observe::{Facts, Run};
use crate::probes;
use crate::proxy_env::{self, Proxy};

const PROBE: &str = "grpc";
const SENT_UNARY: &str = "grpc /conformance.Echo/Unary x-md=1 messages=hello";
const SENT_STREAM: &str = "grpc /conformance.Echo/Stream x-md=1 messages=m1,m2 half_closed=true";

/// `initial_metadata(n),message:echo:m1,message:echo:m2,trailing_metadata(n),close(0)`.
fn stream_events(value: &str, _: &Facts) -> bool {
    let events: Vec<&str> = value.split(',').collect();
    matches!(
        events[..],
        [initial, "message:echo:m1", "message:echo:m2", trailing, "close(0)"]
            if initial.starts_with("initial_metadata(") && trailing.starts_with("trailing_metadata(")
    )
}

pub fn checks() -> Vec<Check> {
    const CALL: &str = "spec v0.2.1 proxy_grpc_call: a unary call; Envoy answers a successful one with proxy_on_grpc_receive alone";
    const STREAM: &str = "spec v0.2.1 gRPC calls: proxy_on_grpc_receive_initial_metadata, proxy_on_grpc_receive per message, proxy_on_grpc_receive_trailing_metadata, proxy_on_grpc_close";
    const ENVOY: &str = "Envoy (Context::grpcSend/grpcCancel/grpcClose)";
    vec![
        eq("grpc.unary_call_status", "OK", CALL).proves(&["proxy_grpc_call"]),
        eq("grpc.sent_unary", SENT_UNARY, CALL).proves(&["proxy_grpc_call"]),
        eq("grpc.unary_events", "message:echo:hello", CALL)
            .proves(&["proxy_on_grpc_receive", "proxy_get_buffer_bytes", "proxy_buffer_type_t", "proxy_continue_stream"]),
        eq("grpc.unary-fail_call_status", "OK", CALL).proves(&["proxy_grpc_call"]),
        eq("grpc.unary-fail_events", "close(7)", "spec v0.2.1 proxy_on_grpc_close(status_code): a failed call ends with its status")
            .proves(&["proxy_on_grpc_close"]),
        eq("grpc.unary-fail_get_status", "OK code=7 message=denied", "spec v0.2.1 proxy_get_status: the status code and message of the closed call")
            .proves(&["proxy_get_status", "proxy_on_grpc_close"]),
        eq("grpc.stream_open_status", "OK", "spec v0.2.1 proxy_grpc_stream").proves(&["proxy_grpc_stream"]),
        eq("grpc.stream_send_status", "OK OK", "spec v0.2.1 proxy_grpc_send").proves(&["proxy_grpc_send"]),
        eq("grpc.sent_stream", SENT_STREAM, "spec v0.2.1 proxy_grpc_send: end_stream closes the client's side")
            .proves(&["proxy_grpc_stream", "proxy_grpc_send"]),
        Check::new("grpc.stream_events", Expect::Holds("initial metadata, both echoes in order, trailing metadata, close(0)", stream_events), STREAM)
            .proves(&[
                "proxy_on_grpc_receive_initial_metadata",
                "proxy_on_grpc_receive",
                "proxy_on_grpc_receive_trailing_metadata",
                "proxy_on_grpc_close",
            ]),
        eq("grpc.stream_initial_metadata", "hello", "spec v0.2.1 HTTP fields: GRPC_CALL_INITIAL_METADATA is read in proxy_on_grpc_receive_initial_metadata")
            .proves(&["proxy_on_grpc_receive_initial_metadata", "proxy_get_header_map_value", "proxy_map_type_t"]),
        eq("grpc.stream_trailing_metadata", "bye", "spec v0.2.1 HTTP fields: GRPC_CALL_TRAILING_METADATA is read in proxy_on_grpc_receive_trailing_metadata")
            .proves(&["proxy_on_grpc_receive_trailing_metadata", "proxy_get_header_map_value", "proxy_map_type_t"]),
        eq("grpc.stream_get_status", "OK code=0 message=", "spec v0.2.1 proxy_get_status in proxy_on_grpc_close").proves(&["proxy_get_status"]),
        eq("grpc.cancel_open_status", "OK", "spec v0.2.1 proxy_grpc_stream").proves(&["proxy_grpc_stream"]),
        eq("grpc.cancel_status", "OK", "spec v0.2.1 proxy_grpc_cancel").proves(&["proxy_grpc_cancel"]),
        eq("grpc.send_after_cancel", "NOT_FOUND", ENVOY).proves(&["proxy_grpc_cancel", "proxy_grpc_send"]),
        eq("grpc.cancelled_seen", "cancelled", "spec v0.2.1 proxy_grpc_cancel: the host cancels the call")
            .only(Env::HostAbi)
            .proves(&["proxy_grpc_cancel"]),
        eq("grpc.unknown_cluster_status", "PARSE_FAILURE", "NOTES §1.3 (cpp-host/Envoy): an unknown upstream is PARSE_FAILURE")
            .proves(&["proxy_grpc_call", "proxy_status_t"]),
        eq("grpc.send_unknown_token", "NOT_FOUND", ENVOY).proves(&["proxy_grpc_send", "proxy_status_t"]),
        eq("grpc.cancel_unknown_token", "NOT_FOUND", ENVOY).proves(&["proxy_grpc_cancel"]),
        eq("grpc.close_unknown_token", "NOT_FOUND", ENVOY).proves(&["proxy_grpc_close"]),
        eq("grpc.send_on_unary_call", "BAD_ARGUMENT", ENVOY).proves(&["proxy_grpc_send"]),
        eq("grpc.close_unary_call", "OK", "Envoy (Context::grpcClose): closing a unary call cancels it").proves(&["proxy_grpc_close"]),
    ]
}

fn request(mode: &str) -> [(&str, &str); 4] {
    [
        (":method", "GET"),
        (":path", "/grpc"),
        (":authority", "conformance.local"),
        ("x-probe-mode", mode),
    ]
}

fn describe(
    upstream: &str,
    path: &str,
    x_md: &str,
    messages: &[Vec<u8>],
    half_closed: Option<bool>,
) -> String {
    let messages = messages
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect::<Vec<_>>()
        .join(",");
    match half_closed {
        Some(h) => format!("{upstream} {path} x-md={x_md} messages={messages} half_closed={h}"),
        None => format!("{upstream} {path} x-md={x_md} messages={messages}"),
    }
}

pub fn host() -> Result<Run> {
    let loaded = host_env::load_with(probes::rust(PROBE)?, "grpc", |b| b.upstreams(&["grpc"]))?;
    let h = &loaded.harness;
    let mut run = Run::default();
    let last = |what: &str| {
        h.grpc_calls()
            .pop()
            .doing(&format!("the gRPC call for {what}"))
    };

    let mut stream = h.http_stream().doing("a stream")?;
    stream
        .send_request_headers(&request("unary"), true)
        .doing("request headers")?;
    let call = last("unary")?;
    let path = format!("/{}/{}", call.service, call.method);
    run.obs.add(
        "grpc.sent_unary",
        describe(
            &call.upstream,
            &path,
            &call.metadata("x-md").unwrap_or_default(),
            &call.messages,
            None,
        ),
    );
    h.grpc_respond(call.id, b"echo:hello")
        .doing("answering the call")?;

    let mut stream = h.http_stream().doing("a stream")?;
    stream
        .send_request_headers(&request("unary-fail"), true)
        .doing("request headers")?;
    h.grpc_close(last("unary-fail")?.id, GrpcCode::PermissionDenied, "denied")
        .doing("refusing the call")?;

    let mut stream = h.http_stream().doing("a stream")?;
    stream
        .send_request_headers(&request("stream"), true)
        .doing("request headers")?;
    let call = last("stream")?;
    let path = format!("/{}/{}", call.service, call.method);
    run.obs.add(
        "grpc.sent_stream",
        describe(
            &call.upstream,
            &path,
            &call.metadata("x-md").unwrap_or_default(),
            &call.messages,
            Some(call.half_closed),
        ),
    );
    h.grpc_initial_metadata(call.id, &[("x-server-md", "hello")])
        .doing("initial metadata")?;
    h.grpc_message(call.id, b"echo:m1").doing("a message")?;
    h.grpc_message(call.id, b"echo:m2").doing("a message")?;
    h.grpc_trailing_metadata(
        call.id,
        &[("grpc-status", "0"), ("x-server-trailer", "bye")],
    )
    .doing("trailing metadata")?;
    h.grpc_close(call.id, GrpcCode::Ok, "")
        .doing("closing the stream")?;

    let mut stream = h.http_stream().doing("a stream")?;
    stream
        .send_request_headers(&request("cancel"), true)
        .doing("request headers")?;
    let cancelled = if last("cancel")?.cancelled {
        "cancelled"
    } else {
        "not cancelled"
    };
    run.obs.add("grpc.cancelled_seen", cancelled);

    let mut stream = h.http_stream().doing("a stream")?;
    stream
        .send_request_headers(&request("errors"), true)
        .doing("request headers")?;
    drop(stream);
    run.harness(&loaded.harness);
    Ok(run)
}

fn metadata(call: &SeenCall, name: &str) -> String {
    call.headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

pub async fn proxy() -> Result<Run> {
    let wasm = probes::rust(PROBE)?;
    let upstream = Upstream::named("backend").await?;
    let grpc = GrpcServer::start().await?;
    let name = capture::unique("grpc");
    let clusters = format!(
        "  - name: grpc\n    endpoints: [\"{}\"]\n    protocol: http2\n",
        grpc.addr
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
        for mode in ["unary", "unary-fail", "stream", "cancel", "errors"] {
            proxy.get("/grpc", &[("x-probe-mode", mode)]).await?;
        }
        let calls = grpc.calls();
        let find = |path: &str| {
            calls
                .iter()
                .find(|c| c.path == path)
                .doing(&format!("the server's call to {path}"))
        };
        let unary = find("/conformance.Echo/Unary")?;
        let messages: Vec<Vec<u8>> = unary.messages.iter().map(|m| m.to_vec()).collect();
        run.obs.add(
            "grpc.sent_unary",
            describe(
                "grpc",
                &unary.path,
                &metadata(unary, "x-md"),
                &messages,
                None,
            ),
        );
        let stream = find("/conformance.Echo/Stream")?;
        let messages: Vec<Vec<u8>> = stream.messages.iter().map(|m| m.to_vec()).collect();
        run.obs.add(
            "grpc.sent_stream",
            describe(
                "grpc",
                &stream.path,
                &metadata(stream, "x-md"),
                &messages,
                Some(stream.half_closed),
            ),
        );
        Ok(())
    })
    .await?;
    run.lines(&name);
    Ok(run)
}
