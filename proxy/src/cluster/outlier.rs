//! Passive outlier detection: endpoints that keep failing real traffic are ejected for a while,
//! longer each time, as Envoy's `outlier_detection` does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::endpoint::Endpoint;
use crate::config::OutlierDetection;

/// Envoy's `max_ejection_time` default: ejections never last longer than this.
const MAX_EJECTION: Duration = Duration::from_secs(300);

/// Envoy's default detection `interval`: each one an endpoint spends back in service takes
/// one off its ejection count, so an endpoint that failed long ago is not ejected for longer
/// and longer whenever it fails again.
const DECAY_INTERVAL: Duration = Duration::from_secs(10);

/// How one attempt on an endpoint went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The endpoint answered 5xx other than 502, 503 or 504.
    ServerError,
    /// The endpoint answered 502, 503 or 504, or a connect failure, reset or timeout: counts
    /// toward both consecutive-5xx and consecutive-gateway-failure, as in Envoy.
    GatewayFailure,
}

pub struct OutlierDetector {
    cfg: OutlierDetection,
    /// Held while deciding an ejection: workers share the cluster, and two deciding at once
    /// could together pass `max_ejection_percent`, or eject one endpoint twice.
    ejecting: std::sync::Mutex<()>,
}

impl OutlierDetector {
    pub fn new(cfg: OutlierDetection) -> OutlierDetector {
        OutlierDetector {
            cfg,
            ejecting: std::sync::Mutex::new(()),
        }
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
                // Failures while ejected (panic-mode traffic) do not count toward the next
                // ejection: a returning endpoint starts with a clean slate.
                state.consecutive_5xx = 0;
                state.consecutive_gateway_failures = 0;
                return None;
            }
            let five = self.cfg.consecutive_5xx;
            let gateway = self.cfg.consecutive_gateway_failure;
            (five > 0 && state.consecutive_5xx >= five)
                || (gateway > 0 && state.consecutive_gateway_failures >= gateway)
        };
        if !tripped {
            return None;
        }
        let _deciding = self.ejecting.lock().unwrap_or_else(|e| e.into_inner());
        let ejected = endpoint.ejected_until().is_some_and(|until| now < until);
        if ejected || !self.may_eject(endpoint, all, now) {
            return None;
        }
        let mut state = endpoint.outlier();
        if let Some(until) = state.ejected_until {
            let back = now.saturating_duration_since(until);
            let intervals = (back.as_secs() / DECAY_INTERVAL.as_secs()).min(u64::from(u32::MAX));
            state.times_ejected = state.times_ejected.saturating_sub(intervals as u32);
        }
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

    /// Envoy's rule (`DetectorImpl::ejectHost`): eject only while the share already ejected —
    /// not counting this one — is strictly below `max_ejection_percent`, i.e.
    /// `100 × ejected / n < max_ejection_percent`. So with any non-zero percent the first
    /// ejection is always allowed, even from a one-endpoint cluster (the balancers' panic mode
    /// then still sends to it); 50 % of 4 allows 2, 50 % of 3 allows 2, 10 % of 4 allows 1, and
    /// 0 % disables ejection.
    fn may_eject(&self, endpoint: &Endpoint, all: &[Arc<Endpoint>], now: Instant) -> bool {
        let ejected = all
            .iter()
            .filter(|e| !std::ptr::eq(e.as_ref(), endpoint))
            .filter(|e| e.ejected_until().is_some_and(|until| now < until))
            .count() as u64;
        let n = (all.len() as u64).max(1);
        let max_percent = u64::from(self.cfg.max_ejection_percent.min(100));
        ejected * 100 < max_percent * n
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
        // Failures while ejected are not held against it once it is back.
        for _ in 0..5 {
            assert!(
                d.observe(&all[0], &all, Outcome::ServerError, now)
                    .is_none()
            );
        }
        let back = now + Duration::from_secs(10);
        assert!(all[0].is_available(back));
        assert!(
            d.observe(&all[0], &all, Outcome::ServerError, back)
                .is_none()
        );
    }

    #[test]
    fn back_off_grows_with_each_ejection() {
        let d = detector(1);
        let all = eps(2);
        let mut now = Instant::now();
        let mut got = Vec::new();
        for _ in 0..3 {
            let ejected = d
                .observe(&all[0], &all, Outcome::ServerError, now)
                .expect("ejected");
            got.push(ejected);
            // Failing again as soon as it is back.
            now += ejected;
        }
        assert_eq!(got, [10, 20, 30].map(Duration::from_secs));
    }

    #[test]
    fn time_back_in_service_shrinks_the_back_off() {
        let d = detector(1);
        let all = eps(2);
        let mut now = Instant::now();
        for _ in 0..3 {
            now += d
                .observe(&all[0], &all, Outcome::ServerError, now)
                .expect("ejected");
        }
        // Back for 25 s: two intervals of 10 s take two ejections off the three.
        now += Duration::from_secs(25);
        assert_eq!(
            d.observe(&all[0], &all, Outcome::ServerError, now),
            Some(Duration::from_secs(20))
        );
        // Long healthy: back to the base time.
        now += Duration::from_secs(20 + 600);
        assert_eq!(
            d.observe(&all[0], &all, Outcome::ServerError, now),
            Some(Duration::from_secs(10))
        );
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
        // Once the first two come back, ejection is possible again.
        let later = now + Duration::from_secs(10);
        assert!(
            d.observe(&all[2], &all, Outcome::ServerError, later)
                .is_some()
        );
        // Envoy's rule: 0 % ejected < 50 %, so even a lone endpoint is ejected.
        let single = eps(1);
        assert!(
            d.observe(&single[0], &single, Outcome::ServerError, now)
                .is_some()
        );
        // 50 % of 3: 0 % and 33 % are below the limit, 66 % is not.
        let three = eps(3);
        let ejected = three
            .iter()
            .filter(|e| d.observe(e, &three, Outcome::ServerError, now).is_some())
            .count();
        assert_eq!(ejected, 2);
        // 0 % disables ejection.
        let off = OutlierDetector::new(OutlierDetection {
            max_ejection_percent: 0,
            ..d.cfg.clone()
        });
        let two = eps(2);
        assert!(
            off.observe(&two[0], &two, Outcome::ServerError, now)
                .is_none()
        );
    }
}
