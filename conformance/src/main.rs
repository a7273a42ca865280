//! The conformance suite's command line:
//!
//! - `wasmesh-conformance report [--out FILE]`: runs the suite and writes the matrix (default:
//!   `conformance/MATRIX.md` of this checkout);
//! - `wasmesh-conformance probes`: lists the probe modules this build made, for loading them
//!   on another proxy-wasm host;
//! - `wasmesh-conformance judge AREA LOG`: judges an area's checks from the log another host
//!   wrote while running that area's probe.

use std::path::PathBuf;

use anyhow::{Context as _, bail};

const USAGE: &str = "usage: wasmesh-conformance report [--out FILE] | probes | judge AREA LOG";

fn report(mut args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let mut out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("MATRIX.md");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = PathBuf::from(args.next().context("--out needs a file")?),
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    let result = wasmesh_conformance::suite::run()?;
    let matrix = wasmesh_conformance::matrix::render(&result);
    std::fs::write(&out, &matrix).with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    for line in result.abi.unexpected(None) {
        eprintln!("unexpected: {line}");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("report") => report(args),
        Some("probes") => {
            for (area, path, sdk) in wasmesh_conformance::probes::RUST_PROBES {
                println!("{area}\t{sdk}\t{path}");
            }
            for (name, path) in wasmesh_conformance::probes::WAT_PROBES {
                println!("integration/{name}\tWAT\t{path}");
            }
            Ok(())
        }
        Some("judge") => {
            let (Some(area), Some(log)) = (args.next(), args.next()) else {
                bail!("{USAGE}");
            };
            let text = std::fs::read_to_string(&log).with_context(|| format!("reading {log}"))?;
            let Some(verdicts) = wasmesh_conformance::abi::judge_log(&area, &text) else {
                bail!("no area {area:?}");
            };
            for (id, verdict) in verdicts {
                println!("{id}\t{verdict}");
            }
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}
