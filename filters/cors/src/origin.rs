//! Which origins a policy allows: exact origins, `*` for any, wildcard patterns such as
//! `https://*.example.com`, and prefix / suffix / contains matches. Origins are compared
//! ignoring ASCII case (their scheme and host are case-insensitive).

use std::fmt;

use serde::Deserialize;

/// One allowed-origin matcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginMatcher {
    /// `*`: every origin.
    Any,
    Exact(String),
    /// Literal parts between `*`s; each `*` stands for one or more characters other than `/`.
    Pattern(Vec<String>),
    Prefix(String),
    Suffix(String),
    Contains(String),
}

impl OriginMatcher {
    /// A string form: `*`, a pattern with `*`, or an exact origin.
    pub fn parse(text: &str) -> Result<OriginMatcher, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("an empty origin matches nothing".into());
        }
        if text == "*" {
            return Ok(OriginMatcher::Any);
        }
        if text.contains('*') {
            if text.contains("**") {
                return Err(format!("\"{text}\": `**` is not a pattern; use one `*`"));
            }
            return Ok(OriginMatcher::Pattern(
                text.to_ascii_lowercase()
                    .split('*')
                    .map(str::to_string)
                    .collect(),
            ));
        }
        Ok(OriginMatcher::Exact(text.to_ascii_lowercase()))
    }

    pub fn matches(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        match self {
            OriginMatcher::Any => true,
            OriginMatcher::Exact(exact) => origin == *exact,
            OriginMatcher::Pattern(parts) => pattern_matches(parts, &origin),
            OriginMatcher::Prefix(prefix) => origin.starts_with(prefix.as_str()),
            OriginMatcher::Suffix(suffix) => origin.ends_with(suffix.as_str()),
            OriginMatcher::Contains(part) => origin.contains(part.as_str()),
        }
    }
}

/// `parts` are the literals around the `*`s (so there is one more part than `*`s).
fn pattern_matches(parts: &[String], origin: &str) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return false;
    };
    let Some(mut remaining) = origin.strip_prefix(first.as_str()) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty();
    };
    // Each `*` before a middle literal takes the shortest run that lets the literal follow;
    // a shorter run can only leave more room for what comes after.
    for literal in middle {
        let Some(at) = find_after_wildcard(remaining, literal) else {
            return false;
        };
        remaining = &remaining[at + literal.len()..];
    }
    // The last `*` takes everything before the final literal.
    match remaining.strip_suffix(last.as_str()) {
        Some(wild) => !wild.is_empty() && !wild.contains('/'),
        None => false,
    }
}

/// Where `literal` starts in `text` after a wildcard run of at least one non-`/` character.
fn find_after_wildcard(text: &str, literal: &str) -> Option<usize> {
    let mut from = 1;
    while from <= text.len() {
        let candidate = text.get(from..)?.find(literal)? + from;
        let wild = &text[..candidate];
        if wild.contains('/') {
            return None;
        }
        if !wild.is_empty() {
            return Some(candidate);
        }
        from = candidate + 1;
    }
    None
}

impl<'de> Deserialize<'de> for OriginMatcher {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<OriginMatcher, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Object {
            exact: Option<String>,
            prefix: Option<String>,
            suffix: Option<String>,
            contains: Option<String>,
        }

        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OriginMatcher;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an origin (\"https://app.example.com\", \"*\", \"https://*.example.com\") or {exact|prefix|suffix|contains: …}",
                )
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OriginMatcher, E> {
                OriginMatcher::parse(v).map_err(E::custom)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<OriginMatcher, A::Error> {
                let o = Object::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                let lower = |s: String| s.to_ascii_lowercase();
                let given: Vec<OriginMatcher> = [
                    o.exact.map(|s| OriginMatcher::Exact(lower(s))),
                    o.prefix.map(|s| OriginMatcher::Prefix(lower(s))),
                    o.suffix.map(|s| OriginMatcher::Suffix(lower(s))),
                    o.contains.map(|s| OriginMatcher::Contains(lower(s))),
                ]
                .into_iter()
                .flatten()
                .collect();
                match <[OriginMatcher; 1]>::try_from(given) {
                    Ok([one]) => Ok(one),
                    Err(_) => Err(serde::de::Error::custom(
                        "give exactly one of `exact`, `prefix`, `suffix`, `contains`",
                    )),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(text: &str) -> OriginMatcher {
        OriginMatcher::parse(text).expect("valid")
    }

    #[test]
    fn exact_and_any() {
        assert!(m("https://app.example.com").matches("https://app.example.com"));
        assert!(m("https://App.Example.com").matches("HTTPS://app.example.COM"));
        assert!(!m("https://app.example.com").matches("https://app.example.com:8443"));
        assert!(!m("https://app.example.com").matches("http://app.example.com"));
        assert!(m("*").matches("null"));
        assert!(m("*").matches("https://anything"));
    }

    #[test]
    fn wildcard_patterns() {
        let sub = m("https://*.example.com");
        assert!(sub.matches("https://app.example.com"));
        assert!(sub.matches("https://a.b.example.com"));
        assert!(!sub.matches("https://example.com"), "the * needs a label");
        assert!(!sub.matches("https://.example.com"));
        assert!(!sub.matches("http://app.example.com"));
        assert!(!sub.matches("https://app.example.com.evil.net"));
        assert!(!sub.matches("https://evil.net/.example.com"), "no / in a *");
        let port = m("http://localhost:*");
        assert!(port.matches("http://localhost:3000"));
        assert!(!port.matches("http://localhost:"));
        assert!(!port.matches("http://localhost"));
        let two = m("https://*.*.example.com");
        assert!(two.matches("https://a.b.example.com"));
        assert!(!two.matches("https://a.example.com"));
        let mid = m("https://*-preview.example.com");
        assert!(mid.matches("https://pr-12-preview.example.com"));
        assert!(!mid.matches("https://-preview.example.com"));
        assert!(OriginMatcher::parse("https://**.example.com").is_err());
        assert!(OriginMatcher::parse(" ").is_err());
    }

    #[test]
    fn object_forms() {
        let parse = |json: &str| serde_json::from_str::<OriginMatcher>(json);
        assert!(
            parse(r#"{"suffix": ".Example.com"}"#)
                .expect("suffix")
                .matches("https://x.example.com")
        );
        assert!(
            parse(r#"{"prefix": "https://"}"#)
                .expect("prefix")
                .matches("https://x")
        );
        assert!(
            !parse(r#"{"contains": "corp"}"#)
                .expect("contains")
                .matches("https://x.example.com")
        );
        assert!(parse(r#"{"exact": "a", "prefix": "b"}"#).is_err());
        assert!(parse(r#"{}"#).is_err());
        assert!(parse(r#"{"regex": ".*"}"#).is_err());
    }
}
