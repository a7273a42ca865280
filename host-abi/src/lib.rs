//! `wasmesh-host`: the proxy-wasm ABI host on wasmtime.
//!
//! It loads a filter module, detects its ABI version, links the host functions and drives the
//! context lifecycle. It knows nothing about sockets or the proxy's types: the proxy talks to it
//! through a small trait for what only the proxy knows (the headers of this stream, properties,
//! HTTP callouts, a metrics sink).
