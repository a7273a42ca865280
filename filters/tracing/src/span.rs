//! The server span of one request: the sampling decision when the request arrives, and the
//! OTLP span built from what the host says about the finished exchange.

use wasmesh_sdk::headers::split_host_port;

use crate::config::SpanName;
use crate::context::{SpanId, TraceId};
use crate::otlp::{self, KeyValue, Span, Status};

/// The decision for a trace whose caller made none: OpenTelemetry's `TraceIdRatioBased`,
/// which reads the trace id's low 64 bits (random in W3C and B3 ids alike), so every proxy
/// with the same ratio decides the same way for the same trace.
pub fn sample_by_ratio(trace_id: TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    // `as` saturates; ratio < 1 keeps the bound below 2^64.
    let bound = (ratio * 18_446_744_073_709_551_616.0) as u64;
    trace_id.low() < bound
}

/// What is fixed when the request arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The caller's span, if the request continued a trace.
    pub parent: Option<SpanId>,
    /// The `tracestate` that came with the caller's `traceparent`.
    pub trace_state: String,
    pub sampled: bool,
    /// The clock when the request reached this filter, in case the host has no
    /// `request.time`.
    pub seen_ns: u64,
    /// `:method` and `:path` (without the query) as they reached this filter, in case the
    /// host has no `request.method` or `request.url_path`.
    pub method: String,
    pub path: String,
}

/// What the host says about the finished exchange (attributes read in `on_log`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Finished {
    pub method: Option<String>,
    /// `request.url_path`: the path without the query.
    pub path: Option<String>,
    pub route: Option<String>,
    /// `request.host`: the `:authority`.
    pub host: Option<String>,
    /// `source.address`: the downstream peer, `ip:port`.
    pub peer: Option<String>,
    pub code: Option<i64>,
    /// `request.time`, ns since the epoch.
    pub time_ns: Option<u64>,
    /// `request.duration`, ns.
    pub duration_ns: Option<u64>,
    /// The clock now, in case the host has no `request.duration`.
    pub now_ns: u64,
}

fn name(naming: SpanName, method: &str, route: Option<&str>, path: &str) -> String {
    match (naming, route) {
        (SpanName::MethodRoute, Some(route)) => format!("{method} {route}"),
        (SpanName::MethodRoute, None) => method.to_string(),
        (SpanName::Route, Some(route)) => route.to_string(),
        (SpanName::Route, None) | (SpanName::MethodPath, _) => format!("{method} {path}"),
    }
}

/// The OTLP span for a request.
pub fn build(started: &Started, finished: &Finished, naming: SpanName) -> Span {
    let method = finished.method.as_deref().unwrap_or(&started.method);
    let path = finished.path.as_deref().unwrap_or(&started.path);
    let route = finished.route.as_deref().filter(|r| !r.is_empty());
    let mut attributes = vec![KeyValue::string("http.method", method)];
    if let Some(route) = route {
        attributes.push(KeyValue::string("http.route", route));
    }
    if let Some(code) = finished.code {
        attributes.push(KeyValue::int("http.status_code", code));
    }
    attributes.push(KeyValue::string("url.path", path));
    if let Some(host) = finished.host.as_deref().filter(|h| !h.is_empty()) {
        let (host, port) = split_host_port(host);
        attributes.push(KeyValue::string("server.address", host));
        if let Some(port) = port {
            attributes.push(KeyValue::int("server.port", i64::from(port)));
        }
    }
    if let Some(peer) = finished.peer.as_deref() {
        let (address, port) = split_host_port(peer);
        attributes.push(KeyValue::string("client.address", address));
        if let Some(port) = port {
            attributes.push(KeyValue::int("client.port", i64::from(port)));
        }
    }
    // A server span is an error when the server failed (5xx) or never answered; 4xx is the
    // client's doing and leaves the status unset (OpenTelemetry's HTTP conventions).
    let status = match finished.code {
        Some(code) if code < 500 => Status::default(),
        Some(code) => Status {
            code: otlp::STATUS_ERROR,
            message: format!("HTTP {code}"),
        },
        None => Status {
            code: otlp::STATUS_ERROR,
            message: "no response".into(),
        },
    };
    let start = finished.time_ns.unwrap_or(started.seen_ns);
    let end = match finished.duration_ns {
        Some(duration) => start.saturating_add(duration),
        None => finished.now_ns.max(start),
    };
    let mut flags = u32::from(started.sampled) | otlp::FLAG_HAS_IS_REMOTE;
    if started.parent.is_some() {
        flags |= otlp::FLAG_IS_REMOTE;
    }
    Span {
        trace_id: started.trace_id.to_string(),
        span_id: started.span_id.to_string(),
        trace_state: started.trace_state.clone(),
        parent_span_id: started.parent.map(|p| p.to_string()).unwrap_or_default(),
        flags,
        name: name(naming, method, route, path),
        kind: otlp::KIND_SERVER,
        start_time_unix_nano: start.to_string(),
        end_time_unix_nano: end.to_string(),
        attributes,
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::Value;

    fn trace(low: u64) -> TraceId {
        let mut id = [0u8; 16];
        id[0] = 1;
        id[8..].copy_from_slice(&low.to_be_bytes());
        TraceId(id)
    }

    #[test]
    fn ratio_sampling_reads_the_low_bits() {
        assert!(sample_by_ratio(trace(u64::MAX), 1.0));
        assert!(!sample_by_ratio(trace(0), 0.0));
        assert!(sample_by_ratio(trace(0), 0.5));
        assert!(sample_by_ratio(trace(u64::MAX / 2 - 1), 0.5));
        assert!(!sample_by_ratio(trace(u64::MAX / 2 + 2), 0.5));
        assert!(!sample_by_ratio(trace(u64::MAX), 0.999));
    }

    fn started(parent: bool) -> Started {
        Started {
            trace_id: trace(7),
            span_id: SpanId([0, 0, 0, 0, 0, 0, 0, 9]),
            parent: parent.then_some(SpanId([0, 0, 0, 0, 0, 0, 0, 3])),
            trace_state: String::new(),
            sampled: true,
            seen_ns: 5,
            method: "PUT".into(),
            path: "/seen".into(),
        }
    }

    #[test]
    fn spans_from_the_exchange() {
        let finished = Finished {
            method: Some("POST".into()),
            path: Some("/users/7".into()),
            route: Some("users".into()),
            host: Some("api.example.com:8443".into()),
            peer: Some("[2001:db8::1]:51000".into()),
            code: Some(503),
            time_ns: Some(1_000),
            duration_ns: Some(250),
            now_ns: 99_999,
        };
        let span = build(&started(true), &finished, SpanName::MethodRoute);
        assert_eq!(span.name, "POST users");
        assert_eq!(span.parent_span_id, "0000000000000003");
        assert_eq!(span.flags, 0x301);
        assert_eq!(span.start_time_unix_nano, "1000");
        assert_eq!(span.end_time_unix_nano, "1250");
        assert_eq!(span.status.code, otlp::STATUS_ERROR);
        let attr = |k: &str| {
            span.attributes
                .iter()
                .find(|a| a.key == k)
                .map(|a| a.value.clone())
        };
        assert_eq!(
            attr("server.address"),
            Some(Value::StringValue("api.example.com".into()))
        );
        assert_eq!(attr("server.port"), Some(Value::IntValue("8443".into())));
        assert_eq!(
            attr("client.address"),
            Some(Value::StringValue("2001:db8::1".into()))
        );
        assert_eq!(
            attr("http.status_code"),
            Some(Value::IntValue("503".into()))
        );

        let root = build(
            &started(false),
            &Finished {
                code: Some(404),
                now_ns: 80,
                ..Finished::default()
            },
            SpanName::Route,
        );
        assert_eq!(
            root.name, "PUT /seen",
            "no route: method and path (as seen)"
        );
        assert_eq!(root.parent_span_id, "");
        assert_eq!(root.flags, 0x101);
        assert_eq!(root.status, Status::default(), "4xx is not a server error");
        assert_eq!(
            (
                root.start_time_unix_nano.as_str(),
                root.end_time_unix_nano.as_str()
            ),
            ("5", "80"),
            "the filter's own clock when the host has no times"
        );
    }
}
