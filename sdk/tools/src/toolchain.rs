//! Finding the build tools (cargo, npm, zig) and running them with one line of progress.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use crate::ToolError;

/// One progress line on stderr, redrawn with the latest line a tool printed — only when
/// stderr is a terminal (logs and CI get the summary alone).
#[derive(Debug, Clone)]
pub struct Progress {
    enabled: bool,
}

impl Progress {
    /// Progress on stderr if it is a terminal.
    pub fn stderr() -> Progress {
        Progress {
            enabled: std::io::stderr().is_terminal(),
        }
    }

    /// No progress output at all.
    pub fn quiet() -> Progress {
        Progress { enabled: false }
    }

    fn show(&self, label: &str, line: &str) {
        let line: String = line.trim().chars().take(100).collect();
        if !self.enabled || line.is_empty() {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{label}: {line}");
        let _ = err.flush();
    }

    fn clear(&self) {
        if self.enabled {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

/// What a finished command printed.
#[derive(Debug, Default)]
pub struct Ran {
    /// Its standard output, line by line.
    pub stdout: Vec<String>,
    /// Standard output and error interleaved as they came, for error reports.
    pub transcript: String,
}

/// `cmd` as one would type it.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn forward_lines(
    stream: impl Read + Send + 'static,
    stderr: bool,
    tx: mpsc::Sender<(bool, String)>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send((stderr, line)).is_err() {
                break;
            }
        }
    });
}

/// Runs `cmd` to completion, showing its latest output line as progress under `label`; a
/// failure comes back with everything it printed.
pub fn run(cmd: &mut Command, label: &str, progress: &Progress) -> Result<Ran, ToolError> {
    let command = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ToolError::Command {
            command: command.clone(),
            status: format!("cannot start it: {e}"),
            output: String::new(),
        })?;
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        forward_lines(out, false, tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        forward_lines(err, true, tx.clone());
    }
    drop(tx);
    let mut ran = Ran::default();
    // Ends when both streams close, that is when the command (and anything it started that
    // kept them open) is done.
    for (stderr, line) in rx {
        // cargo's JSON messages (`--message-format=json…`) are for the caller, not people.
        let message = !stderr && line.starts_with("{\"reason\":");
        if !message {
            progress.show(label, &line);
            ran.transcript.push_str(&line);
            ran.transcript.push('\n');
        }
        if !stderr {
            ran.stdout.push(line);
        }
    }
    progress.clear();
    let status = child.wait().map_err(|e| ToolError::Command {
        command: command.clone(),
        status: format!("cannot wait for it: {e}"),
        output: String::new(),
    })?;
    if status.success() {
        Ok(ran)
    } else {
        Err(ToolError::Command {
            command,
            status: status.to_string(),
            output: ran.transcript,
        })
    }
}

/// Whether `program --version` runs.
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// cargo: the one running us (`$CARGO`, as in tests and build scripts), else the one on PATH.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// npm, or why not.
pub fn find_npm() -> Result<String, ToolError> {
    if runs("npm", &["--version"]) {
        Ok("npm".into())
    } else {
        Err(ToolError::ToolMissing {
            tool: "npm".into(),
            hint: "AssemblyScript filters build with Node.js and npm (Debian: apt-get install nodejs npm)".into(),
        })
    }
}

/// The Zig pinned for the C and Zig SDK (the PyPI package `ziglang`).
pub const ZIG_VERSION: &str = "0.15.2";

/// How to run zig, the way the SDK's `build.sh` scripts find it: `$ZIG`, `zig` on PATH, or
/// the PyPI package (`python3 -m ziglang`).
pub fn find_zig() -> Result<Vec<String>, ToolError> {
    if let Ok(zig) = std::env::var("ZIG")
        && !zig.trim().is_empty()
    {
        return Ok(zig.split_whitespace().map(String::from).collect());
    }
    if runs("zig", &["version"]) {
        return Ok(vec!["zig".into()]);
    }
    if runs("python3", &["-m", "ziglang", "version"]) {
        return Ok(vec!["python3".into(), "-m".into(), "ziglang".into()]);
    }
    Err(ToolError::ToolMissing {
        tool: "zig".into(),
        hint: format!(
            "C and Zig filters build with Zig: python3 -m pip install ziglang=={ZIG_VERSION} (or set ZIG)"
        ),
    })
}

/// Whether the Rust standard library for `wasm32-wasip1` is installed.
pub fn check_wasm_target() -> Result<(), ToolError> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match sysroot {
        Some(root) if Path::new(&root).join("lib/rustlib/wasm32-wasip1").is_dir() => Ok(()),
        Some(_) => Err(ToolError::ToolMissing {
            tool: "the wasm32-wasip1 target".into(),
            hint: "run `rustup target add wasm32-wasip1`".into(),
        }),
        None => Err(ToolError::ToolMissing {
            tool: rustc,
            hint: "Rust filters build with cargo and rustc (rustup.rs)".into(),
        }),
    }
}
