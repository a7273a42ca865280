//! The host's bounds on what a filter can make it hold or do, so that a hostile or broken
//! filter costs bounded memory and log volume however it calls the host.
//!
//! Two kinds of bound, by what is at stake:
//!
//! - What one stream holds (its header and trailer maps, bodies, filter state) is the
//!   request's: a filter growing it past a bound is stopped there, as if it had trapped — its
//!   failure policy applies, `wasmesh_filter_failures_total{kind="limit"}` counts it and the
//!   replica is rebuilt ([`LimitExceeded`]).
//! - What outlives requests (metric definitions, shared data, shared queues) and log lines are
//!   refused with a status code the filter can see, except that a full shared queue drops its
//!   oldest items (filters written for Envoy's unbounded queues cannot handle a refusal).
//!
//! Every refusal is counted in `wasmesh_filter_limit_exceeded_total{plugin,limit}`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most pairs in one header or trailer map a filter may build (cpp-host refuses more than
/// 1024 in a serialized map; Envoy takes 100 request headers by default).
pub const MAX_HEADER_PAIRS: usize = 1024;
/// Most bytes of names and values in one header or trailer map a filter may build.
pub const MAX_HEADER_BYTES: usize = 1024 * 1024;
/// Largest body buffer a filter may grow with `proxy_set_buffer_bytes` (it may still shrink or
/// keep one the proxy handed it that is larger).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Most filter-state values (`proxy_set_property`) one stream may hold…
pub const MAX_FILTER_STATE_ENTRIES: usize = 1024;
/// …and most bytes of paths and values in them.
pub const MAX_FILTER_STATE_BYTES: usize = 1024 * 1024;
/// Most metrics one plugin may define.
pub const MAX_METRICS: usize = 1024;
/// Most shared-data keys one `vm_id` may hold…
pub const MAX_SHARED_KEYS: usize = 65_536;
/// …and most bytes of keys and values.
pub const MAX_SHARED_BYTES: usize = 64 * 1024 * 1024;
/// Most shared queues one `vm_id` may register.
pub const MAX_QUEUES: usize = 1024;
/// Most items waiting in one shared queue…
pub const MAX_QUEUE_LEN: usize = 10_000;
/// …and most bytes in them.
pub const MAX_QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// Most log lines one plugin may emit per second (lines below the log level do not count);
/// the rest are dropped and counted.
pub const MAX_LOG_LINES_PER_SECOND: u32 = 1000;

/// A filter grew what its stream holds past a bound: the host call fails the callback (a trap
/// the failure policy handles), and the plugin's failure is counted with kind `limit`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the filter exceeded the host's limit on {limit}: {detail}")]
pub struct LimitExceeded {
    pub limit: &'static str,
    pub detail: String,
}

/// Counts a refusal in `wasmesh_filter_limit_exceeded_total{plugin,limit}`.
pub(crate) fn count(plugin: &str, limit: &'static str) {
    count_many(plugin, limit, 1);
}

/// Counts `n` refusals (or items dropped) at once.
pub(crate) fn count_many(plugin: &str, limit: &'static str, n: usize) {
    if n > 0 {
        metrics::counter!(
            "wasmesh_filter_limit_exceeded_total",
            "plugin" => plugin.to_string(),
            "limit" => limit
        )
        .increment(n as u64);
    }
}

/// Counts a stream bound exceeded and returns the error that fails the callback.
pub(crate) fn exceeded(plugin: &str, limit: &'static str, detail: String) -> wasmtime::Error {
    count(plugin, limit);
    wasmtime::Error::new(LimitExceeded { limit, detail })
}

/// Checks a header map that is about to hold `pairs` pairs of `bytes` bytes, where it held
/// `before` (pairs, bytes): past a bound it may only shrink (the proxy may hand a filter a map
/// that is already larger).
pub(crate) fn header_map(
    plugin: &str,
    (pairs, bytes): (usize, usize),
    before: (usize, usize),
) -> wasmtime::Result<()> {
    if (pairs > MAX_HEADER_PAIRS && pairs > before.0)
        || (bytes > MAX_HEADER_BYTES && bytes > before.1)
    {
        return Err(exceeded(
            plugin,
            "header_map",
            format!(
                "{pairs} headers of {bytes} bytes (at most {MAX_HEADER_PAIRS} headers, {MAX_HEADER_BYTES} bytes)"
            ),
        ));
    }
    Ok(())
}

/// Bytes of names and values in a header map.
pub(crate) fn header_bytes(map: &[(String, Vec<u8>)]) -> usize {
    map.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// The log lines one plugin may still emit this second.
#[derive(Debug)]
pub(crate) struct LogBudget {
    window: Mutex<(Instant, u32)>,
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget {
            window: Mutex::new((Instant::now(), 0)),
        }
    }
}

impl LogBudget {
    /// Whether one more line may go out now; a line refused is counted as dropped.
    pub(crate) fn allow(&self, plugin: &str) -> bool {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now.duration_since(window.0) >= Duration::from_secs(1) {
            *window = (now, 0);
        }
        if window.1 >= MAX_LOG_LINES_PER_SECOND {
            count(plugin, "log_lines");
            return false;
        }
        window.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_maps_are_bounded_by_count_and_bytes() {
        let none = (0, 0);
        assert!(header_map("p", (MAX_HEADER_PAIRS, MAX_HEADER_BYTES), none).is_ok());
        let err = header_map("p", (MAX_HEADER_PAIRS + 1, 10), none).expect_err("too many");
        let limit = err.downcast_ref::<LimitExceeded>().expect("typed");
        assert_eq!(limit.limit, "header_map");
        assert!(header_map("p", (1, MAX_HEADER_BYTES + 1), none).is_err());
        // Handed a larger map, a filter may keep or shrink it, not grow it.
        let big = (MAX_HEADER_PAIRS + 10, MAX_HEADER_BYTES + 10);
        assert!(header_map("p", big, big).is_ok());
        assert!(header_map("p", (big.0 - 1, big.1 - 5), big).is_ok());
        assert!(header_map("p", (big.0 + 1, big.1), big).is_err());
    }

    #[test]
    fn the_log_budget_refuses_lines_past_the_rate() {
        let budget = LogBudget::default();
        let started = Instant::now();
        let allowed = (0..MAX_LOG_LINES_PER_SECOND * 3)
            .filter(|_| budget.allow("p"))
            .count();
        // However long the loop took, each second's window let through at most the budget.
        let windows = started.elapsed().as_secs() as usize + 1;
        let max = MAX_LOG_LINES_PER_SECOND as usize;
        assert!(allowed >= max, "{allowed}");
        assert!(allowed <= max * windows, "{allowed} in {windows} windows");
    }
}
