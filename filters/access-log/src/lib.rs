//! `access-log`: one JSON line per request, written when the request ends (`proxy_on_log`)
//! through `proxy_log` at `info`, and optionally sent in batches (NDJSON) to an HTTP collector
//! cluster. Written with `wasmesh-sdk`.
//!
//! ```json
//! {
//!   "fields": ["start_time", "method", "path", "response_code", "duration", "request_id"],
//!   "custom_fields": { "user": "%REQ(x-user)%", "cluster": "%PROPERTY(cluster_name)%" },
//!   "collector": { "cluster": "logs", "path": "/ingest", "batch_size": 100, "flush_interval": "1s" }
//! }
//! ```
//!
//! Stream contexts build each line from what they kept as the request and response passed and
//! from the attributes the host answers at the end (`response.code`, `request.duration`,
//! `upstream.address`, …), and put it on a shared queue; the root context takes lines off the
//! queue (on `on_queue_ready` and on ticks) into a bounded buffer and POSTs them with
//! `dispatch_http_call`, one batch at a time, a full batch at once and a partial one every
//! `flush_interval`. Lines that do not fit are dropped and counted. The README has the fields,
//! their sources and the metrics.

mod batch;
mod config;
mod record;
mod template;

use std::cell::Cell;
use std::rc::Rc;
use std::time::SystemTime;

use wasmesh_sdk::metrics::{Counter, CounterFamily};
use wasmesh_sdk::proxy_wasm;
use wasmesh_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use wasmesh_sdk::proxy_wasm::types::{Action, ContextType, LogLevel};
use wasmesh_sdk::{config as sdk_config, headers, properties};

use batch::Batcher;
use config::{Collector, Config};
use record::{Attributes, Seen};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { plan: Rc::default(), queue: Rc::default(), batcher: None })
    });
}}

static LINES: Counter = Counter::new("access_log_lines_total");
static DROPPED: Counter = Counter::new("access_log_dropped_total");
static SENT: Counter = Counter::new("access_log_sent_lines_total");
static BATCHES: CounterFamily = CounterFamily::new("access_log_batches_total", &["result"]);

/// Counts `n` dropped lines.
fn dropped(n: usize) {
    if n > 0 {
        DROPPED.increment(n as u64);
    }
}

/// The configuration as streams use it.
#[derive(Default)]
struct Plan {
    config: Config,
    /// Request and response headers the custom fields read.
    request_reads: Vec<String>,
    response_reads: Vec<String>,
}

struct Root {
    plan: Rc<Plan>,
    /// The shared queue stream contexts put lines on (with a collector).
    queue: Rc<Cell<Option<u32>>>,
    batcher: Option<Batcher>,
}

impl Root {
    fn collector(&self) -> Option<&Collector> {
        self.plan.config.collector.as_ref()
    }

    /// Moves every line waiting on the shared queue into the buffer.
    fn drain(&mut self) {
        let (Some(queue), Some(batcher)) = (self.queue.get(), self.batcher.as_mut()) else {
            return;
        };
        while let Ok(Some(bytes)) = proxy_wasm::hostcalls::dequeue_shared_queue(queue) {
            let line = String::from_utf8_lossy(&bytes).into_owned();
            if !batcher.push(line) {
                dropped(1);
            }
        }
    }

    /// Sends the next batch if none is under way; with `full_only`, only a full one.
    fn flush(&mut self, full_only: bool) {
        let Some(collector) = self.collector().cloned() else {
            return;
        };
        let Some(batcher) = self.batcher.as_mut() else {
            return;
        };
        if full_only && !batcher.full_batch_ready() {
            return;
        }
        let Some(lines) = batcher.take() else {
            return;
        };
        let body = batch::ndjson(&lines);
        let authority = collector.authority.as_deref().unwrap_or(&collector.cluster);
        let sent = proxy_wasm::hostcalls::dispatch_http_call(
            &collector.cluster,
            vec![
                (":method", "POST"),
                (":path", &collector.path),
                (":authority", authority),
                ("content-type", "application/x-ndjson"),
            ],
            Some(&body),
            vec![],
            collector.timeout,
        );
        match sent {
            Ok(token) => batcher.sent(token, lines, SystemTime::now(), collector.timeout),
            Err(status) => {
                BATCHES.with(&["failed"]).increment(1);
                dropped(batcher.put_back(lines));
                wasmesh_sdk::log(
                    LogLevel::Warn,
                    &format!(
                        "cannot send to collector cluster {} ({status:?}); {} lines wait",
                        collector.cluster,
                        batcher.waiting()
                    ),
                );
            }
        }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _: usize, _: usize, _: usize) {
        let Some(batcher) = self.batcher.as_mut() else {
            return;
        };
        if !batcher.is_in_flight(token) {
            return; // an answer given up on, or from an earlier configuration
        }
        match headers::call_response().status() {
            Some(status) if (200..300).contains(&status) => {
                BATCHES.with(&["ok"]).increment(1);
                SENT.increment(batcher.delivered() as u64);
            }
            status => {
                BATCHES.with(&["failed"]).increment(1);
                dropped(batcher.failed());
                let why = status.map_or("no answer".to_string(), |s| format!("status {s}"));
                wasmesh_sdk::log(
                    LogLevel::Warn,
                    &format!(
                        "the collector refused a batch ({why}); {} lines wait to be sent again",
                        batcher.waiting()
                    ),
                );
            }
        }
        self.flush(true);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let configured = sdk_config::configure_with(|config: Config| {
            config.check()?;
            let mut request_reads: Vec<String> = Vec::new();
            let mut response_reads: Vec<String> = Vec::new();
            for template in config.custom_fields.values() {
                request_reads.extend(template.request_headers().map(str::to_string));
                response_reads.extend(template.response_headers().map(str::to_string));
            }
            request_reads.sort();
            request_reads.dedup();
            response_reads.sort();
            response_reads.dedup();
            self.batcher = config
                .collector
                .as_ref()
                .map(|c| Batcher::new(c.max_buffered, c.batch_size));
            self.plan = Rc::new(Plan {
                config,
                request_reads,
                response_reads,
            });
            Ok(())
        });
        if !configured {
            return false;
        }
        if let Some(collector) = self.collector().cloned() {
            // One queue per plugin name in the VM's namespace: every replica puts lines on
            // it, and whichever root context is told (or ticks) sends them.
            let name = format!(
                "access-log:{}",
                properties::plugin_name().unwrap_or_default()
            );
            match proxy_wasm::hostcalls::register_shared_queue(&name) {
                Ok(id) => self.queue.set(Some(id)),
                Err(status) => {
                    wasmesh_sdk::log(
                        LogLevel::Error,
                        &format!("cannot register the shared queue {name} ({status:?})"),
                    );
                    return false;
                }
            }
            // Ok or a panic inside the SDK; nothing to handle.
            let _ = proxy_wasm::hostcalls::set_tick_period(collector.flush_interval);
        }
        true
    }

    fn on_queue_ready(&mut self, _: u32) {
        self.drain();
        self.flush(true);
    }

    fn on_tick(&mut self) {
        self.drain();
        if let Some(batcher) = self.batcher.as_mut()
            && let Some(lost) = batcher.expire(SystemTime::now())
        {
            BATCHES.with(&["failed"]).increment(1);
            dropped(lost);
            wasmesh_sdk::log(
                LogLevel::Warn,
                "the collector did not answer a batch; it waits to be sent again",
            );
        }
        self.flush(false);
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(AccessLog {
            plan: self.plan.clone(),
            queue: self.queue.clone(),
            seen: Seen::default(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct AccessLog {
    plan: Rc<Plan>,
    queue: Rc<Cell<Option<u32>>>,
    seen: Seen,
}

impl Context for AccessLog {}

/// Attributes of the stream whose callback is running.
struct Host;

impl Attributes for Host {
    fn get(&self, path: &str) -> Option<Vec<u8>> {
        properties::get(path)
    }
}

impl HttpContext for AccessLog {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        // Kept now: hosts need not keep request headers readable until the log callback.
        let request = headers::request();
        self.seen.start = Some(SystemTime::now());
        self.seen.method = request.get(":method");
        self.seen.path = request.get(":path");
        self.seen.authority = request.get(":authority");
        self.seen.user_agent = request.get("user-agent");
        self.seen.x_forwarded_for = request.get("x-forwarded-for");
        self.seen.request_id = request.get("x-request-id");
        self.seen.request_headers = self
            .plan
            .request_reads
            .iter()
            .map(|name| (name.clone(), request.get(name)))
            .collect();
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let response = headers::response();
        self.seen.status = response.status();
        self.seen.response_headers = self
            .plan
            .response_reads
            .iter()
            .map(|name| (name.clone(), response.get(name)))
            .collect();
        Action::Continue
    }

    fn on_log(&mut self) {
        let config = &self.plan.config;
        let line = record::line(config, &self.seen, &Host, SystemTime::now());
        LINES.increment(1);
        if config.log {
            wasmesh_sdk::log(LogLevel::Info, &line);
        }
        if config.collector.is_some() {
            let queued = self.queue.get().is_some_and(|queue| {
                proxy_wasm::hostcalls::enqueue_shared_queue(queue, Some(line.as_bytes())).is_ok()
            });
            if !queued {
                dropped(1);
            }
        }
    }
}
