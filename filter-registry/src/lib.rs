//! `wasmesh-registry`: the filter registry's building blocks.
//!
//! Built so far:
//! - [`store`]: a content-addressed filesystem store in the OCI layout spirit
//!   (`blobs/<alg>/<hex>`, per-repository manifest links and tag files, resumable uploads).
//!   A blob becomes visible only after its digest is verified (temp file in the same
//!   filesystem, fsync, rename, fsync of the directory); names, tags and digests are
//!   validated strictly before any path is built, so path traversal is impossible.
//! - [`artifact`]: the CNCF Wasm OCI artifact layout (config `application/vnd.wasm.config.v0+json`,
//!   one `application/wasm` layer) and the checks made on a pulled module.
//! - [`server`]: the OCI distribution spec v1.1 server on hyper 1 ([`server::serve`] returns a
//!   [`server::RunningRegistry`] with the bound address and a shutdown handle, for embedding).
//! - [`client`]: plain-HTTP OCI client: [`client::push`], [`client::resolve`], [`client::pull`]
//!   (digest-verified), [`client::list_tags`]; static Bearer token.
//! - [`cli`]: the functions the `wasmesh` binary's registry subcommands call.
//!
//! Not built yet: TLS in the client, the token-service auth flow, pulling Istio's compat
//! (tar+gzip `plugin.wasm`) and solo formats.

pub mod artifact;
pub mod cli;
pub mod client;
pub mod server;
pub mod store;
