//! Header-map probe (raw ABI v0.2.1 exports, no SDK): every `proxy_*_header_map_*` function on
//! `HTTP_REQUEST_HEADERS` and `HTTP_RESPONSE_HEADERS`. The request it expects carries
//! `x-conf-in: in-value`, `x-conf-replace: old` and `x-conf-remove: gone`; the edits it makes
//! are visible to the upstream (request) and the client (response), which the suite checks too.

use wasmesh_conformance_probe_support::{self as s, map};

s::export_allocator!();

#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Observes the callback's header count next to the number of pairs the map serializes, and
/// the map's size next to the length of its serialization.
fn observe_counts(prefix: &str, map_type: u32, n: u32) -> Vec<(String, Vec<u8>)> {
    let (status, bytes) = s::get_pairs(map_type);
    let bytes = bytes.unwrap_or_default();
    let parsed = s::parse_pairs(&bytes);
    s::observe(
        &format!("headers.{prefix}_pairs_status"),
        format!(
            "{} {}",
            s::status_name(status),
            if parsed.is_some() {
                "well-formed"
            } else {
                "malformed"
            }
        ),
    );
    let pairs = parsed.unwrap_or_default();
    s::observe(
        &format!("headers.{prefix}_num_headers"),
        format!("arg={n} pairs={}", pairs.len()),
    );
    let (status, size) = s::map_size(map_type);
    s::observe(
        &format!("headers.{prefix}_map_size"),
        format!(
            "{} size={size} serialized={}",
            s::status_name(status),
            bytes.len()
        ),
    );
    pairs
}

fn values(map_type: u32, key: &str) -> String {
    let pairs = s::parse_pairs(&s::get_pairs(map_type).1.unwrap_or_default()).unwrap_or_default();
    pairs
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| s::show(v))
        .collect::<Vec<_>>()
        .join(",")
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(_ctx: u32, n: u32, eos: u32) -> u32 {
    const REQ: u32 = map::HTTP_REQUEST_HEADERS;
    s::observe("headers.request_eos", eos);
    let pairs = observe_counts("request", REQ, n);
    s::observe(
        "headers.request_pseudo_headers",
        pairs
            .iter()
            .filter(|(k, _)| k.starts_with(':'))
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(","),
    );
    s::observe_result("headers.get_value", s::get_value(REQ, "x-conf-in"));
    s::observe_result(
        "headers.get_value_mixed_case",
        s::get_value(REQ, "X-Conf-In"),
    );
    s::observe_result(
        "headers.get_value_missing",
        s::get_value(REQ, "x-conf-missing"),
    );

    let first = s::add_value(REQ, "x-conf-added", b"a1");
    let second = s::add_value(REQ, "x-conf-added", b"a2");
    s::observe(
        "headers.add_status",
        format!("{} {}", s::status_name(first), s::status_name(second)),
    );
    s::observe("headers.add_values", values(REQ, "x-conf-added"));

    s::observe_status(
        "headers.replace_status",
        s::replace_value(REQ, "x-conf-replace", b"new"),
    );
    s::observe("headers.replace_values", values(REQ, "x-conf-replace"));
    s::replace_value(REQ, "x-conf-replace-missing", b"made");
    s::observe_result(
        "headers.replace_adds",
        s::get_value(REQ, "x-conf-replace-missing"),
    );

    s::observe_status(
        "headers.remove_status",
        s::remove_value(REQ, "x-conf-remove"),
    );
    s::observe_result("headers.remove_value", s::get_value(REQ, "x-conf-remove"));
    s::observe_status(
        "headers.remove_missing_status",
        s::remove_value(REQ, "x-conf-never-there"),
    );

    // The map as edited so far, plus one pair: set back whole.
    let mut pairs = s::parse_pairs(&s::get_pairs(REQ).1.unwrap_or_default()).unwrap_or_default();
    pairs.push(("x-conf-set-pairs".into(), b"1".to_vec()));
    let borrowed: Vec<(&str, &[u8])> = pairs.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
    s::observe_status(
        "headers.set_pairs_status",
        s::set_pairs(REQ, &s::pairs(&borrowed)),
    );
    s::observe_result(
        "headers.set_pairs_value",
        s::get_value(REQ, "x-conf-set-pairs"),
    );

    s::add_value(REQ, "x-conf-binary", &[0x80, 0xff, 0x41]);
    s::observe_result("headers.binary_value", s::get_value(REQ, "x-conf-binary"));
    s::CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_response_headers(_ctx: u32, n: u32, eos: u32) -> u32 {
    const RESP: u32 = map::HTTP_RESPONSE_HEADERS;
    s::observe("headers.response_eos", eos);
    observe_counts("response", RESP, n);
    s::observe_result("headers.response_status", s::get_value(RESP, ":status"));
    s::observe_result(
        "headers.response_upstream_header",
        s::get_value(RESP, "x-upstream"),
    );
    let whole: [(&str, &[u8]); 3] = [(":status", b"200"), ("x-a", b"1"), ("x-b", b"22")];
    s::observe_status(
        "headers.response_set_pairs_status",
        s::set_pairs(RESP, &s::pairs(&whole)),
    );
    let (status, bytes) = s::get_pairs(RESP);
    s::observe(
        "headers.response_pairs_serialized",
        format!(
            "{} {}",
            s::status_name(status),
            s::hex(&bytes.unwrap_or_default())
        ),
    );
    s::add_value(RESP, "x-resp-added", b"yes");
    // The request's headers stay readable here, with the filter's own edits (Envoy keeps
    // them for the whole stream).
    s::observe_result(
        "headers.request_in_response",
        s::get_value(map::HTTP_REQUEST_HEADERS, "x-conf-set-pairs"),
    );
    s::CONTINUE
}
