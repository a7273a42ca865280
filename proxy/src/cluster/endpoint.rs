//! One upstream endpoint's live state: active-health verdict, outlier-ejection state, requests
//! in flight, and a Peak-EWMA latency estimate — what the load balancers choose by.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Decay time constant of the latency estimate (Linkerd's default).
const EWMA_TAU: Duration = Duration::from_secs(10);
/// Latency assumed for an endpoint never measured (Linkerd's `default_rtt` idea), so that load
/// still counts for it: cost = default_rtt × (in_flight + 1).
pub const DEFAULT_RTT: Duration = Duration::from_millis(1);

#[derive(Debug)]
pub struct Endpoint {
    pub cluster: String,
    /// As configured: `IP:PORT` or `name:PORT`.
    pub address: String,
    healthy: AtomicBool,
    in_flight: AtomicUsize,
    outlier: Mutex<OutlierState>,
    ewma: Mutex<Ewma>,
    /// Seconds; the estimate used until the first observation.
    default_rtt: f64,
}

/// Passive health bookkeeping, updated by `outlier::OutlierDetector`.
#[derive(Debug, Default)]
pub struct OutlierState {
    pub consecutive_5xx: u32,
    pub consecutive_gateway_failures: u32,
    pub times_ejected: u32,
    pub ejected_until: Option<Instant>,
}

#[derive(Debug)]
struct Ewma {
    /// Seconds.
    cost: f64,
    stamp: Instant,
    measured: bool,
}

impl Endpoint {
    pub fn new(cluster: &str, address: &str) -> Arc<Endpoint> {
        Endpoint::with_default_rtt(cluster, address, DEFAULT_RTT)
    }

    /// Like [`Endpoint::new`] with a chosen latency estimate for before the first observation.
    pub fn with_default_rtt(cluster: &str, address: &str, default_rtt: Duration) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            cluster: cluster.to_string(),
            address: address.to_string(),
            healthy: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
            outlier: Mutex::new(OutlierState::default()),
            ewma: Mutex::new(Ewma {
                cost: 0.0,
                stamp: Instant::now(),
                measured: false,
            }),
            default_rtt: default_rtt.as_secs_f64(),
        })
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Healthy by active checks and not ejected by outlier detection.
    pub fn is_available(&self, now: Instant) -> bool {
        self.is_healthy() && self.ejected_until().is_none_or(|until| now >= until)
    }

    pub fn ejected_until(&self) -> Option<Instant> {
        self.outlier().ejected_until
    }

    pub(crate) fn outlier(&self) -> std::sync::MutexGuard<'_, OutlierState> {
        self.outlier.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request as in flight until the returned guard is dropped or finished.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.start_request_at(Instant::now())
    }

    /// [`Endpoint::start_request`] for a request sent at `sent`.
    pub fn start_request_at(self: &Arc<Self>, sent: Instant) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoint: self.clone(),
            sent,
        }
    }

    /// Peak-EWMA cost: the latency estimate times the load it would add to. The estimate decays
    /// toward zero while an endpoint is not chosen (as tower's `PeakEwma` decays on `load()`),
    /// so one that was slow once is retried later rather than starved forever. Before the first
    /// observation the estimate is the default RTT.
    pub fn ewma_cost(&self, now: Instant) -> f64 {
        let ewma = self.ewma.lock().unwrap_or_else(|e| e.into_inner());
        let rtt = if ewma.measured {
            let idle = now.saturating_duration_since(ewma.stamp).as_secs_f64();
            ewma.cost * (-idle / EWMA_TAU.as_secs_f64()).exp()
        } else {
            self.default_rtt
        };
        rtt * (self.in_flight() as f64 + 1.0)
    }

    /// Folds one observed round-trip time into the estimate: a slower observation is taken at
    /// once (peak-sensitive), a faster one only gradually.
    pub fn observe_rtt(&self, rtt: Duration, now: Instant) {
        let mut ewma = self.ewma.lock().unwrap_or_else(|e| e.into_inner());
        let rtt = rtt.as_secs_f64();
        let current = ewma.cost;
        ewma.cost = if !ewma.measured || rtt > current {
            rtt
        } else {
            let elapsed = now.saturating_duration_since(ewma.stamp).as_secs_f64();
            let w = (-elapsed / EWMA_TAU.as_secs_f64()).exp();
            current * w + rtt * (1.0 - w)
        };
        ewma.measured = true;
        ewma.stamp = now;
    }
}

/// A request in flight on an endpoint. It records a latency sample when it is finished (the
/// answer's time) or failed (the time until the endpoint failed it: an endpoint that only ever
/// times out must not look faster and faster as its estimate decays). Dropped otherwise (the
/// client went away, the route's own timeout, a filter, the cluster's limits), it records
/// nothing: a client must not be able to make an endpoint look slow.
#[derive(Debug)]
pub struct InFlight {
    endpoint: Arc<Endpoint>,
    sent: Instant,
}

impl InFlight {
    /// Ends the request, recording how long the endpoint took to answer.
    pub fn finish(self, rtt: Duration) {
        self.finish_at(rtt, Instant::now());
    }

    /// [`InFlight::finish`] with an explicit clock reading (tests, or a caller that has one).
    pub fn finish_at(mut self, rtt: Duration, now: Instant) {
        self.record(rtt, now);
    }

    /// Ends a request the endpoint failed (refused, reset, or left unanswered past the per-try
    /// timeout), sampling the time it took to fail, as tower's `PeakEwma` does.
    pub fn fail(mut self) {
        let now = Instant::now();
        let took = now.saturating_duration_since(self.sent);
        self.record(took, now);
    }

    /// Records the round trip now, leaving the request counted as in flight until dropped
    /// (a TCP session: its connect time is the latency, its life is load).
    pub fn record(&mut self, rtt: Duration, now: Instant) {
        self.endpoint.observe_rtt(rtt, now);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_counts_follow_guards() {
        let e = Endpoint::new("c", "127.0.0.1:1");
        let a = e.start_request();
        let b = e.start_request();
        assert_eq!(e.in_flight(), 2);
        drop(a);
        b.finish(Duration::from_millis(3));
        assert_eq!(e.in_flight(), 0);
    }

    #[test]
    fn ewma_is_peak_sensitive_and_decays_slowly() {
        let e = Endpoint::new("c", "127.0.0.1:1");
        let t0 = Instant::now();
        e.observe_rtt(Duration::from_millis(10), t0);
        assert!((e.ewma_cost(t0) - 0.010).abs() < 1e-9);
        // A spike is taken at once.
        let t1 = t0 + Duration::from_millis(1);
        e.observe_rtt(Duration::from_millis(100), t1);
        assert!((e.ewma_cost(t1) - 0.100).abs() < 1e-9);
        // A fast answer one second later moves it only part of the way down.
        let t2 = t0 + Duration::from_secs(1);
        e.observe_rtt(Duration::from_millis(10), t2);
        let cost = e.ewma_cost(t2);
        assert!(cost > 0.09 && cost < 0.1, "{cost}");
        // Left alone, the estimate fades so the endpoint gets another chance.
        assert!(e.ewma_cost(t2 + Duration::from_secs(30)) < 0.01);
        // Load multiplies the cost.
        let _busy = e.start_request();
        assert!((e.ewma_cost(t2) - 2.0 * cost).abs() < 1e-9);
    }

    #[test]
    fn unmeasured_endpoint_costs_default_rtt_times_load() {
        let e = Endpoint::with_default_rtt("c", "127.0.0.1:1", Duration::from_millis(2));
        let now = Instant::now();
        assert!((e.ewma_cost(now) - 0.002).abs() < 1e-12);
        let _a = e.start_request();
        let _b = e.start_request();
        // Load still counts before any latency was measured.
        assert!((e.ewma_cost(now + Duration::from_secs(60)) - 0.006).abs() < 1e-12);
        assert!((Endpoint::new("c", "x:1").ewma_cost(now) - 0.001).abs() < 1e-12);
    }

    #[test]
    fn finish_at_records_latency() {
        let e = Endpoint::new("c", "127.0.0.1:1");
        let t0 = Instant::now();
        e.start_request().finish_at(Duration::from_millis(40), t0);
        assert_eq!(e.in_flight(), 0);
        assert!((e.ewma_cost(t0) - 0.040).abs() < 1e-12);
    }

    #[test]
    fn a_request_the_endpoint_failed_records_its_time_but_a_dropped_one_does_not() {
        let e = Endpoint::new("c", "127.0.0.1:1");
        let now = Instant::now();
        let sent = now.checked_sub(Duration::from_secs(5)).unwrap_or(now);
        // Failed by the endpoint (refused, reset, timed out): the time it took counts.
        e.start_request_at(sent).fail();
        // Dropped (the client went away): nothing is sampled.
        let other = Endpoint::new("c", "127.0.0.1:2");
        drop(other.start_request_at(sent));
        assert!(other.ewma_cost(Instant::now()) < 0.01);
        let elapsed = Instant::now().saturating_duration_since(sent).as_secs_f64();
        assert!(
            e.ewma_cost(Instant::now()) > 0.9 * elapsed,
            "{}",
            e.ewma_cost(now)
        );
        // A session that recorded its connect time keeps counting as load, and records no more.
        let mut session = e.start_request();
        session.record(Duration::from_secs(30), Instant::now());
        assert_eq!(e.in_flight(), 1);
        drop(session);
        assert_eq!(e.in_flight(), 0);
        let cost = e.ewma_cost(Instant::now());
        assert!(cost > 29.0 && cost <= 30.0, "{cost}");
    }

    #[test]
    fn availability_respects_health_and_ejection() {
        let e = Endpoint::new("c", "127.0.0.1:1");
        let now = Instant::now();
        assert!(e.is_available(now));
        e.set_healthy(false);
        assert!(!e.is_available(now));
        e.set_healthy(true);
        e.outlier().ejected_until = Some(now + Duration::from_secs(5));
        assert!(!e.is_available(now));
        assert!(e.is_available(now + Duration::from_secs(5)));
    }
}
