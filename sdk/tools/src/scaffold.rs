//! `wasmesh filter new`: a filter project from the templates in `sdk/templates/<lang>/`,
//! embedded in the binary. Sources shared with the SDK's examples (the C filter and headers,
//! the AssemblyScript filter) are embedded from the examples themselves, so a new project is
//! always the example the SDK's tests build and run.

use std::path::{Path, PathBuf};

use crate::{Language, ToolError, io_error};

/// How a placeholder's value is written into a file.
#[derive(Clone, Copy)]
enum Quoting {
    /// As it is (Rust, Markdown, shell).
    Plain,
    /// Inside a TOML or JSON double-quoted string: `\` and `"` escaped.
    Quoted,
}

struct Template {
    path: &'static str,
    text: &'static str,
    quoting: Quoting,
    executable: bool,
}

const fn file(path: &'static str, text: &'static str) -> Template {
    Template {
        path,
        text,
        quoting: Quoting::Plain,
        executable: false,
    }
}

const RUST: &[Template] = &[
    Template {
        quoting: Quoting::Quoted,
        ..file(
            "Cargo.toml",
            include_str!("../../templates/rust/Cargo.toml.in"),
        )
    },
    file(
        "src/lib.rs",
        include_str!("../../templates/rust/src/lib.rs"),
    ),
    file(
        "tests/filter.rs",
        include_str!("../../templates/rust/tests/filter.rs"),
    ),
    file(
        "README.md",
        include_str!("../../templates/rust/README.md.in"),
    ),
    file(".gitignore", include_str!("../../templates/rust/gitignore")),
];

/// The AssemblyScript example, importing the SDK as the installed package.
const AS_FILTER: &str = include_str!("../../assemblyscript/example/filter.ts");
/// The SDK's own package.json: the compiler version new projects pin.
const AS_SDK_PACKAGE: &str = include_str!("../../assemblyscript/package.json");

const ASSEMBLYSCRIPT: &[Template] = &[
    Template {
        quoting: Quoting::Quoted,
        ..file(
            "package.json",
            include_str!("../../templates/assemblyscript/package.json.in"),
        )
    },
    file(
        "asconfig.json",
        include_str!("../../templates/assemblyscript/asconfig.json"),
    ),
    file("assembly/index.ts", AS_FILTER),
    file(
        "README.md",
        include_str!("../../templates/assemblyscript/README.md.in"),
    ),
    file(
        ".gitignore",
        include_str!("../../templates/assemblyscript/gitignore"),
    ),
];

const C: &[Template] = &[
    Template {
        executable: true,
        ..file("build.sh", include_str!("../../templates/c/build.sh"))
    },
    file("filter.c", include_str!("../../c/examples/filter.c")),
    file("proxy_wasm.h", include_str!("../../c/proxy_wasm.h")),
    file(
        "proxy_wasm_helpers.h",
        include_str!("../../c/proxy_wasm_helpers.h"),
    ),
    file(
        "proxy_wasm_helpers.c",
        include_str!("../../c/proxy_wasm_helpers.c"),
    ),
    file("README.md", include_str!("../../templates/c/README.md.in")),
    file(".gitignore", include_str!("../../templates/c/gitignore")),
];

/// What to create.
#[derive(Debug, Clone)]
pub struct NewOptions {
    /// The filter's name: package name, and the `.wasm`'s for Rust.
    pub name: String,
    pub language: Language,
    /// The project directory to create (must not exist, or be empty).
    pub dir: PathBuf,
    /// The `sdk/` directory of a wasmesh checkout, which the project depends on.
    pub sdk: PathBuf,
}

/// A project written to disk.
#[derive(Debug, Clone)]
pub struct Created {
    pub dir: PathBuf,
    pub language: Language,
    /// Every file written, relative to `dir`.
    pub files: Vec<PathBuf>,
}

/// Checks a filter name: it becomes a Cargo package, an npm package and a file name.
pub fn check_name(name: &str) -> Result<(), ToolError> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if starts_with_letter && rest_ok && name.len() <= 64 {
        Ok(())
    } else {
        Err(ToolError::Usage(format!(
            "filter name {name:?}: use 1 to 64 lowercase letters, digits, `-` and `_`, starting with a letter"
        )))
    }
}

fn quoted(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The `assemblyscript` version the SDK's package.json pins.
fn assemblyscript_version() -> Result<String, ToolError> {
    let package: serde_json::Value = serde_json::from_str(AS_SDK_PACKAGE)
        .map_err(|e| ToolError::Project(format!("the SDK's package.json: {e}")))?;
    package["devDependencies"]["assemblyscript"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| {
            ToolError::Project("the SDK's package.json pins no assemblyscript version".into())
        })
}

/// Fills a template's placeholders.
fn render(template: &Template, values: &[(&str, String)]) -> String {
    let mut text = template.text.to_string();
    if template.path == "assembly/index.ts" {
        // The example imports the SDK by relative path; a project imports the package.
        text = text
            .replace(
                "\"../assembly/index\"",
                "\"wasmesh-proxy-wasm/assembly/index\"",
            )
            .replace(
                "\"../assembly/exports\"",
                "\"wasmesh-proxy-wasm/assembly/exports\"",
            );
    }
    for (key, value) in values {
        let value = match template.quoting {
            Quoting::Plain => value.clone(),
            Quoting::Quoted => quoted(value),
        };
        text = text.replace(&format!("{{{{{key}}}}}"), &value);
    }
    text
}

fn check_sdk(sdk: &Path, language: Language) -> Result<(), ToolError> {
    let needed: &[&str] = match language {
        Language::Rust => &["Cargo.toml", "test/Cargo.toml"],
        Language::Assemblyscript => &["assemblyscript/package.json"],
        // A C project carries its copies of the SDK's files.
        Language::C => &[],
    };
    if needed.iter().all(|f| sdk.join(f).is_file()) {
        Ok(())
    } else {
        Err(ToolError::SdkMissing {
            path: sdk.to_path_buf(),
        })
    }
}

/// Writes a new project (see the module docs).
pub fn new_project(options: &NewOptions) -> Result<Created, ToolError> {
    check_name(&options.name)?;
    check_sdk(&options.sdk, options.language)?;
    let sdk = std::path::absolute(&options.sdk).map_err(|e| io_error(&options.sdk, e))?;
    let sdk = sdk.canonicalize().unwrap_or(sdk);
    let dir = &options.dir;
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(|e| io_error(dir, e))?;
        if entries.next().is_some() {
            return Err(ToolError::Usage(format!(
                "{} already exists and is not empty",
                dir.display()
            )));
        }
    }
    let templates = match options.language {
        Language::Rust => RUST,
        Language::Assemblyscript => ASSEMBLYSCRIPT,
        Language::C => C,
    };
    let mut values = vec![
        ("name", options.name.clone()),
        ("lib", options.name.replace('-', "_")),
        ("sdk", sdk.to_string_lossy().into_owned()),
    ];
    if options.language == Language::Assemblyscript {
        values.push(("assemblyscript_version", assemblyscript_version()?));
    }
    let mut files = Vec::new();
    for template in templates {
        let path = dir.join(template.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
        }
        std::fs::write(&path, render(template, &values)).map_err(|e| io_error(&path, e))?;
        if template.executable {
            make_executable(&path)?;
        }
        files.push(PathBuf::from(template.path));
    }
    if options.language == Language::Rust {
        // Start from the versions the SDK is built and tested with (the checkout's lock
        // file; cargo drops what the filter does not use), which also builds offline.
        let lock = sdk.parent().map(|root| root.join("Cargo.lock"));
        if let Some(lock) = lock.filter(|l| l.is_file()) {
            let to = dir.join("Cargo.lock");
            std::fs::copy(&lock, &to).map_err(|e| io_error(&to, e))?;
            files.push(PathBuf::from("Cargo.lock"));
        }
    }
    Ok(Created {
        dir: dir.clone(),
        language: options.language,
        files,
    })
}

#[cfg(unix)]
fn make_executable(path: &Path) -> Result<(), ToolError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io_error(path, e))
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> Result<(), ToolError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path, language: Language) -> NewOptions {
        NewOptions {
            name: "my-filter".into(),
            language,
            dir: dir.join("my-filter"),
            sdk: crate::built_in_sdk_dir(),
        }
    }

    #[test]
    fn names_must_suit_every_package_manager() {
        for good in ["demo", "my-filter", "auth_v2", "a"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Demo",
            "9lives",
            "-x",
            "my filter",
            "../x",
            "é",
            &"a".repeat(65),
        ] {
            let err = check_name(bad).expect_err(bad);
            assert!(err.to_string().contains("lowercase letters"), "{err}");
        }
    }

    #[test]
    fn every_placeholder_is_filled() {
        let dir = tempfile::tempdir().expect("dir");
        for language in [Language::Rust, Language::Assemblyscript, Language::C] {
            let o = options(&dir.path().join(language.to_string()), language);
            let created = new_project(&o).expect("created");
            for file in &created.files {
                let text = std::fs::read_to_string(created.dir.join(file)).expect("read");
                assert!(
                    !text.contains("{{name}}")
                        && !text.contains("{{sdk}}")
                        && !text.contains("{{lib}}")
                        && !text.contains("{{assemblyscript"),
                    "{language}: {} keeps a placeholder",
                    file.display()
                );
            }
        }
        let rust = dir.path().join("rust/my-filter");
        let manifest = std::fs::read_to_string(rust.join("Cargo.toml")).expect("manifest");
        assert!(manifest.contains("name = \"my-filter\""), "{manifest}");
        let sdk = crate::built_in_sdk_dir().canonicalize().expect("sdk");
        assert!(
            manifest.contains(&format!("path = \"{}\"", sdk.display())),
            "{manifest}"
        );
        let index = std::fs::read_to_string(
            dir.path()
                .join("assemblyscript/my-filter/assembly/index.ts"),
        )
        .expect("index");
        assert!(
            index.contains("from \"wasmesh-proxy-wasm/assembly/index\""),
            "{index}"
        );
        assert!(
            index.contains("export * from \"wasmesh-proxy-wasm/assembly/exports\""),
            "{index}"
        );
    }

    #[test]
    fn refuses_a_directory_in_use_and_a_missing_sdk() {
        let dir = tempfile::tempdir().expect("dir");
        let o = options(dir.path(), Language::C);
        std::fs::create_dir_all(&o.dir).expect("mkdir");
        std::fs::write(o.dir.join("keep.txt"), "mine").expect("write");
        let err = new_project(&o).expect_err("not empty");
        assert!(err.to_string().contains("not empty"), "{err}");
        assert_eq!(
            std::fs::read_to_string(o.dir.join("keep.txt")).expect("kept"),
            "mine"
        );

        let mut o = options(dir.path(), Language::Rust);
        o.dir = dir.path().join("fresh");
        o.sdk = dir.path().join("no-sdk");
        let err = new_project(&o).expect_err("no sdk");
        assert!(err.to_string().contains("--sdk-path"), "{err}");
        assert!(!o.dir.exists(), "nothing written");
    }
}
