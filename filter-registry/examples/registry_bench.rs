//! Registry throughput, for `bench/registry`: push and pull of a module of a given size through
//! two registries with the same client, interleaved round by round.
//!
//! - `registry_bench serve --root DIR [--listen ADDR] [--push-token T]`: runs this crate's
//!   registry (plain HTTP) and prints `listening on ADDR`;
//! - `registry_bench free-port`: prints a free loopback port;
//! - `registry_bench run --ours ADDR --theirs ADDR [--size-mib N] [--rounds N]`: measures.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use wasmesh_registry::client::{Client, ClientConfig, ImageRef};
use wasmesh_registry::server::{RegistryConfig, serve};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Serve {
        #[arg(long)]
        root: PathBuf,
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[arg(long)]
        push_token: Option<String>,
    },
    FreePort,
    Run {
        #[arg(long)]
        ours: String,
        #[arg(long)]
        theirs: String,
        #[arg(long, default_value_t = 5)]
        size_mib: usize,
        #[arg(long, default_value_t = 15)]
        rounds: usize,
    },
}

/// A valid module of `size` bytes: the header and one custom section of varied bytes.
fn module(size: usize, seed: u64) -> Vec<u8> {
    let payload_len = size - 8 - 1 - 5;
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    m.push(0);
    let mut len = payload_len as u32;
    for i in 0..5 {
        let mut byte = (len & 0x7f) as u8;
        len >>= 7;
        if i < 4 {
            byte |= 0x80;
        }
        m.push(byte);
    }
    m.extend_from_slice(&[3, b'p', b'a', b'd']);
    // xorshift: incompressible, different per seed.
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while m.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        m.extend_from_slice(&x.to_le_bytes());
    }
    m.truncate(size);
    m
}

fn mib_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64().max(1e-9)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Args::parse().command {
        Command::Serve {
            root,
            listen,
            push_token,
        } => {
            let reg = serve(RegistryConfig {
                root,
                listen,
                push_token,
                pull_token: None,
            })
            .await?;
            println!("listening on {}", reg.local_addr());
            std::io::stdout().flush()?;
            tokio::signal::ctrl_c().await?;
            reg.shutdown().await;
        }
        Command::FreePort => {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            println!("{}", l.local_addr()?.port());
        }
        Command::Run {
            ours,
            theirs,
            size_mib,
            rounds,
        } => {
            let size = size_mib * 1024 * 1024;
            let client = Client::new(ClientConfig {
                max_module_size: (size as u64) * 2,
                ..ClientConfig::default()
            })?;
            let targets = [("wasmesh", ours), ("docker-registry", theirs)];
            let mut push: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
            let mut pull: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
            // Round 0 warms connections and caches and is not counted.
            for round in 0..=rounds {
                for (i, (_, host)) in targets.iter().enumerate() {
                    let wasm = module(size, (round * 2 + i + 1) as u64);
                    let r = ImageRef::parse(&format!("{host}/bench/module:r{round}"))?;
                    let t = Instant::now();
                    client.push(&r, &wasm, &BTreeMap::new()).await?;
                    let pushed = t.elapsed();
                    let t = Instant::now();
                    let pulled = client.pull(&r).await?;
                    let pulled_in = t.elapsed();
                    assert_eq!(pulled.wasm.len(), size);
                    if round > 0 {
                        push[i].push(mib_per_s(size, pushed));
                        pull[i].push(mib_per_s(size, pulled_in));
                    }
                }
            }
            println!(
                "registry throughput, {size_mib} MiB module, {rounds} rounds interleaved, median (same client, loopback)"
            );
            println!("{:<18} {:>12} {:>12}", "", "push MiB/s", "pull MiB/s");
            let (p0, p1) = (median(push[0].clone()), median(push[1].clone()));
            let (q0, q1) = (median(pull[0].clone()), median(pull[1].clone()));
            println!("{:<18} {:>12.1} {:>12.1}", targets[0].0, p0, q0);
            println!("{:<18} {:>12.1} {:>12.1}", targets[1].0, p1, q1);
            println!(
                "{:<18} {:>12.2} {:>12.2}",
                "ratio ours/theirs",
                p0 / p1,
                q0 / q1
            );
        }
    }
    Ok(())
}
