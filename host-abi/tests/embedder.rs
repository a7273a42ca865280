//! The embedder boundary beyond callouts: an embedder's [`Services`] receives the filter's log
//! lines (`proxy_log` and stdout), sets the clocks it reads, turns off the host's own tick
//! timers and fires ticks itself, runs deferred queue notifications when it chooses, and
//! answers callouts on its own thread; a paused stream can be read without being taken back.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmesh_host::{
    Action, CalloutDone, CalloutError, CalloutRequest, CalloutResponse, Deferred, Host, HostConfig,
    LogLevel, PluginConfig, Services, StreamEnv,
};

#[derive(Default)]
struct Recorder {
    logs: Mutex<Vec<(String, LogLevel, String)>>,
    deferred: Mutex<Vec<Deferred>>,
    callouts: Mutex<Vec<CalloutDone>>,
}

impl Services for Recorder {
    fn http_call(&self, _: CalloutRequest, done: CalloutDone) -> Result<(), CalloutError> {
        self.callouts.lock().expect("lock").push(done);
        Ok(())
    }
    fn log(&self, plugin: &str, level: LogLevel, message: &str) {
        self.logs
            .lock()
            .expect("lock")
            .push((plugin.into(), level, message.into()));
    }
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000)
    }
    fn monotonic(&self) -> Duration {
        Duration::from_secs(5)
    }
    fn automatic_ticks(&self) -> bool {
        false
    }
    fn spawn(&self, work: Deferred) {
        self.deferred.lock().expect("lock").push(work);
    }
}

struct NoEnv;
impl StreamEnv for NoEnv {
    fn property(&self, _: &[&str]) -> Option<Vec<u8>> {
        None
    }
}

fn header(map: &[(String, Vec<u8>)], name: &str) -> Option<String> {
    map.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// The probe on one replica of a host whose services are a [`Recorder`], with `configure`
/// applied to its plugin configuration.
fn probe(
    configure: impl FnOnce(&mut PluginConfig),
) -> (Arc<Host>, Arc<Recorder>, Arc<wasmesh_host::Plugin>) {
    let host = Host::new(HostConfig::default()).expect("host");
    let services = Arc::new(Recorder::default());
    host.set_services(services.clone());
    let wasm = std::fs::read(wasmesh_test_programs::PROBE_WASM).expect("probe built");
    let mut config = PluginConfig::new("probe");
    config.replicas = 1;
    configure(&mut config);
    let plugin = host.load_plugin(config, &wasm).expect("load");
    (host, services, plugin)
}

#[test]
fn an_embedder_drives_logs_time_ticks_queues_and_callouts() {
    let (host, services, plugin) = probe(|config| {
        config.plugin_config = b"tick".to_vec();
        config.vm_id = "probe-vm".into();
    });

    // Logs: stdout from on_configure, proxy_log from a request.
    let mut s = plugin.http_stream(Arc::new(NoEnv)).expect("stream");
    s.data.request_headers = vec![
        (":path".into(), b"/".to_vec()),
        ("x-probe-time".into(), b"1".to_vec()),
    ];
    assert_eq!(s.on_request_headers(true), Ok(Action::Continue));
    let logs = services.logs.lock().expect("lock").clone();
    assert!(logs.contains(&("probe".into(), LogLevel::Info, "probe configured".into())));
    assert!(logs.contains(&("probe".into(), LogLevel::Info, "probe request 1".into())));
    // Time: both clocks from the embedder (no time passes between configure and request).
    let h = &s.data.request_headers;
    assert_eq!(header(h, "x-time-proxy").as_deref(), Some("1000000000000"));
    assert_eq!(header(h, "x-time-wasi").as_deref(), Some("1000000000000"));
    assert_eq!(header(h, "x-elapsed-ms").as_deref(), Some("0"));
    drop(s);

    // Ticks: only when fired.
    assert_eq!(plugin.tick_period(), Some(Duration::from_millis(10)));
    assert_eq!(host.shared_data("probe-vm", "probe_ticks"), None);
    assert_eq!(plugin.tick(), Ok(1));
    assert_eq!(
        host.shared_data("probe-vm", "probe_ticks").map(|(v, _)| v),
        Some(b"1".to_vec())
    );

    // Queues: the notification waits for the embedder.
    host.enqueue_shared_queue("probe-vm", "probe", b"hi".to_vec())
        .expect("enqueue");
    assert_eq!(host.shared_data("probe-vm", "probe_last"), None);
    let work: Vec<Deferred> = services.deferred.lock().expect("lock").drain(..).collect();
    assert_eq!(work.len(), 1);
    work.into_iter().for_each(|w| w());
    assert_eq!(
        host.shared_data("probe-vm", "probe_last").map(|(v, _)| v),
        Some(b"hi".to_vec())
    );
    assert!(
        host.enqueue_shared_queue("probe-vm", "nope", Vec::new())
            .is_err()
    );
    host.set_shared_data("probe-vm", "k", b"v".to_vec(), 0)
        .expect("set");
    let (_, cas) = host.shared_data("probe-vm", "k").expect("get");
    assert!(
        host.set_shared_data("probe-vm", "k", b"w".to_vec(), cas + 1)
            .is_err()
    );

    // Callouts: a paused stream is readable where it is, and resumed on this thread.
    let mut s = plugin.http_stream(Arc::new(NoEnv)).expect("stream");
    s.data.request_headers = vec![
        (":path".into(), b"/".to_vec()),
        ("x-probe-callout".into(), b"/auth".to_vec()),
    ];
    assert_eq!(s.on_request_headers(true), Ok(Action::Pause));
    assert!(s.is_paused());
    assert_eq!(
        s.peek(|d| header(&d.request_headers, "x-probe-callout")),
        Some("/auth".into())
    );
    assert_eq!(s.resume_count(), 0);
    answer(&services, b"ok");
    assert_eq!(s.resume_count(), 1);
    assert_eq!(
        s.peek(|d| header(&d.request_headers, "x-callout-body")),
        Some("ok".into())
    );
}

/// Whether `waiter` has a resumption for it now, without waiting.
fn resumed_now(waiter: &wasmesh_host::ResumeWaiter) -> bool {
    let wait = waiter.wait();
    let mut wait = std::pin::pin!(wait);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::future::Future::poll(wait.as_mut(), &mut cx).is_ready()
}

fn answer(services: &Recorder, body: &[u8]) {
    let done = services.callouts.lock().expect("lock").pop().expect("one");
    done.complete_now(Some(CalloutResponse {
        headers: vec![(":status".into(), b"200".to_vec())],
        body: body.to_vec(),
        trailers: Vec::new(),
    }));
}

/// A pause is ended by a resumption made after it, not by one the filter made earlier while
/// nothing waited (here: the header phase's resumption, which the embedder never waited for),
/// and a body paused at its end stays with the VM, where the callout's answer edits it.
#[test]
fn a_pause_ends_with_a_resumption_after_it_not_an_earlier_one() {
    let (_host, services, plugin) = probe(|_| {});
    let mut s = plugin.http_stream(Arc::new(NoEnv)).expect("stream");
    s.data.request_headers = vec![
        (":path".into(), b"/".to_vec()),
        ("x-probe-callout".into(), b"/auth".to_vec()),
        ("x-probe-body-callout".into(), b"/check".to_vec()),
    ];
    assert_eq!(s.on_request_headers(false), Ok(Action::Pause));
    answer(&services, b"ok");
    assert_eq!(s.resume_count(), 1);
    s.unpark();

    s.data.request_body = b"payload".to_vec();
    assert_eq!(s.on_request_body(true), Ok(Action::Pause));
    assert!(s.is_paused(), "the body waits with the VM");
    let waiter = s.resume_waiter();
    assert!(
        !resumed_now(&waiter),
        "the header phase's resumption does not count"
    );
    answer(&services, b"checked");
    assert!(resumed_now(&waiter));
    s.unpark();
    assert_eq!(s.data.request_body, b"checked");
}
