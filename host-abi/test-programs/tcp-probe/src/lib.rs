//! A network (TCP) filter written against the published `proxy-wasm` SDK, as an Envoy network
//! filter author would write one. What it does is chosen by words in its plugin configuration
//! (a plain string), so one module drives every network callback:
//!
//! - `upper`: upper-cases bytes from the client (`DOWNSTREAM_DATA` rewritten in place);
//! - `prefix`: puts `[up]` before every chunk from the upstream;
//! - `hold`: holds the client's bytes (returns `Pause`) until the client finishes sending;
//! - `close-on-bad`: closes the connection when the client sends `bad`;
//! - `wait`: holds each new connection until its next tick (10 ms), then continues it;
//! - always: counts connections and each close callback by side and peer type in metrics
//!   (`tcp_probe_connections`, `tcp_probe_closed_downstream_remote`, …), and copies the
//!   connection's `source.address` and `upstream.address` into shared data
//!   (`tcp_probe_source`, `tcp_probe_upstream`).

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType, PeerType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { words: Vec::new(), waiting: Rc::new(RefCell::new(Vec::new())) })
    });
}}

struct Root {
    words: Vec<String>,
    /// Connections held by `wait`, continued by the next tick.
    waiting: Rc<RefCell<Vec<u32>>>,
}

impl Context for Root {}

fn count(name: &str) {
    if let Ok(id) = hostcalls::define_metric(MetricType::Counter, name) {
        let _ = hostcalls::increment_metric(id, 1);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = self
            .get_plugin_configuration()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        self.words = config.split_whitespace().map(str::to_string).collect();
        if self.words.iter().any(|w| w == "wait") {
            self.set_tick_period(std::time::Duration::from_millis(10));
        }
        true
    }

    fn on_tick(&mut self) {
        for context in self.waiting.borrow_mut().drain(..) {
            if hostcalls::set_effective_context(context).is_ok() {
                let _ = hostcalls::resume_downstream();
            }
        }
    }

    fn create_stream_context(&self, context_id: u32) -> Option<Box<dyn StreamContext>> {
        let has = |w: &str| self.words.iter().any(|x| x == w);
        Some(Box::new(Connection {
            id: context_id,
            upper: has("upper"),
            prefix: has("prefix"),
            hold: has("hold"),
            close_on_bad: has("close-on-bad"),
            wait: has("wait"),
            waiting: self.waiting.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::StreamContext)
    }
}

struct Connection {
    id: u32,
    upper: bool,
    prefix: bool,
    hold: bool,
    close_on_bad: bool,
    wait: bool,
    waiting: Rc<RefCell<Vec<u32>>>,
}

impl Context for Connection {}

fn peer_name(peer: PeerType) -> &'static str {
    match peer {
        PeerType::Local => "local",
        PeerType::Remote => "remote",
        _ => "unknown",
    }
}

impl StreamContext for Connection {
    fn on_new_connection(&mut self) -> Action {
        count("tcp_probe_connections");
        if let Some(source) = self.get_property(vec!["source", "address"]) {
            let _ = self.set_shared_data("tcp_probe_source", Some(&source), None);
        }
        if self.wait {
            self.waiting.borrow_mut().push(self.id);
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_downstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        if let Some(upstream) = self.get_property(vec!["upstream", "address"]) {
            let _ = self.set_shared_data("tcp_probe_upstream", Some(&upstream), None);
        }
        let data = self.get_downstream_data(0, data_size).unwrap_or_default();
        if self.close_on_bad && data.windows(3).any(|w| w == b"bad") {
            self.close_downstream();
            return Action::Continue;
        }
        if self.hold && !end_of_stream {
            return Action::Pause;
        }
        if self.upper && !data.is_empty() {
            self.set_downstream_data(0, data_size, &data.to_ascii_uppercase());
        }
        Action::Continue
    }

    fn on_upstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        if self.prefix && data_size > 0 {
            self.set_upstream_data(0, 0, b"[up]");
        }
        Action::Continue
    }

    fn on_downstream_close(&mut self, peer: PeerType) {
        count(&format!("tcp_probe_closed_downstream_{}", peer_name(peer)));
    }

    fn on_upstream_close(&mut self, peer: PeerType) {
        count(&format!("tcp_probe_closed_upstream_{}", peer_name(peer)));
    }
}
