//! The filter's configuration: the delay and the abort to inject, for what share of
//! requests, whether request headers may ask for them, and the bound on faults in flight.

use std::time::Duration;

use serde::Deserialize;
use wasmesh_sdk::config::ConfigError;

use crate::duration::Dur;

/// The whole configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub delay: Option<Delay>,
    #[serde(default)]
    pub abort: Option<Abort>,
    /// Most delayed requests held at once by one VM replica (default: no bound).
    #[serde(default)]
    pub max_active_faults: Option<u32>,
    /// How often held requests are checked for release: the delays' resolution.
    #[serde(default = "default_tick")]
    pub tick_interval: Dur,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            delay: None,
            abort: None,
            max_active_faults: None,
            tick_interval: default_tick(),
        }
    }
}

fn default_tick() -> Dur {
    Dur(Duration::from_millis(10))
}

fn hundred() -> f64 {
    100.0
}

/// Holds requests before they go upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delay {
    /// The delay, for `percentage` of requests.
    #[serde(default)]
    pub fixed_delay: Option<Dur>,
    /// Share of requests delayed, 0 to 100 (default 100).
    #[serde(default = "hundred")]
    pub percentage: f64,
    /// Let `x-fault-delay-request: <ms>` choose the delay (and
    /// `x-fault-delay-request-percentage` lower the share).
    #[serde(default)]
    pub header_control: bool,
}

/// Answers requests itself instead of sending them upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abort {
    /// The status for HTTP requests.
    #[serde(default)]
    pub http_status: Option<u16>,
    /// The gRPC status for gRPC requests (`content-type: application/grpc…`).
    #[serde(default)]
    pub grpc_status: Option<u32>,
    /// Share of requests aborted, 0 to 100 (default 100).
    #[serde(default = "hundred")]
    pub percentage: f64,
    /// Let `x-fault-abort-request: <status>` / `x-fault-abort-grpc-request: <code>` ask for
    /// an abort (and `x-fault-abort-request-percentage` lower the share).
    #[serde(default)]
    pub header_control: bool,
}

fn check_percentage(at: &str, value: f64) -> Result<(), ConfigError> {
    if (0.0..=100.0).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::at(at, "must be between 0 and 100"))
    }
}

/// A status a local response may carry.
pub fn valid_http_status(status: u16) -> bool {
    (200..600).contains(&status)
}

/// gRPC status codes are 0 (OK) to 16.
pub fn valid_grpc_status(code: u32) -> bool {
    code <= 16
}

impl Config {
    /// Checks what parsing cannot.
    pub fn check(&self) -> Result<(), ConfigError> {
        if let Some(delay) = &self.delay {
            if delay.fixed_delay.is_none() && !delay.header_control {
                return Err(ConfigError::at(
                    "delay",
                    "give `fixed_delay`, `header_control: true`, or both",
                ));
            }
            if let Some(fixed) = delay.fixed_delay
                && (fixed.0.is_zero() || fixed.0 > Duration::from_secs(3600))
            {
                return Err(ConfigError::at(
                    "delay.fixed_delay",
                    "must be more than zero and at most 1h",
                ));
            }
            check_percentage("delay.percentage", delay.percentage)?;
        }
        if let Some(abort) = &self.abort {
            if abort.http_status.is_none() && abort.grpc_status.is_none() && !abort.header_control {
                return Err(ConfigError::at(
                    "abort",
                    "give `http_status`, `grpc_status`, `header_control: true`, or several",
                ));
            }
            if let Some(status) = abort.http_status
                && !valid_http_status(status)
            {
                return Err(ConfigError::at(
                    "abort.http_status",
                    format!("{status} is not a status a response may have (200 to 599)"),
                ));
            }
            if let Some(code) = abort.grpc_status
                && !valid_grpc_status(code)
            {
                return Err(ConfigError::at(
                    "abort.grpc_status",
                    format!("{code} is not a gRPC status code (0 to 16)"),
                ));
            }
            check_percentage("abort.percentage", abort.percentage)?;
        }
        if self.max_active_faults == Some(0) {
            return Err(ConfigError::at(
                "max_active_faults",
                "must be at least 1 (leave it out for no bound)",
            ));
        }
        let tick = self.tick_interval.0;
        if tick < Duration::from_millis(1) || tick > Duration::from_secs(1) {
            return Err(ConfigError::at(
                "tick_interval",
                "must be between 1ms and 1s",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Result<Config, ConfigError> {
        let c: Config = wasmesh_sdk::config::parse(json.as_bytes())?;
        c.check()?;
        Ok(c)
    }

    #[test]
    fn defaults() {
        let c = config(r#"{"delay": {"fixed_delay": "2s"}, "abort": {"http_status": 503}}"#)
            .expect("valid");
        let delay = c.delay.expect("delay");
        assert_eq!(delay.percentage, 100.0);
        assert!(!delay.header_control);
        assert_eq!(c.tick_interval.0, Duration::from_millis(10));
        assert_eq!(c.max_active_faults, None);
    }

    #[test]
    fn mistakes_name_their_field() {
        for (json, path, message) in [
            (r#"{"delay": {}}"#, "delay", "give `fixed_delay`"),
            (
                r#"{"delay": {"fixed_delay": "0s"}}"#,
                "delay.fixed_delay",
                "more than zero",
            ),
            (
                r#"{"delay": {"fixed_delay": "1s", "percentage": 101}}"#,
                "delay.percentage",
                "between 0 and 100",
            ),
            (
                r#"{"abort": {"percentage": 5}}"#,
                "abort",
                "give `http_status`",
            ),
            (
                r#"{"abort": {"http_status": 99}}"#,
                "abort.http_status",
                "200 to 599",
            ),
            (
                r#"{"abort": {"grpc_status": 17}}"#,
                "abort.grpc_status",
                "0 to 16",
            ),
            (
                r#"{"abort": {"http_status": 503, "percentage": -1}}"#,
                "abort.percentage",
                "between 0 and 100",
            ),
            (
                r#"{"max_active_faults": 0}"#,
                "max_active_faults",
                "at least 1",
            ),
            (
                r#"{"tick_interval": "5s"}"#,
                "tick_interval",
                "between 1ms and 1s",
            ),
            (
                r#"{"delay": {"fixed": "1s"}}"#,
                "delay.fixed",
                "unknown field `fixed`",
            ),
        ] {
            let err = config(json).expect_err(json);
            assert_eq!(err.path, path, "{json}: {err}");
            assert!(err.message.contains(message), "{json}: {err}");
        }
    }
}
