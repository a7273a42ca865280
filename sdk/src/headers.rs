//! Header maps of the current HTTP context, and the values in them.
//!
//! [`request()`], [`response()`], their trailers and [`call_response()`] name a map; the
//! methods read and edit it through the host. Names are case-insensitive (hosts keep them
//! lowercase, as HTTP/2 does); values are bytes on the wire, read as UTF-8 where a `String` is
//! asked for (a value that is not UTF-8 then reads as absent — use [`Headers::get_bytes`]).
//! Unlike the `proxy-wasm` trait methods, nothing here panics on a non-UTF-8 value.
//!
//! ```no_run
//! use wasmesh_sdk::headers;
//!
//! let req = headers::request();
//! let length: Option<u64> = req.get_as("content-length");
//! let path = req.path().unwrap_or_default();
//! if path.path == "/search" {
//!     let q = path.query_param("q").unwrap_or_default();
//!     req.set("x-search", &q);
//! }
//! for cookie in req.get_all("cookie") { /* every value, in order */ }
//! ```
//!
//! The pure helpers — [`PathAndQuery`], [`split_host_port`], [`percent_decode`] — work on any
//! string and need no host.

use std::str::FromStr;

use proxy_wasm::hostcalls;
use proxy_wasm::types::MapType;

/// One header map of the current context (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers {
    map: MapType,
}

/// The request headers, pseudo headers (`:method`, `:path`, `:authority`, `:scheme`) included.
pub fn request() -> Headers {
    Headers {
        map: MapType::HttpRequestHeaders,
    }
}

/// The response headers, `:status` included.
pub fn response() -> Headers {
    Headers {
        map: MapType::HttpResponseHeaders,
    }
}

/// The request trailers.
pub fn request_trailers() -> Headers {
    Headers {
        map: MapType::HttpRequestTrailers,
    }
}

/// The response trailers.
pub fn response_trailers() -> Headers {
    Headers {
        map: MapType::HttpResponseTrailers,
    }
}

/// The headers of an HTTP callout's answer (in `on_http_call_response`), `:status` included.
pub fn call_response() -> Headers {
    Headers {
        map: MapType::HttpCallResponseHeaders,
    }
}

impl Headers {
    /// The first value of `name`, if present and UTF-8.
    pub fn get(&self, name: &str) -> Option<String> {
        self.get_bytes(name).and_then(|v| String::from_utf8(v).ok())
    }

    /// The first value of `name`, as bytes.
    pub fn get_bytes(&self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(self.map, &name.to_ascii_lowercase())
            .ok()
            .flatten()
    }

    /// Every value of `name`, in order (values that are not UTF-8 are skipped).
    pub fn get_all(&self, name: &str) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| String::from_utf8(v).ok())
            .collect()
    }

    /// The first value of `name` parsed as `T` (`u64`, `bool`, `IpAddr`, …); `None` if absent
    /// or not a valid `T`.
    pub fn get_as<T: FromStr>(&self, name: &str) -> Option<T> {
        self.get(name).and_then(|v| v.trim().parse().ok())
    }

    /// The whole map, in order.
    pub fn all(&self) -> Vec<(String, Vec<u8>)> {
        hostcalls::get_map_bytes(self.map).unwrap_or_default()
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get_bytes(name).is_some()
    }

    /// Replaces every value of `name` with `value` (adds it if absent).
    pub fn set(&self, name: &str, value: &str) {
        self.set_bytes(name, value.as_bytes());
    }

    /// [`Headers::set`] with a byte value.
    pub fn set_bytes(&self, name: &str, value: &[u8]) {
        // These calls answer OK or panic inside the SDK; there is no error to handle.
        let _ = hostcalls::set_map_value_bytes(self.map, &name.to_ascii_lowercase(), Some(value));
    }

    /// Replaces every value of `name` with `values`, in order (removes it if `values` is empty).
    pub fn set_all(&self, name: &str, values: &[&str]) {
        // One replace for the first value (the common single-valued set), not a remove and an
        // add: each host call is a trip out of the VM.
        let Some((first, rest)) = values.split_first() else {
            self.remove(name);
            return;
        };
        self.set(name, first);
        for value in rest {
            self.add(name, value);
        }
    }

    /// Adds a value of `name`, after any it already has.
    pub fn add(&self, name: &str, value: &str) {
        let _ =
            hostcalls::add_map_value_bytes(self.map, &name.to_ascii_lowercase(), value.as_bytes());
    }

    /// Removes every value of `name`.
    pub fn remove(&self, name: &str) {
        let _ = hostcalls::remove_map_value(self.map, &name.to_ascii_lowercase());
    }

    /// `:path` split into path and query (request headers).
    pub fn path(&self) -> Option<PathAndQuery> {
        self.get(":path").map(|p| PathAndQuery::parse(&p))
    }

    /// `:authority` (or `host`) split into host and port (request headers).
    pub fn authority(&self) -> Option<(String, Option<u16>)> {
        let authority = self.get(":authority").or_else(|| self.get("host"))?;
        let (host, port) = split_host_port(&authority);
        Some((host.to_string(), port))
    }

    /// `:status` as a number (response headers, callout answers).
    pub fn status(&self) -> Option<u16> {
        self.get_as(":status")
    }
}

/// A request target split at `?`; a `#fragment`, which clients should never send, is dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathAndQuery {
    /// Everything before `?`, still percent-encoded.
    pub path: String,
    /// Everything after the first `?`, still encoded; `None` without a `?`.
    pub query: Option<String>,
}

impl PathAndQuery {
    /// Splits a `:path` value.
    pub fn parse(target: &str) -> PathAndQuery {
        let target = target.split('#').next().unwrap_or_default();
        match target.split_once('?') {
            Some((path, query)) => PathAndQuery {
                path: path.to_string(),
                query: Some(query.to_string()),
            },
            None => PathAndQuery {
                path: target.to_string(),
                query: None,
            },
        }
    }

    /// The query's `key=value` pairs, in order, both decoded (`+` is a space, as in forms).
    /// A pair without `=` has an empty value.
    pub fn query_params(&self) -> Vec<(String, String)> {
        let Some(query) = &self.query else {
            return Vec::new();
        };
        query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (decode_form(k), decode_form(v))
            })
            .collect()
    }

    /// The first value of query parameter `name`, decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_params()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

fn decode_form(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
}

/// Decodes `%XX` escapes; a malformed escape is kept as written, and bytes that do not form
/// UTF-8 become U+FFFD.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits `host:port`, `[v6]:port`, `host`, `[v6]` or a bare IPv6 address. The host comes back
/// without brackets; a port that is not a number is treated as part of the host.
pub fn split_host_port(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return (host, port);
    }
    match authority.rsplit_once(':') {
        // A second colon means a bare IPv6 address, which has no port.
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(port) => (host, Some(port)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_splits_at_the_first_question_mark() {
        assert_eq!(
            PathAndQuery::parse("/a/b?x=1&y=2?z"),
            PathAndQuery {
                path: "/a/b".into(),
                query: Some("x=1&y=2?z".into())
            }
        );
        assert_eq!(
            PathAndQuery::parse("/plain"),
            PathAndQuery {
                path: "/plain".into(),
                query: None
            }
        );
        assert_eq!(PathAndQuery::parse("/p?").query.as_deref(), Some(""));
        assert_eq!(PathAndQuery::parse("/p#frag").path, "/p");
    }

    #[test]
    fn query_params_are_decoded() {
        let p = PathAndQuery::parse("/s?q=hello+world%21&flag&empty=&q=second&bad=%zz");
        assert_eq!(
            p.query_params(),
            vec![
                ("q".to_string(), "hello world!".to_string()),
                ("flag".to_string(), String::new()),
                ("empty".to_string(), String::new()),
                ("q".to_string(), "second".to_string()),
                ("bad".to_string(), "%zz".to_string()),
            ]
        );
        assert_eq!(p.query_param("q").as_deref(), Some("hello world!"));
        assert_eq!(p.query_param("missing"), None);
        assert!(PathAndQuery::parse("/s").query_params().is_empty());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%20c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%e2%82%ac"), "€");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }

    #[test]
    fn host_and_port() {
        assert_eq!(
            split_host_port("example.com:8080"),
            ("example.com", Some(8080))
        );
        assert_eq!(split_host_port("example.com"), ("example.com", None));
        assert_eq!(split_host_port("[::1]:443"), ("::1", Some(443)));
        assert_eq!(split_host_port("[::1]"), ("::1", None));
        assert_eq!(split_host_port("::1"), ("::1", None));
        assert_eq!(split_host_port("10.0.0.1:99999"), ("10.0.0.1:99999", None));
        assert_eq!(split_host_port("host:http"), ("host:http", None));
    }
}
