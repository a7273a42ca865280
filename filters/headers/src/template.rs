//! Header value templates: literal text with Envoy-style `%VARIABLE%` substitutions, parsed
//! once at configuration time (an unknown variable is a configuration error) and rendered per
//! request. The supported variables are listed in the crate docs and the README.

use std::fmt;

use wasmesh_sdk::headers::split_host_port;
use wasmesh_sdk::properties;

/// What a template needs from the request being processed.
pub trait Lookup {
    /// First value of a request header (`%REQ()%`).
    fn request_header(&self, name: &str) -> Option<String>;
    /// First value of a response header (`%RESP()%`); `None` on the request path.
    fn response_header(&self, name: &str) -> Option<String>;
    /// Raw value of an attribute by dotted path.
    fn property(&self, path: &str) -> Option<Vec<u8>>;
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Request(Headers),
    Response(Headers),
    Property(String),
    Attribute(&'static str, Shape),
}

/// `%REQ(name?alternative):N%`: a header, a fallback header, and a length cap.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Headers {
    names: Vec<String>,
    max_len: Option<usize>,
}

/// How an attribute's value is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    AsIs,
    /// `ip:port` → `ip` (IPv6 without brackets), as Envoy's `..._WITHOUT_PORT`.
    WithoutPort,
}

/// The variables without arguments: name → (attribute, shape).
const ATTRIBUTES: &[(&str, &str, Shape)] = &[
    ("PROTOCOL", "request.protocol", Shape::AsIs),
    ("DOWNSTREAM_REMOTE_ADDRESS", "source.address", Shape::AsIs),
    (
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
        "source.address",
        Shape::WithoutPort,
    ),
    ("DOWNSTREAM_REMOTE_PORT", "source.port", Shape::AsIs),
    (
        "DOWNSTREAM_LOCAL_ADDRESS",
        "destination.address",
        Shape::AsIs,
    ),
    (
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
        "destination.address",
        Shape::WithoutPort,
    ),
    ("DOWNSTREAM_LOCAL_PORT", "destination.port", Shape::AsIs),
    (
        "REQUESTED_SERVER_NAME",
        "connection.requested_server_name",
        Shape::AsIs,
    ),
    (
        "DOWNSTREAM_PEER_URI_SAN",
        "connection.uri_san_peer_certificate",
        Shape::AsIs,
    ),
    (
        "DOWNSTREAM_PEER_DNS_SAN",
        "connection.dns_san_peer_certificate",
        Shape::AsIs,
    ),
    (
        "DOWNSTREAM_PEER_SUBJECT",
        "connection.subject_peer_certificate",
        Shape::AsIs,
    ),
    ("ROUTE_NAME", "route_name", Shape::AsIs),
    ("UPSTREAM_CLUSTER", "cluster_name", Shape::AsIs),
];

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(message: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError(message.into()))
}

fn supported() -> String {
    let mut names = vec![
        "%REQ(header)%".to_string(),
        "%RESP(header)%".to_string(),
        "%PROPERTY(path)%".to_string(),
    ];
    names.extend(ATTRIBUTES.iter().map(|(n, _, _)| format!("%{n}%")));
    names.push("%%".to_string());
    names.join(", ")
}

/// Header names may be tokens (RFC 9110) or the request pseudo headers.
pub fn valid_header_name(name: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    match name.strip_prefix(':') {
        Some(pseudo) => token(pseudo),
        None => token(name),
    }
}

fn header_args(name: &str, args: &str, max_len: Option<usize>) -> Result<Headers, TemplateError> {
    let names: Vec<String> = args
        .split('?')
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    if names.len() > 2 {
        return err(format!(
            "%{name}({args})% names more than one alternative header"
        ));
    }
    if let Some(bad) = names.iter().find(|n| !valid_header_name(n)) {
        return err(format!("%{name}({args})%: \"{bad}\" is not a header name"));
    }
    Ok(Headers { names, max_len })
}

fn variable(text: &str) -> Result<Part, TemplateError> {
    // NAME, or NAME(ARGS) with an optional :N after it.
    let Some(open) = text.find('(') else {
        return match ATTRIBUTES.iter().find(|(n, _, _)| *n == text) {
            Some((_, path, shape)) => Ok(Part::Attribute(path, *shape)),
            None => err(format!(
                "unknown variable %{text}% (supported: {})",
                supported()
            )),
        };
    };
    let name = &text[..open];
    let Some(close) = text.rfind(')').filter(|c| *c > open) else {
        return err(format!("%{text}%: missing \")\""));
    };
    let args = &text[open + 1..close];
    let after = &text[close + 1..];
    let max_len = match after.strip_prefix(':') {
        None if after.is_empty() => None,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => return err(format!("%{text}%: \":{n}\" is not a length")),
        },
        None => return err(format!("%{text}%: unexpected \"{after}\" after \")\"")),
    };
    match name {
        "REQ" => Ok(Part::Request(header_args(name, args, max_len)?)),
        "RESP" => Ok(Part::Response(header_args(name, args, max_len)?)),
        "PROPERTY" if max_len.is_none() => {
            let path = args.trim();
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return err(format!("%{text}%: \"{args}\" is not an attribute path"));
            }
            Ok(Part::Property(path.to_string()))
        }
        "PROPERTY" => err(format!("%{text}%: PROPERTY takes no length")),
        _ => err(format!(
            "unknown variable %{text}% (supported: {})",
            supported()
        )),
    }
}

impl Template {
    /// Parses a template; `%%` is a literal `%`.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        if source.chars().any(|c| c.is_control() && c != '\t') {
            return err("control characters are not allowed in a header value");
        }
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
            let Some(end) = after.find('%') else {
                return err(format!(
                    "unterminated variable at \"%{after}\" (write %% for a literal %)"
                ));
            };
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

    /// Whether the template reads response headers (not available on the request path).
    pub fn uses_response(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Response(_)))
    }

    /// The request headers the template reads, so the response path can keep them.
    pub fn request_headers(&self) -> impl Iterator<Item = &str> {
        self.parts
            .iter()
            .flat_map(|p| match p {
                Part::Request(h) => h.names.as_slice(),
                _ => &[],
            })
            .map(String::as_str)
    }

    /// Renders the template. Missing values render empty; substituted values lose any CR, LF
    /// or NUL so they cannot break the header.
    pub fn render(&self, lookup: &dyn Lookup) -> String {
        let mut out = String::new();
        for part in &self.parts {
            let value = match part {
                Part::Literal(text) => {
                    out.push_str(text);
                    continue;
                }
                Part::Request(h) => first_header(h, |n| lookup.request_header(n)),
                Part::Response(h) => first_header(h, |n| lookup.response_header(n)),
                Part::Property(path) => lookup
                    .property(path)
                    .map(|bytes| properties::display(path, &bytes))
                    .unwrap_or_default(),
                Part::Attribute(path, shape) => {
                    let value = lookup
                        .property(path)
                        .map(|bytes| properties::display(path, &bytes))
                        .unwrap_or_default();
                    match shape {
                        Shape::AsIs => value,
                        Shape::WithoutPort => split_host_port(&value).0.to_string(),
                    }
                }
            };
            out.extend(value.chars().filter(|c| !matches!(c, '\r' | '\n' | '\0')));
        }
        out
    }
}

fn first_header(h: &Headers, get: impl Fn(&str) -> Option<String>) -> String {
    let value = h.names.iter().find_map(|n| get(n)).unwrap_or_default();
    match h.max_len {
        Some(max) => value.chars().take(max).collect(),
        None => value,
    }
}

impl<'de> serde::Deserialize<'de> for Template {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Template, D::Error> {
        let source = String::deserialize(d)?;
        Template::parse(&source).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Default)]
    struct Map {
        request: HashMap<&'static str, &'static str>,
        response: HashMap<&'static str, &'static str>,
        properties: HashMap<&'static str, Vec<u8>>,
    }

    impl Lookup for Map {
        fn request_header(&self, name: &str) -> Option<String> {
            self.request.get(name).map(|v| v.to_string())
        }
        fn response_header(&self, name: &str) -> Option<String> {
            self.response.get(name).map(|v| v.to_string())
        }
        fn property(&self, path: &str) -> Option<Vec<u8>> {
            self.properties.get(path).cloned()
        }
    }

    fn render(source: &str, map: &Map) -> String {
        Template::parse(source).expect("valid template").render(map)
    }

    #[test]
    fn literals_and_escapes() {
        let map = Map::default();
        assert_eq!(render("plain", &map), "plain");
        assert_eq!(render("100%% sure", &map), "100% sure");
        assert_eq!(render("", &map), "");
        assert_eq!(render("%%%%", &map), "%%");
    }

    #[test]
    fn headers_with_alternatives_and_lengths() {
        let mut map = Map::default();
        map.request.insert("x-a", "alpha");
        map.request.insert(":path", "/p?q");
        map.response.insert("x-r", "resp");
        assert_eq!(render("<%REQ(x-a)%>", &map), "<alpha>");
        assert_eq!(
            render("%REQ(X-A)%", &map),
            "alpha",
            "names are case-insensitive"
        );
        assert_eq!(render("%REQ(x-missing?x-a)%", &map), "alpha");
        assert_eq!(render("%REQ(x-missing)%", &map), "");
        assert_eq!(render("%REQ(x-a):3%", &map), "alp");
        assert_eq!(render("%REQ(:path)%", &map), "/p?q");
        assert_eq!(render("%RESP(x-r)% %REQ(x-a)%", &map), "resp alpha");
    }

    #[test]
    fn properties_and_attributes() {
        let mut map = Map::default();
        map.properties
            .insert("source.address", b"[2001:db8::1]:51234".to_vec());
        map.properties
            .insert("source.port", 51234i64.to_le_bytes().to_vec());
        map.properties.insert("connection.mtls", vec![1]);
        map.properties.insert("route_name", b"users".to_vec());
        assert_eq!(
            render("%PROPERTY(source.address)%", &map),
            "[2001:db8::1]:51234"
        );
        assert_eq!(render("%PROPERTY(connection.mtls)%", &map), "true");
        assert_eq!(render("%DOWNSTREAM_REMOTE_PORT%", &map), "51234");
        assert_eq!(
            render("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", &map),
            "2001:db8::1"
        );
        assert_eq!(render("%ROUTE_NAME%/%UPSTREAM_CLUSTER%", &map), "users/");
    }

    #[test]
    fn substitutions_cannot_break_the_header() {
        let mut map = Map::default();
        map.properties.insert("x.y", b"a\r\nx-evil: 1".to_vec());
        assert_eq!(render("%PROPERTY(x.y)%", &map), "ax-evil: 1");
    }

    #[test]
    fn mistakes_are_errors() {
        for (source, expect) in [
            ("%FOO%", "unknown variable %FOO%"),
            ("%START_TIME%", "unknown variable %START_TIME%"),
            ("50%", "unterminated variable"),
            ("%REQ(x-a%", "missing \")\""),
            ("%REQ(a?b?c)%", "more than one alternative"),
            ("%REQ(bad name)%", "is not a header name"),
            ("%REQ(x):0%", "is not a length"),
            ("%REQ(x)y%", "unexpected \"y\""),
            ("%PROPERTY()%", "is not an attribute path"),
            ("%PROPERTY(a..b)%", "is not an attribute path"),
            ("%PROPERTY(a):3%", "takes no length"),
            ("a\nb", "control characters"),
        ] {
            let error = Template::parse(source).expect_err(source).to_string();
            assert!(error.contains(expect), "{source}: {error}");
        }
        let unknown = Template::parse("%NOPE%").expect_err("unknown").to_string();
        assert!(unknown.contains("%DOWNSTREAM_REMOTE_ADDRESS%"), "{unknown}");
    }

    #[test]
    fn knows_what_it_reads() {
        let t = Template::parse("%REQ(a?b)% %RESP(c)%").expect("valid");
        assert!(t.uses_response());
        assert_eq!(t.request_headers().collect::<Vec<_>>(), ["a", "b"]);
        assert!(!Template::parse("%REQ(a)%").expect("valid").uses_response());
    }
}
