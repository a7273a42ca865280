//! A running proxy: the immutable [`Snapshot`] of routes and clusters that requests read, the
//! listeners' accept loops, the admin API, configuration reloads and graceful shutdown.
//!
//! Requests load the snapshot once when they start (behind `arc-swap`), so replacing it never
//! disturbs a request in flight; the old snapshot is freed when its last request ends. A reload
//! builds the whole new snapshot and binds any new listener sockets first, and only then swaps:
//! a configuration that fails anywhere is rejected whole and the running one keeps serving.

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
use tokio_rustls::TlsAcceptor;

use crate::admin;
use crate::cluster::{Cluster, ClusterError};
use crate::config::{self, Config, ConfigErrors};
use crate::forward::ListenerContext;
use crate::listener::{self, Running};
use crate::route::{RouteError, RouteTable};
use crate::tls::{self, TlsError};

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
}

/// Everything a request needs to be routed, built whole before it is used.
pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<Config>,
    pub route_tables: HashMap<String, Arc<RouteTable>>,
    pub clusters: HashMap<String, Arc<Cluster>>,
    /// Loaded filter chains by name.
    pub chains: HashMap<String, crate::filter::Chain>,
}

impl Snapshot {
    pub fn build(config: Config, generation: u64) -> Result<Snapshot, StartError> {
        let mut route_tables = HashMap::new();
        for rc in &config.routes {
            route_tables.insert(rc.name.clone(), Arc::new(RouteTable::build(rc)?));
        }
        let mut clusters = HashMap::new();
        for cc in &config.clusters {
            clusters.insert(cc.name.clone(), Cluster::build(cc)?);
        }
        let chains = crate::filter::load_chains(&config.filter_chains)?;
        Ok(Snapshot {
            generation,
            config: Arc::new(config),
            route_tables,
            clusters,
            chains,
        })
    }

    fn start_health_checks(&self) {
        for cluster in self.clusters.values() {
            cluster.start_health_checks();
        }
    }
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
    /// Seconds since the epoch of the latest attempt.
    pub last_attempt_unix: Option<u64>,
}

struct ListenerSlot {
    config: config::Listener,
    address: SocketAddr,
    stop: watch::Sender<bool>,
}

/// The state shared by the server, the admin API and the file watcher.
pub struct Control {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub draining: AtomicBool,
    listeners: Mutex<HashMap<String, ListenerSlot>>,
    /// Serialises reloads; the value is the status they report.
    status: tokio::sync::Mutex<ReloadStatus>,
    graceful: Mutex<Option<GracefulShutdown>>,
}

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

/// A listener bound and ready to accept, not yet serving.
struct Bound {
    config: config::Listener,
    tcp: tokio::net::TcpListener,
    address: SocketAddr,
    tls: Option<TlsAcceptor>,
}

fn bind_listener(index: usize, lc: &config::Listener) -> Result<Bound, StartError> {
    let address = parse_addr(format!("listeners[{index}].address"), &lc.address)?;
    let tls = match &lc.tls {
        Some(t) => Some(TlsAcceptor::from(tls::server::server_config(t).map_err(
            |source| StartError::Tls {
                listener: lc.name.clone(),
                source,
            },
        )?)),
        None => None,
    };
    let tcp = listener::bind(address).map_err(|source| StartError::Bind {
        listener: lc.name.clone(),
        address: lc.address.clone(),
        source,
    })?;
    let address = tcp.local_addr().unwrap_or(address);
    Ok(Bound {
        config: lc.clone(),
        tcp,
        address,
        tls,
    })
}

impl Control {
    /// Starts serving a bound listener; returns its slot.
    fn serve(self: &Arc<Self>, bound: Bound) -> Result<ListenerSlot, StartError> {
        let weak = Arc::downgrade(self);
        let watchers: listener::Watchers = Arc::new(move || {
            let control = weak.upgrade()?;
            let graceful = control.graceful.lock().unwrap_or_else(|e| e.into_inner());
            graceful.as_ref().map(GracefulShutdown::watcher)
        });
        if self
            .graceful
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
        {
            return Err(StartError::ShuttingDown);
        }
        let (stop, stop_rx) = watch::channel(false);
        let lc = bound.config.clone();
        let running = Arc::new(Running {
            config: lc.clone(),
            tls: bound.tls,
            context: Arc::new(ListenerContext {
                name: lc.name.as_str().into(),
                route_config: lc.route_config.clone(),
                filter_chain: lc.filter_chain.clone(),
                forward_client_cert: lc.forward_client_cert,
                snapshot: self.snapshot.clone(),
                requests: Arc::new(tokio::sync::Semaphore::new(lc.max_requests)),
            }),
        });
        tracing::info!(listener = %lc.name, address = %bound.address, tls = lc.tls.is_some(), "listening");
        tokio::spawn(listener::accept_loop(bound.tcp, running, stop_rx, watchers));
        Ok(ListenerSlot {
            config: lc,
            address: bound.address,
            stop,
        })
    }

    /// Validates, builds and swaps in a new configuration; on any failure the running one stays.
    pub async fn apply(self: &Arc<Self>, config: Config) -> Result<u64, StartError> {
        let mut status = self.status.lock().await;
        status.last_attempt_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs());
        match self.apply_locked(config, status.generation + 1) {
            Ok(generation) => {
                status.generation = generation;
                status.applied += 1;
                status.last_error = None;
                metrics::counter!("wasmesh_config_reload_total", "result" => "applied")
                    .increment(1);
                tracing::info!(generation, "configuration applied");
                Ok(generation)
            }
            Err(err) => {
                status.rejected += 1;
                status.last_error = Some(err.to_string());
                metrics::counter!("wasmesh_config_reload_total", "result" => "rejected")
                    .increment(1);
                tracing::error!(error = %err, generation = status.generation, "configuration rejected; the running one stays");
                Err(err)
            }
        }
    }

    fn apply_locked(self: &Arc<Self>, config: Config, generation: u64) -> Result<u64, StartError> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(StartError::ShuttingDown);
        }
        config::validate(&config)?;
        let snapshot = Snapshot::build(config.clone(), generation)?;

        // Listeners whose settings are unchanged keep their sockets and connections. Changed
        // and new ones are bound before anything else changes; SO_REUSEPORT lets a changed
        // listener bind its address while the old socket still accepts.
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        let mut fresh = Vec::new();
        for (i, lc) in config.listeners.iter().enumerate() {
            match listeners.get(&lc.name) {
                Some(slot) if slot.config == *lc => {}
                _ => fresh.push(bind_listener(i, lc)?),
            }
        }

        snapshot.start_health_checks();
        self.snapshot.store(Arc::new(snapshot));

        let wanted: HashMap<&str, &config::Listener> = config
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), l))
            .collect();
        let fresh_names: Vec<String> = fresh.iter().map(|b| b.config.name.clone()).collect();
        listeners.retain(|name, slot| {
            let keep = wanted.contains_key(name.as_str()) && !fresh_names.contains(name);
            if !keep {
                // Stop accepting; connections it already has finish on their own.
                tracing::info!(listener = %name, address = %slot.address, "listener removed or replaced; draining");
                let _ = slot.stop.send(true);
            }
            keep
        });
        for bound in fresh {
            let slot = self.serve(bound)?;
            listeners.insert(slot.config.name.clone(), slot);
        }
        Ok(generation)
    }

    /// Records a configuration that was refused before it could be applied (it did not parse).
    pub async fn reject(&self, error: String) {
        let mut status = self.status.lock().await;
        status.last_attempt_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs());
        status.rejected += 1;
        metrics::counter!("wasmesh_config_reload_total", "result" => "rejected").increment(1);
        tracing::error!(error = %error, generation = status.generation, "configuration rejected; the running one stays");
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
        crate::observe::prometheus();
        config::validate(&config)?;
        let snapshot = Snapshot::build(config.clone(), 1)?;
        let mut bound = Vec::new();
        for (i, lc) in config.listeners.iter().enumerate() {
            bound.push(bind_listener(i, lc)?);
        }
        snapshot.start_health_checks();
        let control = Arc::new(Control {
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            draining: AtomicBool::new(false),
            listeners: Mutex::new(HashMap::new()),
            status: tokio::sync::Mutex::new(ReloadStatus {
                generation: 1,
                ..ReloadStatus::default()
            }),
            graceful: Mutex::new(Some(GracefulShutdown::new())),
        });
        // Filters' HTTP callouts go through the clusters of whatever snapshot is running.
        crate::filter::host()?.set_services(Arc::new(crate::filter::ClusterCallouts {
            snapshot: control.snapshot.clone(),
        }));
        for b in bound {
            let slot = control.serve(b)?;
            control
                .listeners
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(slot.config.name.clone(), slot);
        }
        let (admin_stop, admin_stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
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
        for slot in self
            .control
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            let _ = slot.stop.send(true);
        }
        let graceful = self
            .control
            .graceful
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(graceful) = graceful {
            match tokio::time::timeout(drain_timeout, graceful.shutdown()).await {
                Ok(()) => tracing::info!("all connections drained"),
                Err(_) => {
                    tracing::warn!(timeout = ?drain_timeout, "drain timeout passed; closing remaining connections")
                }
            }
        }
        let _ = self.admin_stop.send(true);
        for task in self.tasks {
            task.abort();
        }
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
