//! Guest SDK languages: which languages' filters the suite ran, with which filters, where, and
//! how they did — derived from what ran, never a hand-written table.
//!
//! - Rust: the probes, by how each is written (the published `proxy-wasm` SDK, or raw ABI
//!   exports), from `build.rs`'s reading of their dependencies, with the ABI checks' verdicts;
//! - WAT: the integration probes;
//! - AssemblyScript, C and Zig: the SDK's example filters (`sdk/assemblyscript/example`,
//!   `sdk/c/examples`), built with npm and zig at run time and run in both environments: their
//!   configuration sets a request header the upstream must see and a response header the
//!   client must see. A missing toolchain leaves a language "not exercised", with the reason.

use std::collections::BTreeMap;
use std::path::PathBuf;

use wasmesh_sdk_tools::{ToolError, examples};

use crate::abi::AbiResults;
use crate::capture;
use crate::check::{Env, Verdict};
use crate::error::{Context, Result};
use crate::host_env;
use crate::net::upstream::Upstream;
use crate::probes::{RUST_PROBES, WAT_PROBES};
use crate::proxy_env::{self, Proxy};

/// How one language did in one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exercised {
    Pass,
    /// Every check came out as expected, counting this many known host gaps (listed above).
    PassWithGaps(usize),
    Fail(String),
    /// Its toolchain is missing here, or it cannot run in this environment.
    NotExercised(String),
}

/// One row of the section.
#[derive(Debug, Clone)]
pub struct Language {
    pub language: String,
    pub sdk: String,
    /// The modules run, by name.
    pub filters: Vec<String>,
    /// The ABI version they declare, where known.
    pub abi: String,
    pub results: BTreeMap<Env, Exercised>,
}

impl Language {
    /// Whether a result is a failure (the suite fails on it).
    pub fn failures(&self) -> Vec<String> {
        self.results
            .iter()
            .filter_map(|(env, r)| match r {
                Exercised::Fail(detail) => {
                    Some(format!("{} [{}]: {detail}", self.language, env.name()))
                }
                _ => None,
            })
            .collect()
    }
}

/// Whether every check of `areas` came out as expected in `env`.
fn areas_result(abi: &AbiResults, areas: &[&str], env: Env) -> Exercised {
    let unexpected: Vec<String> = abi
        .judged
        .iter()
        .filter(|j| areas.contains(&j.area))
        .filter_map(|j| match j.verdicts.get(&env) {
            Some(Verdict::Unexpected(d)) => Some(format!("{}: {d}", j.check.id)),
            _ => None,
        })
        .collect();
    let gaps = abi
        .judged
        .iter()
        .filter(|j| areas.contains(&j.area))
        .filter(|j| matches!(j.verdicts.get(&env), Some(Verdict::Gap(..))))
        .count();
    if !unexpected.is_empty() {
        Exercised::Fail(unexpected.join("; "))
    } else if gaps > 0 {
        Exercised::PassWithGaps(gaps)
    } else {
        Exercised::Pass
    }
}

/// The Rust and WAT rows, from the probes and the ABI verdicts.
fn probe_rows(abi: &AbiResults) -> Vec<Language> {
    let mut by_sdk: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (area, _, sdk) in RUST_PROBES {
        by_sdk.entry(sdk).or_default().push(area);
    }
    let mut rows: Vec<Language> = by_sdk
        .into_iter()
        .map(|(sdk, areas)| Language {
            language: "Rust".into(),
            sdk: sdk.to_string(),
            filters: areas.iter().map(|a| format!("probes/{a}")).collect(),
            abi: if areas.contains(&"abi-v0-1-0") {
                "0.2.1, 0.1.0".into()
            } else {
                "0.2.1".into()
            },
            results: Env::ALL
                .iter()
                .map(|env| (*env, areas_result(abi, &areas, *env)))
                .collect(),
        })
        .collect();
    rows.push(Language {
        language: "WebAssembly text".into(),
        sdk: "hand-written".into(),
        filters: WAT_PROBES
            .iter()
            .map(|(n, _)| format!("probes/integration/{n}.wat"))
            .collect(),
        abi: "0.2.0, 0.2.1".into(),
        results: Env::ALL
            .iter()
            .map(|env| (*env, areas_result(abi, &["integration"], *env)))
            .collect(),
    });
    rows
}

/// Where the examples are built: under this crate's build output.
fn out_dir() -> PathBuf {
    PathBuf::from(env!("OUT_DIR")).join("sdk-examples")
}

/// The example filters' request and response headers for `lang`.
fn settings(lang: &str) -> String {
    format!(r#"{{"request": {{"x-hello": "world"}}, "response": {{"x-served-by": "{lang}"}}}}"#)
}

/// Runs `wasm` with the example's configuration on host-abi.
fn on_host(wasm: &str, lang: &str) -> Result<(Exercised, String)> {
    let loaded = host_env::load(wasm, &format!("sdk-{lang}"), &settings(lang))?;
    let abi = crate::areas::lifecycle::version(loaded.harness.plugin().abi_version());
    let mut stream = loaded.harness.http_stream().doing("a stream")?;
    stream
        .send_request_headers(
            &[
                (":method", "GET"),
                (":path", "/hello"),
                (":authority", "conformance.local"),
            ],
            true,
        )
        .doing("request headers")?;
    stream
        .send_response_headers(&[(":status", "200")], false)
        .doing("response headers")?;
    stream
        .send_response_body(b"up", true)
        .doing("response body")?;
    let (request, response) = (
        stream.request_header("x-hello"),
        stream.response_header("x-served-by"),
    );
    Ok((judge(request.as_deref(), response.as_deref(), lang), abi))
}

fn judge(request: Option<&str>, response: Option<&str>, lang: &str) -> Exercised {
    if request == Some("world") && response == Some(lang) {
        Exercised::Pass
    } else {
        Exercised::Fail(format!(
            "x-hello {request:?} (expected world), x-served-by {response:?} (expected {lang})"
        ))
    }
}

/// Runs `wasm` with the example's configuration in the proxy.
async fn in_proxy(wasm: &str, lang: &str) -> Result<Exercised> {
    let upstream = Upstream::named("up").await?;
    let name = capture::unique(&format!("sdk-{lang}"));
    let yaml = proxy_env::config(
        upstream.addr,
        &proxy_env::plugin(&name, wasm, &settings(lang), ""),
        "",
        "",
        "",
    );
    Proxy::with(&yaml, async |proxy: &Proxy| {
        let reply = proxy.get("/hello", &[]).await?;
        let seen = upstream.last()?;
        let request = seen.header("x-hello");
        Ok(judge(
            Some(request.as_str()),
            reply.header("x-served-by").as_deref(),
            lang,
        ))
    })
    .await
}

fn not_exercised(error: &ToolError) -> Exercised {
    match error {
        ToolError::ToolMissing { tool, hint } => {
            Exercised::NotExercised(format!("{tool} is not installed ({hint})"))
        }
        other => Exercised::Fail(format!("building the example failed: {other}")),
    }
}

async fn example(
    language: &str,
    sdk: &str,
    filter: &str,
    built: std::result::Result<PathBuf, Exercised>,
) -> Language {
    let lang = language.to_ascii_lowercase();
    let mut row = Language {
        language: language.into(),
        sdk: sdk.into(),
        filters: vec![filter.into()],
        abi: String::new(),
        results: BTreeMap::new(),
    };
    let wasm = match built {
        Ok(path) => path.display().to_string(),
        Err(why) => {
            for env in Env::ALL {
                row.results.insert(env, why.clone());
            }
            return row;
        }
    };
    let host = match on_host(&wasm, &lang) {
        Ok((result, abi)) => {
            row.abi = abi;
            result
        }
        Err(e) => Exercised::Fail(e.to_string()),
    };
    row.results.insert(Env::HostAbi, host);
    let proxy = in_proxy(&wasm, &lang)
        .await
        .unwrap_or_else(|e| Exercised::Fail(e.to_string()));
    row.results.insert(Env::Proxy, proxy);
    row
}

/// Every language row: the probes' (from `abi`), then the SDK examples', run now.
pub async fn run(abi: &AbiResults) -> Vec<Language> {
    let mut rows = probe_rows(abi);
    let out = out_dir();
    rows.push(
        example(
            "AssemblyScript",
            "sdk/assemblyscript",
            "sdk/assemblyscript/example/filter.ts",
            examples::assemblyscript(&out).map_err(|e| not_exercised(&e)),
        )
        .await,
    );
    let (c, zig) = match examples::c_and_zig(&out) {
        Ok((c, zig)) => (Ok(c), Ok(zig)),
        Err(e) => (Err(not_exercised(&e)), Err(not_exercised(&e))),
    };
    rows.push(example("C", "sdk/c (zig cc)", "sdk/c/examples/filter.c", c).await);
    rows.push(example("Zig", "sdk/c (zig)", "sdk/c/examples/filter.zig", zig).await);
    rows
}
