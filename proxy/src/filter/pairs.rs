//! Header maps as filters see them: ordered `(name, value)` pairs with the HTTP/2 pseudo
//! headers, and the way back into `http::HeaderMap`.

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Uri};

/// The request head as filters see it: pseudo headers first, then the rest, names lowercase.
/// `Host` is not among them: its value is `:authority`, as in Envoy, which normalizes HTTP/1.1
/// requests to HTTP/2's form — so a filter reads and sets the authority in one place.
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
    for (name, value) in headers {
        if name != header::HOST {
            pairs.push((name.as_str().to_string(), value.as_bytes().to_vec()));
        }
    }
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
    /// A `host` a filter set on a request ([`apply_request_pairs`]), which Envoy's filters do
    /// not see but may still write; the map's own `Host` is left for the caller to settle.
    pub host: Option<&'a str>,
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
    apply(pairs, headers, false)
}

/// [`apply_pairs`] for a request made by [`request_pairs`]: the map's `Host` (which the pairs
/// leave out) stays where it is, and a `host` pair a filter added comes back as
/// [`Pseudo::host`] instead of a second `Host`.
pub fn apply_request_pairs<'a>(
    pairs: &'a [(String, Vec<u8>)],
    headers: &mut HeaderMap,
) -> Pseudo<'a> {
    apply(pairs, headers, true)
}

fn apply<'a>(pairs: &'a [(String, Vec<u8>)], headers: &mut HeaderMap, request: bool) -> Pseudo<'a> {
    let mut pseudo = Pseudo::default();
    let mut regular: Vec<(&str, &[u8])> = Vec::with_capacity(pairs.len());
    for (name, value) in pairs {
        if request && name.eq_ignore_ascii_case("host") {
            pseudo.host = std::str::from_utf8(value).ok();
            continue;
        }
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
    // A request's `Host` is not the filters' to see or remove.
    let aside = |name: &HeaderName| request && name == header::HOST;
    let own = headers.len()
        - if request {
            headers.get_all(header::HOST).iter().count()
        } else {
            0
        };
    let mut kept = headers
        .iter()
        .filter(|(name, _)| !aside(name))
        .zip(&regular)
        .take_while(|((name, value), (n, v))| name.as_str() == *n && value.as_bytes() == *v)
        .count();
    if kept < own && regular.len() > COMPARE_LIMIT {
        let host = if request {
            headers.remove(header::HOST)
        } else {
            None
        };
        headers.clear();
        if let Some(host) = host {
            headers.insert(header::HOST, host);
        }
        kept = 0;
    }
    if kept == own {
        for (name, value) in &regular[kept..] {
            append(headers, name, std::iter::once(*value));
        }
        return pseudo;
    }
    let gone: Vec<HeaderName> = headers
        .keys()
        .filter(|k| !aside(k) && !regular.iter().any(|(n, _)| *n == k.as_str()))
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

    #[test]
    fn a_request_host_is_the_authority_and_stays_out_of_the_pairs() {
        let m = map(&[("host", "a.example"), ("x", "1")]);
        let uri = Uri::from_static("/p");
        let made = request_pairs(&Method::GET, &uri, "a.example", "http", &m);
        let names: Vec<_> = made.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [":method", ":path", ":authority", ":scheme", "x"]);

        // Unedited, the map keeps its `Host`, where it was.
        let mut same = m.clone();
        let pseudo = apply_request_pairs(&made, &mut same);
        assert_eq!(same, m);
        assert_eq!(pseudo.host, None);
        assert_eq!(same.keys().next(), Some(&header::HOST));

        // A filter's edits leave `Host` alone; a `host` it sets comes back separately.
        let mut edited = made.clone();
        edited.retain(|(n, _)| n != "x");
        edited.push(("y".into(), b"2".to_vec()));
        edited.push(("host".into(), b"b.example".to_vec()));
        let mut m2 = m.clone();
        let pseudo = apply_request_pairs(&edited, &mut m2);
        assert_eq!(pseudo.host, Some("b.example"));
        assert_eq!(values(&m2, "host"), ["a.example"]);
        assert_eq!(values(&m2, "x"), Vec::<String>::new());
        assert_eq!(values(&m2, "y"), ["2"]);

        // Responses have no authority: `host` there is an ordinary header.
        let mut r = HeaderMap::new();
        let response = pairs(&[("host", "c.example")]);
        let pseudo = apply_pairs(&response, &mut r);
        assert_eq!(pseudo.host, None);
        assert_eq!(values(&r, "host"), ["c.example"]);
    }
}
