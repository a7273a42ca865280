//! `wasmesh-proxy`: the native core of the wasmesh data plane.
//!
//! It owns what must be native and fast: listeners ([`listener`]), TLS and mTLS ([`tls`]), the
//! HTTP/1.1 and HTTP/2 codecs (hyper), route matching ([`route`]), upstream clusters with their
//! connection pools, load balancers, health checks, outlier detection and circuit breakers
//! ([`cluster`]), the forwarding path that ties them together ([`forward`]), TCP proxying
//! ([`tcp`]) and the admin API
//! ([`admin`]). Everything else — traffic policy, auth, observability — runs as proxy-wasm filters.
//!
//! A running proxy is a [`server::Server`] built from a [`config::Config`]:
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let config = wasmesh_proxy::config::load_file(std::path::Path::new("wasmesh.yaml"))?;
//! let server = wasmesh_proxy::server::Server::start(config).await?;
//! server.wait_for_shutdown_signal().await;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod body;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod filter;
mod follow;
pub mod forward;
pub mod listener;
pub mod observe;
mod reload;
pub mod route;
pub mod server;
pub mod snapshot;
pub mod tcp;
pub mod tls;
pub mod workers;
