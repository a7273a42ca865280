//! `wasmesh`: the proxy binary. `run` serves a configuration file, `validate` checks one and lists
//! every error, `demo` starts demo upstreams and a proxy in front of them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wasmesh_proxy::{config, demo, observe, server::Server};

// A proxy allocates and frees many small buffers per request; mimalloc's thread-local free
// lists measured cheaper than glibc's malloc here (see bench/run).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "wasmesh", version, about = "A WebAssembly-extensible L7 proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a configuration file.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file and print every error with file:line: field.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start demo upstreams and a proxy in front of them.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
        /// How many demo upstream instances to balance over.
        #[arg(long, default_value_t = 2)]
        upstreams: usize,
        /// The Wasm filter for the demo chain (default: the stock `headers` filter that
        /// `./setup.sh` builds).
        #[arg(long)]
        filter: Option<PathBuf>,
    },
    /// The OCI filter registry.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Publish and fetch filters as OCI artifacts.
    Filter {
        #[command(subcommand)]
        command: FilterCommand,
    },
    /// Run only a demo upstream (used by the benchmarks and tests).
    Upstream {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[arg(long, default_value = "upstream")]
        name: String,
    },
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Serve an OCI distribution registry from a directory.
    Serve {
        #[arg(long)]
        root: PathBuf,
        #[arg(long, default_value = "127.0.0.1:5000")]
        listen: SocketAddr,
        /// Token required to push (Bearer, or Basic with it as password); without one the
        /// registry serves only on loopback.
        #[arg(long, env = "WASMESH_REGISTRY_PUSH_TOKEN")]
        push_token: Option<String>,
        /// Token required to pull (default: anonymous pulls).
        #[arg(long, env = "WASMESH_REGISTRY_PULL_TOKEN")]
        pull_token: Option<String>,
    },
}

#[derive(Subcommand)]
enum FilterCommand {
    /// Push FILE.wasm as oci://HOST/REPO:TAG; prints the manifest digest.
    Push {
        file: PathBuf,
        reference: String,
        #[arg(long, env = "WASMESH_REGISTRY_TOKEN")]
        token: Option<String>,
    },
    /// Pull a filter, verifying every digest, into a file.
    Pull {
        reference: String,
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long, env = "WASMESH_REGISTRY_TOKEN")]
        token: Option<String>,
    },
    /// List the tags of HOST/REPO.
    Ls {
        repository: String,
        #[arg(long, env = "WASMESH_REGISTRY_TOKEN")]
        token: Option<String>,
    },
    /// Print a filter's manifest.
    Inspect {
        reference: String,
        #[arg(long, env = "WASMESH_REGISTRY_TOKEN")]
        token: Option<String>,
    },
}

fn main() -> ExitCode {
    observe::init_tracing();
    let cli = Cli::parse();
    if let Command::Validate { config } = &cli.command {
        return match config::load_file(config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("wasmesh: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("wasmesh: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => {
            let cfg = config::load_file(&config).map_err(|errors| anyhow::anyhow!("{errors}"))?;
            serve(cfg, Some(config)).await
        }
        Command::Demo {
            listen,
            admin,
            upstreams,
            filter,
        } => {
            let mut addrs = Vec::new();
            for i in 0..upstreams.max(1) {
                let addr = demo::spawn_upstream(&format!("demo-{i}"), ([127, 0, 0, 1], 0).into())
                    .await
                    .context("starting a demo upstream")?;
                addrs.push(addr);
            }
            let filter = filter.or_else(demo::built_headers_filter);
            match &filter {
                Some(path) => println!("demo filter chain: {}", path.display()),
                None => {
                    println!("demo filter chain: none (run ./setup.sh to build the stock filters)")
                }
            }
            let cfg = demo::config(&listen, &admin, &addrs, filter.as_deref())
                .map_err(|errors| anyhow::anyhow!("{errors}"))?;
            println!(
                "demo upstreams: {}",
                addrs
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!("try: curl -s http://{listen}/hello   admin: curl -s http://{admin}/stats");
            serve(cfg, None).await
        }
        Command::Upstream { listen, name } => {
            let addr = demo::spawn_upstream(&name, listen)
                .await
                .context("binding the upstream")?;
            println!("upstream {name} listening on {addr}");
            tokio::signal::ctrl_c()
                .await
                .context("waiting for ctrl-c")?;
            Ok(())
        }
        Command::Registry {
            command:
                RegistryCommand::Serve {
                    root,
                    listen,
                    push_token,
                    pull_token,
                },
        } => {
            let registry =
                wasmesh_registry::server::serve(wasmesh_registry::server::RegistryConfig {
                    root,
                    listen,
                    push_token,
                    pull_token,
                })
                .await
                .context("starting the registry")?;
            println!("wasmesh: registry on {}", registry.local_addr());
            tokio::signal::ctrl_c()
                .await
                .context("waiting for ctrl-c")?;
            registry.shutdown().await;
            Ok(())
        }
        Command::Filter { command } => {
            use wasmesh_registry::cli;
            match command {
                FilterCommand::Push {
                    file,
                    reference,
                    token,
                } => cli::push(&file, &reference, token.as_deref())
                    .await
                    .map(drop)?,
                FilterCommand::Pull {
                    reference,
                    output,
                    token,
                } => cli::pull(&reference, &output, token.as_deref())
                    .await
                    .map(drop)?,
                FilterCommand::Ls { repository, token } => {
                    cli::ls(&repository, token.as_deref()).await.map(drop)?
                }
                FilterCommand::Inspect { reference, token } => {
                    cli::inspect(&reference, token.as_deref()).await.map(drop)?
                }
            }
            Ok(())
        }
        Command::Validate { .. } => Ok(()),
    }
}

async fn serve(cfg: config::Config, file: Option<PathBuf>) -> anyhow::Result<()> {
    let mut server = Server::start(cfg).await?;
    if let Some(path) = file {
        server
            .watch_file(path)
            .context("watching the configuration file")?;
    }
    // One machine-readable line per bound socket, so scripts and tests using port 0 find them.
    for (name, addr) in server.listeners() {
        println!("wasmesh: listener {name} on {addr}");
    }
    if let Some(addr) = server.admin_addr() {
        println!("wasmesh: admin on {addr}");
    }
    println!("wasmesh: ready");
    server.wait_for_shutdown_signal().await;
    Ok(())
}
