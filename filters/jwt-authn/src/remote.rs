//! When a remote key set is fetched: on the first tick, again every `jwks_refresh` once
//! loaded, and after a failed fetch with a doubling back-off (1 s, 2 s, 4 s, … at most
//! `jwks_refresh`), never two fetches at a time. A failed fetch keeps the keys already loaded.
//! A fetch whose answer has not come a second after its timeout counts as failed, so a lost
//! answer cannot stop the refreshes.

use std::time::{Duration, SystemTime};

/// The fetch schedule of one provider.
#[derive(Debug)]
pub struct Schedule {
    refresh: Duration,
    next: SystemTime,
    failures: u32,
    /// The callout token of the fetch under way, and when it counts as lost.
    in_flight: Option<(u32, SystemTime)>,
}

const FIRST_RETRY: Duration = Duration::from_secs(1);

/// How long after its timeout an unanswered fetch counts as lost.
const GRACE: Duration = Duration::from_secs(1);

impl Schedule {
    /// A schedule whose first fetch is due at `now`.
    pub fn new(now: SystemTime, refresh: Duration) -> Schedule {
        Schedule {
            refresh,
            next: now,
            failures: 0,
            in_flight: None,
        }
    }

    /// Whether a fetch should start now.
    pub fn due(&self, now: SystemTime) -> bool {
        self.in_flight.is_none() && now >= self.next
    }

    /// A fetch was sent at `now` with `timeout`.
    pub fn started(&mut self, token: u32, now: SystemTime, timeout: Duration) {
        self.in_flight = Some((token, now + timeout + GRACE));
    }

    /// Whether `token` is this schedule's fetch under way.
    pub fn is_fetch(&self, token: u32) -> bool {
        self.in_flight.is_some_and(|(t, _)| t == token)
    }

    /// Gives up on a fetch whose answer is overdue (it then counts as failed); says whether
    /// it did.
    pub fn expire(&mut self, now: SystemTime) -> bool {
        match self.in_flight {
            Some((_, lost_at)) if now >= lost_at => {
                self.failed(now);
                true
            }
            _ => false,
        }
    }

    pub fn succeeded(&mut self, now: SystemTime) {
        self.in_flight = None;
        self.failures = 0;
        self.next = now + self.refresh;
    }

    /// A fetch that failed, or could not even be sent.
    pub fn failed(&mut self, now: SystemTime) {
        self.in_flight = None;
        self.failures = self.failures.saturating_add(1);
        let backoff = FIRST_RETRY.saturating_mul(1 << (self.failures - 1).min(16));
        self.next = now + backoff.min(self.refresh);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_and_backoff() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut schedule = Schedule::new(t0, Duration::from_secs(10));
        assert!(schedule.due(t0));
        schedule.started(7, t0, Duration::from_secs(5));
        assert!(!schedule.due(s(5)), "one fetch at a time");
        assert!(schedule.is_fetch(7) && !schedule.is_fetch(8));
        assert!(!schedule.expire(s(5)), "the answer may still come");
        schedule.failed(t0);
        assert!(
            !schedule.due(s(0)) && schedule.due(s(1)),
            "first retry after 1s"
        );
        schedule.failed(s(1));
        assert!(!schedule.due(s(2)) && schedule.due(s(3)), "then 2s");
        schedule.failed(s(3));
        assert!(schedule.due(s(7)), "then 4s");
        schedule.failed(s(7));
        assert!(!schedule.due(s(14)) && schedule.due(s(15)), "then 8s");
        schedule.failed(s(15));
        assert!(
            !schedule.due(s(24)) && schedule.due(s(25)),
            "capped at the refresh interval"
        );
        schedule.started(9, s(25), Duration::from_secs(5));
        schedule.succeeded(s(25));
        assert!(!schedule.expire(s(100)), "nothing in flight");
        assert!(
            !schedule.due(s(34)) && schedule.due(s(35)),
            "refresh after success"
        );
        for _ in 0..100 {
            schedule.failed(s(35));
        }
        assert!(schedule.due(s(45)), "no overflow after many failures");
    }

    #[test]
    fn a_lost_answer_does_not_stop_the_fetches() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut schedule = Schedule::new(t0, Duration::from_secs(60));
        schedule.started(1, t0, Duration::from_secs(5));
        assert!(!schedule.expire(s(5)) && !schedule.due(s(5)));
        assert!(schedule.expire(s(6)), "lost a second after the timeout");
        assert!(!schedule.is_fetch(1), "a late answer is not taken");
        assert!(
            !schedule.due(s(6)) && schedule.due(s(7)),
            "retried after the back-off"
        );
    }
}
