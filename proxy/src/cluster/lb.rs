//! Load-balancing policies. Each picks among the endpoints that are available (healthy and not
//! ejected); when none is, it picks among all of them — Envoy's "panic mode" — because sending
//! to a possibly-bad endpoint beats failing every request outright.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::endpoint::Endpoint;
use crate::config::{LbPolicy, RingHash};

/// What a pick may depend on besides the endpoints.
pub struct PickContext {
    /// Hash of the ring-hash key (see [`hash_key`]), if the request carries one.
    pub hash: Option<u64>,
    pub now: Instant,
}

pub trait LoadBalancer: Send + Sync {
    fn pick(&self, endpoints: &[Arc<Endpoint>], ctx: &PickContext) -> Option<Arc<Endpoint>>;
}

/// FNV-1a 64: stable across processes and releases, so every proxy maps a key to the same place.
pub fn hash_key(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short keys; finish with a 64-bit avalanche (splitmix64).
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// Builds a policy; `seed` fixes the random choices (tests), `None` seeds from the OS.
pub fn build(
    policy: LbPolicy,
    ring: Option<&RingHash>,
    endpoints: &[Arc<Endpoint>],
    seed: Option<u64>,
) -> Box<dyn LoadBalancer> {
    let rng = || {
        Mutex::new(match seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_os_rng(),
        })
    };
    match policy {
        LbPolicy::RoundRobin => Box::new(RoundRobin {
            next: AtomicUsize::new(0),
        }),
        LbPolicy::Random => Box::new(Random { rng: rng() }),
        LbPolicy::LeastRequest => Box::new(PowerOfTwo {
            rng: rng(),
            cost: |e: &Endpoint, _| e.in_flight() as f64,
        }),
        LbPolicy::PeakEwma => Box::new(PowerOfTwo {
            rng: rng(),
            cost: |e: &Endpoint, now| e.ewma_cost(now),
        }),
        LbPolicy::RingHash => Box::new(Ring::new(
            endpoints,
            ring.map_or(128, |r| r.virtual_nodes).max(1),
            rng(),
        )),
    }
}

/// Indices of the endpoints to choose from: the available ones, or all in panic mode.
fn candidates(endpoints: &[Arc<Endpoint>], now: Instant) -> Vec<usize> {
    let available: Vec<usize> = (0..endpoints.len())
        .filter(|&i| endpoints[i].is_available(now))
        .collect();
    if available.is_empty() && !endpoints.is_empty() {
        tracing::debug!("no available endpoint; balancing over all (panic mode)");
        return (0..endpoints.len()).collect();
    }
    available
}

struct RoundRobin {
    next: AtomicUsize,
}

impl LoadBalancer for RoundRobin {
    fn pick(&self, endpoints: &[Arc<Endpoint>], ctx: &PickContext) -> Option<Arc<Endpoint>> {
        let candidates = candidates(endpoints, ctx.now);
        if candidates.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Some(endpoints[candidates[n % candidates.len()]].clone())
    }
}

struct Random {
    rng: Mutex<SmallRng>,
}

impl LoadBalancer for Random {
    fn pick(&self, endpoints: &[Arc<Endpoint>], ctx: &PickContext) -> Option<Arc<Endpoint>> {
        let candidates = candidates(endpoints, ctx.now);
        if candidates.is_empty() {
            return None;
        }
        let i = self
            .rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .random_range(0..candidates.len());
        Some(endpoints[candidates[i]].clone())
    }
}

/// Power of two choices: draw two distinct candidates, keep the cheaper. Used for least-request
/// (cost = requests in flight) and Peak-EWMA (cost = latency estimate × load).
struct PowerOfTwo {
    rng: Mutex<SmallRng>,
    cost: fn(&Endpoint, Instant) -> f64,
}

impl LoadBalancer for PowerOfTwo {
    fn pick(&self, endpoints: &[Arc<Endpoint>], ctx: &PickContext) -> Option<Arc<Endpoint>> {
        let candidates = candidates(endpoints, ctx.now);
        let (a, b) = match candidates.len() {
            0 => return None,
            1 => return Some(endpoints[candidates[0]].clone()),
            n => {
                let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                let a = rng.random_range(0..n);
                let b = (a + rng.random_range(1..n)) % n;
                (candidates[a], candidates[b])
            }
        };
        let (ca, cb) = (
            (self.cost)(&endpoints[a], ctx.now),
            (self.cost)(&endpoints[b], ctx.now),
        );
        // `a` was drawn uniformly, so keeping it on a tie spreads load evenly over equals.
        let winner = if cb < ca { b } else { a };
        Some(endpoints[winner].clone())
    }
}

/// Consistent hashing (ketama-style ring): each endpoint owns `virtual_nodes` points on a 64-bit
/// ring, a key goes to the first point at or after its hash, so removing an endpoint moves only
/// the keys it owned.
struct Ring {
    /// (point, endpoint index), sorted by point.
    points: Vec<(u64, usize)>,
    rng: Mutex<SmallRng>,
}

impl Ring {
    fn new(endpoints: &[Arc<Endpoint>], virtual_nodes: u32, rng: Mutex<SmallRng>) -> Ring {
        let mut points = Vec::with_capacity(endpoints.len() * virtual_nodes as usize);
        for (index, endpoint) in endpoints.iter().enumerate() {
            for v in 0..virtual_nodes {
                points.push((
                    hash_key(format!("{}_{v}", endpoint.address).as_bytes()),
                    index,
                ));
            }
        }
        points.sort_unstable();
        Ring { points, rng }
    }
}

impl LoadBalancer for Ring {
    fn pick(&self, endpoints: &[Arc<Endpoint>], ctx: &PickContext) -> Option<Arc<Endpoint>> {
        if self.points.is_empty() {
            return None;
        }
        let hash = ctx
            .hash
            .unwrap_or_else(|| self.rng.lock().unwrap_or_else(|e| e.into_inner()).random());
        let start = self.points.partition_point(|(p, _)| *p < hash);
        let any_available = endpoints.iter().any(|e| e.is_available(ctx.now));
        // Walk clockwise past unavailable endpoints (all of them count in panic mode).
        for step in 0..self.points.len() {
            let (_, index) = self.points[(start + step) % self.points.len()];
            if let Some(endpoint) = endpoints.get(index)
                && (!any_available || endpoint.is_available(ctx.now))
            {
                return Some(endpoint.clone());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;

    fn endpoints(n: usize) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| Endpoint::new("c", &format!("10.0.0.{i}:80")))
            .collect()
    }

    fn ctx(hash: Option<u64>) -> PickContext {
        PickContext {
            hash,
            now: Instant::now(),
        }
    }

    fn counts(lb: &dyn LoadBalancer, eps: &[Arc<Endpoint>], n: usize) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for _ in 0..n {
            let e = lb.pick(eps, &ctx(None)).expect("pick");
            *counts.entry(e.address.clone()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn round_robin_rotates_and_skips_unavailable() {
        let eps = endpoints(3);
        let lb = build(LbPolicy::RoundRobin, None, &eps, Some(1));
        let order: Vec<_> = (0..6)
            .map(|_| lb.pick(&eps, &ctx(None)).expect("pick").address.clone())
            .collect();
        assert_eq!(
            order,
            ["10.0.0.0:80", "10.0.0.1:80", "10.0.0.2:80"].repeat(2)
        );
        eps[1].set_healthy(false);
        let c = counts(lb.as_ref(), &eps, 100);
        assert_eq!(c.get("10.0.0.1:80"), None);
        assert_eq!(c.values().sum::<usize>(), 100);
    }

    #[test]
    fn random_is_roughly_uniform() {
        let eps = endpoints(4);
        let lb = build(LbPolicy::Random, None, &eps, Some(7));
        let c = counts(lb.as_ref(), &eps, 10_000);
        for (addr, n) in c {
            assert!((2_375..=2_625).contains(&n), "{addr}: {n}");
        }
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let eps = endpoints(2);
        let _busy: Vec<_> = (0..5).map(|_| eps[0].start_request()).collect();
        let lb = build(LbPolicy::LeastRequest, None, &eps, Some(3));
        let c = counts(lb.as_ref(), &eps, 1_000);
        assert_eq!(c.get("10.0.0.1:80"), Some(&1_000));
    }

    #[test]
    fn peak_ewma_avoids_the_slow_endpoint() {
        let eps = endpoints(3);
        let now = Instant::now();
        eps[0].observe_rtt(Duration::from_millis(50), now);
        eps[1].observe_rtt(Duration::from_millis(5), now);
        eps[2].observe_rtt(Duration::from_millis(5), now);
        let lb = build(LbPolicy::PeakEwma, None, &eps, Some(11));
        let c = counts(lb.as_ref(), &eps, 1_000);
        assert_eq!(c.get("10.0.0.0:80"), None, "{c:?}");
        // A latency spike on a fast endpoint moves traffic away from it immediately: it is now
        // the most expensive, so it loses every pair it is drawn in.
        eps[1].observe_rtt(Duration::from_millis(500), now);
        let c = counts(lb.as_ref(), &eps, 1_000);
        assert_eq!(c.get("10.0.0.1:80"), None, "{c:?}");
        assert!(c.get("10.0.0.2:80").is_some_and(|&n| n > 600), "{c:?}");
    }

    #[test]
    fn ring_hash_is_consistent_and_even() {
        let eps = endpoints(3);
        let lb = build(LbPolicy::RingHash, None, &eps, Some(5));
        let mut owner = HashMap::new();
        let mut per_endpoint: HashMap<String, usize> = HashMap::new();
        for key in 0..10_000 {
            let h = hash_key(format!("user-{key}").as_bytes());
            let a = lb.pick(&eps, &ctx(Some(h))).expect("pick").address.clone();
            let b = lb.pick(&eps, &ctx(Some(h))).expect("pick").address.clone();
            assert_eq!(a, b);
            *per_endpoint.entry(a.clone()).or_default() += 1;
            owner.insert(key, a);
        }
        for (addr, n) in &per_endpoint {
            assert!((2_000..=4_700).contains(n), "{addr}: {n}");
        }
        // Dropping an endpoint only moves the keys it owned.
        let two = vec![eps[0].clone(), eps[1].clone()];
        let lb2 = build(LbPolicy::RingHash, None, &two, Some(5));
        for key in 0..10_000 {
            let h = hash_key(format!("user-{key}").as_bytes());
            let now_owner = lb2.pick(&two, &ctx(Some(h))).expect("pick").address.clone();
            if owner[&key] != eps[2].address {
                assert_eq!(owner[&key], now_owner, "key {key} moved needlessly");
            }
        }
        // An unavailable owner is skipped, not failed.
        eps[0].set_healthy(false);
        for key in 0..1_000 {
            let h = hash_key(format!("user-{key}").as_bytes());
            let e = lb.pick(&eps, &ctx(Some(h))).expect("pick");
            assert_ne!(e.address, eps[0].address);
        }
    }

    #[test]
    fn panic_mode_when_nothing_is_available() {
        let eps = endpoints(2);
        eps[0].set_healthy(false);
        eps[1].set_healthy(false);
        for policy in [
            LbPolicy::RoundRobin,
            LbPolicy::Random,
            LbPolicy::LeastRequest,
            LbPolicy::PeakEwma,
            LbPolicy::RingHash,
        ] {
            let lb = build(policy, None, &eps, Some(1));
            assert!(lb.pick(&eps, &ctx(Some(42))).is_some(), "{policy:?}");
        }
        let lb = build(LbPolicy::RoundRobin, None, &[], Some(1));
        assert!(lb.pick(&[], &ctx(None)).is_none());
    }

    #[test]
    fn hash_key_is_stable() {
        // Pinned values: a change here would remap every sticky session in a fleet.
        assert_eq!(hash_key(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(hash_key(b"user-1"), 0xc499_b5f8_a721_df58);
        assert_eq!(hash_key(b"10.0.0.0:80_0"), 0x4799_87c2_9adc_b5b7);
        assert_ne!(hash_key(b"a"), hash_key(b"b"));
    }

    #[test]
    fn ring_hash_without_a_key_spreads_randomly() {
        let eps = endpoints(3);
        let lb = build(LbPolicy::RingHash, None, &eps, Some(9));
        let c = counts(lb.as_ref(), &eps, 3_000);
        assert_eq!(c.len(), 3, "{c:?}");
        // A zero-vnode setting still builds a usable ring (one point per endpoint).
        let ring = RingHash {
            header: "x-user".into(),
            virtual_nodes: 0,
        };
        let lb = build(LbPolicy::RingHash, Some(&ring), &eps, Some(9));
        assert!(lb.pick(&eps, &ctx(Some(1))).is_some());
    }
}
