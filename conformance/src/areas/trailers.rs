//! Trailers: request and response trailers read and edited in their callbacks, and trailers
//! added from the last body callback of a message that had none.

use bytes::Bytes;
use http::HeaderMap;
use http_body::Frame;

use crate::areas::headers::counts_agree;
use crate::capture;
use crate::check::{Check, Expect, eq};
use crate::error::{Context, Error, Result};
use crate::host_env;
use crate::net::client;
use crate::net::upstream::{Answer, Upstream};
use crate::observe::Run;
use crate::probes;
use crate::proxy_env::{self, Proxy};

const PROBE: &str = "trailers";

pub fn checks() -> Vec<Check> {
    const FIELDS: &str =
        "spec v0.2.1 HTTP fields: trailers are read and modified in their trailers callback";
    const ADDED: &str = "spec v0.2.1 HTTP fields: trailers can be added in the body callback when end_of_stream is true and the message has none";
    const SENT: &str = "spec v0.2.1 HTTP fields: the map as modified is what the host forwards";
    vec![
        Check::new(
            "trailers.request_num",
            Expect::Holds("num_trailers = the pairs in the map", counts_agree),
            "spec v0.2.1 proxy_on_request_trailers(num_trailers)",
        )
        .proves(&["proxy_on_request_trailers"]),
        eq("trailers.request_value", "OK t1", FIELDS).proves(&[
            "proxy_on_request_trailers",
            "proxy_get_header_map_value",
            "proxy_map_type_t",
        ]),
        eq("trailers.request_add_status", "OK", FIELDS).proves(&["proxy_add_header_map_value"]),
        eq("trailers.sent_request_original", "t1", SENT).proves(&["proxy_on_request_trailers"]),
        eq("trailers.sent_request_added", "a", SENT)
            .proves(&["proxy_add_header_map_value", "proxy_map_type_t"]),
        Check::new(
            "trailers.response_num",
            Expect::Holds("num_trailers = the pairs in the map", counts_agree),
            "spec v0.2.1 proxy_on_response_trailers(num_trailers)",
        )
        .proves(&["proxy_on_response_trailers"]),
        eq("trailers.response_value", "OK r1", FIELDS).proves(&[
            "proxy_on_response_trailers",
            "proxy_get_header_map_value",
            "proxy_map_type_t",
        ]),
        eq("trailers.response_replace_status", "OK", FIELDS)
            .proves(&["proxy_replace_header_map_value"]),
        eq("trailers.sent_response_replaced", "r2", SENT)
            .proves(&["proxy_replace_header_map_value", "proxy_map_type_t"]),
        eq("trailers.request_add_in_body_status", "OK", ADDED)
            .proves(&["proxy_on_request_body", "proxy_add_header_map_value"]),
        eq("trailers.sent_late_request_trailer", "late", ADDED).proves(&["proxy_on_request_body"]),
        eq("trailers.response_add_in_body_status", "OK", ADDED)
            .proves(&["proxy_on_response_body", "proxy_add_header_map_value"]),
        eq("trailers.sent_late_response_trailer", "late", ADDED)
            .proves(&["proxy_on_response_body"]),
    ]
}

fn value(map: &wasmesh_host::HeaderMap, name: &str) -> String {
    map.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

pub fn host() -> Result<Run> {
    let loaded = host_env::load(probes::rust(PROBE)?, "trailers", "")?;
    let mut run = Run::default();
    let request = |mode| {
        [
            (":method", "POST"),
            (":path", "/trailers"),
            (":authority", "conformance.local"),
            ("x-probe-mode", mode),
        ]
    };
    let mut stream = loaded.harness.http_stream().doing("a stream")?;
    stream
        .send_request_headers(&request("trailers"), false)
        .doing("request headers")?;
    stream
        .send_request_body(b"data", false)
        .doing("request body")?;
    stream
        .send_request_trailers(&[("x-req-trailer", "t1")])
        .doing("request trailers")?;
    stream
        .send_response_headers(&[(":status", "200")], false)
        .doing("response headers")?;
    stream
        .send_response_body(b"resp", false)
        .doing("response body")?;
    stream
        .send_response_trailers(&[("x-resp-trailer", "r1")])
        .doing("response trailers")?;
    let sent = stream.request_trailers();
    run.obs.add(
        "trailers.sent_request_original",
        value(&sent, "x-req-trailer"),
    );
    run.obs.add(
        "trailers.sent_request_added",
        value(&sent, "x-added-trailer"),
    );
    run.obs.add(
        "trailers.sent_response_replaced",
        value(&stream.response_trailers(), "x-resp-trailer"),
    );
    drop(stream);

    let mut stream = loaded.harness.http_stream().doing("a stream")?;
    stream
        .send_request_headers(&request("add-trailers"), false)
        .doing("request headers")?;
    stream
        .send_request_body(b"data", true)
        .doing("request body")?;
    stream
        .send_response_headers(&[(":status", "200")], false)
        .doing("response headers")?;
    stream
        .send_response_body(b"resp", true)
        .doing("response body")?;
    run.obs.add(
        "trailers.sent_late_request_trailer",
        value(&stream.request_trailers(), "x-late-trailer"),
    );
    run.obs.add(
        "trailers.sent_late_response_trailer",
        value(&stream.response_trailers(), "x-late-resp-trailer"),
    );
    drop(stream);
    run.harness(&loaded.harness);
    Ok(run)
}

fn trailer_map(name: &'static str, value: &'static str) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert(name, http::HeaderValue::from_static(value));
    map
}

pub async fn proxy() -> Result<Run> {
    let wasm = probes::rust(PROBE)?;
    let upstream = Upstream::start(|seen| {
        let mut answer = Answer::ok("trailers", "resp");
        if seen.header("x-probe-mode") == "trailers" {
            answer.trailers = vec![("x-resp-trailer".into(), "r1".into())];
        }
        answer
    })
    .await?;
    let name = capture::unique("trailers");
    // HTTP/2 on both sides, where trailers always travel.
    let routes = "          - name: h2\n            match: { prefix: \"/trailers\" }\n            cluster: h2backend\n";
    let clusters = format!(
        "  - name: h2backend\n    endpoints: [\"{}\"]\n    protocol: http2\n",
        upstream.addr
    );
    let yaml = proxy_env::config(
        upstream.addr,
        &proxy_env::plugin(&name, wasm, "", ""),
        routes,
        &clusters,
        "",
    );
    let mut run = Run::default();
    Proxy::with(&yaml, async |proxy: &Proxy| {
        let (tx, body) = client::streamed();
        let closed = || Error("the request body closed early".into());
        tx.send(Frame::data(Bytes::from_static(b"data")))
            .map_err(|_| closed())?;
        tx.send(Frame::trailers(trailer_map("x-req-trailer", "t1")))
            .map_err(|_| closed())?;
        drop(tx);
        let reply = proxy
            .send(
                "POST",
                "/trailers",
                &[("x-probe-mode", "trailers")],
                body,
                true,
            )
            .await?;
        let seen = upstream.last()?;
        run.obs.add(
            "trailers.sent_request_original",
            seen.trailer("x-req-trailer"),
        );
        run.obs.add(
            "trailers.sent_request_added",
            seen.trailer("x-added-trailer"),
        );
        run.obs.add(
            "trailers.sent_response_replaced",
            reply.trailer("x-resp-trailer").unwrap_or_default(),
        );

        let reply = proxy
            .send(
                "POST",
                "/trailers",
                &[("x-probe-mode", "add-trailers")],
                client::full("data"),
                true,
            )
            .await?;
        let seen = upstream.last()?;
        run.obs.add(
            "trailers.sent_late_request_trailer",
            seen.trailer("x-late-trailer"),
        );
        run.obs.add(
            "trailers.sent_late_response_trailer",
            reply.trailer("x-late-resp-trailer").unwrap_or_default(),
        );
        Ok(())
    })
    .await?;
    run.lines(&name);
    Ok(run)
}
