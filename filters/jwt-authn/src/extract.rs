//! Finding a provider's token in a request, and taking it out again when it is not forwarded.

use wasmesh_sdk::headers::{self, PathAndQuery, percent_decode};

use crate::config::Provider;

/// Where a token was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Header(String),
    Param(String),
}

/// The token in `value` after `prefix` (compared without regard to case); `None` if the value
/// does not start with the prefix or nothing follows it.
pub fn after_prefix<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let token = value[prefix.len()..].trim();
    (!token.is_empty()).then_some(token)
}

/// The first token `provider` finds in the current request: its headers in order, then its
/// query parameters.
pub fn find(provider: &Provider) -> Option<(Location, String)> {
    let request = headers::request();
    for from in &provider.from_headers {
        for value in request.get_all(&from.name) {
            if let Some(token) = after_prefix(&value, &from.value_prefix) {
                return Some((Location::Header(from.name.clone()), token.to_string()));
            }
        }
    }
    if provider.from_params.is_empty() {
        return None;
    }
    let path = request.path()?;
    for name in &provider.from_params {
        if let Some(token) = path.query_param(name).filter(|t| !t.is_empty()) {
            return Some((Location::Param(name.clone()), token));
        }
    }
    None
}

/// `target` without every `name=…` pair of its query (other pairs are kept exactly as they
/// were written); `None` if it had none.
pub fn without_param(target: &str, name: &str) -> Option<String> {
    let parsed = PathAndQuery::parse(target);
    let query = parsed.query?;
    let mut removed = false;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            let matches = percent_decode(&key.replace('+', " ")) == name;
            removed |= matches;
            !matches
        })
        .collect();
    if !removed {
        return None;
    }
    let kept: Vec<&str> = kept.into_iter().filter(|p| !p.is_empty()).collect();
    Some(if kept.is_empty() {
        parsed.path
    } else {
        format!("{}?{}", parsed.path, kept.join("&"))
    })
}

/// Removes the token from the current request.
pub fn strip(location: &Location) {
    let request = headers::request();
    match location {
        Location::Header(name) => request.remove(name),
        Location::Param(name) => {
            if let Some(target) = request.get(":path")
                && let Some(stripped) = without_param(&target, name)
            {
                request.set(":path", &stripped);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(after_prefix("Bearer abc", "Bearer "), Some("abc"));
        assert_eq!(after_prefix("bearer  abc ", "Bearer "), Some("abc"));
        assert_eq!(after_prefix("Basic abc", "Bearer "), None);
        assert_eq!(after_prefix("Bearer ", "Bearer "), None);
        assert_eq!(after_prefix("Bear", "Bearer "), None);
        assert_eq!(after_prefix("abc", ""), Some("abc"));
        assert_eq!(after_prefix("é", "e"), None, "no panic on a char boundary");
    }

    #[test]
    fn params_are_removed_and_the_rest_kept() {
        assert_eq!(
            without_param("/a?x=1&access_token=t&y=%20", "access_token").as_deref(),
            Some("/a?x=1&y=%20")
        );
        assert_eq!(
            without_param("/a?access_token=t", "access_token").as_deref(),
            Some("/a")
        );
        assert_eq!(
            without_param("/a?access%5Ftoken=t&access_token=u", "access_token").as_deref(),
            Some("/a"),
            "encoded names too"
        );
        assert_eq!(without_param("/a?x=1", "access_token"), None);
        assert_eq!(without_param("/a", "access_token"), None);
    }
}
