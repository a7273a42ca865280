//! Header maps: every `proxy_*_header_map_*` function on request and response headers, the
//! callbacks' counts and `end_of_stream`, the serialization format, and what the upstream and
//! the client receive after the edits.

use crate::capture;
use crate::check::{Check, Env, Expect, eq};
use crate::error::{Context, Result};
use crate::host_env;

use crate::net::upstream::{Answer, Upstream};
use crate::observe::{Facts, Run};
use crate::probes;
use crate::proxy_env::{self, Proxy};

const PROBE: &str = "headers";

/// The spec's serialization of `:status: 200`, `x-a: 1`, `x-b: 22`: count 3, the three
/// (key length, value length) pairs, then each key and value NUL-terminated.
const SERIALIZED: &str = "OK 030000000700000003000000030000000100000003000000020000003a7374617475730032303000782d61003100782d6200323200";

/// `arg=<n> pairs=<n>` with both equal.
pub fn counts_agree(value: &str, _: &Facts) -> bool {
    let mut parts = value
        .split(' ')
        .filter_map(|p| p.split_once('=').map(|(_, v)| v));
    matches!((parts.next(), parts.next()), (Some(a), Some(b)) if a == b && a != "0")
}

/// `OK size=<n> serialized=<n>` with both equal.
fn size_agrees(value: &str, facts: &Facts) -> bool {
    value
        .strip_prefix("OK ")
        .is_some_and(|rest| counts_agree(rest, facts))
}

fn has_pseudo_headers(value: &str, _: &Facts) -> bool {
    let names: Vec<&str> = value.split(',').collect();
    [":method", ":path", ":authority", ":scheme"]
        .iter()
        .all(|n| names.contains(n))
}

/// Bytes as the probes show them: printable ASCII as is, else `hex:<hex>`.
pub fn show(bytes: &[u8]) -> String {
    if bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        String::from_utf8_lossy(bytes).into_owned()
    } else {
        format!(
            "hex:{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    }
}

pub fn checks() -> Vec<Check> {
    const FIELDS: &str = "spec v0.2.1 HTTP fields";
    const SERIAL: &str = "spec v0.2.1 Serialization: u32 count, (u32 key size, u32 value size) per pair, then keys and values each followed by NUL";
    const SENT: &str = "spec v0.2.1 HTTP fields: the map as modified is what the host forwards";
    vec![
        eq("headers.request_eos", "1", "spec v0.2.1 proxy_on_request_headers: end_of_stream is true when the request has no body")
            .proves(&["proxy_on_request_headers"]),
        eq("headers.request_pairs_status", "OK well-formed", SERIAL).proves(&["proxy_get_header_map_pairs"]),
        Check::new("headers.request_num_headers", Expect::Holds("num_headers = the pairs in the map", counts_agree), "spec v0.2.1 proxy_on_request_headers: num_headers")
            .proves(&["proxy_on_request_headers", "proxy_get_header_map_pairs"]),
        Check::new("headers.request_map_size", Expect::Holds("OK, the size of the serialized map", size_agrees), "spec v0.2.1 proxy_get_header_map_size: the serialized size")
            .proves(&["proxy_get_header_map_size"]),
        Check::new("headers.request_pseudo_headers", Expect::Holds(":method, :path, :authority and :scheme present", has_pseudo_headers),
            "Envoy: request headers carry the HTTP/2 pseudo headers")
            .only(Env::Proxy)
            .proves(&["proxy_on_request_headers"]),
        eq("headers.get_value", "OK in-value", FIELDS).proves(&["proxy_get_header_map_value", "proxy_map_type_t"]),
        eq("headers.get_value_mixed_case", "OK in-value", "Envoy: header names are case-insensitive (looked up lower-cased)")
            .proves(&["proxy_get_header_map_value"]),
        eq("headers.get_value_missing", "NOT_FOUND", "spec v0.2.1 proxy_get_header_map_value: NOT_FOUND when the key is missing")
            .proves(&["proxy_get_header_map_value", "proxy_status_t"]),
        eq("headers.add_status", "OK OK", "spec v0.2.1 proxy_add_header_map_value").proves(&["proxy_add_header_map_value"]),
        eq("headers.add_values", "a1,a2", "spec v0.2.1 proxy_add_header_map_value: adds a value (keeping existing ones)")
            .proves(&["proxy_add_header_map_value"]),
        eq("headers.replace_status", "OK", "spec v0.2.1 proxy_replace_header_map_value").proves(&["proxy_replace_header_map_value"]),
        eq("headers.replace_values", "new", "spec v0.2.1 proxy_replace_header_map_value: replaces the value")
            .proves(&["proxy_replace_header_map_value"]),
        eq("headers.replace_adds", "OK made", "Envoy (Http::HeaderMap::setCopy): replacing a missing key adds it")
            .proves(&["proxy_replace_header_map_value"]),
        eq("headers.remove_status", "OK", "spec v0.2.1 proxy_remove_header_map_value").proves(&["proxy_remove_header_map_value"]),
        eq("headers.remove_value", "NOT_FOUND", "spec v0.2.1 proxy_remove_header_map_value: the key is gone")
            .proves(&["proxy_remove_header_map_value"]),
        eq("headers.remove_missing_status", "OK", "Envoy: removing a missing key is OK").proves(&["proxy_remove_header_map_value"]),
        eq("headers.set_pairs_status", "OK", "spec v0.2.1 proxy_set_header_map_pairs").proves(&["proxy_set_header_map_pairs"]),
        eq("headers.set_pairs_value", "OK 1", "spec v0.2.1 proxy_set_header_map_pairs: the map becomes the pairs given")
            .proves(&["proxy_set_header_map_pairs"]),
        eq("headers.binary_value", "OK hex:80ff41", "spec v0.2.1: values are bytes (the Rust SDK's *_bytes accessors)")
            .proves(&["proxy_add_header_map_value", "proxy_get_header_map_value"]),
        eq("headers.response_eos", "0", "spec v0.2.1 proxy_on_response_headers: end_of_stream is false when a body follows")
            .proves(&["proxy_on_response_headers"]),
        eq("headers.response_pairs_status", "OK well-formed", SERIAL).proves(&["proxy_get_header_map_pairs"]),
        Check::new("headers.response_num_headers", Expect::Holds("num_headers = the pairs in the map", counts_agree), "spec v0.2.1 proxy_on_response_headers: num_headers")
            .proves(&["proxy_on_response_headers"]),
        Check::new("headers.response_map_size", Expect::Holds("OK, the size of the serialized map", size_agrees), "spec v0.2.1 proxy_get_header_map_size")
            .proves(&["proxy_get_header_map_size"]),
        eq("headers.response_status", "OK 200", "Envoy: response headers carry :status").proves(&["proxy_on_response_headers", "proxy_get_header_map_value"]),
        eq("headers.response_upstream_header", "OK headers", FIELDS).proves(&["proxy_get_header_map_value"]),
        eq("headers.request_in_response", "OK 1", "Envoy (Context::getHeaderMap): the request's headers, as the filters left them, stay readable in the response callbacks")
            .proves(&["proxy_get_header_map_value"]),
        eq("headers.response_set_pairs_status", "OK", "spec v0.2.1 proxy_set_header_map_pairs").proves(&["proxy_set_header_map_pairs"]),
        eq("headers.response_pairs_serialized", SERIALIZED, SERIAL).proves(&["proxy_get_header_map_pairs", "proxy_set_header_map_pairs"]),
        eq("headers.sent_added", "a1,a2", SENT).proves(&["proxy_add_header_map_value"]),
        eq("headers.sent_replaced", "new", SENT).proves(&["proxy_replace_header_map_value"]),
        eq("headers.sent_replace_added", "made", SENT).proves(&["proxy_replace_header_map_value"]),
        eq("headers.sent_removed", "", SENT).proves(&["proxy_remove_header_map_value"]),
        eq("headers.sent_set_pairs", "1", SENT).proves(&["proxy_set_header_map_pairs"]),
        eq("headers.sent_binary", "hex:80ff41", SENT).proves(&["proxy_add_header_map_value"]),
        eq("headers.client_x_b", "22", SENT).proves(&["proxy_set_header_map_pairs"]),
        eq("headers.client_added", "yes", SENT).proves(&["proxy_add_header_map_value"]),
    ]
}

const REQUEST: [(&str, &str); 3] = [
    ("x-conf-in", "in-value"),
    ("x-conf-replace", "old"),
    ("x-conf-remove", "gone"),
];

fn values(map: &wasmesh_host::HeaderMap, name: &str) -> String {
    map.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| show(v))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn host() -> Result<Run> {
    let loaded = host_env::load(probes::rust(PROBE)?, "headers", "")?;
    let mut run = Run::default();
    let mut stream = loaded.harness.http_stream().doing("a stream")?;
    let mut request = vec![
        (":method", "GET"),
        (":path", "/headers"),
        (":authority", "conformance.local"),
        (":scheme", "http"),
    ];
    request.extend(REQUEST);
    stream
        .send_request_headers(&request, true)
        .doing("request headers")?;
    stream
        .send_response_headers(
            &[
                (":status", "200"),
                ("x-upstream", "headers"),
                ("content-length", "4"),
            ],
            false,
        )
        .doing("response headers")?;
    stream
        .send_response_body(b"body", true)
        .doing("response body")?;
    let sent = stream.request_headers();
    run.obs
        .add("headers.sent_added", values(&sent, "x-conf-added"));
    run.obs
        .add("headers.sent_replaced", values(&sent, "x-conf-replace"));
    run.obs.add(
        "headers.sent_replace_added",
        values(&sent, "x-conf-replace-missing"),
    );
    run.obs
        .add("headers.sent_removed", values(&sent, "x-conf-remove"));
    run.obs
        .add("headers.sent_set_pairs", values(&sent, "x-conf-set-pairs"));
    run.obs
        .add("headers.sent_binary", values(&sent, "x-conf-binary"));
    let response = stream.response_headers();
    run.obs.add("headers.client_x_b", values(&response, "x-b"));
    run.obs
        .add("headers.client_added", values(&response, "x-resp-added"));
    drop(stream);
    run.harness(&loaded.harness);
    Ok(run)
}

pub async fn proxy() -> Result<Run> {
    let wasm = probes::rust(PROBE)?;
    let upstream = Upstream::start(|_| Answer::ok("headers", "body")).await?;
    let name = capture::unique("headers");
    let yaml = proxy_env::config(
        upstream.addr,
        &proxy_env::plugin(&name, wasm, "", ""),
        "",
        "",
        "",
    );
    let mut run = Run::default();
    Proxy::with(&yaml, async |proxy: &Proxy| {
        let reply = proxy.get("/headers", &REQUEST).await?;
        let seen = upstream.last()?;
        run.obs
            .add("headers.sent_added", seen.header("x-conf-added"));
        run.obs
            .add("headers.sent_replaced", seen.header("x-conf-replace"));
        run.obs.add(
            "headers.sent_replace_added",
            seen.header("x-conf-replace-missing"),
        );
        run.obs
            .add("headers.sent_removed", seen.header("x-conf-remove"));
        run.obs
            .add("headers.sent_set_pairs", seen.header("x-conf-set-pairs"));
        run.obs.add(
            "headers.sent_binary",
            seen.header_bytes("x-conf-binary")
                .map(|b| show(&b))
                .unwrap_or_default(),
        );
        run.obs.add(
            "headers.client_x_b",
            reply.header("x-b").unwrap_or_default(),
        );
        run.obs.add(
            "headers.client_added",
            reply.header("x-resp-added").unwrap_or_default(),
        );
        Ok(())
    })
    .await?;
    run.lines(&name);
    Ok(run)
}
