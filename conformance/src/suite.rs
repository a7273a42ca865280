//! The whole suite: the ABI areas in both environments, the registry section and the SDK
//! languages, in one run whose result the matrix is rendered from.

use crate::abi::{self, AbiResults};
use crate::capture;
use crate::error::{Context, Result};
use crate::languages::{self, Language};
use crate::registry::{self, RegistryResults};

/// Everything one run of the suite found.
pub struct SuiteResult {
    pub abi: AbiResults,
    pub registry: RegistryResults,
    pub languages: Vec<Language>,
}

/// Runs the suite: host-abi first (synchronously), then the proxy, the registries and the SDK
/// examples on a runtime of its own.
pub fn run() -> Result<SuiteResult> {
    capture::install()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .doing("starting a runtime")?;
    let abi = abi::run(&runtime);
    let registry = runtime.block_on(registry::run());
    let languages = runtime.block_on(languages::run(&abi));
    Ok(SuiteResult {
        abi,
        registry,
        languages,
    })
}
