//! The filter's configuration: whose headers are trusted, which are honoured, and the bounds
//! on what they may ask — parsed with the SDK and checked once in `on_configure`.

use std::net::IpAddr;

use serde::Deserialize;
use wasmesh_sdk::config::ConfigError;

/// An Envoy request header this filter reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Header {
    /// `x-envoy-retry-on`
    RetryOn,
    /// `x-envoy-max-retries`
    MaxRetries,
    /// `x-envoy-upstream-rq-per-try-timeout-ms`
    PerTryTimeout,
    /// `x-envoy-retriable-status-codes`
    RetriableStatusCodes,
    /// `x-envoy-upstream-rq-timeout-ms`
    Timeout,
}

impl Header {
    pub const ALL: [Header; 5] = [
        Header::RetryOn,
        Header::MaxRetries,
        Header::PerTryTimeout,
        Header::RetriableStatusCodes,
        Header::Timeout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Header::RetryOn => "x-envoy-retry-on",
            Header::MaxRetries => "x-envoy-max-retries",
            Header::PerTryTimeout => "x-envoy-upstream-rq-per-try-timeout-ms",
            Header::RetriableStatusCodes => "x-envoy-retriable-status-codes",
            Header::Timeout => "x-envoy-upstream-rq-timeout-ms",
        }
    }
}

/// A retry condition the router knows (Envoy's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RetryOn {
    #[serde(rename = "5xx")]
    FiveXx,
    #[serde(rename = "gateway-error")]
    GatewayError,
    #[serde(rename = "reset")]
    Reset,
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    #[serde(rename = "retriable-status-codes")]
    RetriableStatusCodes,
}

impl RetryOn {
    pub const ALL: [RetryOn; 5] = [
        RetryOn::FiveXx,
        RetryOn::GatewayError,
        RetryOn::Reset,
        RetryOn::ConnectFailure,
        RetryOn::RetriableStatusCodes,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RetryOn::FiveXx => "5xx",
            RetryOn::GatewayError => "gateway-error",
            RetryOn::Reset => "reset",
            RetryOn::ConnectFailure => "connect-failure",
            RetryOn::RetriableStatusCodes => "retriable-status-codes",
        }
    }

    pub fn parse(text: &str) -> Option<RetryOn> {
        RetryOn::ALL.into_iter().find(|r| r.name() == text)
    }
}

/// A trusted source network: `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network(ipnet::IpNet);

impl Network {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Network, D::Error> {
        let text = String::deserialize(d)?;
        if let Ok(net) = text.parse::<ipnet::IpNet>() {
            return Ok(Network(net));
        }
        text.parse::<IpAddr>()
            .map(|ip| Network(ipnet::IpNet::from(ip)))
            .map_err(|_| serde::de::Error::custom(format!("`{text}` is not an address or CIDR")))
    }
}

/// The router's own limit on hinted retries (`proxy/src/filter/mod.rs`).
pub const ROUTER_MAX_RETRIES: u32 = 10;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Sources (`source.address`) whose headers are honoured; nobody by default.
    pub trusted_cidrs: Vec<Network>,
    /// Which headers are honoured at all.
    pub honor: Vec<Header>,
    /// The retry conditions a header may ask for.
    pub allowed_retry_on: Vec<RetryOn>,
    /// Most retries a header may ask for (1 to the router's 10).
    pub max_retries_cap: u32,
    /// Longest per-attempt timeout a header may ask for, in ms.
    pub max_per_try_timeout_ms: u64,
    /// Longest request timeout a header may ask for, in ms (also what `0`, Envoy's
    /// "no timeout", becomes).
    pub max_timeout_ms: u64,
    /// Most status codes `x-envoy-retriable-status-codes` may list.
    pub max_status_codes: usize,
    /// Forward a trusted source's headers upstream (an untrusted source's never are).
    pub keep_headers: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            trusted_cidrs: Vec::new(),
            honor: Header::ALL.to_vec(),
            allowed_retry_on: RetryOn::ALL.to_vec(),
            max_retries_cap: 3,
            max_per_try_timeout_ms: 30_000,
            max_timeout_ms: 60_000,
            max_status_codes: 16,
            keep_headers: false,
        }
    }
}

impl Config {
    pub fn check(&self) -> Result<(), ConfigError> {
        if !(1..=ROUTER_MAX_RETRIES).contains(&self.max_retries_cap) {
            return Err(ConfigError::at(
                "max_retries_cap",
                format!(
                    "must be 1 to {ROUTER_MAX_RETRIES} (leave `max_retries` out of `honor` to refuse it)"
                ),
            ));
        }
        // The router caps hinted timeouts at an hour.
        for (field, ms) in [
            ("max_per_try_timeout_ms", self.max_per_try_timeout_ms),
            ("max_timeout_ms", self.max_timeout_ms),
        ] {
            if !(1..=3_600_000).contains(&ms) {
                return Err(ConfigError::at(field, "must be 1 to 3600000"));
            }
        }
        if self.max_status_codes == 0 {
            return Err(ConfigError::at("max_status_codes", "must be at least 1"));
        }
        Ok(())
    }

    pub fn honors(&self, header: Header) -> bool {
        self.honor.contains(&header)
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted_cidrs.iter().any(|n| n.contains(ip))
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
    fn networks() {
        let config =
            parse(r#"{"trusted_cidrs": ["10.0.0.0/8", "192.0.2.7", "fd00::/8"]}"#).expect("valid");
        for (ip, trusted) in [
            ("10.1.2.3", true),
            ("11.0.0.1", false),
            ("192.0.2.7", true),
            ("192.0.2.8", false),
            ("fd12::1", true),
            ("fe80::1", false),
        ] {
            assert_eq!(config.trusts(ip.parse().expect("ip")), trusted, "{ip}");
        }
        assert!(parse("").expect("valid").trusted_cidrs.is_empty());
    }

    #[test]
    fn checks_name_the_field() {
        for (json, path) in [
            (r#"{"trusted_cidrs": ["10.0.0.0/33"]}"#, "trusted_cidrs[0]"),
            (r#"{"honor": ["retry_on", "everything"]}"#, "honor[1]"),
            (
                r#"{"allowed_retry_on": ["retriable-4xx"]}"#,
                "allowed_retry_on[0]",
            ),
            (r#"{"max_retries_cap": 0}"#, "max_retries_cap"),
            (r#"{"max_retries_cap": 11}"#, "max_retries_cap"),
            (r#"{"max_timeout_ms": 0}"#, "max_timeout_ms"),
            (r#"{"max_status_codes": 0}"#, "max_status_codes"),
            (r#"{"trusted": []}"#, "trusted"),
        ] {
            let err = parse(json).expect_err(json);
            assert_eq!(err.path, path, "{json}: {err}");
        }
    }
}
