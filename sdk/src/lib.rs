//! `wasmesh-sdk`: the filter authoring kit. It will build on the `proxy-wasm` crate and carry a
//! native test harness that runs a built `.wasm` on `wasmesh-host` in-process.
//!
//! Not built yet beyond this crate's place in the workspace: see the SDK issue.
