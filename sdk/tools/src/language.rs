//! The languages a filter project can be in, and telling which one a directory holds.

use std::fmt;
use std::path::Path;

use crate::ToolError;

/// A filter project's language (and so its build tool).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// A crate on `wasmesh-sdk`, built with cargo for `wasm32-wasip1`.
    Rust,
    /// An npm package on the AssemblyScript SDK, built with `npm run build`.
    #[value(alias = "as")]
    Assemblyscript,
    /// C (or Zig) on `proxy_wasm.h`, built by the project's `build.sh` with zig.
    C,
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Language::Rust => "rust",
            Language::Assemblyscript => "assemblyscript",
            Language::C => "c",
        })
    }
}

impl Language {
    /// The language of the project in `dir`, by the build file it has: `Cargo.toml`,
    /// `package.json`, or `build.sh`.
    pub fn detect(dir: &Path) -> Result<Language, ToolError> {
        if dir.join("Cargo.toml").is_file() {
            Ok(Language::Rust)
        } else if dir.join("package.json").is_file() {
            Ok(Language::Assemblyscript)
        } else if dir.join("build.sh").is_file() {
            Ok(Language::C)
        } else {
            Err(ToolError::Project(format!(
                "{} is not a filter project: no Cargo.toml (Rust), package.json (AssemblyScript) or build.sh (C/Zig); create one with `wasmesh filter new NAME --lang rust|assemblyscript|c`",
                dir.display()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_build_file() {
        let dir = tempfile::tempdir().expect("dir");
        let err = Language::detect(dir.path()).expect_err("empty directory");
        assert!(err.to_string().contains("is not a filter project"), "{err}");
        std::fs::write(dir.path().join("build.sh"), "").expect("write");
        assert_eq!(Language::detect(dir.path()).ok(), Some(Language::C));
        std::fs::write(dir.path().join("package.json"), "{}").expect("write");
        assert_eq!(
            Language::detect(dir.path()).ok(),
            Some(Language::Assemblyscript)
        );
        std::fs::write(dir.path().join("Cargo.toml"), "").expect("write");
        assert_eq!(Language::detect(dir.path()).ok(), Some(Language::Rust));
    }
}
