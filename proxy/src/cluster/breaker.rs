//! Per-cluster circuit breaking, as Envoy's thresholds: limits on connections, pending
//! requests, requests and retries in flight. A request over a limit is refused at once (503
//! with the reason), which protects a struggling upstream and the proxy's own memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::CircuitBreakers;

/// Retry budget: retries may be at most this share of active requests...
const RETRY_BUDGET_PERCENT: usize = 20;
/// ...but at least this many may always run (Envoy's `min_retry_concurrency`).
const MIN_RETRY_CONCURRENCY: usize = 3;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    Connections,
    PendingRequests,
    Requests,
    Retries,
}

impl Overflow {
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::Connections => "max_connections",
            Overflow::PendingRequests => "max_pending_requests",
            Overflow::Requests => "max_requests",
            Overflow::Retries => "max_retries",
        }
    }
}

pub struct CircuitBreaker {
    cluster: String,
    limits: CircuitBreakers,
    connections: Arc<AtomicUsize>,
    pending: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    retries: Arc<AtomicUsize>,
}

/// A slot under one limit; released when dropped.
#[derive(Debug)]
pub struct Permit {
    counter: Arc<AtomicUsize>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}

fn acquire(counter: &Arc<AtomicUsize>, limit: usize) -> Option<Permit> {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .ok()
        .map(|_| Permit {
            counter: counter.clone(),
        })
}

impl CircuitBreaker {
    pub fn new(cluster: &str, limits: &CircuitBreakers) -> CircuitBreaker {
        CircuitBreaker {
            cluster: cluster.to_string(),
            limits: limits.clone(),
            connections: Arc::default(),
            pending: Arc::default(),
            requests: Arc::default(),
            retries: Arc::default(),
        }
    }

    fn take(
        &self,
        counter: &Arc<AtomicUsize>,
        limit: usize,
        overflow: Overflow,
    ) -> Result<Permit, Overflow> {
        acquire(counter, limit).ok_or_else(|| {
            metrics::counter!("wasmesh_circuit_breaker_overflow_total",
                "cluster" => self.cluster.clone(), "reason" => overflow.as_str())
            .increment(1);
            overflow
        })
    }

    pub fn try_connection(&self) -> Result<Permit, Overflow> {
        self.take(
            &self.connections,
            self.limits.max_connections,
            Overflow::Connections,
        )
    }

    pub fn try_pending(&self) -> Result<Permit, Overflow> {
        self.take(
            &self.pending,
            self.limits.max_pending_requests,
            Overflow::PendingRequests,
        )
    }

    pub fn try_request(&self) -> Result<Permit, Overflow> {
        self.take(&self.requests, self.limits.max_requests, Overflow::Requests)
    }

    /// A retry is allowed while retries in flight stay under both `max_retries` and the budget
    /// (20 % of `active_requests`, at least 3).
    pub fn try_retry(&self, active_requests: usize) -> Result<Permit, Overflow> {
        let budget = (active_requests * RETRY_BUDGET_PERCENT / 100).max(MIN_RETRY_CONCURRENCY);
        self.take(
            &self.retries,
            self.limits.max_retries.min(budget),
            Overflow::Retries,
        )
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Acquire)
    }
    pub fn retries(&self) -> usize {
        self.retries.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(limit: usize, retries: usize) -> CircuitBreaker {
        CircuitBreaker::new(
            "c",
            &CircuitBreakers {
                max_connections: limit,
                max_pending_requests: limit,
                max_requests: limit,
                max_retries: retries,
            },
        )
    }

    #[test]
    fn limits_hold_and_permits_release() {
        let b = breaker(2, 3);
        let one = b.try_request().expect("1");
        let _two = b.try_request().expect("2");
        assert_eq!(b.try_request().err(), Some(Overflow::Requests));
        drop(one);
        assert!(b.try_request().is_ok());
        let _c1 = b.try_connection().expect("c1");
        let _c2 = b.try_connection().expect("c2");
        assert_eq!(b.try_connection().err(), Some(Overflow::Connections));
        assert_eq!(b.connections(), 2);
        let _p = b.try_pending().expect("p");
        assert_eq!(b.pending(), 1);
    }

    #[test]
    fn retry_budget() {
        let b = breaker(1000, 10);
        // 10 active requests: budget is max(3, 2) = 3.
        let held: Vec<_> = (0..3).map(|_| b.try_retry(10).expect("retry")).collect();
        assert_eq!(b.try_retry(10).err(), Some(Overflow::Retries));
        // 100 active requests: budget 20, but max_retries caps at 10.
        let more: Vec<_> = (0..7).map(|_| b.try_retry(100).expect("retry")).collect();
        assert_eq!(b.try_retry(100).err(), Some(Overflow::Retries));
        drop((held, more));
        assert_eq!(b.retries(), 0);
    }
}
