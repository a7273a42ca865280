//! `wasmesh-sdk-tools`: the filter author's side of the `wasmesh` command line.
//!
//! - `wasmesh filter new NAME --lang rust|assemblyscript|c` ([`scaffold`]) writes a project
//!   from the templates in `sdk/templates/<lang>/` (embedded in the binary): a Rust crate on
//!   `wasmesh-sdk` with a harness test, an npm package on the AssemblyScript SDK, or a C
//!   filter with the C SDK's header and helpers. Each sets the request and response headers
//!   its configuration names, and builds as it is.
//! - `wasmesh filter build [DIR]` ([`builder`]) detects the project's language
//!   ([`language`]), runs cargo, npm or the project's `build.sh` (zig) with one progress line,
//!   and checks the `.wasm` on wasmesh's host ([`mod@check`]): it compiles, declares a proxy-wasm
//!   ABI version, and imports nothing the host lacks.
//! - [`examples`] builds this checkout's AssemblyScript, C and Zig examples, for the SDK's own
//!   tests.
//!
//! The binary knows where the SDK it was built with lives (`env!("CARGO_MANIFEST_DIR")`), so
//! new projects depend on it by path; `--sdk-path` points elsewhere.

pub mod builder;
pub mod check;
pub mod cli;
pub mod examples;
pub mod language;
pub mod scaffold;
pub mod toolchain;

pub use builder::{BuildOptions, Built, build};
pub use check::{Checked, check};
pub use language::Language;
pub use scaffold::{Created, NewOptions, new_project};
pub use toolchain::Progress;

use std::path::PathBuf;

/// What went wrong creating, building or checking a filter.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{tool} not found: {hint}")]
    ToolMissing { tool: String, hint: String },
    #[error("`{command}` failed ({status}){}", show_output(.output))]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error("{0}")]
    Project(String),
    #[error(
        "the wasmesh SDK is not at {path} (where this binary was built from); pass --sdk-path DIR, the sdk/ directory of a wasmesh checkout"
    )]
    SdkMissing { path: PathBuf },
    #[error("{path} does not load on wasmesh: {source}")]
    Check {
        path: PathBuf,
        #[source]
        source: wasmesh_host::LoadError,
    },
}

fn show_output(output: &str) -> String {
    let output = output.trim_end();
    if output.is_empty() {
        String::new()
    } else {
        format!(":\n{output}")
    }
}

pub(crate) fn io_error(path: impl Into<PathBuf>, err: std::io::Error) -> ToolError {
    ToolError::Io {
        path: path.into(),
        message: err.to_string(),
    }
}

/// The `sdk/` directory of the checkout this crate was built from.
pub fn built_in_sdk_dir() -> PathBuf {
    let tools = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    tools.parent().map(PathBuf::from).unwrap_or(tools)
}
