//! The filter's configuration: what to remove, set and add on each side, and the request
//! rewrites. Parsed with `wasmesh_sdk::config` (so a mistake names its field), then checked
//! for what the types cannot say (pseudo headers, `%RESP()%` on the request).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use wasmesh_sdk::config::ConfigError;

use crate::template::{Template, valid_header_name};

/// The whole configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(default)]
    pub request: Edits,
    #[serde(default)]
    pub response: Edits,
}

/// The edits of one side.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edits {
    /// Headers whose values are replaced (or added when absent).
    #[serde(default)]
    pub set: BTreeMap<Name, Values>,
    /// Values appended after any the header has.
    #[serde(default)]
    pub add: BTreeMap<Name, Values>,
    /// Headers removed, every value.
    #[serde(default)]
    pub remove: Vec<Name>,
    /// Request only.
    #[serde(default)]
    pub rewrite: Option<Rewrite>,
}

/// Request rewrites, applied after the header edits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Replaces a leading `from` of `:path` with `to`.
    pub path_prefix: Option<PathPrefix>,
    /// The new `:authority` (a template).
    pub host: Option<Template>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathPrefix {
    pub from: String,
    pub to: String,
}

/// A header name: a token, or a pseudo header (`:path`), kept lowercase.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn is_pseudo(&self) -> bool {
        self.0.starts_with(':')
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        let name = String::deserialize(d)?;
        if !valid_header_name(&name) {
            return Err(serde::de::Error::custom(format!(
                "\"{name}\" is not a header name"
            )));
        }
        Ok(Name(name.to_ascii_lowercase()))
    }
}

/// One value or several (`"a"` or `["a", "b"]`), each a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Values(pub Vec<Template>);

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Values, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Values;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a header value or a list of them")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Values, E> {
                Template::parse(v)
                    .map(|t| Values(vec![t]))
                    .map_err(E::custom)
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Values, A::Error> {
                let mut values = Vec::new();
                while let Some(t) = seq.next_element::<Template>()? {
                    values.push(t);
                }
                Ok(Values(values))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Pseudo headers a filter may set on a request.
const SETTABLE_PSEUDO: &[&str] = &[":authority", ":path", ":method", ":scheme"];

impl Rules {
    /// Checks what parsing cannot: where pseudo headers and `%RESP()%` may appear, and the
    /// rewrite's paths.
    pub fn check(&self) -> Result<(), ConfigError> {
        for (side, edits) in [("request", &self.request), ("response", &self.response)] {
            for name in &edits.remove {
                if name.is_pseudo() {
                    return Err(ConfigError::at(
                        format!("{side}.remove"),
                        format!("pseudo header {name} cannot be removed"),
                    ));
                }
            }
            for (name, values) in &edits.set {
                let path = format!("{side}.set.{name}");
                if name.is_pseudo()
                    && (side == "response" || !SETTABLE_PSEUDO.contains(&name.as_str()))
                {
                    return Err(ConfigError::at(
                        path,
                        format!(
                            "pseudo header {name} cannot be set here (request set may change {})",
                            SETTABLE_PSEUDO.join(", ")
                        ),
                    ));
                }
                if name.is_pseudo() && values.0.len() != 1 {
                    return Err(ConfigError::at(
                        path,
                        "a pseudo header takes exactly one value",
                    ));
                }
                check_side(side, &path, &values.0)?;
            }
            for (name, values) in &edits.add {
                let path = format!("{side}.add.{name}");
                if name.is_pseudo() {
                    return Err(ConfigError::at(
                        path,
                        format!("pseudo header {name} cannot be added; use set"),
                    ));
                }
                check_side(side, &path, &values.0)?;
            }
        }
        if self.response.rewrite.is_some() {
            return Err(ConfigError::at(
                "response.rewrite",
                "rewrite applies to requests only",
            ));
        }
        if let Some(rewrite) = &self.request.rewrite {
            if let Some(prefix) = &rewrite.path_prefix {
                if !prefix.from.starts_with('/') {
                    return Err(ConfigError::at(
                        "request.rewrite.path_prefix.from",
                        "must start with /",
                    ));
                }
                if !(prefix.to.is_empty() || prefix.to.starts_with('/')) {
                    return Err(ConfigError::at(
                        "request.rewrite.path_prefix.to",
                        "must be empty or start with /",
                    ));
                }
            }
            if let Some(host) = &rewrite.host {
                check_side(
                    "request",
                    "request.rewrite.host",
                    std::slice::from_ref(host),
                )?;
            }
        }
        Ok(())
    }

    /// Request headers the response templates read (kept from the request path, where hosts
    /// let filters read them).
    pub fn response_reads(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .response
            .set
            .values()
            .chain(self.response.add.values())
            .flat_map(|v| v.0.iter())
            .flat_map(Template::request_headers)
            .map(str::to_string)
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

fn check_side(side: &str, path: &str, templates: &[Template]) -> Result<(), ConfigError> {
    if side == "request" && templates.iter().any(Template::uses_response) {
        return Err(ConfigError::at(
            path,
            "%RESP()% is not available on request headers",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(json: &str) -> Result<Rules, ConfigError> {
        let rules: Rules = wasmesh_sdk::config::parse(json.as_bytes())?;
        rules.check()?;
        Ok(rules)
    }

    #[test]
    fn the_original_format_still_parses() {
        let r = rules(
            r#"{"request": {"set": {"x-env": "prod"}, "add": {"x-tag": "b"}, "remove": ["x-debug"]},
                "response": {"set": {"x-served-by": "wasmesh"}, "remove": ["x-upstream"]}}"#,
        )
        .expect("valid");
        assert_eq!(r.request.set.len(), 1);
        assert_eq!(r.request.remove[0].as_str(), "x-debug");
        assert_eq!(r.response.remove[0].as_str(), "x-upstream");
        rules("{}").expect("empty");
        rules("").expect("no configuration");
    }

    #[test]
    fn lists_and_case() {
        let r = rules(r#"{"request": {"add": {"X-Tag": ["a", "%REQ(x-b)%"]}}}"#).expect("valid");
        let (name, values) = r.request.add.iter().next().expect("one");
        assert_eq!(name.as_str(), "x-tag");
        assert_eq!(values.0.len(), 2);
    }

    #[test]
    fn errors_name_their_field() {
        for (json, path, message) in [
            (
                r#"{"request": {"set": {"x-a": "%NOPE%"}}}"#,
                "request.set.x-a",
                "unknown variable %NOPE%",
            ),
            (
                r#"{"request": {"add": {"x-a": ["ok", "%REQ(x%"]}}}"#,
                "request.add.x-a[1]",
                "missing",
            ),
            (
                r#"{"request": {"set": {"bad name": "v"}}}"#,
                "request.set.bad name",
                "is not a header name",
            ),
            (
                r#"{"request": {"set": {"x-a": 1}}}"#,
                "request.set.x-a",
                "a header value or a list",
            ),
            (
                r#"{"request": {"sett": {}}}"#,
                "request.sett",
                "unknown field",
            ),
            (
                r#"{"request": {"set": {"x-a": "%RESP(x)%"}}}"#,
                "request.set.x-a",
                "not available on request",
            ),
            (
                r#"{"request": {"remove": [":path"]}}"#,
                "request.remove",
                "cannot be removed",
            ),
            (
                r#"{"request": {"add": {":path": "/x"}}}"#,
                "request.add.:path",
                "use set",
            ),
            (
                r#"{"request": {"set": {":status": "1"}}}"#,
                "request.set.:status",
                "cannot be set",
            ),
            (
                r#"{"request": {"set": {":path": ["/a", "/b"]}}}"#,
                "request.set.:path",
                "exactly one",
            ),
            (
                r#"{"response": {"set": {":status": "200"}}}"#,
                "response.set.:status",
                "cannot be set",
            ),
            (
                r#"{"response": {"rewrite": {"host": "x"}}}"#,
                "response.rewrite",
                "requests only",
            ),
            (
                r#"{"request": {"rewrite": {"path_prefix": {"from": "api", "to": "/"}}}}"#,
                "request.rewrite.path_prefix.from",
                "start with /",
            ),
            (
                r#"{"request": {"rewrite": {"path_prefix": {"from": "/api", "to": "v2"}}}}"#,
                "request.rewrite.path_prefix.to",
                "empty or start with /",
            ),
            (
                r#"{"request": {"rewrite": {"host": "%RESP(x)%"}}}"#,
                "request.rewrite.host",
                "not available",
            ),
            (
                r#"{"request": {"rewrite": {"path_prefix": {"from": "/api"}}}}"#,
                "request.rewrite.path_prefix",
                "missing field `to`",
            ),
        ] {
            let err = rules(json).expect_err(json);
            assert_eq!(err.path, path, "{json}: {err}");
            assert!(err.message.contains(message), "{json}: {err}");
        }
    }

    #[test]
    fn response_templates_declare_the_request_headers_they_read() {
        let r = rules(
            r#"{"response": {"set": {"x-a": "%REQ(x-id)%"}, "add": {"x-b": ["%REQ(x-id?x-alt)%"]}}}"#,
        )
        .expect("valid");
        assert_eq!(r.response_reads(), ["x-alt", "x-id"]);
    }
}
