//! `wasmesh-conformance`: the suite that proves wasmesh's compatibility, and the conformance
//! matrix (`conformance/MATRIX.md`) it generates.
//!
//! - **ABI**: one probe module per proxy-wasm ABI area (`probes/`, built for `wasm32-wasip1`
//!   by `build.rs`) is run on `wasmesh-host` alone (through the SDK's deterministic harness)
//!   and through the real proxy (`wasmesh_proxy::server::Server` in process, with real
//!   clients, upstreams and gRPC/TCP peers on loopback). Probes only report what they
//!   observed; [`check`] compares that with the value the spec or Envoy gives, and every
//!   checklist item ([`checklist`]) is proven by the checks that name it.
//! - **Registry**: the OCI distribution conformance categories ([`registry`]) against any
//!   registry URL (`WASMESH_CONFORMANCE_REGISTRY`), by default wasmesh's own registry in
//!   process, with Debian's `docker-registry` as the reference.
//! - **Guest SDK languages** ([`languages`]): which languages' filters ran, and how they did.
//!
//! [`suite::run`] runs all of it; [`matrix::render`] writes the matrix from the result, so the
//! matrix is never written by hand. `cargo run -p wasmesh-conformance -- report` regenerates
//! it, and the test `matrix_is_current` fails when the checked-in one differs.

pub mod abi;
pub mod areas;
pub mod capture;
pub mod check;
pub mod checklist;
pub mod error;
pub mod gaps;
pub mod host_env;
pub mod languages;
pub mod matrix;
pub mod net;
pub mod observe;
pub mod probes;
pub mod proxy_env;
pub mod registry;
pub mod suite;
