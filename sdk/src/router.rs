//! Local responses chosen by method and path: health checks, fixed redirects, "410 Gone" for
//! retired endpoints — answered by the filter without going upstream.
//!
//! ```no_run
//! use wasmesh_sdk::router::{Response, Router};
//! # use wasmesh_sdk::proxy_wasm::types::Action;
//!
//! let router = Router::new()
//!     .exact("GET", "/healthz", Response::text(200, "ok"))
//!     .prefix("*", "/old/", Response::new(410).header("cache-control", "no-store"));
//!
//! // In on_http_request_headers:
//! # fn f(router: &Router) -> Action {
//! if let Some(action) = router.handle() {
//!     return action; // answered; the stream stops here
//! }
//! # Action::Continue }
//! ```
//!
//! Routes are tried in the order they were added; the first match wins. Paths are matched
//! against `:path` without its query string, exactly or as a plain string prefix (as Envoy's
//! `prefix` match: `/api` also matches `/apiv2`). Methods are matched exactly (they are
//! case-sensitive in HTTP); `"*"` matches any method.

use proxy_wasm::types::Action;

use crate::headers::{self, PathAndQuery};

/// A response the filter sends itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u32,
    /// Response headers, in order.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with `status`, no headers and no body.
    pub fn new(status: u32) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `text/plain` response.
    pub fn text(status: u32, body: &str) -> Response {
        Response::new(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(body)
    }

    /// An `application/json` response; `body` is sent as given.
    pub fn json(status: u32, body: &str) -> Response {
        Response::new(status)
            .header("content-type", "application/json")
            .body(body)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }

    /// Sends it for the current HTTP context (`proxy_send_local_response`). The filter should
    /// then return `Action::Pause` from its callback.
    pub fn send(&self) {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let body = (!self.body.is_empty()).then_some(self.body.as_slice());
        // Answers OK or panics inside the SDK; there is nothing to handle.
        let _ = proxy_wasm::hostcalls::send_http_response(self.status, headers, body);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathMatch {
    Exact(String),
    Prefix(String),
}

#[derive(Debug, Clone)]
struct Route {
    method: String,
    path: PathMatch,
    response: Response,
}

/// An ordered list of routes to local responses (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// A router with no routes.
    pub fn new() -> Router {
        Router::default()
    }

    /// Answers `method` (or `"*"`: any) requests for exactly `path` with `response`.
    pub fn exact(self, method: &str, path: &str, response: Response) -> Router {
        self.add(method, PathMatch::Exact(path.to_string()), response)
    }

    /// Answers `method` (or `"*"`: any) requests whose path starts with `prefix`.
    pub fn prefix(self, method: &str, prefix: &str, response: Response) -> Router {
        self.add(method, PathMatch::Prefix(prefix.to_string()), response)
    }

    fn add(mut self, method: &str, path: PathMatch, response: Response) -> Router {
        self.routes.push(Route {
            method: method.to_string(),
            path,
            response,
        });
        self
    }

    /// The response for a request, if a route matches. `target` is the `:path` value; its
    /// query string is ignored.
    pub fn find(&self, method: &str, target: &str) -> Option<&Response> {
        let path = PathAndQuery::parse(target).path;
        self.routes
            .iter()
            .find(|r| {
                (r.method == "*" || r.method == method)
                    && match &r.path {
                        PathMatch::Exact(p) => *p == path,
                        PathMatch::Prefix(p) => path.starts_with(p.as_str()),
                    }
            })
            .map(|r| &r.response)
    }

    /// In `on_http_request_headers`: if the request matches a route, sends its response and
    /// returns `Some(Action::Pause)` for the callback to return; otherwise `None`.
    pub fn handle(&self) -> Option<Action> {
        let request = headers::request();
        let method = request.get(":method")?;
        let target = request.get(":path")?;
        let response = self.find(&method, &target)?;
        response.send();
        Some(Action::Pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new()
            .exact("GET", "/healthz", Response::text(200, "ok"))
            .prefix("*", "/old/", Response::new(410))
            .prefix("POST", "/", Response::json(405, "{}"))
    }

    #[test]
    fn first_match_wins_and_queries_are_ignored() {
        let r = router();
        assert_eq!(r.find("GET", "/healthz").map(|x| x.status), Some(200));
        assert_eq!(
            r.find("GET", "/healthz?verbose=1").map(|x| x.status),
            Some(200)
        );
        assert_eq!(r.find("HEAD", "/healthz"), None, "method is exact");
        assert_eq!(r.find("GET", "/healthz/x"), None, "exact is exact");
        assert_eq!(r.find("DELETE", "/old/thing").map(|x| x.status), Some(410));
        assert_eq!(r.find("POST", "/old/thing").map(|x| x.status), Some(410));
        assert_eq!(r.find("POST", "/anything").map(|x| x.status), Some(405));
        assert_eq!(
            r.find("get", "/healthz"),
            None,
            "methods are case-sensitive"
        );
        assert_eq!(r.find("GET", "/other"), None);
    }

    #[test]
    fn responses_build() {
        let r = Response::text(503, "down").header("retry-after", "5");
        assert_eq!(r.status, 503);
        assert_eq!(r.body, b"down");
        assert_eq!(
            r.headers,
            vec![
                (
                    "content-type".to_string(),
                    "text/plain; charset=utf-8".to_string()
                ),
                ("retry-after".to_string(), "5".to_string())
            ]
        );
    }
}
