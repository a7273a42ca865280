//! The filter's configuration: a CORS policy (the top-level fields) and optional per-route
//! policies keyed by route name, whose fields override the top-level ones one by one (as
//! Envoy's route policy overrides its virtual host's).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use wasmesh_sdk::config::ConfigError;

use crate::origin::OriginMatcher;

/// A policy; every field is optional so a route's policy can override only some.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// `false` turns CORS handling off (for a route, say). Default `true`.
    pub enabled: Option<bool>,
    pub allow_origins: Option<Vec<OriginMatcher>>,
    pub allow_methods: Option<List>,
    pub allow_headers: Option<List>,
    pub expose_headers: Option<List>,
    /// Seconds a browser may cache a preflight answer.
    pub max_age: Option<u64>,
    pub allow_credentials: Option<bool>,
    pub allow_private_network_access: Option<bool>,
    /// A preflight from an origin that is not allowed goes upstream (default `true`, as
    /// Envoy); `false` answers it here, without `Access-Control-Allow-Origin`.
    pub forward_not_matching_preflights: Option<bool>,
    /// Top level only: policies by route name (`route_name`).
    pub routes: Option<BTreeMap<String, Policy>>,
}

/// `"*"` (echo what the request asks for), or names: a list or a comma-separated string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum List {
    Any,
    Names(Vec<String>),
}

impl List {
    /// The header value: the names joined, or for `*` what the request asked.
    pub fn render(&self, asked: Option<&str>) -> Option<String> {
        match self {
            List::Any => asked.filter(|a| !a.trim().is_empty()).map(str::to_string),
            List::Names(names) if names.is_empty() => None,
            List::Names(names) => Some(names.join(", ")),
        }
    }
}

fn token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<List, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = List;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"*\", a list of names, or a comma-separated string of them")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<List, E> {
                if v.trim() == "*" {
                    return Ok(List::Any);
                }
                names(v.split(',').map(str::trim).filter(|s| !s.is_empty())).map_err(E::custom)
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<List, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                if items.len() == 1 && items[0] == "*" {
                    return Ok(List::Any);
                }
                names(items.iter().map(|s| s.trim())).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn names<'a>(items: impl Iterator<Item = &'a str>) -> Result<List, String> {
    let mut out = Vec::new();
    for item in items {
        if !token(item) {
            return Err(format!("\"{item}\" is not a method or header name"));
        }
        out.push(item.to_string());
    }
    Ok(List::Names(out))
}

/// The policy that applies to one request: a route's fields over the top-level ones, over
/// the defaults.
#[derive(Debug)]
pub struct Effective<'a> {
    pub enabled: bool,
    pub allow_origins: &'a [OriginMatcher],
    pub allow_methods: Option<&'a List>,
    pub allow_headers: Option<&'a List>,
    pub expose_headers: Option<&'a List>,
    pub max_age: Option<u64>,
    pub allow_credentials: bool,
    pub allow_private_network_access: bool,
    pub forward_not_matching_preflights: bool,
}

impl Policy {
    /// Checks what parsing cannot (`routes` only at the top).
    pub fn check(&self) -> Result<(), ConfigError> {
        if let Some(routes) = &self.routes {
            for (name, policy) in routes {
                if policy.routes.is_some() {
                    return Err(ConfigError::at(
                        format!("routes.{name}.routes"),
                        "route policies cannot have routes of their own",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The policy for a request on `route` (its `route_name`, if known).
    pub fn effective(&self, route: Option<&str>) -> Effective<'_> {
        let specific = route.and_then(|r| self.routes.as_ref().and_then(|routes| routes.get(r)));
        // A field of the route's policy if it has one, else the top-level one.
        macro_rules! pick {
            ($field:ident) => {
                specific
                    .and_then(|p| p.$field.as_ref())
                    .or(self.$field.as_ref())
            };
        }
        Effective {
            enabled: pick!(enabled).copied().unwrap_or(true),
            allow_origins: pick!(allow_origins).map_or(&[], Vec::as_slice),
            allow_methods: pick!(allow_methods),
            allow_headers: pick!(allow_headers),
            expose_headers: pick!(expose_headers),
            max_age: pick!(max_age).copied(),
            allow_credentials: pick!(allow_credentials).copied().unwrap_or(false),
            allow_private_network_access: pick!(allow_private_network_access)
                .copied()
                .unwrap_or(false),
            forward_not_matching_preflights: pick!(forward_not_matching_preflights)
                .copied()
                .unwrap_or(true),
        }
    }
}

impl Effective<'_> {
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|m| m.matches(origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> Result<Policy, ConfigError> {
        let p: Policy = wasmesh_sdk::config::parse(json.as_bytes())?;
        p.check()?;
        Ok(p)
    }

    #[test]
    fn lists_take_three_forms() {
        let p = policy(
            r#"{"allow_methods": "GET, POST", "allow_headers": ["content-type", "x-token"],
                "expose_headers": "*"}"#,
        )
        .expect("valid");
        let e = p.effective(None);
        assert_eq!(
            e.allow_methods.and_then(|l| l.render(None)).as_deref(),
            Some("GET, POST")
        );
        assert_eq!(
            e.allow_headers.and_then(|l| l.render(None)).as_deref(),
            Some("content-type, x-token")
        );
        assert_eq!(e.expose_headers, Some(&List::Any));
        assert_eq!(
            List::Any.render(Some("x-a, x-b")).as_deref(),
            Some("x-a, x-b")
        );
        assert_eq!(List::Any.render(None), None);
        assert_eq!(List::Names(Vec::new()).render(None), None);
    }

    #[test]
    fn route_fields_override_one_by_one() {
        let p = policy(
            r#"{"allow_origins": ["https://a.example"], "allow_methods": "GET", "max_age": 60,
                "allow_credentials": true,
                "routes": {"admin": {"allow_origins": ["https://admin.example"], "max_age": 5},
                           "public": {"enabled": false}}}"#,
        )
        .expect("valid");
        let top = p.effective(None);
        assert!(top.enabled);
        assert!(top.origin_allowed("https://a.example"));
        assert!(top.forward_not_matching_preflights, "forwarded by default");
        assert!(!top.allow_private_network_access);
        let admin = p.effective(Some("admin"));
        assert!(admin.origin_allowed("https://admin.example"));
        assert!(!admin.origin_allowed("https://a.example"));
        assert_eq!(admin.max_age, Some(5));
        assert_eq!(
            admin.allow_methods.and_then(|l| l.render(None)).as_deref(),
            Some("GET"),
            "inherited"
        );
        assert!(admin.allow_credentials, "inherited");
        assert!(!p.effective(Some("public")).enabled);
        assert!(
            p.effective(Some("other"))
                .origin_allowed("https://a.example")
        );
        assert_eq!(Policy::default().effective(None).allow_origins.len(), 0);
    }

    #[test]
    fn mistakes_name_their_field() {
        for (json, path, message) in [
            (
                r#"{"allow_methods": "GET, P OST"}"#,
                "allow_methods",
                "not a method",
            ),
            (
                r#"{"allow_headers": ["x a"]}"#,
                "allow_headers",
                "not a method or header",
            ),
            (
                r#"{"allow_origins": ["https://**.x"]}"#,
                "allow_origins[0]",
                "`**`",
            ),
            (
                r#"{"allow_origins": [{"exact": "a", "suffix": "b"}]}"#,
                "allow_origins[0]",
                "exactly one",
            ),
            (r#"{"max_age": -1}"#, "max_age", "invalid value"),
            (
                r#"{"routes": {"r": {"routes": {}}}}"#,
                "routes.r.routes",
                "cannot have routes",
            ),
            (
                r#"{"routes": {"r": {"allow_origin": []}}}"#,
                "routes.r.allow_origin",
                "unknown field",
            ),
            (
                r#"{"allow_credential": true}"#,
                "allow_credential",
                "unknown field",
            ),
        ] {
            let err = policy(json).expect_err(json);
            assert_eq!(err.path, path, "{json}: {err}");
            assert!(err.message.contains(message), "{json}: {err}");
        }
    }
}
