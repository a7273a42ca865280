//! `wasmesh-registry`: an OCI distribution registry for Wasm filters (filesystem store), the
//! client that pushes, pulls and resolves filter artifacts, and the artifact format.
//!
//! Not built yet beyond this crate's place in the workspace: see the registry issue.
