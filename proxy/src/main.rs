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
        /// Worker threads serving traffic (default: one per available core).
        #[arg(long, env = "WASMESH_CONCURRENCY")]
        concurrency: Option<usize>,
    },
    /// Check a configuration file and print every error with file:line: field.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start demo upstreams, an embedded filter registry with the stock filters, and a proxy in
    /// front of the upstreams whose filter chain follows `filters/headers:latest` there.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
        /// How many demo upstream instances to balance over.
        #[arg(long, default_value_t = 2)]
        upstreams: usize,
        /// Where the embedded registry listens (a loopback address: it takes pushes without
        /// a token).
        #[arg(long, default_value = "127.0.0.1:5000")]
        registry: SocketAddr,
        /// The embedded registry's storage (default: `$TMPDIR/wasmesh-demo-registry`).
        #[arg(long)]
        registry_root: Option<PathBuf>,
        /// Run this Wasm filter file in the demo chain instead of the registry's `headers`.
        #[arg(long)]
        filter: Option<PathBuf>,
        /// Worker threads serving traffic (default: one per available core).
        #[arg(long, env = "WASMESH_CONCURRENCY")]
        concurrency: Option<usize>,
    },
    /// The OCI filter registry.
    Registry {
        #[command(subcommand)]
        command: wasmesh_registry::cli::RegistryCommand,
    },
    /// Create and build filters; publish and fetch them as OCI artifacts.
    Filter {
        #[command(subcommand)]
        command: FilterCommand,
    },
    /// Change and show a running proxy's filter chains through its admin API.
    Chain {
        #[command(subcommand)]
        command: ChainCommand,
    },
    /// Run only a demo upstream (used by the benchmarks and tests).
    Upstream {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[arg(long, default_value = "upstream")]
        name: String,
        /// Answer every request with this many bytes (`text/plain`) instead of describing it.
        #[arg(long)]
        body_bytes: Option<usize>,
        /// Serve TLS with this certificate chain (PEM); HTTP/1.1 or HTTP/2 inside.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<String>,
        /// The private key (PEM) of `--tls-cert`.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<String>,
        /// With TLS: require client certificates issued by this CA (PEM).
        #[arg(long, requires = "tls_cert")]
        client_ca: Option<String>,
    },
}

/// `wasmesh filter …`: authoring (`new`, `build`) next to the registry commands.
#[derive(Subcommand)]
enum FilterCommand {
    /// Create a filter project: `wasmesh filter new NAME --lang rust|assemblyscript|c`.
    New(wasmesh_sdk_tools::cli::NewArgs),
    /// Build the filter project in DIR (default: here) and check it loads on wasmesh.
    Build(wasmesh_sdk_tools::cli::BuildArgs),
    #[command(flatten)]
    Registry(wasmesh_registry::cli::FilterCommand),
}

#[derive(Subcommand)]
enum ChainCommand {
    /// Replace a chain's plugins: `wasmesh chain set edge --plugin oci://HOST/REPO:TAG`.
    Set {
        /// The chain (a `filter_chains[].name`; a new name adds a chain).
        name: String,
        /// A plugin source (`oci://…` or `file://…`), in chain order; repeat for more.
        #[arg(long = "plugin", required = true)]
        plugins: Vec<String>,
        /// Configuration for the plugin at the same position (JSON, or text passed as is).
        #[arg(long = "config")]
        configs: Vec<String>,
        /// Name for the plugin at the same position (default: from its source).
        #[arg(long = "name")]
        names: Vec<String>,
        /// Follow the plugins' tags: roll out new digests as they are pushed.
        #[arg(long)]
        follow: bool,
        /// How often followed tags are polled (e.g. `5s`).
        #[arg(long)]
        poll_interval: Option<String>,
        /// `fail_closed` (503 when the filter fails) or `fail_open` (skip it).
        #[arg(long)]
        failure_policy: Option<String>,
        #[arg(long, env = "WASMESH_ADMIN", default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
    /// Show the running generation, the latest reload's outcome and the chains.
    Status {
        /// One chain (default: all).
        name: Option<String>,
        #[arg(long, env = "WASMESH_ADMIN", default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
    /// Put back a chain's previous definition.
    Rollback {
        name: String,
        #[arg(long, env = "WASMESH_ADMIN", default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
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
            eprintln!("wasmesh: {}", describe(&err));
            ExitCode::FAILURE
        }
    }
}

/// An error with its causes, each said once. The libraries' errors already put their source in
/// their own message (`"listener \"edge\": cannot bind …: {source}"`), which `{:#}` would then
/// print a second time; contexts added here do not.
fn describe(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run {
            config,
            concurrency,
        } => {
            let cfg = config::load_file(&config).map_err(|errors| anyhow::anyhow!("{errors}"))?;
            serve(cfg, Some(config), concurrency).await
        }
        Command::Demo {
            listen,
            admin,
            upstreams,
            registry,
            registry_root,
            filter,
            concurrency,
        } => {
            let mut addrs = Vec::new();
            for i in 0..upstreams.max(1) {
                let addr = demo::spawn_upstream(&format!("demo-{i}"), ([127, 0, 0, 1], 0).into())
                    .await
                    .context("starting a demo upstream")?;
                addrs.push(addr);
            }
            let root =
                registry_root.unwrap_or_else(|| std::env::temp_dir().join("wasmesh-demo-registry"));
            let (running_registry, published) = demo::spawn_registry(registry, root).await?;
            println!("wasmesh: registry on {}", running_registry.local_addr());
            for reference in &published {
                println!("demo registry: published {reference}");
            }
            let source = match filter {
                Some(path) => {
                    let path = std::path::absolute(&path).unwrap_or(path);
                    Some(format!("file://{}", path.display()))
                }
                None => published
                    .iter()
                    .find(|r| r.ends_with("/filters/headers:latest"))
                    .cloned(),
            };
            match &source {
                Some(source) => println!("demo filter chain: {source}"),
                None => {
                    println!("demo filter chain: none (run ./setup.sh to build the stock filters)")
                }
            }
            let cfg = demo::config(&listen, &admin, &addrs, source.as_deref())
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
            let served = serve(cfg, None, concurrency).await;
            running_registry.shutdown().await;
            served
        }
        Command::Upstream {
            listen,
            name,
            body_bytes,
            tls_cert,
            tls_key,
            client_ca,
        } => {
            let tls = match (tls_cert, tls_key) {
                (Some(cert_file), Some(key_file)) => {
                    let settings = config::ListenerTls {
                        certificates: vec![config::CertificateFiles {
                            cert_file,
                            key_file,
                            server_names: Vec::new(),
                        }],
                        client_ca_file: client_ca,
                        require_client_cert: true,
                        alpn: None,
                    };
                    let mut tls = wasmesh_proxy::tls::server::build(
                        &settings,
                        &mut wasmesh_proxy::tls::Files::default(),
                    )
                    .context("the upstream's TLS settings")?;
                    // Pick the cipher suite in our order, not the client's, so every proxy in a
                    // benchmark gets the same one whatever its TLS library prefers.
                    tls.ignore_client_order = true;
                    Some(std::sync::Arc::new(tls))
                }
                _ => None,
            };
            let options = demo::UpstreamOptions {
                // Printable bytes, so a body-rewriting filter has letters to work on.
                fixed_body: body_bytes.map(|n| {
                    bytes::Bytes::from(
                        b"wasmesh bench payload "
                            .iter()
                            .copied()
                            .cycle()
                            .take(n)
                            .collect::<Vec<u8>>(),
                    )
                }),
                tls,
            };
            let addr = demo::spawn_upstream_with(&name, listen, options)
                .await
                .context("binding the upstream")?;
            println!("upstream {name} listening on {addr}");
            tokio::signal::ctrl_c()
                .await
                .context("waiting for ctrl-c")?;
            Ok(())
        }
        Command::Registry { command } => Ok(wasmesh_registry::cli::registry(command).await?),
        Command::Filter { command } => match command {
            FilterCommand::New(args) => Ok(wasmesh_sdk_tools::cli::new(args)?),
            FilterCommand::Build(args) => Ok(wasmesh_sdk_tools::cli::build(args)?),
            FilterCommand::Registry(command) => Ok(wasmesh_registry::cli::filter(command).await?),
        },
        Command::Chain { command } => run_chain(command).await,
        Command::Validate { .. } => Ok(()),
    }
}

async fn run_chain(command: ChainCommand) -> anyhow::Result<()> {
    use wasmesh_proxy::admin::client::{self, PluginOptions, PluginSpec};
    match command {
        ChainCommand::Set {
            name,
            plugins,
            configs,
            names,
            follow,
            poll_interval,
            failure_policy,
            admin,
        } => {
            if configs.len() > plugins.len() || names.len() > plugins.len() {
                anyhow::bail!(
                    "more --config or --name than --plugin: each pairs with the --plugin at its position"
                );
            }
            let specs: Vec<PluginSpec> = plugins
                .into_iter()
                .enumerate()
                .map(|(i, source)| PluginSpec {
                    source,
                    name: names.get(i).cloned(),
                    config: configs.get(i).cloned(),
                })
                .collect();
            let options = PluginOptions {
                follow,
                poll_interval,
                failure_policy,
            };
            client::set(admin, &name, &specs, &options).await?;
        }
        ChainCommand::Status { name, admin } => client::status(admin, name.as_deref()).await?,
        ChainCommand::Rollback { name, admin } => client::rollback(admin, &name).await?,
    }
    Ok(())
}

async fn serve(
    cfg: config::Config,
    file: Option<PathBuf>,
    concurrency: Option<usize>,
) -> anyhow::Result<()> {
    let concurrency = concurrency.unwrap_or_else(wasmesh_proxy::workers::default_concurrency);
    let mut server = Server::start_with(cfg, concurrency).await?;
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

#[cfg(test)]
mod tests {
    use super::describe;

    #[derive(Debug, thiserror::Error)]
    #[error("listener \"edge\": cannot bind: {source}")]
    struct Bind {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_said_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let err = anyhow::Error::new(Bind { source: inner }).context("starting");
        assert_eq!(
            describe(&err),
            "starting: listener \"edge\": cannot bind: address in use"
        );
    }
}
