//! The root context's side of collector delivery: lines waiting in a bounded buffer, at most
//! one batch under way, a failed batch put back in front to be sent again. Lines that do not
//! fit are dropped (the caller counts them); nothing here blocks or grows without bound.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

/// How long after its timeout an unanswered batch counts as failed.
const GRACE: Duration = Duration::from_secs(1);

struct InFlight {
    token: u32,
    lines: Vec<String>,
    lost_at: SystemTime,
}

pub struct Batcher {
    buffer: VecDeque<String>,
    max_buffered: usize,
    batch_size: usize,
    in_flight: Option<InFlight>,
}

impl Batcher {
    pub fn new(max_buffered: usize, batch_size: usize) -> Batcher {
        Batcher {
            buffer: VecDeque::new(),
            max_buffered,
            batch_size,
            in_flight: None,
        }
    }

    /// Adds a line; `false` if the buffer is full and the line was dropped.
    pub fn push(&mut self, line: String) -> bool {
        if self.buffer.len() >= self.max_buffered {
            return false;
        }
        self.buffer.push_back(line);
        true
    }

    /// Lines waiting (not counting a batch under way).
    pub fn waiting(&self) -> usize {
        self.buffer.len()
    }

    /// Whether a full batch waits and none is under way.
    pub fn full_batch_ready(&self) -> bool {
        self.in_flight.is_none() && self.buffer.len() >= self.batch_size
    }

    /// The next batch (oldest lines first), if none is under way and any line waits.
    pub fn take(&mut self) -> Option<Vec<String>> {
        if self.in_flight.is_some() || self.buffer.is_empty() {
            return None;
        }
        let n = self.batch_size.min(self.buffer.len());
        Some(self.buffer.drain(..n).collect())
    }

    /// `lines` went out as callout `token` at `now`, with `timeout`.
    pub fn sent(&mut self, token: u32, lines: Vec<String>, now: SystemTime, timeout: Duration) {
        self.in_flight = Some(InFlight {
            token,
            lines,
            lost_at: now + timeout + GRACE,
        });
    }

    /// Whether `token` is the batch under way.
    pub fn is_in_flight(&self, token: u32) -> bool {
        self.in_flight.as_ref().is_some_and(|f| f.token == token)
    }

    /// The batch under way was delivered: how many lines it had.
    pub fn delivered(&mut self) -> usize {
        self.in_flight.take().map_or(0, |f| f.lines.len())
    }

    /// The batch under way failed: its lines go back in front, as many as fit (the oldest
    /// are dropped first); says how many were dropped.
    pub fn failed(&mut self) -> usize {
        match self.in_flight.take() {
            Some(f) => self.put_back(f.lines),
            None => 0,
        }
    }

    /// A batch that could not even be sent goes back in front; says how many lines were
    /// dropped.
    pub fn put_back(&mut self, lines: Vec<String>) -> usize {
        let room = self.max_buffered.saturating_sub(self.buffer.len());
        let dropped = lines.len().saturating_sub(room);
        for line in lines.into_iter().skip(dropped).rev() {
            self.buffer.push_front(line);
        }
        dropped
    }

    /// Gives up on a batch whose answer is overdue (as [`Batcher::failed`]); `None` if none
    /// was, else how many lines were dropped.
    pub fn expire(&mut self, now: SystemTime) -> Option<usize> {
        match &self.in_flight {
            Some(f) if now >= f.lost_at => Some(self.failed()),
            _ => None,
        }
    }
}

/// A batch as the collector receives it: NDJSON, one line each, newline-terminated.
pub fn ndjson(lines: &[String]) -> Vec<u8> {
    let mut body = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        body.extend_from_slice(line.as_bytes());
        body.push(b'\n');
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(range: std::ops::Range<u32>) -> Vec<String> {
        range.map(|i| i.to_string()).collect()
    }

    #[test]
    fn batches_in_order_one_at_a_time() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut b = Batcher::new(10, 3);
        for line in lines(0..4) {
            assert!(b.push(line));
        }
        assert!(b.full_batch_ready());
        let first = b.take().expect("a batch");
        assert_eq!(first, ["0", "1", "2"]);
        b.sent(1, first, t0, Duration::from_secs(5));
        assert!(b.take().is_none(), "one batch under way at a time");
        assert!(!b.full_batch_ready());
        assert!(b.is_in_flight(1) && !b.is_in_flight(2));
        assert_eq!(b.delivered(), 3);
        assert_eq!(b.take().expect("the rest"), ["3"]);
        assert!(b.take().is_none(), "nothing waits");
        assert_eq!(ndjson(&lines(0..2)), b"0\n1\n");
    }

    #[test]
    fn the_buffer_is_bounded_and_failed_batches_come_back_first() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut b = Batcher::new(4, 2);
        for line in lines(0..4) {
            assert!(b.push(line));
        }
        assert!(!b.push("4".into()), "full");
        let batch = b.take().expect("batch");
        b.sent(7, batch, t0, Duration::from_secs(1));
        assert!(b.push("5".into()) && b.push("6".into()));
        assert!(!b.push("7".into()));
        assert_eq!(b.failed(), 2, "no room to put the failed batch back");
        assert_eq!(b.waiting(), 4);
        assert_eq!(b.take().expect("batch"), ["2", "3"]);

        let mut b = Batcher::new(4, 2);
        for line in lines(0..3) {
            b.push(line);
        }
        let batch = b.take().expect("batch");
        b.sent(8, batch, t0, Duration::from_secs(1));
        assert_eq!(
            b.expire(t0 + Duration::from_secs(1)),
            None,
            "not overdue yet"
        );
        assert_eq!(b.expire(t0 + Duration::from_secs(2)), Some(0), "put back");
        assert_eq!(
            b.take().expect("batch"),
            ["0", "1"],
            "the failed lines first"
        );
        assert_eq!(b.put_back(lines(10..14)), 1, "three fit beside \"2\"");
        assert_eq!(
            b.take().expect("batch"),
            ["11", "12"],
            "the oldest was dropped"
        );
    }
}
