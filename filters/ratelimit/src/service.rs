//! The global mode's conversation with a rate-limit service, in the shape of Envoy's
//! ratelimit service HTTP/JSON API (`POST /json`; envoyproxy/ratelimit): a request names a
//! domain and descriptors, the answer says `OK` or `OVER_LIMIT` overall and per descriptor,
//! with HTTP status 200 or 429, as the proto3 JSON mapping of `RateLimitResponse`.

use serde_json::{Value, json};

/// One descriptor: a single entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
}

/// The request body: `{"domain": …, "descriptors": [{"entries": [{"key", "value"}]}]}`.
pub fn request_body(domain: &str, entries: &[Entry]) -> Vec<u8> {
    let descriptors: Vec<Value> = entries
        .iter()
        .map(|e| json!({"entries": [{"key": e.key, "value": e.value}]}))
        .collect();
    json!({"domain": domain, "descriptors": descriptors})
        .to_string()
        .into_bytes()
}

/// What the service's current limit says, for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the limit resets.
    pub reset_secs: u64,
}

/// The service's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok {
        quota: Option<Quota>,
    },
    OverLimit {
        quota: Option<Quota>,
        /// Whether descriptor `i` was over its limit (all false when the answer gave no
        /// per-descriptor statuses).
        over: Vec<bool>,
    },
    /// No usable answer; the failure mode decides.
    Failed(String),
}

/// Reads an answer: `status` is `None` when the call failed or timed out.
pub fn verdict(status: Option<u16>, body: &[u8], descriptors: usize) -> Verdict {
    let Some(status) = status else {
        return Verdict::Failed("no answer (unreachable or timed out)".into());
    };
    if status != 200 && status != 429 {
        return Verdict::Failed(format!("answered status {status}"));
    }
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|v| v.get("overallCode"))
        .and_then(Value::as_str);
    let over_limit = match code {
        Some("OK") => false,
        Some("OVER_LIMIT") => true,
        Some(other) => return Verdict::Failed(format!("answered overallCode {other}")),
        // An answer without a readable body: the status says it (200 allowed, 429 over).
        None => status == 429,
    };
    let statuses: Vec<&Value> = parsed
        .as_ref()
        .and_then(|v| v.get("statuses"))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let quota = tightest(&statuses);
    if !over_limit {
        return Verdict::Ok { quota };
    }
    let over = (0..descriptors)
        .map(|i| {
            statuses
                .get(i)
                .and_then(|s| s.get("code"))
                .and_then(Value::as_str)
                .is_some_and(|c| c == "OVER_LIMIT")
        })
        .collect();
    Verdict::OverLimit { quota, over }
}

/// The status with the fewest requests remaining that states its limit.
fn tightest(statuses: &[&Value]) -> Option<Quota> {
    statuses
        .iter()
        .filter_map(|s| {
            let current = s.get("currentLimit")?;
            let limit = number(current.get("requestsPerUnit"))?;
            let window = current
                .get("unit")
                .and_then(Value::as_str)
                .and_then(unit_secs);
            let reset = s
                .get("durationUntilReset")
                .and_then(Value::as_str)
                .and_then(duration_secs)
                .or(window)
                .unwrap_or(1);
            Some(Quota {
                limit,
                // proto3 JSON leaves out zero values.
                remaining: number(s.get("limitRemaining")).unwrap_or(0),
                reset_secs: reset,
            })
        })
        .min_by_key(|q| q.remaining)
}

/// A uint32 as proto3 JSON writes it: a number (or, leniently, a string of one).
fn number(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn unit_secs(unit: &str) -> Option<u64> {
    Some(match unit {
        "SECOND" => 1,
        "MINUTE" => 60,
        "HOUR" => 3_600,
        "DAY" => 86_400,
        "WEEK" => 7 * 86_400,
        "MONTH" => 30 * 86_400,
        "YEAR" => 365 * 86_400,
        _ => return None,
    })
}

/// A proto3 JSON duration (`"59s"`, `"0.250s"`), rounded up to whole seconds.
fn duration_secs(text: &str) -> Option<u64> {
    let number = text.strip_suffix('s')?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let whole: u64 = whole.parse().ok()?;
    let rounds_up = !fraction.is_empty() && fraction.bytes().any(|b| b != b'0');
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(whole + u64::from(rounds_up))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_has_the_api_shape() {
        let body = request_body(
            "edge",
            &[
                Entry {
                    key: "remote_address".into(),
                    value: "10.0.0.1".into(),
                },
                Entry {
                    key: "generic_key".into(),
                    value: "all".into(),
                },
            ],
        );
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            v,
            json!({"domain": "edge", "descriptors": [
                {"entries": [{"key": "remote_address", "value": "10.0.0.1"}]},
                {"entries": [{"key": "generic_key", "value": "all"}]}
            ]})
        );
    }

    #[test]
    fn answers_as_envoys_service_writes_them() {
        // The README's example of an over-limit answer.
        let over = br#"{"overallCode": "OVER_LIMIT", "statuses": [
            {"code": "OVER_LIMIT", "currentLimit": {"requestsPerUnit": 1, "unit": "MINUTE"}},
            {"code": "OK", "currentLimit": {"requestsPerUnit": 2, "unit": "MINUTE"}, "limitRemaining": 1}
        ]}"#;
        assert_eq!(
            verdict(Some(429), over, 2),
            Verdict::OverLimit {
                quota: Some(Quota {
                    limit: 1,
                    remaining: 0,
                    reset_secs: 60
                }),
                over: vec![true, false],
            }
        );
        let ok = br#"{"overallCode": "OK", "statuses": [{"code": "OK",
            "currentLimit": {"requestsPerUnit": 10, "unit": "SECOND"}, "limitRemaining": 7,
            "durationUntilReset": "0.250s"}]}"#;
        assert_eq!(
            verdict(Some(200), ok, 1),
            Verdict::Ok {
                quota: Some(Quota {
                    limit: 10,
                    remaining: 7,
                    reset_secs: 1
                })
            }
        );
        assert_eq!(
            verdict(Some(200), br#"{"overallCode":"OK"}"#, 1),
            Verdict::Ok { quota: None }
        );
    }

    #[test]
    fn unreadable_bodies_go_by_status_and_failures_are_failures() {
        assert_eq!(verdict(Some(200), b"", 1), Verdict::Ok { quota: None });
        assert_eq!(
            verdict(Some(429), b"nope", 2),
            Verdict::OverLimit {
                quota: None,
                over: vec![false, false]
            }
        );
        for (status, body) in [
            (None, &b""[..]),
            (Some(500), br#"{"overallCode":"OK"}"#),
            (Some(200), br#"{"overallCode":"UNKNOWN"}"#),
        ] {
            assert!(
                matches!(verdict(status, body, 1), Verdict::Failed(_)),
                "{status:?}"
            );
        }
    }

    #[test]
    fn durations_round_up() {
        assert_eq!(duration_secs("59s"), Some(59));
        assert_eq!(duration_secs("1.5s"), Some(2));
        assert_eq!(duration_secs("3.000s"), Some(3));
        assert_eq!(duration_secs("3"), None);
        assert_eq!(duration_secs("a.bs"), None);
    }
}
