//! Bodies: the body callbacks and their sizes, buffering by pausing before the end, reads at
//! offsets, and edits at offsets (replace, prepend, append) that reach the upstream and client.

use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;

use crate::capture;
use crate::check::{Check, eq};
use crate::error::{Context, Error, Result};
use crate::host_env;
use crate::net::client;
use crate::net::upstream::{Answer, Upstream};
use crate::observe::Run;
use crate::probes;
use crate::proxy_env::{self, Proxy};

const PROBE: &str = "bodies";
const FIRST: &[u8] = b"0123456789";
const SECOND: &[u8] = b"abcdefghij";
const RESPONSE: &str = "upstream-body-0123";
const EDITED: &str = "<<HELLO56789abcdefghij>>";

pub fn checks() -> Vec<Check> {
    const PAUSED: &str = "spec v0.2.1 proxy_on_request_body: returning PAUSE before the end buffers the body; the next call's body_size is everything buffered (Envoy StopIterationAndBuffer)";
    const SET: &str = "spec v0.2.1 proxy_set_buffer_bytes: replaces size bytes at start; start 0 with size 0 prepends; start at the end appends";
    vec![
        eq(
            "bodies.request_headers_eos",
            "0",
            "spec v0.2.1 proxy_on_request_headers: end_of_stream is false when a body follows",
        )
        .proves(&["proxy_on_request_headers"]),
        eq(
            "bodies.request_first_call",
            "size=10 eos=0",
            "spec v0.2.1 proxy_on_request_body(body_size, end_of_stream)",
        )
        .proves(&["proxy_on_request_body"]),
        eq("bodies.request_final_size", "20", PAUSED)
            .proves(&["proxy_on_request_body", "proxy_action_t"]),
        eq(
            "bodies.request_buffer_status",
            "OK 20",
            "spec v0.2.1 proxy_get_buffer_status: the buffer's size",
        )
        .proves(&["proxy_get_buffer_status", "proxy_buffer_type_t"]),
        eq("bodies.request_body", "0123456789abcdefghij", PAUSED).proves(&[
            "proxy_get_buffer_bytes",
            "proxy_buffer_type_t",
            "proxy_action_t",
        ]),
        eq(
            "bodies.request_slice",
            "OK 6789a",
            "spec v0.2.1 proxy_get_buffer_bytes: up to max_size bytes from start",
        )
        .proves(&["proxy_get_buffer_bytes"]),
        eq("bodies.request_edit_status", "OK OK OK", SET).proves(&["proxy_set_buffer_bytes"]),
        eq("bodies.request_edited", EDITED, SET).proves(&["proxy_set_buffer_bytes"]),
        eq(
            "bodies.sent_request_body",
            EDITED,
            "spec v0.2.1 Buffers: the body as modified is what the host forwards",
        )
        .proves(&["proxy_set_buffer_bytes", "proxy_on_request_body"]),
        eq(
            "bodies.response_headers_eos",
            "0",
            "spec v0.2.1 proxy_on_response_headers: end_of_stream is false when a body follows",
        )
        .proves(&["proxy_on_response_headers"]),
        eq("bodies.response_final_size", "18", PAUSED).proves(&["proxy_on_response_body"]),
        eq(
            "bodies.response_call",
            "size=18 eos=1",
            "Envoy: a body whose end comes with its last data (its length reached) reaches the filter in one call with end_of_stream true, not a data call and an empty one",
        )
        .proves(&["proxy_on_response_body"]),
        eq(
            "bodies.response_body",
            RESPONSE,
            "spec v0.2.1 HTTP_RESPONSE_BODY read in proxy_on_response_body",
        )
        .proves(&[
            "proxy_on_response_body",
            "proxy_get_buffer_bytes",
            "proxy_buffer_type_t",
        ]),
        eq("bodies.response_replace_status", "OK", SET).proves(&["proxy_set_buffer_bytes"]),
        eq("bodies.response_replaced", "replaced-body", SET).proves(&["proxy_set_buffer_bytes"]),
        eq(
            "bodies.sent_response_body",
            "replaced-body",
            "spec v0.2.1 Buffers: the body as modified is what the host forwards",
        )
        .proves(&["proxy_set_buffer_bytes", "proxy_on_response_body"]),
    ]
}

pub fn host() -> Result<Run> {
    let loaded = host_env::load(probes::rust(PROBE)?, "bodies", "")?;
    let mut run = Run::default();
    let mut stream = loaded.harness.http_stream().doing("a stream")?;
    stream
        .send_request_headers(
            &[
                (":method", "POST"),
                (":path", "/bodies"),
                (":authority", "conformance.local"),
            ],
            false,
        )
        .doing("request headers")?;
    stream
        .send_request_body(FIRST, false)
        .doing("the first chunk")?;
    stream
        .send_request_body(SECOND, true)
        .doing("the second chunk")?;
    run.obs.add(
        "bodies.sent_request_body",
        String::from_utf8_lossy(&stream.request_body()),
    );
    stream
        .send_response_headers(&[(":status", "200")], false)
        .doing("response headers")?;
    stream
        .send_response_body(RESPONSE.as_bytes(), true)
        .doing("response body")?;
    run.obs.add(
        "bodies.sent_response_body",
        String::from_utf8_lossy(&stream.response_body()),
    );
    drop(stream);
    run.harness(&loaded.harness);
    Ok(run)
}

pub async fn proxy() -> Result<Run> {
    let wasm = probes::rust(PROBE)?;
    // A length the proxy knows, so the body's end comes with its data (`bodies.response_call`).
    let upstream = Upstream::start(|_| {
        let mut answer = Answer::ok("bodies", RESPONSE);
        answer
            .headers
            .push(("content-length".into(), RESPONSE.len().to_string()));
        answer
    })
    .await?;
    let name = capture::unique("bodies");
    let yaml = proxy_env::config(
        upstream.addr,
        &proxy_env::plugin(&name, wasm, "", ""),
        "",
        "",
        "",
    );
    let mut run = Run::default();
    Proxy::with(&yaml, async |proxy: &Proxy| {
        let (tx, body) = client::streamed();
        let req = client::request("POST", "/bodies", &[], body)?;
        let addr = proxy.listener("main")?;
        let exchange = tokio::spawn(async move { client::send(addr, req, false).await });
        tx.send(Frame::data(Bytes::from_static(FIRST)))
            .map_err(|_| Error("the request body closed early".into()))?;
        // The second chunk goes only once the filter has seen the first on its own.
        capture::wait_for(&name, "bodies.request_first_call", Duration::from_secs(20)).await;
        tx.send(Frame::data(Bytes::from_static(SECOND)))
            .map_err(|_| Error("the request body closed early".into()))?;
        drop(tx);
        let reply = exchange.await.doing("the request")??;
        run.obs.add("bodies.sent_response_body", reply.text());
        run.obs.add(
            "bodies.sent_request_body",
            String::from_utf8_lossy(&upstream.last()?.body),
        );
        Ok(())
    })
    .await?;
    run.lines(&name);
    Ok(run)
}
