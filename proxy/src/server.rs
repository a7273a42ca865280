//! A running proxy: the [`Snapshot`] requests read, the listeners' accept loops, the admin API,
//! configuration reloads and graceful shutdown.
//!
//! Requests load the snapshot once when they start (behind `arc-swap`), so replacing it never
//! disturbs a request in flight; the old snapshot is freed when its last request ends. A reload
//! builds the whole new snapshot and binds any new listener sockets first, and only then swaps:
//! a configuration that fails anywhere is rejected whole and the running one keeps serving.
//! Reloads come from the configuration file, the admin API (`PUT /config`, `PUT
//! /chains/{name}`, rollback) and followed registry tags ([`crate::follow`]); one lock
//! serialises them, so an edit of one chain never loses a concurrent edit of another.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin;
use crate::cluster::ClusterError;
use crate::config::{self, Config, ConfigErrors, FilterChain};
use crate::filter::LoadMode;
use crate::forward::ListenerContext;
use crate::listener::{self, Running};
use crate::route::RouteError;
pub use crate::snapshot::Snapshot;
use crate::tls::reloadable::{Reloadable, Update};
use crate::tls::{self, TlsError};
use crate::workers::Workers;

/// Why a configuration could not be put into service.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Chain(#[from] crate::filter::ChainError),
    #[error("listener \"{listener}\": {source}")]
    Tls {
        listener: String,
        #[source]
        source: TlsError,
    },
    #[error("listener \"{listener}\": cannot bind {address}: {source}")]
    Bind {
        listener: String,
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("admin: cannot bind {address}: {source}")]
    AdminBind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("\"{field}\": invalid address \"{address}\"")]
    Address { field: String, address: String },
    #[error("the proxy is shutting down")]
    ShuttingDown,
    #[error("filter chain \"{0}\" has no earlier definition to roll back to")]
    NothingToRollBack(String),
    #[error("cannot start worker threads: {0}")]
    Workers(#[source] std::io::Error),
}

/// The outcome of the latest reload, for `GET /config/status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadStatus {
    /// Generation of the snapshot serving now.
    pub generation: u64,
    pub applied: u64,
    pub rejected: u64,
    /// The error of the latest attempt, if it was rejected.
    pub last_error: Option<String>,
    /// What the latest applied reload left as it was: TLS files that did not load (caught
    /// mid-rotation, say) keep their running certificates.
    pub last_warnings: Vec<String>,
    /// What asked for the latest attempt (`file`, `PUT /config`, `PUT /chains/edge`, a moved
    /// tag…).
    pub last_trigger: Option<String>,
    /// Seconds since the epoch of the latest attempt.
    pub last_attempt_unix: Option<u64>,
}

struct ListenerSlot {
    config: config::Listener,
    address: SocketAddr,
    stop: watch::Sender<bool>,
    tls: Option<Arc<ServerTls>>,
    /// Watches the listener's connections, so that they can be drained when the listener is
    /// removed or replaced (they would otherwise go on with its old settings), or at shutdown.
    connections: Arc<Mutex<Option<GracefulShutdown>>>,
    /// The accept loops, one per worker.
    accepting: Vec<tokio::task::JoinHandle<()>>,
    /// Its accept loops' shared state: the connections still open when a drain runs out of
    /// time (TCP sessions, long streams) are ended through it.
    running: Arc<Running>,
    /// Whether its drain has begun.
    draining: bool,
    /// The listening sockets (duplicates of the accept loops' descriptors): a replacement for
    /// the same address takes them over, so that connections waiting in their accept queues
    /// are not reset when the old loops let go of theirs.
    sockets: Vec<std::net::TcpListener>,
}

impl ListenerSlot {
    /// Stops accepting and asks the listener's connections to finish: HTTP/1.1 ones close after
    /// the request in flight (at once if idle), HTTP/2 ones get a GOAWAY. Returns the wait for
    /// them, if it was not asked before. The accept loops end first, so every connection they
    /// took is watched, and drained with the rest, after `grace`: hyper closes a connection
    /// that has not sent a request yet at once, and one accepted just before the loops stopped
    /// should have its first request answered. What is still open after `limit` is closed.
    fn drain(
        &mut self,
        grace: Duration,
        limit: Duration,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let _ = self.stop.send(true);
        // Its sockets close with the accept loops' (a replacement holds its own duplicates),
        // so clients are refused rather than left in a queue nobody accepts from.
        self.sockets.clear();
        if std::mem::replace(&mut self.draining, true) {
            return None;
        }
        let accepting = std::mem::take(&mut self.accepting);
        let running = self.running.clone();
        let connections = self.connections.clone();
        let name = self.config.name.clone();
        Some(async move {
            for task in accepting {
                let _ = task.await;
            }
            tokio::time::sleep(grace).await;
            let graceful = connections.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(graceful) = graceful
                && tokio::time::timeout(limit, graceful.shutdown())
                    .await
                    .is_err()
            {
                let closed = running.open.close_all();
                tracing::warn!(listener = %name, timeout = ?limit, closed, "connections still open after drain_timeout; closed them");
            }
        })
    }

    /// The same listener, rebound for `lc` (same address): its sockets, duplicated.
    fn rebind(&self, lc: &config::Listener) -> Result<Bound, StartError> {
        Ok(Bound {
            config: lc.clone(),
            sockets: duplicate(&self.sockets, lc)?,
            address: self.address,
            tls: server_tls(lc)?,
        })
    }
}

type ServerTls = Reloadable<rustls::ServerConfig>;

/// How long a replaced listener's connections go on before they are drained: enough for one
/// accepted as the old accept loops stopped to send its first request.
const REPLACED_LISTENER_GRACE: Duration = Duration::from_secs(1);

/// The state shared by the server, the admin API and the file watcher.
pub struct Control {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// The generation serving now, published after each swap so the tag follower looks at a
    /// new snapshot's plugins at once rather than after its idle tick.
    pub swapped: watch::Sender<u64>,
    pub draining: AtomicBool,
    listeners: Mutex<HashMap<String, ListenerSlot>>,
    /// Serialises reloads; the value is the status they report.
    status: tokio::sync::Mutex<ReloadStatus>,
    /// The drains of listeners reloads replaced or removed, still running.
    draining_listeners: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    workers: Arc<Workers>,
    /// Snapshots replaced but perhaps still used by requests in flight, with when they were
    /// replaced; freed by [`Control::reap`] on the control plane once unused.
    retired: Mutex<Vec<(Arc<Snapshot>, std::time::Instant)>>,
    /// Plugins no snapshot uses any more whose root contexts asked for time to finish
    /// (`proxy_on_done` answered false), with when they began to end; dropped once they call
    /// `proxy_done`, or after `drain_timeout`.
    finishing: Mutex<Vec<(Arc<wasmesh_host::Plugin>, std::time::Instant)>>,
    /// Earlier definitions of each chain, newest last (`None`: the chain did not exist), for
    /// `POST /chains/{name}/rollback`.
    history: Mutex<HashMap<String, Vec<Option<FilterChain>>>>,
}

/// Rollback depth kept per chain.
const HISTORY_DEPTH: usize = 16;

/// A started proxy.
pub struct Server {
    control: Arc<Control>,
    admin: Option<SocketAddr>,
    admin_stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

fn parse_addr(field: String, address: &str) -> Result<SocketAddr, StartError> {
    address.parse().map_err(|_| StartError::Address {
        field,
        address: address.to_string(),
    })
}

/// A listener bound and ready to accept (one socket per worker), not yet serving.
struct Bound {
    config: config::Listener,
    sockets: Vec<std::net::TcpListener>,
    address: SocketAddr,
    tls: Option<Arc<ServerTls>>,
}

/// Second descriptors for a listener's sockets: the slot keeps them so that a replacement at
/// the same address can take the sockets over.
fn duplicate(
    sockets: &[std::net::TcpListener],
    lc: &config::Listener,
) -> Result<Vec<std::net::TcpListener>, StartError> {
    sockets
        .iter()
        .map(std::net::TcpListener::try_clone)
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|source| StartError::Bind {
            listener: lc.name.clone(),
            address: lc.address.clone(),
            source,
        })
}

fn server_tls(lc: &config::Listener) -> Result<Option<Arc<ServerTls>>, StartError> {
    lc.tls
        .as_ref()
        .map(|t| {
            tls::server::reloadable(t).map_err(|source| StartError::Tls {
                listener: lc.name.clone(),
                source,
            })
        })
        .transpose()
}

fn bind_listener(index: usize, lc: &config::Listener, workers: usize) -> Result<Bound, StartError> {
    let address = parse_addr(format!("listeners[{index}].address"), &lc.address)?;
    let tls = server_tls(lc)?;
    let (sockets, address) =
        listener::bind_per_worker(address, workers).map_err(|source| StartError::Bind {
            listener: lc.name.clone(),
            address: lc.address.clone(),
            source,
        })?;
    Ok(Bound {
        config: lc.clone(),
        sockets,
        address,
        tls,
    })
}

impl Control {
    /// Starts serving a bound listener; returns its slot.
    fn serve(self: &Arc<Self>, bound: Bound) -> Result<ListenerSlot, StartError> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(StartError::ShuttingDown);
        }
        let connections = Arc::new(Mutex::new(Some(GracefulShutdown::new())));
        let watched = connections.clone();
        let watchers: listener::Watchers = Arc::new(move || {
            let graceful = watched.lock().unwrap_or_else(|e| e.into_inner());
            graceful.as_ref().map(GracefulShutdown::watcher)
        });
        let (stop, stop_rx) = watch::channel(false);
        let lc = bound.config.clone();
        let running = Arc::new(Running {
            open: listener::OpenConnections::default(),
            watchers,
            config: lc.clone(),
            tls: bound.tls.clone(),
            connections: Arc::new(tokio::sync::Semaphore::new(lc.max_connections)),
            context: Arc::new(ListenerContext {
                name: lc.name.as_str().into(),
                route_config: lc.route_config.clone().unwrap_or_default(),
                tcp_proxy: lc.tcp_proxy.clone(),
                filter_chain: lc.filter_chain.clone(),
                forward_client_cert: lc.forward_client_cert,
                max_request_body_bytes: lc.max_request_body_bytes,
                filter_buffer_limit: lc.filter_buffer_limit_bytes,
                snapshot: self.snapshot.clone(),
                requests: Arc::new(tokio::sync::Semaphore::new(lc.max_requests)),
                metrics: crate::observe::RequestMetrics::new(lc.name.as_str().into()),
            }),
        });
        tracing::info!(listener = %lc.name, address = %bound.address, tls = lc.tls.is_some(),
            workers = bound.sockets.len(), "listening");
        let sockets = duplicate(&bound.sockets, &lc)?;
        let mut accepting = Vec::with_capacity(sockets.len());
        for (index, socket) in bound.sockets.into_iter().enumerate() {
            let (running, stop_rx) = (running.clone(), stop_rx.clone());
            // The socket joins the reactor of the worker that accepts on it.
            accepting.push(self.workers.handle(index).spawn(async move {
                match tokio::net::TcpListener::from_std(socket) {
                    Ok(tcp) => listener::accept_loop(tcp, running, stop_rx).await,
                    Err(err) => {
                        tracing::error!(listener = %running.config.name, error = %err, "cannot accept on a worker")
                    }
                }
            }));
        }
        Ok(ListenerSlot {
            config: lc,
            address: bound.address,
            stop,
            tls: bound.tls,
            connections,
            accepting,
            running: running.clone(),
            draining: false,
            sockets,
        })
    }

    /// Validates, builds and swaps in a new configuration; on any failure the running one stays.
    pub async fn apply(self: &Arc<Self>, config: Config, trigger: &str) -> Result<u64, StartError> {
        let mut status = self.status.lock().await;
        self.apply_locked(&mut status, config, trigger, true).await
    }

    /// Replaces (or adds) one filter chain in the running configuration.
    pub async fn set_chain(self: &Arc<Self>, chain: FilterChain) -> Result<u64, StartError> {
        let mut status = self.status.lock().await;
        let mut config = (*self.snapshot.load().config).clone();
        let trigger = format!("PUT /chains/{}", chain.name);
        match config
            .filter_chains
            .iter_mut()
            .find(|c| c.name == chain.name)
        {
            Some(existing) => *existing = chain,
            None => config.filter_chains.push(chain),
        }
        self.apply_locked(&mut status, config, &trigger, true).await
    }

    /// Puts back the definition a chain had before its latest change.
    pub async fn rollback_chain(self: &Arc<Self>, name: &str) -> Result<u64, StartError> {
        let mut status = self.status.lock().await;
        let earlier = self
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(name)
            .and_then(Vec::pop)
            .ok_or_else(|| StartError::NothingToRollBack(name.to_string()))?;
        let mut config = (*self.snapshot.load().config).clone();
        config.filter_chains.retain(|c| c.name != name);
        if let Some(chain) = earlier.clone() {
            config.filter_chains.push(chain);
        }
        let trigger = format!("POST /chains/{name}/rollback");
        let result = self
            .apply_locked(&mut status, config, &trigger, false)
            .await;
        if result.is_err() {
            // Still the way back from the definition that keeps serving.
            self.history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(name.to_string())
                .or_default()
                .push(earlier);
        }
        result
    }

    /// Rebuilds the running configuration as it is: followed tags are resolved again and
    /// plugins that could not be fetched at start-up are tried again.
    pub async fn refresh(self: &Arc<Self>, trigger: &str) -> Result<u64, StartError> {
        let mut status = self.status.lock().await;
        let config = (*self.snapshot.load().config).clone();
        self.apply_locked(&mut status, config, trigger, false).await
    }

    async fn apply_locked(
        self: &Arc<Self>,
        status: &mut ReloadStatus,
        config: Config,
        trigger: &str,
        record_history: bool,
    ) -> Result<u64, StartError> {
        status.last_attempt_unix = unix_now();
        status.last_trigger = Some(trigger.to_string());
        let previous = self.snapshot.load_full();
        match self
            .swap_in(config, status.generation + 1, &previous, record_history)
            .await
        {
            Ok((generation, warnings)) => {
                status.generation = generation;
                status.applied += 1;
                status.last_error = None;
                status.last_warnings = warnings;
                metrics::counter!("wasmesh_config_reload_total", "result" => "applied")
                    .increment(1);
                tracing::info!(generation, trigger, "configuration applied");
                Ok(generation)
            }
            Err(err) => {
                status.rejected += 1;
                status.last_error = Some(err.to_string());
                metrics::counter!("wasmesh_config_reload_total", "result" => "rejected")
                    .increment(1);
                tracing::error!(error = %err, trigger, generation = status.generation,
                    "configuration rejected; the running one stays");
                Err(err)
            }
        }
    }

    async fn swap_in(
        self: &Arc<Self>,
        config: Config,
        generation: u64,
        previous: &Snapshot,
        record_history: bool,
    ) -> Result<(u64, Vec<String>), StartError> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(StartError::ShuttingDown);
        }
        config::validate(&config)?;
        self.ensure_wasm_host(&config)?;
        let snapshot =
            Snapshot::build(config.clone(), generation, Some(previous), LoadMode::Reload).await?;

        // Listeners whose settings are unchanged keep their sockets and connections. Changed
        // and new ones are bound before anything else changes: a changed one at the same
        // address takes over its sockets (connections waiting to be accepted are not lost);
        // SO_REUSEPORT lets one moved elsewhere bind while the old socket still accepts.
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        let mut fresh = Vec::new();
        let mut kept = Vec::new();
        for (i, lc) in config.listeners.iter().enumerate() {
            match listeners.get(&lc.name) {
                Some(slot) if slot.config == *lc => kept.push(slot),
                Some(slot) if slot.config.address == lc.address => fresh.push(slot.rebind(lc)?),
                _ => fresh.push(bind_listener(i, lc, self.workers.len())?),
            }
        }
        // Kept listeners and clusters read their certificate files again: a reload is also how
        // certificates rotated on disk are put into service. Files caught mid-rotation do not
        // hold up the rest of the reload: those keep their running certificates (the watcher
        // reports them and tries again on their next change).
        let tls = prepare_tls(kept, snapshot.clusters.values());
        let mut warnings = Vec::new();
        for err in &tls.failed {
            metrics::counter!("wasmesh_tls_reload_total", "result" => "rejected").increment(1);
            tracing::warn!(error = %err, "TLS files rejected; the running certificates stay");
            warnings.push(format!("{err}; the running certificates stay"));
        }

        snapshot.start_background_tasks();
        if record_history {
            self.record_history(&previous.config, &config);
        }
        let old = self.snapshot.swap(Arc::new(snapshot));
        let current = self.snapshot.load();
        for (name, cluster) in &old.clusters {
            if !current
                .clusters
                .get(name)
                .is_some_and(|c| Arc::ptr_eq(c, cluster))
            {
                cluster.retire();
            }
        }
        // Only now that the old clusters' checks have stopped.
        for cluster in current.clusters.values() {
            cluster.restore_health_unchecked();
        }
        self.retire(old);
        self.swapped.send_replace(generation);
        commit_tls(tls.rotated);

        let wanted: HashMap<&str, &config::Listener> = config
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), l))
            .collect();
        let fresh_names: Vec<String> = fresh.iter().map(|b| b.config.name.clone()).collect();
        listeners.retain(|name, slot| {
            let keep = wanted.contains_key(name.as_str()) && !fresh_names.contains(name);
            if !keep {
                // Its connections must not go on with its old settings (a filter chain or a
                // client certificate requirement added since): drained as Envoy drains them.
                tracing::info!(listener = %name, address = %slot.address, "listener removed or replaced; draining");
                let grace = config.drain_timeout.min(REPLACED_LISTENER_GRACE);
                if let Some(drained) = slot.drain(grace, config.drain_timeout) {
                    // Shutdown waits for it too.
                    let mut draining = self.draining_listeners.lock().unwrap_or_else(|e| e.into_inner());
                    draining.retain(|task| !task.is_finished());
                    draining.push(tokio::spawn(drained));
                }
            }
            keep
        });
        for bound in fresh {
            let slot = self.serve(bound)?;
            listeners.insert(slot.config.name.clone(), slot);
        }
        Ok((generation, warnings))
    }

    fn retire(&self, snapshot: Arc<Snapshot>) {
        self.retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((snapshot, std::time::Instant::now()));
    }

    /// Frees retired snapshots no request uses any more, off the async threads: dropping one
    /// ends its unshared plugins (`proxy_on_done`, `proxy_on_delete`, stores torn down) and
    /// closes its unshared clusters' pools. One still in use past `drain_timeout` is reported.
    /// A plugin whose root context answers `proxy_on_done` with false is kept, its ticks and
    /// callouts running, until it calls `proxy_done` (or `drain_timeout` passes).
    async fn reap(&self) {
        let drain_timeout = self.snapshot.load().config.drain_timeout;
        let (unused, ending) = {
            let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
            let (unused, busy): (Vec<_>, Vec<_>) = retired
                .drain(..)
                .partition(|(snapshot, _)| Arc::strong_count(snapshot) == 1);
            for (snapshot, since) in &busy {
                if since.elapsed() > drain_timeout {
                    tracing::warn!(
                        generation = snapshot.generation,
                        in_flight = Arc::strong_count(snapshot) - 1,
                        "a replaced configuration still has requests in flight after drain_timeout"
                    );
                }
            }
            // Plugins of the freed snapshots that neither the running one nor a busy one uses.
            let current = self.snapshot.load_full();
            let live: std::collections::HashSet<*const wasmesh_host::Plugin> =
                std::iter::once(&current)
                    .chain(busy.iter().map(|(snapshot, _)| snapshot))
                    .flat_map(|snapshot| plugins_of(snapshot))
                    .map(Arc::as_ptr)
                    .collect();
            let mut ending: Vec<Arc<wasmesh_host::Plugin>> = Vec::new();
            for (snapshot, _) in &unused {
                for plugin in plugins_of(snapshot) {
                    let ptr = Arc::as_ptr(plugin);
                    if !live.contains(&ptr) && !ending.iter().any(|p| Arc::as_ptr(p) == ptr) {
                        ending.push(plugin.clone());
                    }
                }
            }
            *retired = busy;
            let unused: Vec<Arc<Snapshot>> =
                unused.into_iter().map(|(snapshot, _)| snapshot).collect();
            (unused, ending)
        };
        // Asking a plugin whether it is done locks its replicas, which a worker may hold while
        // it runs Wasm: that, like the drops, happens off the async threads.
        let finishing: Vec<(Arc<wasmesh_host::Plugin>, std::time::Instant)> =
            std::mem::take(&mut *self.finishing.lock().unwrap_or_else(|e| e.into_inner()));
        if unused.is_empty() && finishing.is_empty() {
            return;
        }
        let waiting = tokio::task::spawn_blocking(move || {
            let now = std::time::Instant::now();
            let mut waiting: Vec<_> = ending
                .into_iter()
                .filter(|plugin| !plugin.begin_shutdown())
                .map(|plugin| (plugin, now))
                .collect();
            for (plugin, since) in finishing {
                if plugin.is_shut_down() {
                    continue;
                }
                if since.elapsed() > drain_timeout {
                    tracing::warn!(plugin = %plugin.name(),
                        "a removed plugin did not call proxy_done within drain_timeout; ending it");
                    continue;
                }
                waiting.push((plugin, since));
            }
            drop(unused);
            waiting
        })
        .await
        .unwrap_or_default();
        self.finishing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(waiting);
    }

    /// Remembers the definition of every chain the new configuration changes.
    fn record_history(&self, old: &Config, new: &Config) {
        let find = |config: &Config, name: &str| {
            config
                .filter_chains
                .iter()
                .find(|c| c.name == name)
                .cloned()
        };
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let names: std::collections::BTreeSet<&str> = old
            .filter_chains
            .iter()
            .chain(&new.filter_chains)
            .map(|c| c.name.as_str())
            .collect();
        for name in names {
            let before = find(old, name);
            if before != find(new, name) {
                let past = history.entry(name.to_string()).or_default();
                past.push(before);
                if past.len() > HISTORY_DEPTH {
                    past.remove(0);
                }
            }
        }
    }

    /// Starts the Wasm host the first time a configuration has plugins: a proxy without filters
    /// never runs the engine's epoch ticker. Filters' HTTP callouts go through the clusters of
    /// whatever snapshot is running.
    fn ensure_wasm_host(&self, config: &Config) -> Result<(), StartError> {
        if config.filter_chains.iter().all(|c| c.plugins.is_empty()) {
            return Ok(());
        }
        let host = crate::filter::host().map_err(|source| crate::filter::ChainError::Load {
            chain: "-".into(),
            source,
        })?;
        host.set_services(Arc::new(crate::filter::ClusterCallouts {
            snapshot: self.snapshot.clone(),
        }));
        Ok(())
    }

    /// Puts certificates rotated on disk into service: the running listeners and clusters read
    /// their TLS files again, and those whose files changed take them for new connections.
    /// All or nothing, like a reload: a file that does not load (say, a key written before its
    /// certificate) is reported and every listener and cluster keeps what it has. Returns how
    /// many configurations changed.
    pub async fn refresh_tls(&self, trigger: &str) -> Result<usize, StartError> {
        let mut status = self.status.lock().await;
        let snapshot = self.snapshot.load_full();
        let prepared = {
            let listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
            prepare_tls(listeners.values(), snapshot.clusters.values())
        };
        if let Some(err) = prepared.failed.into_iter().next() {
            status.last_attempt_unix = unix_now();
            status.last_trigger = Some(trigger.to_string());
            status.rejected += 1;
            status.last_error = Some(err.to_string());
            metrics::counter!("wasmesh_tls_reload_total", "result" => "rejected").increment(1);
            tracing::error!(error = %err, trigger, "TLS files rejected; the running certificates stay");
            return Err(err);
        }
        let changed = prepared.rotated.len();
        if changed > 0 {
            status.last_attempt_unix = unix_now();
            status.last_trigger = Some(trigger.to_string());
            commit_tls(prepared.rotated);
        }
        // Files back in order (changed, or put back as they were) clear their own error.
        if changed > 0 || status.last_trigger.as_deref() == Some(trigger) {
            status.last_error = None;
        }
        // Every TLS file loads now: what a reload said it left as it was is past.
        status.last_warnings.clear();
        Ok(changed)
    }

    /// The TLS files of the running listeners and clusters.
    pub fn tls_paths(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter_map(|slot| slot.tls.as_ref())
            .flat_map(|tls| tls.paths())
            .collect();
        for cluster in self.snapshot.load().clusters.values() {
            found.extend(cluster.tls.iter().flat_map(|tls| tls.paths()));
        }
        // A relative path's directory is the working directory, which a watch needs named.
        let mut paths: Vec<PathBuf> = found
            .into_iter()
            .map(|p| std::path::absolute(&p).unwrap_or(p))
            .collect();
        paths.sort();
        paths.dedup();
        paths
    }

    /// Records a configuration that was refused before it could be applied (it did not parse).
    pub async fn reject(&self, error: String, trigger: &str) {
        let mut status = self.status.lock().await;
        status.last_attempt_unix = unix_now();
        status.last_trigger = Some(trigger.to_string());
        status.rejected += 1;
        metrics::counter!("wasmesh_config_reload_total", "result" => "rejected").increment(1);
        tracing::error!(error = %error, trigger, generation = status.generation,
            "configuration rejected; the running one stays");
        status.last_error = Some(error);
    }

    pub async fn status(&self) -> ReloadStatus {
        self.status.lock().await.clone()
    }

    /// Bound listener addresses by name.
    pub fn listener_addresses(&self) -> Vec<(String, SocketAddr)> {
        let listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = listeners
            .iter()
            .map(|(n, s)| (n.clone(), s.address))
            .collect();
        out.sort();
        out
    }
}

impl Server {
    /// Builds the snapshot, binds every listener and the admin port, and starts serving.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        Server::start_with(config, crate::workers::default_concurrency()).await
    }

    /// Like [`Server::start`], with `concurrency` worker threads.
    pub async fn start_with(config: Config, concurrency: usize) -> Result<Server, StartError> {
        crate::observe::prometheus();
        config::validate(&config)?;
        // Plugins are built with a VM replica per worker.
        crate::workers::set_count(concurrency);
        let snapshot = Snapshot::build(config.clone(), 1, None, LoadMode::Startup).await?;
        let workers = Workers::start(concurrency).map_err(StartError::Workers)?;
        let mut bound = Vec::new();
        for (i, lc) in config.listeners.iter().enumerate() {
            bound.push(bind_listener(i, lc, workers.len())?);
        }
        snapshot.start_background_tasks();
        let control = Arc::new(Control {
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            swapped: watch::Sender::new(1),
            draining: AtomicBool::new(false),
            listeners: Mutex::new(HashMap::new()),
            draining_listeners: Mutex::new(Vec::new()),
            status: tokio::sync::Mutex::new(ReloadStatus {
                generation: 1,
                ..ReloadStatus::default()
            }),
            workers,
            retired: Mutex::new(Vec::new()),
            finishing: Mutex::new(Vec::new()),
            history: Mutex::new(HashMap::new()),
        });
        control.ensure_wasm_host(&config)?;
        for b in bound {
            let slot = control.serve(b)?;
            control
                .listeners
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(slot.config.name.clone(), slot);
        }
        let (admin_stop, admin_stop_rx) = watch::channel(false);
        let mut tasks = vec![
            tokio::spawn(crate::follow::run(Arc::downgrade(&control))),
            tokio::spawn(reaper(Arc::downgrade(&control))),
            crate::reload::watch_tls(Arc::downgrade(&control)),
        ];
        let admin = match &config.admin {
            Some(a) => {
                let address = parse_addr("admin.address".into(), &a.address)?;
                let tcp = listener::bind(address).map_err(|source| StartError::AdminBind {
                    address: a.address.clone(),
                    source,
                })?;
                let bound = tcp.local_addr().unwrap_or(address);
                tracing::info!(address = %bound, "admin API listening");
                tasks.push(tokio::spawn(admin::serve(
                    tcp,
                    control.clone(),
                    admin_stop_rx,
                )));
                Some(bound)
            }
            None => None,
        };
        Ok(Server {
            control,
            admin,
            admin_stop,
            tasks,
        })
    }

    /// Reloads from `path` whenever the file changes (including editors that write a new file
    /// and rename it over the old one): events are debounced, then the file is loaded and
    /// applied; a bad file is reported and the running configuration stays.
    pub fn watch_file(&mut self, path: PathBuf) -> Result<(), notify::Error> {
        let task = crate::reload::watch_file(self.control.clone(), path)?;
        self.tasks.push(task);
        Ok(())
    }

    /// The address a listener actually bound (useful with port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.control
            .listener_addresses()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, addr)| addr)
    }

    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        self.control.listener_addresses()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn wait_for_shutdown_signal(self) {
        shutdown_signal().await;
        tracing::info!("shutdown signal received; draining");
        self.shutdown().await;
    }

    /// Stops accepting, lets in-flight requests finish (up to `drain_timeout`), then returns.
    pub async fn shutdown(self) {
        self.control.draining.store(true, Ordering::SeqCst);
        let drain_timeout = self.control.snapshot.load().config.drain_timeout;
        let drained: Vec<_> = self
            .control
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values_mut()
            .filter_map(|slot| slot.drain(Duration::ZERO, drain_timeout))
            .collect();
        // Listeners a reload replaced may still be draining theirs.
        let replaced: Vec<_> = std::mem::take(
            &mut *self
                .control
                .draining_listeners
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        futures_util::future::join(
            futures_util::future::join_all(drained),
            futures_util::future::join_all(replaced),
        )
        .await;
        tracing::info!("listeners drained");
        let _ = self.admin_stop.send(true);
        for task in self.tasks {
            task.abort();
        }
        self.control.workers.stop();
    }
}

/// The TLS configurations of some listeners and clusters rebuilt from changed files, named
/// for the log, and those whose files do not load; nothing changes until [`commit_tls`].
#[derive(Default)]
struct Prepared {
    rotated: Vec<(String, Update)>,
    failed: Vec<StartError>,
}

fn prepare_tls<'a>(
    listeners: impl IntoIterator<Item = &'a ListenerSlot>,
    clusters: impl IntoIterator<Item = &'a Arc<crate::cluster::Cluster>>,
) -> Prepared {
    let mut prepared = Prepared::default();
    for slot in listeners {
        let Some(tls) = &slot.tls else { continue };
        match tls.prepare() {
            Ok(update) => prepared
                .rotated
                .extend(update.map(|u| (format!("listener {}", slot.config.name), u))),
            Err(source) => prepared.failed.push(StartError::Tls {
                listener: slot.config.name.clone(),
                source,
            }),
        }
    }
    for cluster in clusters {
        let Some(tls) = &cluster.tls else { continue };
        match tls.prepare() {
            Ok(update) => prepared
                .rotated
                .extend(update.map(|u| (format!("cluster {}", cluster.name), u))),
            Err(source) => prepared.failed.push(StartError::from(ClusterError::Tls {
                cluster: cluster.name.to_string(),
                source,
            })),
        }
    }
    prepared
}

fn commit_tls(rotated: Vec<(String, Update)>) {
    for (owner, update) in rotated {
        update.commit();
        metrics::counter!("wasmesh_tls_reload_total", "result" => "applied").increment(1);
        tracing::info!(%owner, "TLS files changed; new connections use them");
    }
}

/// The plugins of a snapshot's chains.
fn plugins_of(snapshot: &Snapshot) -> impl Iterator<Item = &Arc<wasmesh_host::Plugin>> {
    snapshot
        .chains
        .values()
        .flat_map(|chain| chain.entries.iter())
        .filter_map(|entry| match entry {
            crate::filter::chain::Entry::Loaded(loaded) => Some(&loaded.plugin),
            _ => None,
        })
}

fn unix_now() -> Option<u64> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// How often retired snapshots are looked at.
const REAP_EVERY: Duration = Duration::from_millis(250);

async fn reaper(control: std::sync::Weak<Control>) {
    loop {
        tokio::time::sleep(REAP_EVERY).await;
        let Some(control) = control.upgrade() else {
            return;
        };
        control.reap().await;
    }
}

/// How long a reload waits for more file events before acting on them.
pub(crate) const RELOAD_DEBOUNCE: Duration = Duration::from_millis(200);

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
