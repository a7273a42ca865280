//! Whether a request gets a fault, and which: from the configuration, the request's fault
//! headers (when header control is on) and a random draw for the percentage. Pure, so it is
//! tested without a host.

use std::time::Duration;

use crate::config::{Abort, Delay, valid_grpc_status, valid_http_status};

/// The request headers that ask for faults, as Envoy's `x-envoy-fault-*` without `envoy`.
pub const DELAY_HEADER: &str = "x-fault-delay-request";
pub const DELAY_PERCENTAGE_HEADER: &str = "x-fault-delay-request-percentage";
pub const ABORT_HEADER: &str = "x-fault-abort-request";
pub const ABORT_GRPC_HEADER: &str = "x-fault-abort-grpc-request";
pub const ABORT_PERCENTAGE_HEADER: &str = "x-fault-abort-request-percentage";

/// The longest delay a header may ask for.
const MAX_HEADER_DELAY_MS: u64 = 3_600_000;

/// How a request is aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortWith {
    Http(u16),
    /// HTTP 200 with `grpc-status`.
    Grpc(u32),
}

/// The share a percentage header asks for, never more than the configured one.
fn share(configured: f64, header: Option<String>) -> f64 {
    match header.and_then(|v| v.trim().parse::<f64>().ok()) {
        Some(asked) if asked.is_finite() => configured.min(asked.clamp(0.0, 100.0)),
        _ => configured,
    }
}

impl Delay {
    /// The delay for this request, if it gets one. `header` reads a request header; `draw`
    /// says whether a request falls in a percentage.
    pub fn decide(
        &self,
        header: &dyn Fn(&str) -> Option<String>,
        draw: &mut dyn FnMut(f64) -> bool,
    ) -> Option<Duration> {
        let mut percentage = self.percentage;
        let mut delay = self.fixed_delay.map(|d| d.0);
        if self.header_control {
            let asked = header(DELAY_HEADER)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|ms| *ms > 0);
            if let Some(ms) = asked {
                delay = Some(Duration::from_millis(ms.min(MAX_HEADER_DELAY_MS)));
            }
            percentage = share(percentage, header(DELAY_PERCENTAGE_HEADER));
        }
        let delay = delay?;
        draw(percentage).then_some(delay)
    }
}

impl Abort {
    /// The abort for this request, if it gets one; `grpc`: the request is gRPC.
    pub fn decide(
        &self,
        header: &dyn Fn(&str) -> Option<String>,
        grpc: bool,
        draw: &mut dyn FnMut(f64) -> bool,
    ) -> Option<AbortWith> {
        let mut percentage = self.percentage;
        let mut asked = None;
        if self.header_control {
            asked = header(ABORT_GRPC_HEADER)
                .and_then(|v| v.trim().parse::<u32>().ok())
                .filter(|c| valid_grpc_status(*c))
                .map(AbortWith::Grpc)
                .or_else(|| {
                    header(ABORT_HEADER)
                        .and_then(|v| v.trim().parse::<u16>().ok())
                        .filter(|s| valid_http_status(*s))
                        .map(AbortWith::Http)
                });
            percentage = share(percentage, header(ABORT_PERCENTAGE_HEADER));
        }
        let configured = if grpc {
            self.grpc_status
                .map(AbortWith::Grpc)
                .or(self.http_status.map(AbortWith::Http))
        } else {
            self.http_status.map(AbortWith::Http)
        };
        let abort = asked.or(configured)?;
        draw(percentage).then_some(abort)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::Config;

    fn config(json: &str) -> Config {
        let c: Config = wasmesh_sdk::config::parse(json.as_bytes()).expect("parses");
        c.check().expect("valid");
        c
    }

    fn headers(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    /// A draw that records the percentage it was asked about and answers `yes`.
    fn draw(asked: &mut Vec<f64>, yes: bool) -> impl FnMut(f64) -> bool + '_ {
        move |p| {
            asked.push(p);
            yes
        }
    }

    #[test]
    fn fixed_delays_follow_the_draw() {
        let c = config(r#"{"delay": {"fixed_delay": "1.5s", "percentage": 30}}"#);
        let d = c.delay.expect("delay");
        let mut asked = Vec::new();
        assert_eq!(
            d.decide(&headers(&[]), &mut draw(&mut asked, true)),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(d.decide(&headers(&[]), &mut draw(&mut asked, false)), None);
        assert_eq!(asked, [30.0, 30.0]);
        assert_eq!(
            d.decide(
                &headers(&[(DELAY_HEADER, "50"), (DELAY_PERCENTAGE_HEADER, "1")]),
                &mut draw(&mut asked, true)
            ),
            Some(Duration::from_millis(1500)),
            "headers mean nothing without header control"
        );
        assert_eq!(asked[2], 30.0);
    }

    #[test]
    fn header_controlled_delays() {
        let c = config(r#"{"delay": {"header_control": true, "percentage": 50}}"#);
        let d = c.delay.expect("delay");
        let mut asked = Vec::new();
        assert_eq!(
            d.decide(&headers(&[]), &mut draw(&mut asked, true)),
            None,
            "no header, no fixed delay"
        );
        assert_eq!(
            d.decide(
                &headers(&[(DELAY_HEADER, "250")]),
                &mut draw(&mut asked, true)
            ),
            Some(Duration::from_millis(250))
        );
        for bad in ["0", "-5", "soon", ""] {
            assert_eq!(
                d.decide(
                    &headers(&[(DELAY_HEADER, bad)]),
                    &mut draw(&mut asked, true)
                ),
                None,
                "{bad}"
            );
        }
        asked.clear();
        d.decide(
            &headers(&[(DELAY_HEADER, "9"), (DELAY_PERCENTAGE_HEADER, "10")]),
            &mut draw(&mut asked, true),
        );
        d.decide(
            &headers(&[(DELAY_HEADER, "9"), (DELAY_PERCENTAGE_HEADER, "90")]),
            &mut draw(&mut asked, true),
        );
        assert_eq!(
            asked,
            [10.0, 50.0],
            "a header may lower the share, never raise it"
        );
        assert_eq!(
            d.decide(
                &headers(&[(DELAY_HEADER, "99999999999")]),
                &mut draw(&mut asked, true)
            ),
            Some(Duration::from_secs(3600)),
            "capped at an hour"
        );
    }

    #[test]
    fn aborts_by_request_kind_and_header() {
        let c =
            config(r#"{"abort": {"http_status": 503, "grpc_status": 14, "header_control": true}}"#);
        let a = c.abort.expect("abort");
        let mut asked = Vec::new();
        let mut yes = draw(&mut asked, true);
        assert_eq!(
            a.decide(&headers(&[]), false, &mut yes),
            Some(AbortWith::Http(503))
        );
        assert_eq!(
            a.decide(&headers(&[]), true, &mut yes),
            Some(AbortWith::Grpc(14))
        );
        assert_eq!(
            a.decide(&headers(&[(ABORT_HEADER, "418")]), true, &mut yes),
            Some(AbortWith::Http(418))
        );
        assert_eq!(
            a.decide(&headers(&[(ABORT_GRPC_HEADER, "8")]), false, &mut yes),
            Some(AbortWith::Grpc(8))
        );
        assert_eq!(
            a.decide(&headers(&[(ABORT_HEADER, "700")]), false, &mut yes),
            Some(AbortWith::Http(503)),
            "an invalid status in the header is ignored"
        );

        let grpc_only = config(r#"{"abort": {"grpc_status": 14}}"#)
            .abort
            .expect("abort");
        assert_eq!(
            grpc_only.decide(&headers(&[]), false, &mut yes),
            None,
            "HTTP requests are not given a gRPC status"
        );
        let header_only = config(r#"{"abort": {"header_control": true}}"#)
            .abort
            .expect("abort");
        assert_eq!(header_only.decide(&headers(&[]), false, &mut yes), None);
        let mut declined = Vec::new();
        let mut no = draw(&mut declined, false);
        assert_eq!(
            header_only.decide(&headers(&[(ABORT_HEADER, "500")]), false, &mut no),
            None,
            "the draw decides"
        );
    }
}
