//! One request's log line: what the filter kept as the request and response passed, and the
//! attributes the host answers at the end (`response.code`, `request.duration`, …), rendered
//! as one JSON object. Hosts encode times and durations as Envoy does: 8-byte little-endian
//! nanoseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use wasmesh_sdk::properties::{decode_int, display};

use crate::config::{Config, Field};
use crate::template::Values;

/// What the filter kept of a request while it passed.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// When the request headers reached the filter.
    pub start: Option<SystemTime>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub authority: Option<String>,
    pub user_agent: Option<String>,
    pub x_forwarded_for: Option<String>,
    pub request_id: Option<String>,
    /// `:status` as the response passed (absent for a response a later filter answered
    /// locally, which this filter does not see).
    pub status: Option<u16>,
    /// The request headers custom fields read.
    pub request_headers: Vec<(String, Option<String>)>,
    /// The response headers custom fields read.
    pub response_headers: Vec<(String, Option<String>)>,
}

/// Attributes by dotted path, raw (`proxy_get_property`).
pub trait Attributes {
    fn get(&self, path: &str) -> Option<Vec<u8>>;
}

struct Sources<'a> {
    seen: &'a Seen,
    attributes: &'a dyn Attributes,
}

fn kept(headers: &[(String, Option<String>)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.clone())
}

impl Values for Sources<'_> {
    fn request_header(&self, name: &str) -> Option<String> {
        kept(&self.seen.request_headers, name)
    }
    fn response_header(&self, name: &str) -> Option<String> {
        kept(&self.seen.response_headers, name)
    }
    fn property(&self, path: &str) -> Option<String> {
        self.attributes.get(path).map(|bytes| display(path, &bytes))
    }
}

impl Sources<'_> {
    fn text(&self, path: &str) -> Option<String> {
        self.attributes
            .get(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    fn int(&self, path: &str) -> Option<i64> {
        self.attributes.get(path).and_then(|b| decode_int(&b))
    }
}

fn string(value: Option<String>) -> Value {
    value.map_or(Value::Null, Value::String)
}

fn number(value: Option<i64>) -> Value {
    value.map_or(Value::Null, Value::from)
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

fn nanos(n: i64) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(0))
}

impl Sources<'_> {
    fn field(&self, field: Field, now: SystemTime) -> Value {
        let seen = self.seen;
        let or_attr = |kept: &Option<String>, path: &str| kept.clone().or_else(|| self.text(path));
        match field {
            Field::StartTime => {
                let start = self
                    .int("request.time")
                    .map(|n| UNIX_EPOCH + nanos(n))
                    .or(seen.start);
                string(start.map(rfc3339))
            }
            Field::Method => string(or_attr(&seen.method, "request.method")),
            Field::Path => string(or_attr(&seen.path, "request.path")),
            Field::Protocol => string(self.text("request.protocol")),
            Field::ResponseCode => number(self.int("response.code").or(seen.status.map(i64::from))),
            // Envoy answers a bit set; a host may also answer Envoy's short names as text.
            Field::ResponseFlags => match self.attributes.get("response.flags") {
                Some(bytes) => match decode_int(&bytes) {
                    Some(n) => Value::from(n),
                    None => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
                },
                None => Value::Null,
            },
            Field::BytesReceived => number(self.int("request.size")),
            Field::BytesSent => number(self.int("response.size")),
            Field::Duration => {
                let took = self
                    .int("request.duration")
                    .map(nanos)
                    .or_else(|| seen.start.and_then(|start| now.duration_since(start).ok()));
                number(took.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
            }
            Field::UpstreamHost => string(self.text("upstream.address")),
            Field::XForwardedFor => string(seen.x_forwarded_for.clone()),
            Field::UserAgent => string(or_attr(&seen.user_agent, "request.useragent")),
            Field::RequestId => string(or_attr(&seen.request_id, "request.id")),
            Field::Authority => string(or_attr(&seen.authority, "request.host")),
            Field::RouteName => string(self.text("route_name")),
            Field::UpstreamCluster => string(self.text("cluster_name")),
            Field::DownstreamRemoteAddress => string(self.text("source.address")),
        }
    }
}

/// The JSON line (without a newline): standard fields in configured order, then custom
/// fields in name order.
pub fn line(config: &Config, seen: &Seen, attributes: &dyn Attributes, now: SystemTime) -> String {
    let sources = Sources { seen, attributes };
    let mut pairs: Vec<(&str, Value)> = config
        .fields
        .iter()
        .map(|f| (f.name(), sources.field(*f, now)))
        .collect();
    for (name, template) in &config.custom_fields {
        pairs.push((name, string(template.render(&sources))));
    }
    // Written by hand to keep the configured order (serde_json's map sorts its keys).
    let mut out = String::from("{");
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::from(*name).to_string());
        out.push(':');
        out.push_str(&value.to_string());
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Map(HashMap<&'static str, Vec<u8>>);

    impl Attributes for Map {
        fn get(&self, path: &str) -> Option<Vec<u8>> {
            self.0.get(path).cloned()
        }
    }

    fn config(json: &str) -> Config {
        wasmesh_sdk::config::parse(json.as_bytes()).expect("config")
    }

    const T0: Duration = Duration::from_secs(1_704_067_200);

    #[test]
    fn attributes_win_over_what_was_seen() {
        let seen = Seen {
            start: Some(UNIX_EPOCH + T0),
            method: Some("GET".into()),
            status: Some(200),
            ..Seen::default()
        };
        let attrs = Map(HashMap::from([
            (
                "request.time",
                ((T0.as_nanos() + 5_000_000) as i64).to_le_bytes().to_vec(),
            ),
            ("request.duration", 12_500_000i64.to_le_bytes().to_vec()),
            ("response.code", 503i64.to_le_bytes().to_vec()),
            ("response.flags", b"UF,URX".to_vec()),
            ("request.size", 7i64.to_le_bytes().to_vec()),
            ("upstream.address", b"10.0.0.9:8080".to_vec()),
        ]));
        let c = config(
            r#"{"fields": ["start_time", "method", "response_code", "response_flags", "duration", "bytes_received", "bytes_sent", "upstream_host"]}"#,
        );
        assert_eq!(
            line(&c, &seen, &attrs, UNIX_EPOCH + T0),
            r#"{"start_time":"2024-01-01T00:00:00.005Z","method":"GET","response_code":503,"response_flags":"UF,URX","duration":12,"bytes_received":7,"bytes_sent":null,"upstream_host":"10.0.0.9:8080"}"#
        );
    }

    #[test]
    fn without_attributes_what_was_seen_is_used() {
        let seen = Seen {
            start: Some(UNIX_EPOCH + T0),
            path: Some("/a?b=1".into()),
            status: Some(404),
            request_id: Some("r-1".into()),
            request_headers: vec![("x-user".into(), Some("al\"ice".into()))],
            response_headers: vec![("content-type".into(), None)],
            ..Seen::default()
        };
        let attrs = Map(HashMap::from([(
            "response.flags",
            3i64.to_le_bytes().to_vec(),
        )]));
        let c = config(
            r#"{"fields": ["path", "response_code", "response_flags", "duration", "request_id", "protocol"],
                "custom_fields": {"user": "%REQ(x-user)%", "ct": "%RESP(content-type)%", "tag": "v1-%PROPERTY(x.y)%"}}"#,
        );
        assert_eq!(
            line(
                &c,
                &seen,
                &attrs,
                UNIX_EPOCH + T0 + Duration::from_millis(250)
            ),
            r#"{"path":"/a?b=1","response_code":404,"response_flags":3,"duration":250,"request_id":"r-1","protocol":null,"ct":null,"tag":"v1-","user":"al\"ice"}"#
        );
    }
}
