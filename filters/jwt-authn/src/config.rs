//! The filter's configuration — providers and rules, Envoy's `jwt_authn` simplified — parsed
//! with `wasmesh_sdk::config` (so a mistake names its field), then checked for what the types
//! cannot say.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use wasmesh_sdk::config::ConfigError;

use crate::jwks::KeySet;

/// The whole configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Named token issuers.
    pub providers: BTreeMap<String, Provider>,
    /// Which paths need which providers; the first matching rule wins, and a path no rule
    /// matches needs nothing.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// The `realm` of `WWW-Authenticate` challenges.
    #[serde(default = "default_realm")]
    pub realm: String,
}

fn default_realm() -> String {
    "wasmesh".into()
}

/// One token issuer and how its tokens are found and passed on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// The required `iss`; any issuer when absent.
    #[serde(default)]
    pub issuer: Option<String>,
    /// `aud` must contain one of these; not checked when empty.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// The key set, inline: a JWKS object or a string holding one.
    #[serde(default)]
    pub local_jwks: Option<LocalJwks>,
    /// The key set, fetched from a cluster and refreshed.
    #[serde(default)]
    pub remote_jwks: Option<RemoteJwks>,
    /// Headers the token may come in. With neither this nor `from_params`:
    /// `Authorization: Bearer <token>` and the `access_token` query parameter, as Envoy.
    #[serde(default)]
    pub from_headers: Vec<FromHeader>,
    /// Query parameters the token may come in.
    #[serde(default)]
    pub from_params: Vec<String>,
    /// Keep the token in the request; by default it is removed before the upstream sees it.
    #[serde(default)]
    pub forward: bool,
    /// Claims copied into request headers once the token verified.
    #[serde(default)]
    pub claim_to_headers: Vec<ClaimToHeader>,
    /// Leeway for `exp` and `nbf`.
    #[serde(default = "default_clock_skew")]
    pub clock_skew_seconds: u64,
    /// The cache of tokens this provider verified (Envoy's `jwt_cache_config`, but on by
    /// default).
    #[serde(default)]
    pub jwt_cache_config: CacheConfig,
}

fn default_clock_skew() -> u64 {
    60
}

/// How many verified tokens a provider keeps, per VM replica, so that a token seen again is
/// not verified again (see `cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Most tokens kept; the least recently used goes first. `0` turns the cache off.
    #[serde(default = "default_cache_size")]
    pub jwt_cache_size: usize,
    /// Longest token kept, in bytes; a longer one is verified every time. This and the size
    /// bound the memory the cache holds.
    #[serde(default = "default_cache_max_token")]
    pub jwt_max_token_size: usize,
}

impl Default for CacheConfig {
    fn default() -> CacheConfig {
        CacheConfig {
            jwt_cache_size: default_cache_size(),
            jwt_max_token_size: default_cache_max_token(),
        }
    }
}

/// Envoy's default `jwt_cache_size`.
fn default_cache_size() -> usize {
    100
}

/// Envoy's default `jwt_max_token_size`.
fn default_cache_max_token() -> usize {
    4096
}

/// An inline key set, parsed at configuration time.
#[derive(Debug)]
pub struct LocalJwks(pub KeySet);

impl<'de> Deserialize<'de> for LocalJwks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<LocalJwks, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let parsed = match &value {
            serde_json::Value::String(text) => serde_json::from_str(text)
                .map_err(|e| format!("the JWKS is not JSON: {e}"))
                .and_then(|v| KeySet::parse(&v).map_err(|e| e.0)),
            other => KeySet::parse(other).map_err(|e| e.0),
        };
        // Keys this filter cannot use are left out; an inline set that still has keys is fine.
        parsed
            .map(|(keys, _skipped)| LocalJwks(keys))
            .map_err(serde::de::Error::custom)
    }
}

/// Where a provider's key set is fetched from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteJwks {
    /// The cluster (of the proxy's configuration) serving the JWKS.
    pub cluster: String,
    /// The request path, e.g. `/.well-known/jwks.json`.
    pub path: String,
    /// The `:authority` sent; the cluster's name by default.
    #[serde(default)]
    pub authority: Option<String>,
    /// How long one fetch may take.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// How often the set is fetched again once loaded.
    #[serde(default = "default_refresh", with = "duration")]
    pub jwks_refresh: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_refresh() -> Duration {
    Duration::from_secs(300)
}

/// A header a token may come in, after `value_prefix` (compared without regard to case, as
/// the authentication scheme is).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromHeader {
    pub name: String,
    #[serde(default)]
    pub value_prefix: String,
}

/// `claim_name` (a dotted path into the claims, e.g. `sub` or `realm.tier`) into header
/// `header_name`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    pub header_name: String,
    pub claim_name: String,
}

/// Paths and what they need.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(rename = "match")]
    pub matcher: PathMatch,
    /// A token verified by any one of these providers is required; empty: nothing is.
    #[serde(default)]
    pub requires: Vec<String>,
    /// A request without a token passes; one with a token must still verify.
    #[serde(default)]
    pub allow_missing: bool,
}

/// Which paths a rule covers, by the path without its query.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathMatch {
    /// A plain string prefix (as Envoy's: `/api` also matches `/apiv2`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// The whole path.
    #[serde(default)]
    pub path: Option<String>,
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match (&self.prefix, &self.path) {
            (Some(prefix), _) => path.starts_with(prefix.as_str()),
            (None, Some(exact)) => path == exact,
            (None, None) => false,
        }
    }
}

/// `250ms`, `5s`, `1m`, `1h`, as the proxy's configuration writes durations.
mod duration {
    use std::time::Duration;

    use serde::Deserialize;

    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("\"{text}\" is not a duration (e.g. 250ms, 5s, 1m)"))?;
        let duration = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(format!("\"{text}\" is not a duration (e.g. 250ms, 5s, 1m)")),
        };
        Ok(duration)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Header names as tokens (RFC 9110), lowercase.
fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Config {
    /// Checks what parsing cannot: each provider has exactly one key source and valid header
    /// names, each rule names known providers and has one kind of match.
    pub fn check(&mut self) -> Result<(), ConfigError> {
        if self.providers.is_empty() {
            return Err(ConfigError::at(
                "providers",
                "at least one provider is needed",
            ));
        }
        for (name, provider) in &mut self.providers {
            let at = |field: &str| format!("providers.{name}.{field}");
            match (&provider.local_jwks, &provider.remote_jwks) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::at(
                        format!("providers.{name}"),
                        "give local_jwks or remote_jwks, not both",
                    ));
                }
                (None, None) => {
                    return Err(ConfigError::at(
                        format!("providers.{name}"),
                        "a provider needs local_jwks or remote_jwks",
                    ));
                }
                _ => {}
            }
            if let Some(remote) = &provider.remote_jwks {
                if remote.cluster.is_empty() {
                    return Err(ConfigError::at(
                        at("remote_jwks.cluster"),
                        "must not be empty",
                    ));
                }
                if !remote.path.starts_with('/') {
                    return Err(ConfigError::at(at("remote_jwks.path"), "must start with /"));
                }
                if remote.jwks_refresh < Duration::from_secs(1) {
                    return Err(ConfigError::at(
                        at("remote_jwks.jwks_refresh"),
                        "must be at least 1s",
                    ));
                }
                if remote.timeout.is_zero() {
                    return Err(ConfigError::at(
                        at("remote_jwks.timeout"),
                        "must not be zero",
                    ));
                }
            }
            if provider.jwt_cache_config.jwt_max_token_size == 0 {
                return Err(ConfigError::at(
                    at("jwt_cache_config.jwt_max_token_size"),
                    "must not be zero (jwt_cache_size: 0 turns the cache off)",
                ));
            }
            for (i, header) in provider.from_headers.iter_mut().enumerate() {
                header.name = header.name.to_ascii_lowercase();
                if !valid_header_name(&header.name) {
                    return Err(ConfigError::at(
                        at(&format!("from_headers[{i}].name")),
                        format!("\"{}\" is not a header name", header.name),
                    ));
                }
            }
            for (i, param) in provider.from_params.iter().enumerate() {
                if param.is_empty() {
                    return Err(ConfigError::at(
                        at(&format!("from_params[{i}]")),
                        "must not be empty",
                    ));
                }
            }
            if provider.from_headers.is_empty() && provider.from_params.is_empty() {
                provider.from_headers.push(FromHeader {
                    name: "authorization".into(),
                    value_prefix: "Bearer ".into(),
                });
                provider.from_params.push("access_token".into());
            }
            for (i, mapping) in provider.claim_to_headers.iter_mut().enumerate() {
                mapping.header_name = mapping.header_name.to_ascii_lowercase();
                if !valid_header_name(&mapping.header_name) {
                    return Err(ConfigError::at(
                        at(&format!("claim_to_headers[{i}].header_name")),
                        format!("\"{}\" is not a header name", mapping.header_name),
                    ));
                }
                if mapping.claim_name.is_empty() || mapping.claim_name.split('.').any(str::is_empty)
                {
                    return Err(ConfigError::at(
                        at(&format!("claim_to_headers[{i}].claim_name")),
                        format!("\"{}\" is not a claim path", mapping.claim_name),
                    ));
                }
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let at = |field: &str| format!("rules[{i}].{field}");
            match (&rule.matcher.prefix, &rule.matcher.path) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(ConfigError::at(
                        at("match"),
                        "give exactly one of prefix, path",
                    ));
                }
                (Some(p), None) | (None, Some(p)) if !p.starts_with('/') => {
                    return Err(ConfigError::at(at("match"), "paths start with /"));
                }
                _ => {}
            }
            for (j, name) in rule.requires.iter().enumerate() {
                if !self.providers.contains_key(name) {
                    return Err(ConfigError::at(
                        at(&format!("requires[{j}]")),
                        format!(
                            "no provider \"{name}\" (there are: {})",
                            self.providers
                                .keys()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
            if rule.allow_missing && rule.requires.is_empty() {
                return Err(ConfigError::at(
                    at("allow_missing"),
                    "only means something with requires",
                ));
            }
        }
        if self.realm.contains(['"', '\\']) || self.realm.chars().any(char::is_control) {
            return Err(ConfigError::at(
                "realm",
                "must not contain quotes, \\ or control characters",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWKS: &str = r#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k",
        "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

    fn parse(json: &str) -> Result<Config, ConfigError> {
        let mut config: Config = wasmesh_sdk::config::parse(json.as_bytes())?;
        config.check()?;
        Ok(config)
    }

    #[test]
    fn durations() {
        assert_eq!(duration::parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration::parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(duration::parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration::parse("1h"), Ok(Duration::from_secs(3600)));
        assert!(duration::parse("5").is_err());
        assert!(duration::parse("s").is_err());
        assert!(duration::parse("1.5s").is_err());
    }

    #[test]
    fn defaults() {
        let config = parse(&format!(
            r#"{{"providers": {{"a": {{"local_jwks": {JWKS}}}}}}}"#
        ))
        .expect("valid");
        let a = &config.providers["a"];
        assert_eq!(a.from_headers.len(), 1);
        assert_eq!(a.from_headers[0].name, "authorization");
        assert_eq!(a.from_headers[0].value_prefix, "Bearer ");
        assert_eq!(a.from_params, ["access_token"]);
        assert_eq!(a.clock_skew_seconds, 60);
        assert_eq!(
            a.jwt_cache_config,
            CacheConfig {
                jwt_cache_size: 100,
                jwt_max_token_size: 4096
            },
            "Envoy's sizes, on by default"
        );
        assert!(!a.forward);
        assert_eq!(config.realm, "wasmesh");
        let as_string = parse(&format!(
            r#"{{"providers": {{"a": {{"local_jwks": {}}}}}}}"#,
            serde_json::to_string(JWKS).expect("string")
        ))
        .expect("a JWKS in a string");
        assert_eq!(
            as_string.providers["a"]
                .local_jwks
                .as_ref()
                .map(|k| k.0.keys.len()),
            Some(1)
        );
    }

    #[test]
    fn mistakes_name_their_field() {
        let remote = r#""remote_jwks": {"cluster": "idp", "path": "/jwks"}"#;
        for (json, path, message) in [
            (r#"{"providers": {}}"#.to_string(), "providers", "at least one"),
            (
                r#"{"providers": {"a": {}}}"#.to_string(),
                "providers.a",
                "needs local_jwks or remote_jwks",
            ),
            (
                format!(r#"{{"providers": {{"a": {{"local_jwks": {JWKS}, {remote}}}}}}}"#),
                "providers.a",
                "not both",
            ),
            (
                r#"{"providers": {"a": {"local_jwks": {"keys": []}}}}"#.to_string(),
                "providers.a.local_jwks",
                "the JWKS has no keys",
            ),
            (
                r#"{"providers": {"a": {"remote_jwks": {"cluster": "idp", "path": "/j", "jwks_refresh": "soon"}}}}"#.to_string(),
                "providers.a.remote_jwks.jwks_refresh",
                "not a duration",
            ),
            (
                r#"{"providers": {"a": {"remote_jwks": {"cluster": "idp", "path": "jwks"}}}}"#.to_string(),
                "providers.a.remote_jwks.path",
                "must start with /",
            ),
            (
                format!(r#"{{"providers": {{"a": {{{remote}, "from_headers": [{{"name": "bad name"}}]}}}}}}"#),
                "providers.a.from_headers[0].name",
                "not a header name",
            ),
            (
                format!(r#"{{"providers": {{"a": {{{remote}, "claim_to_headers": [{{"header_name": "x-a", "claim_name": "a..b"}}]}}}}}}"#),
                "providers.a.claim_to_headers[0].claim_name",
                "not a claim path",
            ),
            (
                format!(r#"{{"providers": {{"a": {{{remote}, "jwt_cache_config": {{"jwt_max_token_size": 0}}}}}}}}"#),
                "providers.a.jwt_cache_config.jwt_max_token_size",
                "must not be zero",
            ),
            (
                format!(r#"{{"providers": {{"a": {{{remote}, "jwt_cache_config": {{"jwt_cache_size": "big"}}}}}}}}"#),
                "providers.a.jwt_cache_config.jwt_cache_size",
                "invalid type",
            ),
            (
                format!(r#"{{"providers": {{"a": {{{remote}, "issuer": 3}}}}}}"#),
                "providers.a.issuer",
                "invalid type",
            ),
            (
                format!(r#"{{"providers": {{"a": {{{remote}}}}}, "rules": [{{"match": {{"prefix": "/"}}, "requires": ["b"]}}]}}"#),
                "rules[0].requires[0]",
                "no provider \"b\" (there are: a)",
            ),
            (
                format!(r#"{{"providers": {{"a": {{{remote}}}}}, "rules": [{{"match": {{"prefix": "/", "path": "/x"}}}}]}}"#),
                "rules[0].match",
                "exactly one",
            ),
            (
                format!(r#"{{"providers": {{"a": {{{remote}}}}}, "rules": [{{"match": {{"prefix": "/"}}, "allow_missing": true}}]}}"#),
                "rules[0].allow_missing",
                "only means something with requires",
            ),
            (
                format!(r#"{{"providers": {{"a": {{{remote}}}}}, "rules": [{{"match": {{"prefx": "/"}}}}]}}"#),
                "rules[0].match.prefx",
                "unknown field",
            ),
        ] {
            let err = parse(&json).expect_err(&json);
            assert_eq!(err.path, path, "{json}: {err}");
            assert!(err.message.contains(message), "{json}: {err}");
        }
    }

    #[test]
    fn path_matches() {
        let prefix = PathMatch {
            prefix: Some("/api".into()),
            path: None,
        };
        assert!(prefix.matches("/api") && prefix.matches("/apiv2") && !prefix.matches("/ap"));
        let exact = PathMatch {
            prefix: None,
            path: Some("/login".into()),
        };
        assert!(exact.matches("/login") && !exact.matches("/login/x"));
    }
}
