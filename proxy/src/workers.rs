//! The data plane's threads: `concurrency` workers, each running a single-threaded tokio
//! runtime with its own accept socket per listener (`SO_REUSEPORT`: the kernel spreads new
//! connections across them). A connection lives on the worker that accepted it, so its
//! requests never pay for a work-stealing scheduler's cross-thread handoffs; the control plane
//! (admin API, reloads, health checks, tag following) runs on the main thread's runtime.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;

/// How many workers to run when none is configured: one per available core.
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

thread_local! {
    /// The index of the worker this thread is, if it is one.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker running the caller (`None` off the workers, e.g. on the control
/// plane). Each worker runs its streams on its own VM replica of every plugin, as Envoy runs
/// one VM per worker thread: no worker waits on another's filter.
pub fn current() -> Option<usize> {
    WORKER.with(Cell::get)
}

/// How many workers the proxy runs (0 until one has started): plugins are built with one VM
/// replica per worker. One proxy per process, so process-wide.
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Records how many workers the proxy is about to run, before its filters are loaded.
pub fn set_count(concurrency: usize) {
    COUNT.store(concurrency.max(1), Ordering::Relaxed);
}

/// How many VM replicas each plugin gets: one per worker.
pub fn replicas() -> usize {
    match COUNT.load(Ordering::Relaxed) {
        0 => default_concurrency(),
        n => n,
    }
}

/// How often a worker's watchdog ticks.
const WATCHDOG_TICK: Duration = Duration::from_millis(250);

/// Measures how late the worker's event loop runs a timer, as Envoy's watchdog does: a worker
/// stuck in one task (a filter spinning up to its deadline, a blocking call) delays every
/// connection it holds, and shows here as `wasmesh_worker_loop_delay_seconds`.
///
/// The tick also keeps the worker's timer wheel from going empty. Otherwise a request
/// arriving at an idle worker arms its timers (header read, route timeout) in an empty
/// wheel, and tokio's current-thread runtime then wakes its own I/O driver through an
/// eventfd — a write and an extra `epoll_wait` return per request at moderate load
/// (tokio-rs/tokio#5207). With a tick due within `WATCHDOG_TICK`, a request's timers are
/// never the earliest, so arming them costs no wake-up.
async fn watchdog(index: usize) {
    let delay =
        metrics::histogram!("wasmesh_worker_loop_delay_seconds", "worker" => index.to_string());
    let mut ticks = tokio::time::interval(WATCHDOG_TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = ticks.tick().await;
        delay.record(due.elapsed().as_secs_f64());
    }
}

/// The running workers.
pub struct Workers {
    handles: Vec<Handle>,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `concurrency` worker threads (at least one).
    pub fn start(concurrency: usize) -> std::io::Result<Arc<Workers>> {
        let (stop, stopped) = watch::channel(false);
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for index in 0..concurrency.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let mut stopped = stopped.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("wasmesh-worker-{index}"))
                    .spawn(move || {
                        WORKER.with(|w| w.set(Some(index)));
                        runtime.block_on(async move {
                            tokio::select! {
                                _ = stopped.wait_for(|stop| *stop) => {}
                                _ = watchdog(index) => {}
                            }
                        });
                    })?,
            );
        }
        Ok(Arc::new(Workers {
            handles,
            stop,
            threads,
        }))
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The runtime of worker `index`.
    pub fn handle(&self, index: usize) -> &Handle {
        &self.handles[index % self.handles.len()]
    }

    /// Ends every worker's runtime (tasks still on them are dropped) and waits for the threads.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for thread in self.threads.drain(..) {
            // A worker ends as soon as its runtime stops; never wait on the one we run in.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}
