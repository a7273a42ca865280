//! Token buckets kept in the host's shared data, so every VM replica of the plugin (one per
//! worker) draws from the same bucket.
//!
//! A bucket holds up to `max_tokens`; every `fill_interval` it gains `tokens_per_fill` (as
//! Envoy's local rate limit). Nothing ticks: the fills due since the last one are added when
//! the bucket is next read, from the host's clock, with the fill phase kept from the bucket's
//! creation. An update is a read with the value's CAS token, then a write with that token;
//! a write that lost a race (`CAS_MISMATCH`) is retried from a fresh read, a bounded number of
//! times.

use std::time::Duration;

/// A rule's bucket parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_tokens: u64,
    pub tokens_per_fill: u64,
    pub fill_interval_ns: u64,
}

/// A bucket as stored: 16 bytes, tokens then the time of the last fill (nanoseconds since
/// the Unix epoch), both little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    pub tokens: u64,
    pub last_fill_ns: u64,
}

impl State {
    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&self.tokens.to_le_bytes());
        out[8..].copy_from_slice(&self.last_fill_ns.to_le_bytes());
        out
    }

    /// `None` for anything that is not 16 bytes (a value someone else wrote).
    pub fn decode(bytes: &[u8]) -> Option<State> {
        let tokens = bytes.get(..8)?.try_into().ok()?;
        let last = bytes.get(8..16)?.try_into().ok()?;
        (bytes.len() == 16).then(|| State {
            tokens: u64::from_le_bytes(tokens),
            last_fill_ns: u64::from_le_bytes(last),
        })
    }
}

/// What one request got from a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The bucket's size (`x-ratelimit-limit`).
    pub limit: u64,
    /// Tokens left after this request (`x-ratelimit-remaining`).
    pub remaining: u64,
    /// Until the next fill (`x-ratelimit-reset`, `Retry-After`).
    pub reset: Duration,
}

impl Limits {
    /// `state` with the fills due by `now_ns` added. A clock that went backwards adds none.
    pub fn refill(&self, state: State, now_ns: u64) -> State {
        let interval = self.fill_interval_ns.max(1);
        let fills = now_ns.saturating_sub(state.last_fill_ns) / interval;
        if fills == 0 {
            return state;
        }
        State {
            tokens: state
                .tokens
                .saturating_add(fills.saturating_mul(self.tokens_per_fill))
                .min(self.max_tokens),
            last_fill_ns: state
                .last_fill_ns
                .saturating_add(fills.saturating_mul(interval)),
        }
    }

    /// Takes one token if there is one. A bucket seen for the first time starts full.
    /// Returns the state to store (`None` when nothing changed) and the decision.
    pub fn take(&self, stored: Option<State>, now_ns: u64) -> (Option<State>, Decision) {
        let before = stored.unwrap_or(State {
            tokens: self.max_tokens,
            last_fill_ns: now_ns,
        });
        let mut state = self.refill(before, now_ns);
        // Stored state from a larger bucket (the configuration changed) is cut down to size.
        state.tokens = state.tokens.min(self.max_tokens);
        let allowed = state.tokens > 0;
        if allowed {
            state.tokens -= 1;
        }
        let next_fill = state
            .last_fill_ns
            .saturating_add(self.fill_interval_ns.max(1));
        let decision = Decision {
            allowed,
            limit: self.max_tokens,
            remaining: state.tokens,
            reset: Duration::from_nanos(next_fill.saturating_sub(now_ns)),
        };
        let changed = stored != Some(state);
        (changed.then_some(state), decision)
    }
}

/// Where buckets live: the host's shared data in the filter, a map in unit tests.
pub trait Store {
    /// The value and its CAS token; `(None, None)` if absent.
    fn get(&mut self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes `value` if the stored CAS token is still `cas` (`None`: unconditionally);
    /// false on a mismatch.
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

/// The result of [`consume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Decided(Decision),
    /// Every attempt lost its compare-and-swap to another replica.
    Contended,
}

/// Takes a token from the bucket at `key`: read, decide, compare-and-swap, up to `attempts`
/// times.
///
/// A bucket that does not exist yet is written without a CAS token (the ABI has no "create
/// if absent"), so two replicas creating the same bucket at the same instant may each take a
/// token from a full bucket and one write wins: at worst one extra request per replica, once
/// per bucket.
pub fn consume(
    store: &mut impl Store,
    key: &str,
    limits: &Limits,
    now_ns: u64,
    attempts: u32,
) -> Outcome {
    for _ in 0..attempts {
        let (bytes, cas) = store.get(key);
        let stored = bytes.as_deref().and_then(State::decode);
        let (next, decision) = limits.take(stored, now_ns);
        let Some(next) = next else {
            return Outcome::Decided(decision);
        };
        if store.set(key, &next.encode(), cas) {
            return Outcome::Decided(decision);
        }
    }
    Outcome::Contended
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn limits(max: u64, per_fill: u64, interval_s: u64) -> Limits {
        Limits {
            max_tokens: max,
            tokens_per_fill: per_fill,
            fill_interval_ns: interval_s * SEC,
        }
    }

    /// The host's semantics: a CAS token per value, bumped on each write; a non-zero token
    /// must match. `interfere` writes on behalf of another replica between a read and the
    /// write that follows it, the next `n` times.
    #[derive(Default)]
    struct Map {
        data: HashMap<String, (Vec<u8>, u32)>,
        interfere: u32,
        gets: u32,
    }

    impl Store for Map {
        fn get(&mut self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            self.gets += 1;
            let found = self.data.get(key).cloned();
            if self.interfere > 0 {
                self.interfere -= 1;
                if let Some((value, cas)) = self.data.get_mut(key) {
                    // Another replica takes a token in between.
                    let mut state = State::decode(value).expect("state");
                    state.tokens -= 1;
                    *value = state.encode().to_vec();
                    *cas += 1;
                }
            }
            match found {
                Some((v, cas)) => (Some(v), Some(cas)),
                None => (None, None),
            }
        }

        fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            match self.data.get_mut(key) {
                Some((stored, current)) => {
                    if cas.is_some_and(|c| c != *current) {
                        return false;
                    }
                    *stored = value.to_vec();
                    *current += 1;
                }
                None => {
                    self.data.insert(key.to_string(), (value.to_vec(), 1));
                }
            }
            true
        }
    }

    #[test]
    fn a_new_bucket_starts_full_and_empties() {
        let l = limits(3, 3, 60);
        let mut state = None;
        let mut remaining = Vec::new();
        for _ in 0..4 {
            let (next, d) = l.take(state, 100 * SEC);
            state = next.or(state);
            remaining.push((d.allowed, d.remaining));
        }
        assert_eq!(
            remaining,
            [(true, 2), (true, 1), (true, 0), (false, 0)],
            "three tokens, then none"
        );
    }

    #[test]
    fn fills_follow_the_clock_with_a_fixed_phase() {
        let l = limits(4, 2, 10);
        let start = 1_000 * SEC;
        let empty = State {
            tokens: 0,
            last_fill_ns: start,
        };
        assert_eq!(l.refill(empty, start + 9 * SEC), empty, "not a fill yet");
        let one = l.refill(empty, start + 10 * SEC);
        assert_eq!(one.tokens, 2);
        assert_eq!(one.last_fill_ns, start + 10 * SEC);
        let later = l.refill(empty, start + 25 * SEC);
        assert_eq!(later.tokens, 4, "two fills, capped at the size");
        assert_eq!(
            later.last_fill_ns,
            start + 20 * SEC,
            "the phase is kept: the next fill is at +30s"
        );
        let (_, d) = l.take(Some(later), start + 25 * SEC);
        assert_eq!(d.reset, Duration::from_secs(5));
        assert_eq!(
            l.refill(empty, start - SEC),
            empty,
            "a clock going back adds nothing"
        );
    }

    #[test]
    fn a_denied_request_writes_nothing() {
        let l = limits(1, 1, 60);
        let empty = State {
            tokens: 0,
            last_fill_ns: 0,
        };
        let (next, d) = l.take(Some(empty), 30 * SEC);
        assert_eq!(next, None);
        assert!(!d.allowed);
        assert_eq!(d.reset, Duration::from_secs(30));
    }

    #[test]
    fn a_smaller_configuration_caps_stored_tokens() {
        let l = limits(2, 2, 60);
        let big = State {
            tokens: 50,
            last_fill_ns: 0,
        };
        let (_, d) = l.take(Some(big), SEC);
        assert_eq!(d.remaining, 1);
    }

    #[test]
    fn state_encoding_round_trips_and_rejects_other_values() {
        let s = State {
            tokens: 7,
            last_fill_ns: u64::MAX - 3,
        };
        assert_eq!(State::decode(&s.encode()), Some(s));
        assert_eq!(State::decode(b"short"), None);
        assert_eq!(State::decode(&[0; 17]), None);
    }

    #[test]
    fn a_lost_race_is_retried_from_a_fresh_read() {
        let l = limits(10, 10, 60);
        let mut map = Map::default();
        assert_eq!(
            consume(&mut map, "k", &l, SEC, 4),
            Outcome::Decided(Decision {
                allowed: true,
                limit: 10,
                remaining: 9,
                reset: Duration::from_secs(60)
            })
        );
        // Two other replicas write between our read and our write, twice.
        map.interfere = 2;
        map.gets = 0;
        let Outcome::Decided(d) = consume(&mut map, "k", &l, SEC, 4) else {
            panic!("three attempts suffice");
        };
        assert_eq!(map.gets, 3, "two lost races, then a success");
        assert_eq!(d.remaining, 6, "both other takes counted, then ours");
        let (stored, _) = map.get("k");
        assert_eq!(
            State::decode(&stored.expect("stored")).map(|s| s.tokens),
            Some(6)
        );
    }

    #[test]
    fn retries_are_bounded() {
        let l = limits(100, 100, 60);
        let mut map = Map::default();
        consume(&mut map, "k", &l, SEC, 1);
        map.interfere = 1_000;
        map.gets = 0;
        assert_eq!(consume(&mut map, "k", &l, SEC, 5), Outcome::Contended);
        assert_eq!(map.gets, 5);
    }
}
