//! Passive outlier detection: endpoints that keep failing real traffic are ejected for a while,
//! longer each time, as Envoy's `outlier_detection` does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::endpoint::Endpoint;
use crate::config::OutlierDetection;

/// Envoy's `max_ejection_time` default: ejections never last longer than this.
const MAX_EJECTION: Duration = Duration::from_secs(300);

/// How one attempt on an endpoint went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The endpoint answered 5xx.
    ServerError,
    /// Connect failure, reset or timeout: counts toward both consecutive-5xx and
    /// consecutive-gateway-failure, as in Envoy.
    GatewayFailure,
}

pub struct OutlierDetector {
    cfg: OutlierDetection,
}

impl OutlierDetector {
    pub fn new(cfg: OutlierDetection) -> OutlierDetector {
        OutlierDetector { cfg }
    }

    /// Records an outcome; returns the ejection time if this observation ejected the endpoint.
    pub fn observe(
        &self,
        endpoint: &Endpoint,
        all: &[Arc<Endpoint>],
        outcome: Outcome,
        now: Instant,
    ) -> Option<Duration> {
        let tripped = {
            let mut state = endpoint.outlier();
            match outcome {
                Outcome::Success => {
                    state.consecutive_5xx = 0;
                    state.consecutive_gateway_failures = 0;
                    return None;
                }
                Outcome::ServerError => {
                    state.consecutive_5xx += 1;
                    state.consecutive_gateway_failures = 0;
                }
                Outcome::GatewayFailure => {
                    state.consecutive_5xx += 1;
                    state.consecutive_gateway_failures += 1;
                }
            }
            if state.ejected_until.is_some_and(|until| now < until) {
                return None;
            }
            let five = self.cfg.consecutive_5xx;
            let gateway = self.cfg.consecutive_gateway_failure;
            (five > 0 && state.consecutive_5xx >= five)
                || (gateway > 0 && state.consecutive_gateway_failures >= gateway)
        };
        if !tripped || !self.may_eject(endpoint, all, now) {
            return None;
        }
        let mut state = endpoint.outlier();
        state.times_ejected += 1;
        let duration = self
            .cfg
            .base_ejection_time
            .saturating_mul(state.times_ejected)
            .min(MAX_EJECTION);
        state.ejected_until = Some(now + duration);
        state.consecutive_5xx = 0;
        state.consecutive_gateway_failures = 0;
        drop(state);
        metrics::counter!("wasmesh_outlier_ejections_total", "cluster" => endpoint.cluster.clone())
            .increment(1);
        tracing::info!(cluster = %endpoint.cluster, endpoint = %endpoint.address, ?duration, "outlier ejected");
        Some(duration)
    }

    /// Envoy's rule: eject only while the ejected share stays within `max_ejection_percent`,
    /// except that one endpoint may always be ejected from a cluster of two or more.
    fn may_eject(&self, endpoint: &Endpoint, all: &[Arc<Endpoint>], now: Instant) -> bool {
        let ejected = all
            .iter()
            .filter(|e| !std::ptr::eq(e.as_ref(), endpoint))
            .filter(|e| e.ejected_until().is_some_and(|until| now < until))
            .count();
        let allowed = (all.len() * self.cfg.max_ejection_percent as usize) / 100;
        let allowed = if all.len() > 1 {
            allowed.max(1)
        } else {
            allowed
        };
        ejected < allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector(n: u32) -> OutlierDetector {
        OutlierDetector::new(OutlierDetection {
            consecutive_5xx: n,
            consecutive_gateway_failure: n,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_percent: 50,
        })
    }

    fn eps(n: usize) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| Endpoint::new("c", &format!("10.0.0.{i}:80")))
            .collect()
    }

    #[test]
    fn ejects_after_n_consecutive_and_success_resets() {
        let d = detector(3);
        let all = eps(2);
        let now = Instant::now();
        d.observe(&all[0], &all, Outcome::ServerError, now);
        d.observe(&all[0], &all, Outcome::ServerError, now);
        d.observe(&all[0], &all, Outcome::Success, now);
        d.observe(&all[0], &all, Outcome::ServerError, now);
        assert!(
            d.observe(&all[0], &all, Outcome::ServerError, now)
                .is_none()
        );
        assert_eq!(
            d.observe(&all[0], &all, Outcome::GatewayFailure, now),
            Some(Duration::from_secs(10))
        );
        assert!(!all[0].is_available(now));
        assert!(all[0].is_available(now + Duration::from_secs(10)));
    }

    #[test]
    fn back_off_grows_with_each_ejection() {
        let d = detector(1);
        let all = eps(2);
        let mut now = Instant::now();
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(
                d.observe(&all[0], &all, Outcome::ServerError, now)
                    .expect("ejected"),
            );
            now += Duration::from_secs(100);
        }
        assert_eq!(got, [10, 20, 30].map(Duration::from_secs));
    }

    #[test]
    fn max_ejection_percent_is_respected() {
        let d = detector(1);
        let all = eps(4); // 50% of 4 = 2
        let now = Instant::now();
        assert!(
            d.observe(&all[0], &all, Outcome::ServerError, now)
                .is_some()
        );
        assert!(
            d.observe(&all[1], &all, Outcome::ServerError, now)
                .is_some()
        );
        assert!(
            d.observe(&all[2], &all, Outcome::ServerError, now)
                .is_none()
        );
        let single = eps(1);
        assert!(
            d.observe(&single[0], &single, Outcome::ServerError, now)
                .is_none()
        );
    }
}
