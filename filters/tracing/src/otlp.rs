//! OTLP/HTTP JSON: the span as the collector reads it, and the `ExportTraceServiceRequest`
//! that carries a batch.
//!
//! The OTLP specification's JSON encoding (opentelemetry-proto `docs/specification.md`, "JSON
//! Protobuf Encoding") is proto3's JSON mapping with these rules: field names in
//! lowerCamelCase; `traceId`/`spanId`/`parentSpanId` as hex strings (not base64); enums as
//! integers (`kind: 2` is `SPAN_KIND_SERVER`, status `code: 2` is `STATUS_CODE_ERROR`);
//! 64-bit integers (the `*UnixNano` times, `intValue`) as decimal strings. The body is sent
//! with `Content-Type: application/json` to `POST /v1/traces`.
//!
//! The same [`Span`] is what a stream context puts on the shared queue, so the root context
//! reads back exactly what it sends, and drops anything on the queue that is not a span.

use serde::{Deserialize, Serialize};

/// `SPAN_KIND_SERVER`.
pub const KIND_SERVER: u32 = 2;
/// `STATUS_CODE_ERROR`.
pub const STATUS_ERROR: u32 = 2;
/// `SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK`: bit 9 says whether the parent is remote.
pub const FLAG_HAS_IS_REMOTE: u32 = 0x100;
/// `SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK`: the parent is in another process.
pub const FLAG_IS_REMOTE: u32 = 0x200;

/// An attribute value (`AnyValue`), of the kinds this filter writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Value {
    StringValue(String),
    /// An int64, written as a decimal string.
    IntValue(String),
    BoolValue(bool),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: Value,
}

impl KeyValue {
    pub fn string(key: &str, value: impl Into<String>) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: Value::StringValue(value.into()),
        }
    }

    pub fn int(key: &str, value: i64) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: Value::IntValue(value.to_string()),
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// 0 unset, 1 ok, 2 error.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub code: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One span, as OTLP's JSON writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trace_state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parent_span_id: String,
    /// W3C trace flags (bits 0–7) and whether the parent is remote (bits 8–9).
    pub flags: u32,
    pub name: String,
    pub kind: u32,
    pub start_time_unix_nano: String,
    pub end_time_unix_nano: String,
    pub attributes: Vec<KeyValue>,
    pub status: Status,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExportRequest<'a> {
    resource_spans: [ResourceSpans<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpans<'a> {
    resource: Resource<'a>,
    scope_spans: [ScopeSpans<'a>; 1],
}

#[derive(Serialize)]
struct Resource<'a> {
    attributes: &'a [KeyValue],
}

#[derive(Serialize)]
struct ScopeSpans<'a> {
    scope: Scope,
    spans: &'a [Span],
}

#[derive(Serialize)]
struct Scope {
    name: &'static str,
    version: &'static str,
}

/// The `ExportTraceServiceRequest` for `spans`, all from one resource.
pub fn export_request(resource: &[KeyValue], spans: &[Span]) -> Vec<u8> {
    let request = ExportRequest {
        resource_spans: [ResourceSpans {
            resource: Resource {
                attributes: resource,
            },
            scope_spans: [ScopeSpans {
                scope: Scope {
                    name: env!("CARGO_PKG_NAME"),
                    version: env!("CARGO_PKG_VERSION"),
                },
                spans,
            }],
        }],
    };
    // Serializing plain structs of strings and integers cannot fail.
    serde_json::to_vec(&request).unwrap_or_default()
}

/// How many spans an export response (`ExportTraceServiceResponse`) says were rejected:
/// `partialSuccess.rejectedSpans`, an int64 that may come as a number or a string.
pub fn rejected_spans(body: &[u8]) -> u64 {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return 0;
    };
    match &value["partialSuccess"]["rejectedSpans"] {
        serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
        serde_json::Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span() -> Span {
        Span {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
            trace_state: String::new(),
            parent_span_id: String::new(),
            flags: 0x101,
            name: "GET users".into(),
            kind: KIND_SERVER,
            start_time_unix_nano: "1704067200000000000".into(),
            end_time_unix_nano: "1704067200001000000".into(),
            attributes: vec![
                KeyValue::string("http.method", "GET"),
                KeyValue::int("http.status_code", 200),
            ],
            status: Status::default(),
        }
    }

    #[test]
    fn the_json_is_otlps() {
        let body = export_request(&[KeyValue::string("service.name", "edge")], &[span()]);
        let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        let expected = serde_json::json!({
            "resourceSpans": [{
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "edge"}}]},
                "scopeSpans": [{
                    "scope": {"name": "wasmesh-filter-tracing", "version": env!("CARGO_PKG_VERSION")},
                    "spans": [{
                        "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
                        "spanId": "00f067aa0ba902b7",
                        "flags": 257,
                        "name": "GET users",
                        "kind": 2,
                        "startTimeUnixNano": "1704067200000000000",
                        "endTimeUnixNano": "1704067200001000000",
                        "attributes": [
                            {"key": "http.method", "value": {"stringValue": "GET"}},
                            {"key": "http.status_code", "value": {"intValue": "200"}}
                        ],
                        "status": {}
                    }]
                }]
            }]
        });
        assert_eq!(value, expected);
    }

    #[test]
    fn spans_read_back_and_strangers_do_not() {
        let bytes = serde_json::to_vec(&span()).expect("JSON");
        assert_eq!(
            serde_json::from_slice::<Span>(&bytes).expect("span"),
            span()
        );
        assert!(serde_json::from_slice::<Span>(br#"{"traceId": "x"}"#).is_err());
        assert!(serde_json::from_slice::<Span>(b"not json").is_err());
    }

    #[test]
    fn partial_success() {
        assert_eq!(rejected_spans(b""), 0);
        assert_eq!(rejected_spans(b"{}"), 0);
        assert_eq!(
            rejected_spans(br#"{"partialSuccess": {"rejectedSpans": "3"}}"#),
            3
        );
        assert_eq!(
            rejected_spans(br#"{"partialSuccess": {"rejectedSpans": 2, "errorMessage": "x"}}"#),
            2
        );
    }
}
