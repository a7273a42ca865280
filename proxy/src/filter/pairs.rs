//! Header maps as filters see them: ordered `(name, value)` pairs with the HTTP/2 pseudo
//! headers, and the way back into `http::HeaderMap`.

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

/// The pseudo headers a filter chain left in a map (values that are not UTF-8 are ignored).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pseudo<'a> {
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    pub authority: Option<&'a str>,
    pub status: Option<&'a str>,
}

/// Past this many regular headers, [`apply_pairs`] rebuilds the map instead of comparing
/// name by name (which is quadratic), so a filter's huge map costs linear time.
const COMPARE_LIMIT: usize = 64;

/// Writes filter-edited pairs back into a header map; pseudo headers are returned separately.
/// Only names whose values changed are rewritten: most chains add or set a header or two, and
/// rebuilding the whole map (parsing every name and value again) cost as much as the rest of
/// the chain's plumbing. A rewritten name moves to the end of the map; its values keep their
/// order. Names or values that are not valid HTTP are dropped (and logged) rather than
/// forwarded.
pub fn apply_pairs<'a>(pairs: &'a [(String, Vec<u8>)], headers: &mut HeaderMap) -> Pseudo<'a> {
    let mut pseudo = Pseudo::default();
    let mut regular: Vec<(&str, &[u8])> = Vec::with_capacity(pairs.len());
    for (name, value) in pairs {
        let Some(p) = name.strip_prefix(':') else {
            regular.push((name.as_str(), value.as_slice()));
            continue;
        };
        let value = std::str::from_utf8(value).ok();
        match p {
            "method" => pseudo.method = value,
            "path" => pseudo.path = value,
            "authority" => pseudo.authority = value,
            "status" => pseudo.status = value,
            _ => {}
        }
    }
    // Most chains leave what they were given alone and add headers at the end: then the map
    // is a prefix of the pairs (they were made from it in its own order), and the rest is new.
    let mut kept = headers
        .iter()
        .zip(&regular)
        .take_while(|((name, value), (n, v))| name.as_str() == *n && value.as_bytes() == *v)
        .count();
    if kept < headers.len() && regular.len() > COMPARE_LIMIT {
        headers.clear();
        kept = 0;
    }
    if kept == headers.len() {
        for (name, value) in &regular[kept..] {
            append(headers, name, std::iter::once(*value));
        }
        return pseudo;
    }
    let gone: Vec<HeaderName> = headers
        .keys()
        .filter(|k| !regular.iter().any(|(n, _)| *n == k.as_str()))
        .cloned()
        .collect();
    for name in gone {
        headers.remove(name);
    }
    for (i, (name, _)) in regular.iter().enumerate() {
        if regular[..i].iter().any(|(n, _)| n == name) {
            continue;
        }
        let wanted = regular[i..]
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| *v);
        let unchanged = headers
            .get_all(*name)
            .iter()
            .map(HeaderValue::as_bytes)
            .eq(wanted.clone());
        if !unchanged {
            headers.remove(*name);
            append(headers, name, wanted);
        }
    }
    pseudo
}

/// Appends `values` of `name`, dropping what is not valid HTTP.
fn append<'v>(headers: &mut HeaderMap, name: &str, values: impl Iterator<Item = &'v [u8]>) {
    let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
        tracing::debug!(header = %name, "filter set an invalid header name; dropped");
        return;
    };
    for value in values {
        match HeaderValue::from_bytes(value) {
            Ok(value) => {
                headers.append(&name, value);
            }
            Err(_) => {
                tracing::debug!(header = %name, "filter set an invalid header value; dropped")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn map(list: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in list {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    fn values(m: &HeaderMap, name: &str) -> Vec<String> {
        m.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn only_changed_names_are_rewritten() {
        let mut m = map(&[("a", "1"), ("b", "2"), ("b", "3"), ("c", "4"), ("d", "5")]);
        let edited = pairs(&[
            (":path", "/x"),
            ("b", "2"),
            ("a", "1"),
            ("b", "3"),
            ("d", "new"),
            ("e", "6"),
            ("e", "7"),
            ("bad name", "x"),
            ("f", "bad\nvalue"),
        ]);
        let pseudo = apply_pairs(&edited, &mut m);
        assert_eq!(pseudo.path, Some("/x"));
        assert_eq!(pseudo.method, None);
        assert_eq!(values(&m, "a"), ["1"]);
        assert_eq!(values(&m, "b"), ["2", "3"]);
        assert!(values(&m, "c").is_empty(), "removed by the filter");
        assert_eq!(values(&m, "d"), ["new"]);
        assert_eq!(values(&m, "e"), ["6", "7"]);
        assert!(values(&m, "f").is_empty(), "an invalid value is dropped");
        assert_eq!(m.len(), 6);
    }

    #[test]
    fn headers_added_at_the_end_are_appended() {
        let mut m = map(&[("a", "1"), ("b", "2"), ("b", "3")]);
        let edited = pairs(&[
            (":status", "200"),
            ("a", "1"),
            ("b", "2"),
            ("b", "3"),
            ("b", "4"),
            ("c", "5"),
        ]);
        let pseudo = apply_pairs(&edited, &mut m);
        assert_eq!(pseudo.status, Some("200"));
        assert_eq!(values(&m, "b"), ["2", "3", "4"]);
        assert_eq!(values(&m, "c"), ["5"]);
        assert_eq!(m.len(), 5);
        // Nothing changed, nothing added.
        let same = pairs(&[("a", "1"), ("b", "2"), ("b", "3"), ("b", "4"), ("c", "5")]);
        apply_pairs(&same, &mut m);
        assert_eq!(m.len(), 5);
    }

    #[test]
    fn a_reordered_or_shortened_value_list_is_a_change() {
        let mut m = map(&[("b", "2"), ("b", "3")]);
        apply_pairs(&pairs(&[("b", "3"), ("b", "2")]), &mut m);
        assert_eq!(values(&m, "b"), ["3", "2"]);
        apply_pairs(&pairs(&[("b", "3")]), &mut m);
        assert_eq!(values(&m, "b"), ["3"]);
    }

    #[test]
    fn a_huge_map_is_rebuilt() {
        let mut m = map(&[("gone", "1")]);
        let names: Vec<String> = (0..=COMPARE_LIMIT).map(|i| format!("x-{i}")).collect();
        let edited: Vec<(String, Vec<u8>)> =
            names.iter().map(|n| (n.clone(), b"v".to_vec())).collect();
        apply_pairs(&edited, &mut m);
        assert_eq!(m.len(), COMPARE_LIMIT + 1);
        assert!(m.get("gone").is_none());
    }
}
