//! `wasmesh-registry`: the filter registry (an OCI distribution server) and the client the proxy
//! pulls filters with, from this registry or any other.
//!
//! Server side:
//! - [`store`]: a content-addressed filesystem store in the OCI layout spirit
//!   (`blobs/<alg>/<hex>`, per-repository manifest links and tag files, resumable uploads,
//!   garbage collection). A blob becomes visible only after its digest is verified (temp file
//!   in the same filesystem, fsync, rename, fsync of the directory); names, tags and digests
//!   are validated strictly before any path is built, so path traversal is impossible.
//! - [`server`]: the OCI distribution spec v1.1 server on hyper 1, plain or over TLS
//!   ([`server::serve`], [`server::serve_tls`] return a [`server::RunningRegistry`] with the
//!   bound address and a shutdown handle, for embedding); push/pull tokens, with
//!   [`grants`], its own token service for Docker-style clients.
//!
//! Client side:
//! - [`client`]: [`client::Client`], an OCI client over HTTPS (rustls) or plain HTTP for
//!   loopback and listed hosts, with static-token, Docker `config.json` and token-service auth;
//!   it pushes the CNCF layout and pulls every layout in [`format`], verifying every digest.
//! - [`cache`]: [`cache::ModuleCache`], pulled modules on disk by manifest digest, with
//!   Istio's pull policies and pins.
//! - [`artifact`]: the CNCF Wasm OCI artifact layout and the checks made on a module;
//!   [`format`]: the other layouts (Istio compat, solo, wasm-to-oci) and how each is read.
//! - [`auth`], [`reference`], [`transport`], [`tls`]: credentials and challenges, image
//!   references, the HTTP layer, rustls configurations.
//!
//! - [`cli`]: the `wasmesh registry …` and `wasmesh filter …` subcommands.

pub mod artifact;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod client;
pub mod format;
pub mod grants;
pub mod reference;
pub mod server;
pub mod store;
pub mod tls;
pub mod transport;
