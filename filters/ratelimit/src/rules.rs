//! Which rules a request matches and the key each one counts it under, read from the request
//! through [`Request`] so the logic is testable without a host.

use crate::config::{HeaderMatch, Key, Match, Rule};

/// What rules read from a request.
pub trait Request {
    fn method(&self) -> Option<String>;
    /// The path without the query.
    fn path(&self) -> Option<String>;
    fn header(&self, name: &str) -> Option<String>;
    /// An attribute or filter-state value by dotted path.
    fn property(&self, path: &str) -> Option<String>;
    /// `source.address`, `ip:port`.
    fn source_address(&self) -> Option<String>;
}

/// Key values longer than this are replaced by a hash, so a client cannot make the filter
/// store arbitrarily long shared-data keys.
const MAX_KEY_LEN: usize = 128;

impl Match {
    pub fn matches(&self, request: &dyn Request) -> bool {
        if let Some(prefix) = &self.path_prefix
            && !request
                .path()
                .is_some_and(|p| p.starts_with(prefix.as_str()))
        {
            return false;
        }
        if !self.methods.is_empty() && !request.method().is_some_and(|m| self.methods.contains(&m))
        {
            return false;
        }
        self.headers.iter().all(|h| h.matches(request))
    }
}

impl HeaderMatch {
    fn matches(&self, request: &dyn Request) -> bool {
        let value = request.header(&self.name);
        if let Some(present) = self.present {
            return value.is_some() == present;
        }
        let Some(value) = value else { return false };
        match (&self.exact, &self.prefix) {
            (Some(exact), _) => value == *exact,
            (_, Some(prefix)) => value.starts_with(prefix.as_str()),
            _ => false,
        }
    }
}

impl Key {
    /// The key's value for this request; `None` when the request has none (the rule is then
    /// skipped, as Envoy skips a descriptor whose action finds nothing).
    pub fn value(&self, request: &dyn Request) -> Option<String> {
        let value = match self {
            Key::ClientIp => {
                let address = request.source_address()?;
                wasmesh_sdk::headers::split_host_port(&address)
                    .0
                    .to_string()
            }
            Key::Header { name } => request.header(name)?,
            Key::Path => request.path()?,
            Key::JwtClaim {
                claim,
                header,
                property,
            } => match (header, property) {
                (_, Some(property)) => request.property(property)?,
                (Some(header), None) => request.header(header)?,
                (None, None) => request.header(&format!("x-jwt-claim-{claim}"))?,
            },
        };
        Some(bounded(value))
    }
}

/// `value`, or `#` and a 64-bit FNV-1a hash of it if it is long.
fn bounded(value: String) -> String {
    if value.len() <= MAX_KEY_LEN {
        return value;
    }
    let hash = value.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("#{hash:016x}")
}

/// The rules `request` matches, each with its key's value (`None` for a rule without a key);
/// rules whose key the request lacks are left out.
pub fn matching<'a>(rules: &'a [Rule], request: &dyn Request) -> Vec<(&'a Rule, Option<String>)> {
    rules
        .iter()
        .filter(|rule| rule.when.matches(request))
        .filter_map(|rule| match &rule.key {
            None => Some((rule, None)),
            Some(key) => key.value(request).map(|v| (rule, Some(v))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::Config;

    #[derive(Default)]
    struct Fake {
        method: &'static str,
        path: &'static str,
        headers: HashMap<&'static str, &'static str>,
        properties: HashMap<&'static str, &'static str>,
        source: Option<&'static str>,
    }

    impl Request for Fake {
        fn method(&self) -> Option<String> {
            Some(self.method.to_string())
        }
        fn path(&self) -> Option<String> {
            Some(self.path.to_string())
        }
        fn header(&self, name: &str) -> Option<String> {
            self.headers.get(name).map(|v| v.to_string())
        }
        fn property(&self, path: &str) -> Option<String> {
            self.properties.get(path).map(|v| v.to_string())
        }
        fn source_address(&self) -> Option<String> {
            self.source.map(str::to_string)
        }
    }

    fn rules(json: &str) -> Config {
        let c: Config = wasmesh_sdk::config::parse(json.as_bytes()).expect("parses");
        c.check().expect("valid");
        c
    }

    fn names(c: &Config, request: &Fake) -> Vec<(String, Option<String>)> {
        matching(&c.rules, request)
            .into_iter()
            .map(|(r, v)| (r.name.clone(), v))
            .collect()
    }

    #[test]
    fn conditions_all_hold() {
        let c = rules(
            r#"{"rules": [{"name": "r", "bucket": {"max_tokens": 1, "fill_interval": "1s"},
                "match": {"path_prefix": "/api", "methods": ["GET", "POST"],
                          "headers": [{"name": "x-tier", "prefix": "fr"}, {"name": "x-internal", "present": false}]}}]}"#,
        );
        let mut r = Fake {
            method: "GET",
            path: "/api/users",
            ..Fake::default()
        };
        r.headers.insert("x-tier", "free");
        assert_eq!(names(&c, &r).len(), 1);
        r.method = "DELETE";
        assert!(names(&c, &r).is_empty(), "method");
        r.method = "POST";
        r.path = "/other";
        assert!(names(&c, &r).is_empty(), "path");
        r.path = "/api";
        r.headers.insert("x-internal", "1");
        assert!(names(&c, &r).is_empty(), "present: false");
        r.headers.remove("x-internal");
        r.headers.insert("x-tier", "paid");
        assert!(names(&c, &r).is_empty(), "prefix");
    }

    #[test]
    fn keys_come_from_where_they_say() {
        let b = r#""bucket": {"max_tokens": 1, "fill_interval": "1s"}"#;
        let c = rules(&format!(
            r#"{{"rules": [
                {{"name": "ip", "key": {{"type": "client_ip"}}, {b}}},
                {{"name": "hdr", "key": {{"type": "header", "name": "x-api-key"}}, {b}}},
                {{"name": "path", "key": {{"type": "path"}}, {b}}},
                {{"name": "sub", "key": {{"type": "jwt_claim", "claim": "sub"}}, {b}}},
                {{"name": "org", "key": {{"type": "jwt_claim", "claim": "org", "header": "x-org"}}, {b}}},
                {{"name": "tenant", "key": {{"type": "jwt_claim", "claim": "tenant", "property": "jwt.tenant"}}, {b}}},
                {{"name": "all", {b}}}
            ]}}"#
        ));
        let mut r = Fake {
            method: "GET",
            path: "/p",
            source: Some("[2001:db8::7]:4000"),
            ..Fake::default()
        };
        r.headers.insert("x-api-key", "k1");
        r.headers.insert("x-jwt-claim-sub", "alice");
        r.headers.insert("x-org", "acme");
        r.properties.insert("jwt.tenant", "t9");
        let got = names(&c, &r);
        let want: Vec<(String, Option<String>)> = [
            ("ip", Some("2001:db8::7")),
            ("hdr", Some("k1")),
            ("path", Some("/p")),
            ("sub", Some("alice")),
            ("org", Some("acme")),
            ("tenant", Some("t9")),
            ("all", None),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v.map(str::to_string)))
        .collect();
        assert_eq!(got, want);

        let bare = Fake {
            method: "GET",
            path: "/p",
            ..Fake::default()
        };
        assert_eq!(
            names(&c, &bare),
            [
                ("path".to_string(), Some("/p".to_string())),
                ("all".to_string(), None)
            ],
            "rules whose key is missing are skipped"
        );
    }

    #[test]
    fn long_keys_are_hashed() {
        assert_eq!(bounded("short".into()), "short");
        let long = "x".repeat(500);
        let hashed = bounded(long.clone());
        assert!(hashed.starts_with('#') && hashed.len() == 17, "{hashed}");
        assert_eq!(hashed, bounded(long), "stable");
        assert_ne!(hashed, bounded("y".repeat(500)));
    }
}
