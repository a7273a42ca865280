//! The `wasmesh filter new` and `wasmesh filter build` subcommands: their arguments (clap)
//! and what they print. The `wasmesh` binary only dispatches here.

use std::path::PathBuf;

use crate::check::{abi_name, human_size};
use crate::{BuildOptions, Language, NewOptions, Progress, ToolError};

/// `wasmesh filter new`.
#[derive(Debug, Clone, clap::Args)]
pub struct NewArgs {
    /// The filter's name: lowercase letters, digits, `-` and `_`, starting with a letter.
    pub name: String,
    /// The language to write it in.
    #[arg(long, value_enum, default_value_t = Language::Rust)]
    pub lang: Language,
    /// The project directory to create (default: ./NAME).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The `sdk/` directory of a wasmesh checkout to build against (default: the one this
    /// binary was built from).
    #[arg(long)]
    pub sdk_path: Option<PathBuf>,
}

/// `wasmesh filter build`.
#[derive(Debug, Clone, clap::Args)]
pub struct BuildArgs {
    /// The project directory (default: the current directory).
    pub dir: Option<PathBuf>,
}

/// Runs `wasmesh filter new`.
pub fn new(args: NewArgs) -> Result<(), ToolError> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    let created = crate::new_project(&NewOptions {
        name: args.name.clone(),
        language: args.lang,
        dir,
        sdk: args.sdk_path.unwrap_or_else(crate::built_in_sdk_dir),
    })?;
    println!(
        "created {} ({}) in {}: {}",
        args.name,
        created.language,
        created.dir.display(),
        created
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let test = match created.language {
        Language::Rust => " && cargo test",
        _ => "",
    };
    println!(
        "next: cd {} && wasmesh filter build{test}",
        created.dir.display()
    );
    Ok(())
}

/// Runs `wasmesh filter build`: one progress line while it builds (on a terminal), then a
/// summary line and the `.wasm`'s path on a line of its own (`wasm: PATH`).
pub fn build(args: BuildArgs) -> Result<(), ToolError> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("."));
    let built = crate::build(
        &dir,
        &BuildOptions {
            progress: Progress::stderr(),
            target_dir: None,
        },
    )?;
    let checked = &built.checked;
    println!(
        "built {} ({}) in {:.1}s: {}, proxy-wasm ABI {}, {} imports, all provided by wasmesh",
        built.name,
        built.language,
        built.elapsed.as_secs_f64(),
        human_size(checked.size),
        abi_name(checked.abi),
        checked.imports.len()
    );
    if !checked.allocator {
        println!(
            "warning: it exports no proxy_on_memory_allocate (or malloc): the host cannot hand it headers, bodies or configuration"
        );
    }
    println!("wasm: {}", built.wasm().display());
    Ok(())
}
