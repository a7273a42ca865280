//! The filter's configuration: rules (what they match, what they key on, their buckets) and
//! the optional global mode's rate-limit service. Parsed with `wasmesh_sdk::config` (a
//! mistake names its field), then checked for what the types cannot say.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;
use wasmesh_sdk::config::ConfigError;

use crate::bucket::Limits;
use crate::duration::Dur;

/// The whole configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Checked in order; a request takes a token from every rule it matches.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Whether allowed responses carry `x-ratelimit-*` too (limited ones always do).
    #[serde(default = "yes")]
    pub headers_on_allowed: bool,
    /// Ask an external rate-limit service instead of keeping buckets here.
    #[serde(default)]
    pub global: Option<Global>,
}

fn yes() -> bool {
    true
}

impl Default for Config {
    fn default() -> Config {
        Config {
            rules: Vec::new(),
            headers_on_allowed: true,
            global: None,
        }
    }
}

/// One rate limit: which requests, counted by what, how many.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique; names the metrics and the shared-data keys.
    pub name: String,
    #[serde(default, rename = "match")]
    pub when: Match,
    /// What separates one client's bucket from another's; none: one bucket for the rule.
    #[serde(default)]
    pub key: Option<Key>,
    /// Local mode: the bucket (required). Not allowed in global mode.
    #[serde(default)]
    pub bucket: Option<Bucket>,
    /// Global mode: the descriptor entry's key (default: by the key's type).
    #[serde(default)]
    pub descriptor_key: Option<String>,
}

/// Which requests a rule applies to; every condition given must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// The path (without query) starts with this.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// The method is one of these.
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
}

/// A header condition: exactly one of `exact`, `prefix`, `present`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub present: Option<bool>,
}

/// Where a rule's key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Key {
    /// `source.address` without its port.
    ClientIp,
    /// A request header's first value.
    Header { name: String },
    /// The request path without the query.
    Path,
    /// A JWT claim a previous filter exposed: the request header `header` (default
    /// `x-jwt-claim-<claim>`), or the attribute / filter-state `property` if given.
    JwtClaim {
        claim: String,
        #[serde(default)]
        header: Option<String>,
        #[serde(default)]
        property: Option<String>,
    },
}

impl Key {
    /// The descriptor entry key sent to a rate-limit service, as Envoy's actions name them.
    pub fn descriptor_key(&self) -> &str {
        match self {
            Key::ClientIp => "remote_address",
            Key::Header { name } => name,
            Key::Path => "path",
            Key::JwtClaim { claim, .. } => claim,
        }
    }
}

/// A token bucket, as Envoy's local rate limit writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    pub max_tokens: u64,
    /// Default: `max_tokens` (the bucket refills completely each interval).
    #[serde(default)]
    pub tokens_per_fill: Option<u64>,
    pub fill_interval: Dur,
}

impl Bucket {
    pub fn limits(&self) -> Limits {
        Limits {
            max_tokens: self.max_tokens,
            tokens_per_fill: self.tokens_per_fill.unwrap_or(self.max_tokens),
            fill_interval_ns: u64::try_from(self.fill_interval.0.as_nanos()).unwrap_or(u64::MAX),
        }
    }
}

/// The global mode: Envoy's rate-limit service, over its HTTP/JSON API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Global {
    /// The proxy cluster the service is reached through.
    pub cluster: String,
    pub domain: String,
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Answer 500 when the service fails or times out (default: let the request through).
    #[serde(default)]
    pub failure_mode_deny: bool,
    #[serde(default = "default_path")]
    pub path: String,
    /// `:authority` of the call (default: the cluster name).
    #[serde(default)]
    pub authority: Option<String>,
}

fn default_timeout() -> Dur {
    Dur(Duration::from_millis(100))
}

fn default_path() -> String {
    "/json".to_string()
}

/// Header names as the host keeps them: lowercase tokens.
fn check_header_name(path: String, name: &str) -> Result<(), ConfigError> {
    let token = !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        });
    if token {
        Ok(())
    } else {
        Err(ConfigError::at(
            path,
            format!("\"{name}\" is not a lowercase header name"),
        ))
    }
}

impl Config {
    /// Checks what parsing cannot.
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let at = |field: &str| format!("rules[{i}].{field}");
            let name_ok = !rule.name.is_empty()
                && rule
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
            if !name_ok {
                return Err(ConfigError::at(
                    at("name"),
                    "must be letters, digits, `_`, `-` or `.`",
                ));
            }
            if !names.insert(rule.name.as_str()) {
                return Err(ConfigError::at(
                    at("name"),
                    format!("\"{}\" is used by an earlier rule", rule.name),
                ));
            }
            rule.when.check(&at("match"))?;
            if let Some(key) = &rule.key {
                check_key(key, &at("key"))?;
            }
            match (&self.global, &rule.bucket) {
                (None, None) => {
                    return Err(ConfigError::at(
                        at("bucket"),
                        "required (or configure `global` to ask a rate-limit service)",
                    ));
                }
                (None, Some(bucket)) => bucket.check(&at("bucket"))?,
                (Some(_), Some(_)) => {
                    return Err(ConfigError::at(
                        at("bucket"),
                        "not used in global mode: the rate-limit service keeps the limits",
                    ));
                }
                (Some(_), None) => {}
            }
            if rule.descriptor_key.is_some() && self.global.is_none() {
                return Err(ConfigError::at(
                    at("descriptor_key"),
                    "only used in global mode",
                ));
            }
            if rule.descriptor_key.as_deref() == Some("") {
                return Err(ConfigError::at(at("descriptor_key"), "must not be empty"));
            }
        }
        if let Some(global) = &self.global {
            global.check()?;
        }
        Ok(())
    }
}

impl Match {
    fn check(&self, at: &str) -> Result<(), ConfigError> {
        if let Some(prefix) = &self.path_prefix
            && !prefix.starts_with('/')
        {
            return Err(ConfigError::at(
                format!("{at}.path_prefix"),
                "must start with /",
            ));
        }
        for (i, method) in self.methods.iter().enumerate() {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(ConfigError::at(
                    format!("{at}.methods[{i}]"),
                    format!("\"{method}\" is not a method (uppercase, e.g. GET)"),
                ));
            }
        }
        for (i, header) in self.headers.iter().enumerate() {
            let path = format!("{at}.headers[{i}]");
            check_header_name(format!("{path}.name"), &header.name)?;
            let given = [
                header.exact.is_some(),
                header.prefix.is_some(),
                header.present.is_some(),
            ];
            if given.iter().filter(|g| **g).count() != 1 {
                return Err(ConfigError::at(
                    path,
                    "give exactly one of `exact`, `prefix` or `present`",
                ));
            }
        }
        Ok(())
    }
}

fn check_key(key: &Key, at: &str) -> Result<(), ConfigError> {
    match key {
        Key::ClientIp | Key::Path => Ok(()),
        Key::Header { name } => check_header_name(format!("{at}.name"), name),
        Key::JwtClaim {
            claim,
            header,
            property,
        } => {
            if claim.is_empty() {
                return Err(ConfigError::at(format!("{at}.claim"), "must not be empty"));
            }
            match (header, property) {
                (Some(_), Some(_)) => {
                    Err(ConfigError::at(at, "give `header` or `property`, not both"))
                }
                (Some(header), None) => check_header_name(format!("{at}.header"), header),
                (None, Some(property))
                    if property.is_empty() || property.split('.').any(str::is_empty) =>
                {
                    Err(ConfigError::at(
                        format!("{at}.property"),
                        format!("\"{property}\" is not an attribute path"),
                    ))
                }
                _ => Ok(()),
            }
        }
    }
}

impl Bucket {
    fn check(&self, at: &str) -> Result<(), ConfigError> {
        if self.max_tokens == 0 {
            return Err(ConfigError::at(
                format!("{at}.max_tokens"),
                "must be at least 1",
            ));
        }
        if self.tokens_per_fill == Some(0) {
            return Err(ConfigError::at(
                format!("{at}.tokens_per_fill"),
                "must be at least 1",
            ));
        }
        if self.fill_interval.0 < Duration::from_millis(1) {
            return Err(ConfigError::at(
                format!("{at}.fill_interval"),
                "must be at least 1ms",
            ));
        }
        Ok(())
    }
}

impl Global {
    fn check(&self) -> Result<(), ConfigError> {
        if self.cluster.is_empty() {
            return Err(ConfigError::at("global.cluster", "must not be empty"));
        }
        if self.domain.is_empty() {
            return Err(ConfigError::at("global.domain", "must not be empty"));
        }
        if !self.path.starts_with('/') {
            return Err(ConfigError::at("global.path", "must start with /"));
        }
        if self.timeout.0.is_zero() || self.timeout.0 > Duration::from_millis(u64::from(u32::MAX)) {
            return Err(ConfigError::at(
                "global.timeout",
                "must be more than zero and fit in 32 bits of milliseconds",
            ));
        }
        Ok(())
    }

    /// `:authority` of the call.
    pub fn authority(&self) -> &str {
        self.authority.as_deref().unwrap_or(&self.cluster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Result<Config, ConfigError> {
        let config: Config = wasmesh_sdk::config::parse(json.as_bytes())?;
        config.check()?;
        Ok(config)
    }

    #[test]
    fn a_full_local_configuration_parses() {
        let c = config(
            r#"{"rules": [
                {"name": "per-ip", "key": {"type": "client_ip"},
                 "bucket": {"max_tokens": 10, "tokens_per_fill": 2, "fill_interval": "1s"}},
                {"name": "api-users", "match": {"path_prefix": "/api", "methods": ["POST"],
                                               "headers": [{"name": "x-tier", "exact": "free"}]},
                 "key": {"type": "jwt_claim", "claim": "sub"},
                 "bucket": {"max_tokens": 100, "fill_interval": "1m"}}
            ], "headers_on_allowed": false}"#,
        )
        .expect("valid");
        assert_eq!(c.rules.len(), 2);
        assert!(!c.headers_on_allowed);
        let limits = c.rules[1].bucket.as_ref().expect("bucket").limits();
        assert_eq!(limits.tokens_per_fill, 100, "defaults to max_tokens");
        assert_eq!(limits.fill_interval_ns, 60_000_000_000);
    }

    #[test]
    fn a_global_configuration_parses_with_defaults() {
        let c = config(
            r#"{"global": {"cluster": "rls", "domain": "edge"},
                "rules": [{"name": "all", "key": {"type": "header", "name": "x-api-key"},
                           "descriptor_key": "api_key"}]}"#,
        )
        .expect("valid");
        let g = c.global.as_ref().expect("global");
        assert_eq!(g.path, "/json");
        assert_eq!(g.authority(), "rls");
        assert_eq!(g.timeout.0, Duration::from_millis(100));
        assert!(!g.failure_mode_deny);
    }

    #[test]
    fn mistakes_name_their_field() {
        let bucket = r#""bucket": {"max_tokens": 1, "fill_interval": "1s"}"#;
        for (json, path, message) in [
            (r#"{"rules": [{"name": "a"}]}"#.to_string(), "rules[0].bucket", "required"),
            (
                format!(r#"{{"rules": [{{"name": "a", {bucket}}}, {{"name": "a", {bucket}}}]}}"#),
                "rules[1].name",
                "used by an earlier rule",
            ),
            (
                format!(r#"{{"rules": [{{"name": "a/b", {bucket}}}]}}"#),
                "rules[0].name",
                "letters, digits",
            ),
            (
                r#"{"rules": [{"name": "a", "bucket": {"max_tokens": 0, "fill_interval": "1s"}}]}"#.to_string(),
                "rules[0].bucket.max_tokens",
                "at least 1",
            ),
            (
                r#"{"rules": [{"name": "a", "bucket": {"max_tokens": 1, "fill_interval": "soon"}}]}"#.to_string(),
                "rules[0].bucket.fill_interval",
                "invalid duration",
            ),
            (
                format!(r#"{{"rules": [{{"name": "a", "key": {{"type": "cookie"}}, {bucket}}}]}}"#),
                "rules[0].key.type",
                "unknown variant `cookie`",
            ),
            (
                format!(r#"{{"rules": [{{"name": "a", "key": {{"type": "header", "name": "X-Key"}}, {bucket}}}]}}"#),
                "rules[0].key.name",
                "lowercase header name",
            ),
            (
                format!(r#"{{"rules": [{{"name": "a", "key": {{"type": "jwt_claim", "claim": "sub", "header": "x-a", "property": "a.b"}}, {bucket}}}]}}"#),
                "rules[0].key",
                "not both",
            ),
            (
                format!(r#"{{"rules": [{{"name": "a", "match": {{"path_prefix": "api"}}, {bucket}}}]}}"#),
                "rules[0].match.path_prefix",
                "must start with /",
            ),
            (
                format!(r#"{{"rules": [{{"name": "a", "match": {{"methods": ["get"]}}, {bucket}}}]}}"#),
                "rules[0].match.methods[0]",
                "not a method",
            ),
            (
                format!(r#"{{"rules": [{{"name": "a", "match": {{"headers": [{{"name": "x-a", "exact": "1", "present": true}}]}}, {bucket}}}]}}"#),
                "rules[0].match.headers[0]",
                "exactly one",
            ),
            (
                format!(r#"{{"global": {{"cluster": "rls", "domain": "d"}}, "rules": [{{"name": "a", {bucket}}}]}}"#),
                "rules[0].bucket",
                "not used in global mode",
            ),
            (
                format!(r#"{{"rules": [{{"name": "a", "descriptor_key": "k", {bucket}}}]}}"#),
                "rules[0].descriptor_key",
                "only used in global mode",
            ),
            (
                r#"{"global": {"cluster": "rls", "domain": ""}}"#.to_string(),
                "global.domain",
                "must not be empty",
            ),
            (
                r#"{"global": {"cluster": "rls", "domain": "d", "timeout": "0s"}}"#.to_string(),
                "global.timeout",
                "more than zero",
            ),
            (
                r#"{"rule": []}"#.to_string(),
                "rule",
                "unknown field `rule`",
            ),
        ] {
            let err = config(&json).expect_err(&json);
            assert_eq!(err.path, path, "{json}: {err}");
            assert!(err.message.contains(message), "{json}: {err}");
        }
    }
}
