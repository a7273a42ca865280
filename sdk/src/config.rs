//! Typed plugin configuration.
//!
//! A plugin's configuration arrives as bytes (`PLUGIN_CONFIGURATION` in `on_configure`,
//! `VM_CONFIGURATION` in `on_vm_start`). [`parse`] turns them into any `T: Deserialize`, and a
//! mistake comes back as a [`ConfigError`] naming the field and the cause:
//!
//! ```
//! #[derive(Debug, serde::Deserialize)]
//! struct Limits {
//!     requests_per_second: u32,
//! }
//! #[derive(Debug, serde::Deserialize)]
//! struct Config {
//!     limits: Limits,
//! }
//!
//! let err = wasmesh_sdk::config::parse::<Config>(br#"{"limits": {"requests_per_second": "many"}}"#)
//!     .unwrap_err();
//! assert_eq!(err.path, "limits.requests_per_second");
//! assert!(err.to_string().starts_with(
//!     "configuration field `limits.requests_per_second`: invalid type: string \"many\", expected u32"
//! ));
//! ```
//!
//! In a root context, [`configure`] does it all — read, parse, log the error, answer false so
//! the host refuses the plugin — in one line:
//!
//! ```no_run
//! # use wasmesh_sdk::proxy_wasm::traits::{Context, RootContext};
//! # #[derive(Default, serde::Deserialize)] struct Config { greeting: String }
//! # struct Root { config: Config }
//! # impl Context for Root {}
//! impl RootContext for Root {
//!     fn on_configure(&mut self, _: usize) -> bool {
//!         wasmesh_sdk::config::configure(|c: Config| self.config = c)
//!     }
//! }
//! ```
//!
//! JSON is always accepted. With the crate's `yaml` feature, input that does not start with
//! `{` or `[` is read as YAML (wasmesh passes a YAML string `config` through as is); the
//! feature costs a filter about 190 KB of `.wasm` (the headers filter grows from 295 KB to
//! 484 KB), so it is off by default. Empty input reads as `{}`, so a struct whose fields all
//! have defaults accepts "no configuration".

use proxy_wasm::types::{BufferType, LogLevel};
use serde::de::DeserializeOwned;

/// A configuration that does not fit the filter's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe(.path, .message))]
pub struct ConfigError {
    /// Where: dotted field path (`request.set.x-env`, `routes[2].path`), or `.` for the whole
    /// document (syntax errors, a missing top-level field).
    pub path: String,
    /// Why, as the parser says it (with line and column where it knows them).
    pub message: String,
}

fn describe(path: &str, message: &str) -> String {
    if path.is_empty() || path == "." {
        format!("configuration: {message}")
    } else {
        format!("configuration field `{path}`: {message}")
    }
}

impl ConfigError {
    /// An error about field `path` (dotted), for checks made after parsing.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Parses a configuration document into `T`: JSON, or YAML with the `yaml` feature.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let text = bytes.trim_ascii();
    let text: &[u8] = if text.is_empty() { b"{}" } else { text };
    if cfg!(feature = "yaml") && !matches!(text.first(), Some(b'{' | b'[')) {
        return parse_yaml(text);
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| ConfigError {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })?;
    de.end().map_err(|e| ConfigError::at(".", e.to_string()))?;
    Ok(value)
}

#[cfg(feature = "yaml")]
fn parse_yaml<T: DeserializeOwned>(text: &[u8]) -> Result<T, ConfigError> {
    let de = serde_yaml::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(de).map_err(|e| ConfigError {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

#[cfg(not(feature = "yaml"))]
fn parse_yaml<T: DeserializeOwned>(_: &[u8]) -> Result<T, ConfigError> {
    unreachable!("only called with the yaml feature")
}

fn buffer(kind: BufferType, what: &str) -> Result<Vec<u8>, ConfigError> {
    match proxy_wasm::hostcalls::get_buffer(kind, 0, usize::MAX) {
        Ok(bytes) => Ok(bytes.unwrap_or_default()),
        Err(status) => Err(ConfigError::at(
            ".",
            format!("cannot read the {what} (status {status:?})"),
        )),
    }
}

/// Reads and parses the plugin configuration (in `on_configure`).
pub fn plugin_config<T: DeserializeOwned>() -> Result<T, ConfigError> {
    parse(&buffer(
        BufferType::PluginConfiguration,
        "plugin configuration",
    )?)
}

/// Reads and parses the VM configuration (in `on_vm_start`).
pub fn vm_config<T: DeserializeOwned>() -> Result<T, ConfigError> {
    parse(&buffer(BufferType::VmConfiguration, "VM configuration")?)
}

/// The whole of `on_configure`: reads and parses the plugin configuration and hands it to
/// `apply`, answering true; or logs the error through `proxy_log` (level `Error`) and answers
/// false, so the host refuses the plugin.
pub fn configure<T: DeserializeOwned>(apply: impl FnOnce(T)) -> bool {
    configure_with(|config: T| {
        apply(config);
        Ok(())
    })
}

/// [`configure`] for a configuration that is checked further after parsing: `apply` may
/// refuse it with a [`ConfigError`] (see [`ConfigError::at`]), which is logged the same way.
pub fn configure_with<T: DeserializeOwned>(
    apply: impl FnOnce(T) -> Result<(), ConfigError>,
) -> bool {
    match plugin_config::<T>().and_then(apply) {
        Ok(()) => true,
        Err(err) => {
            crate::log(LogLevel::Error, &err.to_string());
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Rules {
        #[serde(default)]
        set: BTreeMap<String, String>,
        #[serde(default)]
        limit: Option<u32>,
        #[serde(default)]
        routes: Vec<Route>,
    }

    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Route {
        path: String,
    }

    #[test]
    fn json_parses() {
        let rules: Rules = parse(br#" {"set": {"x-a": "1"}, "limit": 3} "#).expect("valid");
        assert_eq!(rules.set["x-a"], "1");
        assert_eq!(rules.limit, Some(3));
    }

    #[test]
    fn empty_input_is_an_empty_object() {
        assert_eq!(parse::<Rules>(b""), Ok(Rules::default()));
        assert_eq!(parse::<Rules>(b" \n"), Ok(Rules::default()));
    }

    #[test]
    fn errors_name_the_field_and_the_cause() {
        let err = parse::<Rules>(br#"{"set": {"x-a": 1}}"#).expect_err("wrong type");
        assert_eq!(err.path, "set.x-a");
        assert!(err.message.contains("invalid type: integer `1`"), "{err}");
        assert!(
            err.to_string()
                .starts_with("configuration field `set.x-a`: invalid type"),
            "{err}"
        );

        let err = parse::<Rules>(br#"{"routes": [{"path": "/"}, {"paht": "/x"}]}"#)
            .expect_err("unknown field");
        assert_eq!(err.path, "routes[1].paht");
        assert!(err.message.contains("unknown field `paht`"), "{err}");

        let err = parse::<Rules>(br#"{"limit": -1}"#).expect_err("negative");
        assert_eq!(err.path, "limit");
    }

    #[test]
    fn syntax_errors_say_where() {
        let err = parse::<Rules>(br#"{"set": }"#).expect_err("syntax");
        assert_eq!(err.path, "set", "{err}");
        assert!(err.message.contains("line 1 column 9"), "{err}");
        let err = parse::<Rules>(br#"{} {}"#).expect_err("trailing data");
        assert_eq!(err.path, ".");
        assert!(
            err.to_string()
                .starts_with("configuration: trailing characters"),
            "{err}"
        );
    }

    #[cfg(not(feature = "yaml"))]
    #[test]
    fn yaml_needs_the_feature() {
        let err = parse::<Rules>(b"limit: 3").expect_err("not JSON");
        assert_eq!(err.path, ".");
    }

    #[cfg(feature = "yaml")]
    #[test]
    fn yaml_parses_with_field_paths() {
        let rules: Rules = parse(b"set:\n  x-a: one\nlimit: 3\n").expect("valid yaml");
        assert_eq!(rules.set["x-a"], "one");
        let err = parse::<Rules>(b"routes:\n  - path: /\n  - path: [1]\n").expect_err("bad");
        assert_eq!(err.path, "routes[1].path");
    }
}
