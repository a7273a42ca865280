//! Custom field templates: literal text with `%REQ(header)%`, `%RESP(header)%` and
//! `%PROPERTY(path)%` substitutions (`%%` is a literal `%`), parsed once at configuration time.

use std::fmt;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    Request(String),
    Response(String),
    Property(String),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub parts: Vec<Part>,
}

/// What a template reads from the request it renders for.
pub trait Values {
    fn request_header(&self, name: &str) -> Option<String>;
    fn response_header(&self, name: &str) -> Option<String>;
    fn property(&self, path: &str) -> Option<String>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn variable(text: &str) -> Result<Part, TemplateError> {
    let unknown = || {
        TemplateError(format!(
            "unknown variable %{text}% (supported: %REQ(header)%, %RESP(header)%, %PROPERTY(path)%, %%)"
        ))
    };
    let (name, rest) = text.split_once('(').ok_or_else(unknown)?;
    let arg = rest
        .strip_suffix(')')
        .ok_or_else(|| TemplateError(format!("%{text}%: missing \")\"")))?
        .trim();
    if arg.is_empty() {
        return Err(TemplateError(format!("%{text}%: empty argument")));
    }
    match name {
        "REQ" => Ok(Part::Request(arg.to_ascii_lowercase())),
        "RESP" => Ok(Part::Response(arg.to_ascii_lowercase())),
        "PROPERTY" if arg.split('.').all(|s| !s.is_empty()) => Ok(Part::Property(arg.to_string())),
        "PROPERTY" => Err(TemplateError(format!(
            "%{text}%: \"{arg}\" is not an attribute path"
        ))),
        _ => Err(unknown()),
    }
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = source;
        while let Some(at) = rest.find('%') {
            literal.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                literal.push('%');
                rest = tail;
                continue;
            }
            let end = after.find('%').ok_or_else(|| {
                TemplateError(format!(
                    "unterminated variable at \"%{after}\" (write %% for a literal %)"
                ))
            })?;
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(variable(&after[..end])?);
            rest = &after[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }

    /// The request headers the template reads (kept when the request passes).
    pub fn request_headers(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Request(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// The response headers the template reads.
    pub fn response_headers(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Response(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// The rendered text, or `None` when every substitution was missing and there is no
    /// literal text (the field is then `null`).
    pub fn render(&self, values: &dyn Values) -> Option<String> {
        let mut out = String::new();
        let mut found = false;
        for part in &self.parts {
            let value = match part {
                Part::Literal(text) => {
                    out.push_str(text);
                    found = true;
                    continue;
                }
                Part::Request(name) => values.request_header(name),
                Part::Response(name) => values.response_header(name),
                Part::Property(path) => values.property(path),
            };
            if let Some(value) = value {
                out.push_str(&value);
                found = true;
            }
        }
        found.then_some(out)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Template, D::Error> {
        let source = String::deserialize(d)?;
        Template::parse(&source).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Map;

    impl Values for Map {
        fn request_header(&self, name: &str) -> Option<String> {
            (name == "x-user").then(|| "alice".to_string())
        }
        fn response_header(&self, name: &str) -> Option<String> {
            (name == "content-type").then(|| "text/plain".to_string())
        }
        fn property(&self, path: &str) -> Option<String> {
            (path == "cluster_name").then(|| "users".to_string())
        }
    }

    #[test]
    fn renders() {
        let render = |s: &str| Template::parse(s).expect(s).render(&Map);
        assert_eq!(render("%REQ(X-User)%").as_deref(), Some("alice"));
        assert_eq!(
            render("%RESP(content-type)%").as_deref(),
            Some("text/plain")
        );
        assert_eq!(
            render("%PROPERTY(cluster_name)%/%REQ(x-user)%").as_deref(),
            Some("users/alice")
        );
        assert_eq!(render("100%% %REQ(x-none)%").as_deref(), Some("100% "));
        assert_eq!(render("%REQ(x-none)%"), None);
        assert_eq!(render(""), None);
    }

    #[test]
    fn knows_what_it_reads() {
        let t = Template::parse("%REQ(a)%%RESP(b)%%REQ(c)%").expect("valid");
        assert_eq!(t.request_headers().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(t.response_headers().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn mistakes() {
        for (source, message) in [
            ("%START_TIME%", "unknown variable %START_TIME%"),
            ("%REQ(x%", "missing \")\""),
            ("%REQ()%", "empty argument"),
            ("%PROPERTY(a..b)%", "not an attribute path"),
            ("50%", "unterminated"),
        ] {
            let err = Template::parse(source).expect_err(source).to_string();
            assert!(err.contains(message), "{source}: {err}");
        }
    }
}
