//! The filter's configuration: which fields each line has, whether lines go to the proxy's
//! log, and the optional HTTP collector they are batched to.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use wasmesh_sdk::config::ConfigError;

use crate::template::Template;

/// The whole configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Standard fields, in the order the line shows them; all of them by default.
    #[serde(default = "Field::all")]
    pub fields: Vec<Field>,
    /// Extra fields: name → template (`%REQ(x-user)%`, `%RESP(content-type)%`,
    /// `%PROPERTY(cluster_name)%`, literal text), after the standard ones in name order.
    #[serde(default)]
    pub custom_fields: BTreeMap<String, Template>,
    /// Write each line through `proxy_log` at `info` (default true).
    #[serde(default = "yes")]
    pub log: bool,
    /// Also send lines, batched, to an HTTP collector.
    #[serde(default)]
    pub collector: Option<Collector>,
}

fn yes() -> bool {
    true
}

impl Default for Config {
    /// What an empty configuration means: every standard field, to the proxy's log.
    fn default() -> Config {
        Config {
            fields: Field::all(),
            custom_fields: BTreeMap::new(),
            log: true,
            collector: None,
        }
    }
}

/// A standard field, named as Envoy's access-log command operators are (lowercase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    StartTime,
    Method,
    Path,
    Protocol,
    ResponseCode,
    ResponseFlags,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamHost,
    XForwardedFor,
    UserAgent,
    RequestId,
    Authority,
    RouteName,
    UpstreamCluster,
    DownstreamRemoteAddress,
}

impl Field {
    pub const ALL: [Field; 17] = [
        Field::StartTime,
        Field::Method,
        Field::Path,
        Field::Protocol,
        Field::ResponseCode,
        Field::ResponseFlags,
        Field::BytesReceived,
        Field::BytesSent,
        Field::Duration,
        Field::UpstreamHost,
        Field::XForwardedFor,
        Field::UserAgent,
        Field::RequestId,
        Field::Authority,
        Field::RouteName,
        Field::UpstreamCluster,
        Field::DownstreamRemoteAddress,
    ];

    fn all() -> Vec<Field> {
        Field::ALL.to_vec()
    }

    /// The key in the JSON line.
    pub fn name(self) -> &'static str {
        match self {
            Field::StartTime => "start_time",
            Field::Method => "method",
            Field::Path => "path",
            Field::Protocol => "protocol",
            Field::ResponseCode => "response_code",
            Field::ResponseFlags => "response_flags",
            Field::BytesReceived => "bytes_received",
            Field::BytesSent => "bytes_sent",
            Field::Duration => "duration",
            Field::UpstreamHost => "upstream_host",
            Field::XForwardedFor => "x_forwarded_for",
            Field::UserAgent => "user_agent",
            Field::RequestId => "request_id",
            Field::Authority => "authority",
            Field::RouteName => "route_name",
            Field::UpstreamCluster => "upstream_cluster",
            Field::DownstreamRemoteAddress => "downstream_remote_address",
        }
    }
}

/// Where batches of lines are POSTed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collector {
    /// The cluster (of the proxy's configuration) receiving the batches.
    pub cluster: String,
    /// The request path.
    pub path: String,
    /// The `:authority` sent; the cluster's name by default.
    #[serde(default)]
    pub authority: Option<String>,
    /// Most lines in one POST (default 100); a full batch is sent at once.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How often lines waiting are sent even if the batch is not full (default `1s`).
    #[serde(default = "default_flush_interval", with = "duration")]
    pub flush_interval: Duration,
    /// Most lines waiting to be sent; further lines are dropped and counted (default 10000).
    #[serde(default = "default_max_buffered")]
    pub max_buffered: usize,
    /// How long one POST may take (default `5s`).
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
}

fn default_batch_size() -> usize {
    100
}

fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_max_buffered() -> usize {
    10_000
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Durations as `250ms`, `5s`, `1m`.
mod duration {
    use std::time::Duration;

    use serde::Deserialize;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "\"{text}\" is not a duration (e.g. 250ms, 5s): {e}"
            ))
        })
    }
}

impl Config {
    /// Checks what parsing cannot: distinct names, a usable collector.
    pub fn check(&self) -> Result<(), ConfigError> {
        for (i, field) in self.fields.iter().enumerate() {
            if self.fields[..i].contains(field) {
                return Err(ConfigError::at(
                    format!("fields[{i}]"),
                    format!("{} is listed twice", field.name()),
                ));
            }
        }
        for name in self.custom_fields.keys() {
            if name.is_empty() {
                return Err(ConfigError::at(
                    "custom_fields",
                    "a field name must not be empty",
                ));
            }
            if Field::ALL.iter().any(|f| f.name() == name) {
                return Err(ConfigError::at(
                    format!("custom_fields.{name}"),
                    "is the name of a standard field",
                ));
            }
        }
        if let Some(c) = &self.collector {
            if c.cluster.is_empty() {
                return Err(ConfigError::at("collector.cluster", "must not be empty"));
            }
            if !c.path.starts_with('/') {
                return Err(ConfigError::at("collector.path", "must start with /"));
            }
            if c.batch_size == 0 {
                return Err(ConfigError::at(
                    "collector.batch_size",
                    "must be at least 1",
                ));
            }
            if c.max_buffered < c.batch_size {
                return Err(ConfigError::at(
                    "collector.max_buffered",
                    "must be at least batch_size",
                ));
            }
            if c.flush_interval < Duration::from_millis(10) {
                return Err(ConfigError::at(
                    "collector.flush_interval",
                    "must be at least 10ms",
                ));
            }
            if c.timeout.is_zero() {
                return Err(ConfigError::at("collector.timeout", "must not be zero"));
            }
        }
        if !self.log && self.collector.is_none() {
            return Err(ConfigError::at(
                "log",
                "with log false and no collector, lines would go nowhere",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config, ConfigError> {
        let config: Config = wasmesh_sdk::config::parse(json.as_bytes())?;
        config.check()?;
        Ok(config)
    }

    #[test]
    fn defaults() {
        let c = parse("").expect("no configuration is fine");
        assert_eq!(c.fields, Field::ALL);
        assert!(c.log && c.collector.is_none());
        let c = parse(r#"{"collector": {"cluster": "logs", "path": "/ingest"}}"#).expect("valid");
        let collector = c.collector.expect("collector");
        assert_eq!(collector.batch_size, 100);
        assert_eq!(collector.flush_interval, Duration::from_secs(1));
        assert_eq!(collector.max_buffered, 10_000);
        assert_eq!(collector.timeout, Duration::from_secs(5));
    }

    #[test]
    fn mistakes_name_their_field() {
        for (json, path, message) in [
            (
                r#"{"fields": ["method", "verb"]}"#,
                "fields[1]",
                "unknown variant `verb`",
            ),
            (
                r#"{"fields": ["method", "method"]}"#,
                "fields[1]",
                "listed twice",
            ),
            (
                r#"{"custom_fields": {"method": "x"}}"#,
                "custom_fields.method",
                "standard field",
            ),
            (
                r#"{"custom_fields": {"u": "%REQ(x"}}"#,
                "custom_fields.u",
                "unterminated",
            ),
            (r#"{"log": false}"#, "log", "go nowhere"),
            (
                r#"{"collector": {"cluster": "c", "path": "/", "flush_interval": "often"}}"#,
                "collector.flush_interval",
                "not a duration",
            ),
            (
                r#"{"collector": {"cluster": "c", "path": "/", "batch_size": 10, "max_buffered": 5}}"#,
                "collector.max_buffered",
                "at least batch_size",
            ),
            (
                r#"{"collector": {"cluster": "c", "path": "x"}}"#,
                "collector.path",
                "start with /",
            ),
            (
                r#"{"collector": {"path": "/"}}"#,
                "collector",
                "missing field `cluster`",
            ),
        ] {
            let err = parse(json).expect_err(json);
            assert_eq!(err.path, path, "{json}: {err}");
            assert!(err.message.contains(message), "{json}: {err}");
        }
    }
}
