//! The filter's configuration: the variants and their weights, the overrides that pick a
//! variant from a header or cookie, how a user is kept on one variant, and the header the
//! choice is written to.

use std::collections::HashSet;

use serde::Deserialize;
use wasmesh_sdk::config::ConfigError;

/// The whole configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The request header the choice is written to (the route table matches on it).
    #[serde(default = "default_header")]
    pub header: String,
    pub variants: Vec<Variant>,
    /// Checked in order before the weights; the first that matches decides.
    #[serde(default)]
    pub overrides: Vec<Override>,
    #[serde(default)]
    pub sticky: Option<Sticky>,
}

fn default_header() -> String {
    "x-route-variant".to_string()
}

/// One variant: its name (the header's value) and its share of traffic.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    pub weight: u32,
}

/// Sends requests whose header or cookie has a value to a variant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
    /// The value to match exactly; absent: the header or cookie only has to be there.
    #[serde(default)]
    pub value: Option<String>,
    pub variant: String,
}

/// Keeps each user on one variant: the weights are applied to a hash of a key taken from
/// the request. `salt` is mixed into the hash; changing it reshuffles which users get which
/// variant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Sticky {
    Header {
        name: String,
        #[serde(default)]
        salt: String,
    },
    Cookie {
        name: String,
        #[serde(default)]
        salt: String,
    },
    /// `source.address` without its port.
    ClientIp {
        #[serde(default)]
        salt: String,
    },
}

impl Sticky {
    pub fn salt(&self) -> &str {
        match self {
            Sticky::Header { salt, .. }
            | Sticky::Cookie { salt, .. }
            | Sticky::ClientIp { salt } => salt,
        }
    }
}

fn header_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

fn check_header_name(at: &str, name: &str) -> Result<(), ConfigError> {
    if header_name_ok(name) {
        Ok(())
    } else {
        Err(ConfigError::at(
            at,
            format!("\"{name}\" is not a lowercase header name"),
        ))
    }
}

fn cookie_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

impl Config {
    /// Checks what parsing cannot.
    pub fn check(&self) -> Result<(), ConfigError> {
        check_header_name("header", &self.header)?;
        if self.header.starts_with(':') {
            return Err(ConfigError::at("header", "cannot be a pseudo header"));
        }
        if self.variants.is_empty() {
            return Err(ConfigError::at("variants", "give at least one variant"));
        }
        let mut names = HashSet::new();
        for (i, variant) in self.variants.iter().enumerate() {
            let ok = !variant.name.is_empty()
                && variant
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok {
                return Err(ConfigError::at(
                    format!("variants[{i}].name"),
                    "must be letters, digits, `-`, `_` or `.` (it becomes a header value)",
                ));
            }
            if !names.insert(variant.name.as_str()) {
                return Err(ConfigError::at(
                    format!("variants[{i}].name"),
                    format!("\"{}\" is used by an earlier variant", variant.name),
                ));
            }
        }
        let total: u64 = self.variants.iter().map(|v| u64::from(v.weight)).sum();
        if total == 0 {
            return Err(ConfigError::at(
                "variants",
                "the weights add up to zero; give some variant a weight",
            ));
        }
        for (i, o) in self.overrides.iter().enumerate() {
            let at = format!("overrides[{i}]");
            match (&o.header, &o.cookie) {
                (Some(header), None) => check_header_name(&format!("{at}.header"), header)?,
                (None, Some(cookie)) if !cookie_name_ok(cookie) => {
                    return Err(ConfigError::at(
                        format!("{at}.cookie"),
                        format!("\"{cookie}\" is not a cookie name"),
                    ));
                }
                (None, Some(_)) => {}
                _ => {
                    return Err(ConfigError::at(
                        at,
                        "give exactly one of `header` or `cookie`",
                    ));
                }
            }
            if !names.contains(o.variant.as_str()) {
                return Err(ConfigError::at(
                    format!("{at}.variant"),
                    format!("\"{}\" is not one of the variants", o.variant),
                ));
            }
        }
        if let Some(sticky) = &self.sticky {
            match sticky {
                Sticky::Header { name, .. } => check_header_name("sticky.name", name)?,
                Sticky::Cookie { name, .. } if !cookie_name_ok(name) => {
                    return Err(ConfigError::at(
                        "sticky.name",
                        format!("\"{name}\" is not a cookie name"),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The variant a point in `[0, total weight)` falls on.
    pub fn variant_at(&self, point: u64) -> &Variant {
        let mut upto = 0u64;
        for variant in &self.variants {
            upto += u64::from(variant.weight);
            if point < upto {
                return variant;
            }
        }
        // `point` is below the total; the last variant with a weight owns the end.
        self.variants
            .iter()
            .rev()
            .find(|v| v.weight > 0)
            .unwrap_or(&self.variants[0])
    }

    pub fn total_weight(&self) -> u64 {
        self.variants.iter().map(|v| u64::from(v.weight)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Result<Config, ConfigError> {
        let c: Config = wasmesh_sdk::config::parse(json.as_bytes())?;
        c.check()?;
        Ok(c)
    }

    #[test]
    fn a_full_configuration_parses() {
        let c = config(
            r#"{"variants": [{"name": "stable", "weight": 90}, {"name": "canary", "weight": 10}],
                "overrides": [{"header": "x-canary", "value": "always", "variant": "canary"},
                              {"cookie": "version", "value": "v2", "variant": "canary"}],
                "sticky": {"type": "cookie", "name": "session", "salt": "2024-06"}}"#,
        )
        .expect("valid");
        assert_eq!(c.header, "x-route-variant");
        assert_eq!(c.total_weight(), 100);
        assert_eq!(
            c.sticky,
            Some(Sticky::Cookie {
                name: "session".into(),
                salt: "2024-06".into()
            })
        );
    }

    #[test]
    fn points_fall_on_variants_by_weight() {
        let c = config(
            r#"{"variants": [{"name": "a", "weight": 2}, {"name": "off", "weight": 0},
                             {"name": "b", "weight": 1}]}"#,
        )
        .expect("valid");
        let names: Vec<&str> = (0..3).map(|p| c.variant_at(p).name.as_str()).collect();
        assert_eq!(names, ["a", "a", "b"]);
    }

    #[test]
    fn mistakes_name_their_field() {
        let two = r#""variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 0}]"#;
        for (json, path, message) in [
            (
                r#"{"variants": []}"#.to_string(),
                "variants",
                "at least one",
            ),
            (
                r#"{"variants": [{"name": "a", "weight": 0}]}"#.to_string(),
                "variants",
                "add up to zero",
            ),
            (
                r#"{"variants": [{"name": "a b", "weight": 1}]}"#.to_string(),
                "variants[0].name",
                "letters, digits",
            ),
            (
                r#"{"variants": [{"name": "a", "weight": 1}, {"name": "a", "weight": 1}]}"#
                    .to_string(),
                "variants[1].name",
                "used by an earlier variant",
            ),
            (
                r#"{"variants": [{"name": "a", "weight": -1}]}"#.to_string(),
                "variants[0].weight",
                "invalid value",
            ),
            (
                format!(r#"{{{two}, "overrides": [{{"header": "x-a", "variant": "c"}}]}}"#),
                "overrides[0].variant",
                "not one of the variants",
            ),
            (
                format!(
                    r#"{{{two}, "overrides": [{{"header": "x-a", "cookie": "c", "variant": "a"}}]}}"#
                ),
                "overrides[0]",
                "exactly one",
            ),
            (
                format!(r#"{{{two}, "overrides": [{{"cookie": "a=b", "variant": "a"}}]}}"#),
                "overrides[0].cookie",
                "not a cookie name",
            ),
            (
                format!(r#"{{{two}, "header": "X-Variant"}}"#),
                "header",
                "lowercase header name",
            ),
            (
                format!(r#"{{{two}, "sticky": {{"type": "header", "name": "X-User"}}}}"#),
                "sticky.name",
                "lowercase header name",
            ),
            (
                format!(r#"{{{two}, "sticky": {{"type": "session"}}}}"#),
                "sticky.type",
                "unknown variant `session`",
            ),
            (
                format!(r#"{{{two}, "weights": {{}}}}"#),
                "weights",
                "unknown field",
            ),
        ] {
            let err = config(&json).expect_err(&json);
            assert_eq!(err.path, path, "{json}: {err}");
            assert!(err.message.contains(message), "{json}: {err}");
        }
    }
}
