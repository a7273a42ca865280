//! From Envoy's header values to the router's filter-state values, validated and bounded by
//! the configuration. Pure: `get` answers a header's value.
//!
//! | header | filter state | rule |
//! |---|---|---|
//! | `x-envoy-retry-on` | `wasmesh.retry_on` | comma-separated; values the router does not know, or the configuration does not allow, are left out; none left → not set |
//! | `x-envoy-max-retries` | `wasmesh.num_retries` | an integer, at most `max_retries_cap` |
//! | `x-envoy-upstream-rq-per-try-timeout-ms` | `wasmesh.per_try_timeout_ms` | an integer ≥ 1, at most `max_per_try_timeout_ms` |
//! | `x-envoy-retriable-status-codes` | `wasmesh.retriable_status_codes` | comma-separated codes 100–599, at most `max_status_codes` of them |
//! | `x-envoy-upstream-rq-timeout-ms` | `wasmesh.timeout_ms` | an integer, at most `max_timeout_ms`; `0` (Envoy: no timeout) is `max_timeout_ms` |

use crate::config::{Config, Header, RetryOn};

/// The filter-state values to set, by key (`wasmesh.retry_on`, …), and the headers whose
/// value could not be used.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Hints {
    pub state: Vec<(&'static str, String)>,
    pub invalid: Vec<Header>,
}

/// The filter-state key (after the `wasmesh.` prefix) a header maps onto.
pub fn key(header: Header) -> &'static str {
    match header {
        Header::RetryOn => "retry_on",
        Header::MaxRetries => "num_retries",
        Header::PerTryTimeout => "per_try_timeout_ms",
        Header::RetriableStatusCodes => "retriable_status_codes",
        Header::Timeout => "timeout_ms",
    }
}

fn number(value: &str) -> Option<u64> {
    let value = value.trim();
    // `u64::from_str` takes a leading `+`; a header value should be digits alone.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // More digits than fit means "very long", which the cap brings down anyway.
    Some(value.parse().unwrap_or(u64::MAX))
}

fn value(config: &Config, header: Header, raw: &str) -> Option<String> {
    match header {
        Header::RetryOn => {
            let mut chosen: Vec<RetryOn> = Vec::new();
            for token in raw.split(',').map(str::trim) {
                if let Some(on) = RetryOn::parse(token)
                    && config.allowed_retry_on.contains(&on)
                    && !chosen.contains(&on)
                {
                    chosen.push(on);
                }
            }
            (!chosen.is_empty()).then(|| {
                chosen
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(",")
            })
        }
        Header::MaxRetries => {
            number(raw).map(|n| n.min(u64::from(config.max_retries_cap)).to_string())
        }
        Header::PerTryTimeout => number(raw)
            .filter(|&ms| ms > 0)
            .map(|ms| ms.min(config.max_per_try_timeout_ms).to_string()),
        Header::Timeout => number(raw).map(|ms| match ms {
            0 => config.max_timeout_ms.to_string(),
            ms => ms.min(config.max_timeout_ms).to_string(),
        }),
        Header::RetriableStatusCodes => {
            let mut codes: Vec<u16> = Vec::new();
            for token in raw.split(',').map(str::trim) {
                let code = number(token)
                    .and_then(|c| u16::try_from(c).ok())
                    .filter(|c| (100..=599).contains(c))?;
                if !codes.contains(&code) {
                    codes.push(code);
                }
            }
            (!codes.is_empty() && codes.len() <= config.max_status_codes).then(|| {
                codes
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            })
        }
    }
}

/// The hints a trusted request's headers ask for.
pub fn read(config: &Config, get: impl Fn(&str) -> Option<String>) -> Hints {
    let mut hints = Hints::default();
    for header in Header::ALL {
        if !config.honors(header) {
            continue;
        }
        let Some(raw) = get(header.name()) else {
            continue;
        };
        match value(config, header, &raw) {
            Some(v) => hints.state.push((key(header), v)),
            None => hints.invalid.push(header),
        }
    }
    hints
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hints(config: &Config, headers: &[(&str, &str)]) -> Hints {
        read(config, |name| {
            headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn every_header_maps() {
        let config = Config::default();
        let got = hints(
            &config,
            &[
                ("x-envoy-retry-on", "5xx, reset,5xx"),
                ("x-envoy-max-retries", "2"),
                ("x-envoy-upstream-rq-per-try-timeout-ms", "250"),
                ("x-envoy-retriable-status-codes", "409, 429"),
                ("x-envoy-upstream-rq-timeout-ms", "1500"),
            ],
        );
        assert_eq!(
            got.state,
            [
                ("retry_on", "5xx,reset".to_string()),
                ("num_retries", "2".to_string()),
                ("per_try_timeout_ms", "250".to_string()),
                ("retriable_status_codes", "409,429".to_string()),
                ("timeout_ms", "1500".to_string()),
            ]
        );
        assert!(got.invalid.is_empty());
    }

    #[test]
    fn values_are_bounded_and_checked() {
        let config = Config {
            allowed_retry_on: vec![RetryOn::FiveXx, RetryOn::Reset],
            ..Config::default()
        };
        for (header, raw, want) in [
            (
                "x-envoy-retry-on",
                "retriable-4xx,gateway-error,5xx",
                Some("5xx"),
            ),
            ("x-envoy-retry-on", "retriable-4xx, refused-stream", None),
            ("x-envoy-retry-on", "", None),
            ("x-envoy-max-retries", "25", Some("3")),
            ("x-envoy-max-retries", "-1", None),
            ("x-envoy-max-retries", "+2", None),
            ("x-envoy-max-retries", "99999999999999999999999", Some("3")),
            ("x-envoy-upstream-rq-per-try-timeout-ms", "0", None),
            (
                "x-envoy-upstream-rq-per-try-timeout-ms",
                "90000",
                Some("30000"),
            ),
            ("x-envoy-upstream-rq-timeout-ms", "0", Some("60000")),
            ("x-envoy-upstream-rq-timeout-ms", "1.5", None),
            ("x-envoy-retriable-status-codes", "503,abc", None),
            ("x-envoy-retriable-status-codes", "700", None),
            ("x-envoy-retriable-status-codes", "503, 503", Some("503")),
        ] {
            let got = hints(&config, &[(header, raw)]);
            assert_eq!(
                got.state.first().map(|(_, v)| v.as_str()),
                want,
                "{header}: {raw}"
            );
            assert_eq!(
                got.invalid.len(),
                usize::from(want.is_none()),
                "{header}: {raw}"
            );
        }
        let too_many = (500..=520)
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert!(
            hints(&config, &[("x-envoy-retriable-status-codes", &too_many)])
                .state
                .is_empty()
        );
    }

    #[test]
    fn only_honoured_headers_count() {
        let config = Config {
            honor: vec![Header::RetryOn],
            ..Config::default()
        };
        let got = hints(
            &config,
            &[("x-envoy-retry-on", "5xx"), ("x-envoy-max-retries", "2")],
        );
        assert_eq!(got.state, [("retry_on", "5xx".to_string())]);
    }
}
