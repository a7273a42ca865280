//! `wasmesh-conformance`: probe modules per proxy-wasm ABI area and the OCI registry conformance
//! categories, run on `wasmesh-host` and through the proxy, producing `MATRIX.md`.
//!
//! Not built yet beyond this crate's place in the workspace: see the conformance issue.
