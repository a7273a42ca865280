//! A probe filter written against the published `proxy-wasm` SDK, the way an Envoy filter
//! author would. What it does is chosen per request by headers, so the tests can drive each
//! host function through one module:
//!
//! - always: adds `x-probe-config: <plugin config>` to the request and `x-probe: response` to
//!   the response, removes request header `x-remove-me`, counts requests in shared data (the
//!   count is echoed in `x-probe-count`), bumps the `probe_requests` counter metric, and logs;
//! - `:path` `/local`: answers 418 itself with header `x-local: yes` and body `local reply`;
//! - `x-probe-property: NAME`: copies property NAME (dot-separated) into `x-property`;
//! - `x-probe-trap`: panics (a trap); `x-probe-loop`: spins forever; `x-probe-grow`: allocates
//!   until memory runs out;
//! - plugin config `tick`: a 10 ms tick counts `probe_ticks` in shared data, echoed in
//!   `x-probe-ticks`;
//! - `x-probe-body`: buffers the whole request body and upper-cases it, and appends
//!   ` [probed]` to the whole response body;
//! - `x-probe-callout: PATH`: pauses, calls cluster `backend` at PATH, and on a 200 resumes
//!   with the answer's body in `x-callout-body`, otherwise answers 403 `denied`;
//! - `x-probe-enqueue: MSG`: puts MSG on the `probe` shared queue; the root context, told by
//!   `proxy_on_queue_ready`, dequeues it into shared data, echoed in `x-probe-last`;
//!   `x-probe-publish: MSG` puts MSG on the `probe-out` queue, which the probe never reads;
//! - `x-probe-callout-body: B`: the callout (above) carries body B;
//! - `x-probe-time`: sets `x-time-proxy` (`proxy_get_current_time_nanoseconds`), `x-time-wasi`
//!   (WASI's realtime clock) in nanoseconds since the epoch, and `x-elapsed-ms` (WASI's
//!   monotonic clock, since `on_configure`);
//! - `:path` `/grpc-local`: answers with gRPC status 7 (permission denied), message `denied`;
//! - always: echoes a VM configuration in `x-probe-vm-config`, and adds trailer
//!   `x-probe-trailer` to request (`request`) and response (`response`) trailers;
//! - plugin config `reject`: logs why and fails `on_configure`; any config: prints
//!   `probe configured` to stdout;
//! - `x-probe-set-property: a.b=v;c.d=w`: sets those properties (filter state) for later
//!   filters and the router;
//! - `x-probe-body-deny: WORD`: buffers the request body and answers 403 `body denied` (header
//!   `x-probe-denied: body`) from the body callback when WORD is in it;
//!   `x-probe-body-trailer`: adds request trailer `x-probe-added: body` at the end of the body;
//! - `x-probe-hold: CODE`: pauses the request; the next tick answers every held request with
//!   its own CODE (body `held CODE`, header `x-held-context`);
//! - `x-probe-set-tick: MS`: sets the tick period from a stream (0 stops the timer);
//! - plugin config `callout-on-configure`: `on_configure` calls cluster `backend` at `/config`
//!   and keeps the answer's body in shared data `probe_configure_callout`;
//! - every request gets `x-probe-vm-requests`: how many requests this VM instance (replica)
//!   has seen, kept in the VM's own memory rather than shared data;
//! - a root context's `on_done` counts `probe_root_done` in shared data, echoed in
//!   `x-probe-root-done`;
//! - `x-probe-log-properties: a.b,c.d`: in `on_log`, reads those properties and keeps them in
//!   shared data as `name=hex(value)` lines (absent ones as `name=-`); a later request with
//!   `x-probe-logged` gets them in `x-probe-logged`, `;`-separated;
//! - `x-probe-log-drop-trailers: NAME`: in `on_log`, after those reads, sets the response
//!   trailers to none and reads trailer NAME again, logged as `dropped.NAME=` (`-` if gone);
//! - `x-probe-reset: headers|body|response`: closes the stream (`reset_http_request`, or
//!   `reset_http_response`) in the request headers, at the end of the request body, or in the
//!   response headers;
//! - `x-probe-deny-response: CODE`: answers CODE (body `denied`) from its response headers
//!   callback, in place of the upstream's answer;
//! - `x-probe-body-callout: PATH`: buffers the whole request body and, at its end, pauses and
//!   POSTs it to cluster `backend` at PATH; a 200's body replaces the request body and resumes
//!   it, anything else answers 403 `denied`. A request with trailers is held in its trailers
//!   callback instead: the callout carries the body it buffered (also echoed in request
//!   trailer `x-held-body`), and a 200's body replaces the request body and goes on as
//!   request trailer `x-callout`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, GrpcStatusCode, LogLevel, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(ProbeRoot {
            config: String::new(),
            vm_config: String::new(),
            metric: Cell::new(None),
            queue: None,
            configured_at: None,
            held: Rc::new(RefCell::new(Vec::new())),
        })
    });
}}

struct ProbeRoot {
    config: String,
    vm_config: String,
    metric: Cell<Option<u32>>,
    queue: Option<u32>,
    configured_at: Option<Instant>,
    /// Streams held by `x-probe-hold` (context id, status to answer with), answered by the
    /// next tick.
    held: Rc<RefCell<Vec<(u32, u32)>>>,
}

impl Context for ProbeRoot {
    /// Counted in shared data (`probe_root_done`, echoed in `x-probe-root-done`), so a test
    /// can see a retired plugin's root contexts being ended.
    fn on_done(&mut self) -> bool {
        bump("probe_root_done");
        true
    }

    fn on_http_call_response(&mut self, _token: u32, _headers: usize, body_size: usize, _: usize) {
        // The callout `on_configure` sent (`callout-on-configure`).
        if let Some(body) = self.get_http_call_response_body(0, body_size) {
            let _ = proxy_wasm::hostcalls::set_shared_data(
                "probe_configure_callout",
                Some(&body),
                None,
            );
        }
    }
}

thread_local! {
    /// Requests this VM instance has seen (a Wasm module is single-threaded: one per replica).
    static VM_REQUESTS: Cell<u64> = const { Cell::new(0) };
}

fn bump(key: &str) {
    use proxy_wasm::hostcalls::{get_shared_data, set_shared_data};
    loop {
        let Ok((value, cas)) = get_shared_data(key) else {
            return;
        };
        let n = value
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        if set_shared_data(key, Some(n.to_string().as_bytes()), cas).is_ok() {
            return;
        }
    }
}

impl RootContext for ProbeRoot {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        self.vm_config = self
            .get_vm_configuration()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        true
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self
            .get_plugin_configuration()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if config == "reject" {
            proxy_wasm::hostcalls::log(LogLevel::Warn, "probe: configuration \"reject\" refused")
                .ok();
            return false;
        }
        println!("probe configured");
        if config == "tick" {
            self.set_tick_period(std::time::Duration::from_millis(10));
        }
        if config == "callout-on-configure" {
            let _ = self.dispatch_http_call(
                "backend",
                vec![
                    (":method", "GET"),
                    (":path", "/config"),
                    (":authority", "backend"),
                ],
                None,
                vec![],
                std::time::Duration::from_secs(5),
            );
        }
        self.configured_at = Some(Instant::now());
        self.queue = proxy_wasm::hostcalls::register_shared_queue("probe").ok();
        let _ = proxy_wasm::hostcalls::register_shared_queue("probe-out");
        self.config = config;
        if let Ok(id) = proxy_wasm::hostcalls::define_metric(MetricType::Counter, "probe_requests")
        {
            self.metric.set(Some(id));
        }
        true
    }

    fn on_tick(&mut self) {
        bump("probe_ticks");
        // Answer every held stream, each with its own status: switching from one paused
        // stream to the next in one root callback.
        for (context, code) in self.held.borrow_mut().drain(..) {
            if proxy_wasm::hostcalls::set_effective_context(context).is_ok() {
                let body = format!("held {code}");
                let id = context.to_string();
                let _ = proxy_wasm::hostcalls::send_http_response(
                    code,
                    vec![("x-held-context", id.as_str())],
                    Some(body.as_bytes()),
                );
            }
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        if Some(queue_id) != self.queue {
            return;
        }
        while let Ok(Some(message)) = proxy_wasm::hostcalls::dequeue_shared_queue(queue_id) {
            let _ = proxy_wasm::hostcalls::set_shared_data("probe_last", Some(&message), None);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe {
            context_id,
            config: self.config.clone(),
            vm_config: self.vm_config.clone(),
            metric: self.metric.get(),
            body: false,
            configured_at: self.configured_at,
            held: self.held.clone(),
            log_properties: Vec::new(),
            drop_trailer: None,
            deny_word: None,
            body_trailer: false,
            reset: None,
            body_callout: None,
            callout_at: None,
            body_size: 0,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Probe {
    context_id: u32,
    config: String,
    vm_config: String,
    metric: Option<u32>,
    body: bool,
    configured_at: Option<Instant>,
    held: Rc<RefCell<Vec<(u32, u32)>>>,
    /// Properties to read in `on_log` (`x-probe-log-properties`).
    log_properties: Vec<String>,
    /// A response trailer to read again after dropping them all in `on_log`
    /// (`x-probe-log-drop-trailers`).
    drop_trailer: Option<String>,
    /// `x-probe-body-deny`: a word that, found in the request body, gets a local 403.
    deny_word: Option<String>,
    /// `x-probe-body-trailer`: add a request trailer at the end of the body.
    body_trailer: bool,
    /// `x-probe-reset`: where to close the stream (`headers`, `body`, `response`).
    reset: Option<String>,
    /// `x-probe-body-callout`: where to send the request body.
    body_callout: Option<String>,
    /// Which callback a pending callout paused (`body`, `trailers`; the headers otherwise).
    callout_at: Option<&'static str>,
    /// The request body's size when the body callout was made.
    body_size: usize,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos().to_string())
        .unwrap_or_default()
}

impl Context for Probe {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let status = self.get_http_call_response_header(":status");
        if status.as_deref() == Some("200") {
            let body = self
                .get_http_call_response_body(0, body_size)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            match self.callout_at {
                Some("body") => self.set_http_request_body(0, self.body_size, body.as_bytes()),
                Some("trailers") => {
                    self.add_http_request_trailer("x-callout", &body);
                    self.set_http_request_body(0, self.body_size, body.as_bytes());
                }
                _ => self.set_http_request_header("x-callout-body", Some(&body)),
            }
            self.resume_http_request();
        } else {
            self.send_http_response(403, vec![("x-denied-by", "probe")], Some(b"denied"));
        }
    }
}

impl Probe {
    /// POSTs `body` to cluster `backend` at `path` and pauses the stream in callback `at`
    /// until the answer comes.
    fn call_out(&mut self, path: &str, body: Option<&[u8]>, at: &'static str) -> Action {
        let dispatched = self.dispatch_http_call(
            "backend",
            vec![(":method", "POST"), (":path", path), (":authority", "auth")],
            body,
            vec![],
            std::time::Duration::from_secs(5),
        );
        if dispatched.is_err() {
            self.send_http_response(500, vec![], Some(b"dispatch failed"));
        }
        self.callout_at = Some(at);
        Action::Pause
    }

    fn count(&self) -> u64 {
        // Compare-and-swap loop: concurrent replicas of the same vm_id share this key.
        loop {
            let (value, cas) = self.get_shared_data("probe_count");
            let n = value
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            if self
                .set_shared_data("probe_count", Some(n.to_string().as_bytes()), cas)
                .is_ok()
            {
                return n;
            }
        }
    }
}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.get_http_request_header("x-probe-trap").is_some() {
            panic!("probe asked to trap");
        }
        if self.get_http_request_header("x-probe-loop").is_some() {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        self.reset = self.get_http_request_header("x-probe-reset");
        self.body_callout = self.get_http_request_header("x-probe-body-callout");
        if self.reset.as_deref() == Some("headers") {
            self.reset_http_request();
            return Action::Pause;
        }
        if self.get_http_request_header("x-probe-grow").is_some() {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        if let Some(id) = self.metric {
            let _ = proxy_wasm::hostcalls::increment_metric(id, 1);
        }
        self.body = self.get_http_request_header("x-probe-body").is_some();
        let n = self.count();
        VM_REQUESTS.set(VM_REQUESTS.get() + 1);
        self.set_http_request_header("x-probe-vm-requests", Some(&VM_REQUESTS.get().to_string()));
        proxy_wasm::hostcalls::log(LogLevel::Info, &format!("probe request {n}")).ok();
        // Read before any local answer, so `on_log` can report on answered requests too.
        if let Some(names) = self.get_http_request_header("x-probe-log-properties") {
            self.log_properties = names.split(',').map(str::to_string).collect();
        }
        self.drop_trailer = self.get_http_request_header("x-probe-log-drop-trailers");
        if self.get_http_request_header(":path").as_deref() == Some("/local") {
            // With a wrong length: the host frames a local reply by its body, as Envoy does.
            self.send_http_response(
                418,
                vec![("x-local", "yes"), ("content-length", "2")],
                Some(b"local reply"),
            );
            return Action::Pause;
        }
        if self.get_http_request_header(":path").as_deref() == Some("/grpc-local") {
            self.send_grpc_response(
                GrpcStatusCode::PermissionDenied,
                Some("denied"),
                vec![("x-grpc-local", b"yes")],
            );
            return Action::Pause;
        }
        if let Some(path) = self.get_http_request_header("x-probe-callout") {
            let body = self.get_http_request_header("x-probe-callout-body");
            let dispatched = self.dispatch_http_call(
                "backend",
                vec![(":method", "GET"), (":path", &path), (":authority", "auth")],
                body.as_deref().map(str::as_bytes),
                vec![],
                std::time::Duration::from_secs(5),
            );
            if dispatched.is_ok() {
                return Action::Pause;
            }
            self.send_http_response(500, vec![], Some(b"dispatch failed"));
            return Action::Pause;
        }
        if let Some(name) = self.get_http_request_header("x-probe-property") {
            let path: Vec<&str> = name.split('.').collect();
            if let Some(value) = self.get_property(path) {
                self.set_http_request_header("x-property", Some(&String::from_utf8_lossy(&value)));
            }
        }
        if let Some(message) = self.get_http_request_header("x-probe-enqueue")
            && let Ok(Some(queue)) =
                proxy_wasm::hostcalls::resolve_shared_queue("probe-vm", "probe")
        {
            let _ = self.enqueue_shared_queue(queue, Some(message.as_bytes()));
        }
        if let Some(message) = self.get_http_request_header("x-probe-publish") {
            let vm = self
                .get_property(vec!["plugin_vm_id"])
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default();
            if let Ok(Some(queue)) = proxy_wasm::hostcalls::resolve_shared_queue(&vm, "probe-out") {
                let _ = self.enqueue_shared_queue(queue, Some(message.as_bytes()));
            }
        }
        if self.get_http_request_header("x-probe-time").is_some() {
            self.set_http_request_header("x-time-proxy", Some(&nanos(self.get_current_time())));
            self.set_http_request_header("x-time-wasi", Some(&nanos(SystemTime::now())));
            if let Some(at) = self.configured_at {
                let elapsed = at.elapsed().as_millis().to_string();
                self.set_http_request_header("x-elapsed-ms", Some(&elapsed));
            }
        }
        if !self.vm_config.is_empty() {
            self.set_http_request_header("x-probe-vm-config", Some(&self.vm_config));
        }
        for (key, header) in [
            ("probe_ticks", "x-probe-ticks"),
            ("probe_last", "x-probe-last"),
            ("probe_root_done", "x-probe-root-done"),
        ] {
            if let (Some(value), _) = self.get_shared_data(key) {
                self.set_http_request_header(header, Some(&String::from_utf8_lossy(&value)));
            }
        }
        if let Some(ms) = self
            .get_http_request_header("x-probe-set-tick")
            .and_then(|v| v.parse::<u64>().ok())
        {
            let _ = proxy_wasm::hostcalls::set_tick_period(std::time::Duration::from_millis(ms));
        }
        if let Some(code) = self
            .get_http_request_header("x-probe-hold")
            .and_then(|v| v.parse::<u32>().ok())
        {
            self.held.borrow_mut().push((self.context_id, code));
            return Action::Pause;
        }
        if let Some(assignments) = self.get_http_request_header("x-probe-set-property") {
            for assignment in assignments.split(';') {
                if let Some((key, value)) = assignment.split_once('=') {
                    self.set_property(key.trim().split('.').collect(), Some(value.as_bytes()));
                }
            }
        }
        self.deny_word = self.get_http_request_header("x-probe-body-deny");
        self.body_trailer = self
            .get_http_request_header("x-probe-body-trailer")
            .is_some();
        if self.get_http_request_header("x-probe-logged").is_some() {
            let logged = self
                .get_shared_data("probe_logged")
                .0
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default();
            self.set_http_request_header("x-probe-logged", Some(&logged));
        }
        self.set_http_request_header("x-probe-config", Some(&self.config));
        self.set_http_request_header("x-remove-me", None);
        self.set_http_request_header("x-probe-count", Some(&n.to_string()));
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.reset.as_deref() == Some("body") {
            if end_of_stream {
                self.reset_http_request();
            }
            return Action::Pause;
        }
        if let Some(path) = self.body_callout.clone() {
            if !end_of_stream {
                return Action::Pause;
            }
            let body = self.get_http_request_body(0, body_size).unwrap_or_default();
            self.body_size = body_size;
            return self.call_out(&path, Some(&body), "body");
        }
        if let Some(word) = self.deny_word.clone() {
            if !end_of_stream {
                return Action::Pause;
            }
            let body = self.get_http_request_body(0, body_size).unwrap_or_default();
            if body
                .windows(word.len().max(1))
                .any(|w| w == word.as_bytes())
            {
                self.send_http_response(
                    403,
                    vec![("x-probe-denied", "body")],
                    Some(b"body denied"),
                );
                return Action::Pause;
            }
            return Action::Continue;
        }
        if self.body_trailer && end_of_stream {
            self.add_http_request_trailer("x-probe-added", "body");
        }
        if !self.body {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        if let Some(body) = self.get_http_request_body(0, body_size) {
            self.set_http_request_body(0, body_size, &body.to_ascii_uppercase());
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.add_http_request_trailer("x-probe-trailer", "request");
        if let Some(path) = self.body_callout.clone() {
            let body = self.get_http_request_body(0, 1 << 20).unwrap_or_default();
            self.body_size = body.len();
            self.add_http_request_trailer("x-held-body", &String::from_utf8_lossy(&body));
            return self.call_out(&path, Some(&body), "trailers");
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.add_http_response_trailer("x-probe-trailer", "response");
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(code) = self
            .get_http_request_header("x-probe-deny-response")
            .and_then(|c| c.parse::<u32>().ok())
        {
            self.send_http_response(code, vec![("x-denied-by", "probe")], Some(b"denied"));
            return Action::Pause;
        }
        if self.reset.as_deref() == Some("response") {
            self.reset_http_response();
            return Action::Continue;
        }
        self.add_http_response_header("x-probe", "response");
        Action::Continue
    }

    fn on_log(&mut self) {
        if self.log_properties.is_empty() {
            return;
        }
        let mut lines: Vec<String> = self
            .log_properties
            .iter()
            .map(|name| {
                let value = self
                    .get_property(name.split('.').collect())
                    .map_or_else(|| "-".to_string(), |v| hex(&v));
                format!("{name}={value}")
            })
            .collect();
        if let Some(name) = self.drop_trailer.take() {
            self.set_http_response_trailers(Vec::new());
            let again = self
                .get_http_response_trailer(&name)
                .map_or_else(|| "-".to_string(), |v| hex(v.as_bytes()));
            lines.push(format!("dropped.{name}={again}"));
        }
        let _ = self.set_shared_data("probe_logged", Some(lines.join(";").as_bytes()), None);
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.body {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.set_http_response_body(body_size, 0, b" [probed]");
        Action::Continue
    }
}
