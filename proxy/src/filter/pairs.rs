//! Header maps as filters see them: ordered `(name, value)` pairs with the HTTP/2 pseudo
//! headers, and the way back into `http::HeaderMap`.

use std::collections::HashMap;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Uri};

/// The request head as filters see it: pseudo headers first, then the rest, names lowercase.
pub fn request_pairs(
    method: &Method,
    uri: &Uri,
    authority: &str,
    scheme: &str,
    headers: &HeaderMap,
) -> Vec<(String, Vec<u8>)> {
    let mut pairs = Vec::with_capacity(headers.len() + 4);
    pairs.push((":method".into(), method.as_str().as_bytes().to_vec()));
    pairs.push((
        ":path".into(),
        uri.path_and_query()
            .map_or("/", |p| p.as_str())
            .as_bytes()
            .to_vec(),
    ));
    pairs.push((":authority".into(), authority.as_bytes().to_vec()));
    pairs.push((":scheme".into(), scheme.as_bytes().to_vec()));
    push_headers(&mut pairs, headers);
    pairs
}

pub fn response_pairs(status: StatusCode, headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    let mut pairs = Vec::with_capacity(headers.len() + 1);
    pairs.push((":status".into(), status.as_str().as_bytes().to_vec()));
    push_headers(&mut pairs, headers);
    pairs
}

pub(crate) fn push_headers(pairs: &mut Vec<(String, Vec<u8>)>, headers: &HeaderMap) {
    for (name, value) in headers {
        pairs.push((name.as_str().to_string(), value.as_bytes().to_vec()));
    }
}

/// Writes filter-edited pairs back into a header map; pseudo headers are returned separately.
/// Names or values that are not valid HTTP are dropped (and logged) rather than forwarded.
pub fn apply_pairs(
    pairs: &[(String, Vec<u8>)],
    headers: &mut HeaderMap,
) -> HashMap<String, String> {
    headers.clear();
    let mut pseudo = HashMap::new();
    for (name, value) in pairs {
        if let Some(p) = name.strip_prefix(':') {
            pseudo.insert(p.to_string(), String::from_utf8_lossy(value).into_owned());
            continue;
        }
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            (Ok(n), Ok(v)) => {
                headers.append(n, v);
            }
            _ => tracing::debug!(header = %name, "filter set an invalid header; dropped"),
        }
    }
    pseudo
}
