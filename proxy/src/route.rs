//! Route matching: a compiled route table picks a virtual host by `Host`/`:authority` and then
//! the first route whose path and header matchers accept the request.
//!
//! Domain precedence follows Envoy: an exact name, then the longest `*.suffix`, then the longest
//! `prefix.*`, then `*`. Routes within a virtual host are tried in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use rand::Rng;
use regex::Regex;

use crate::config::{self, RetryPolicy};

/// A route configuration that could not be compiled (validation normally catches these first).
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("route \"{route}\": invalid regex: {source}")]
    Regex {
        route: String,
        #[source]
        source: regex::Error,
    },
    #[error("route \"{0}\": needs a cluster or weighted clusters")]
    NoAction(String),
    #[error("route \"{route}\": invalid header name \"{header}\"")]
    HeaderName { route: String, header: String },
    #[error("route \"{0}\": weighted cluster weights add up to 0")]
    ZeroWeight(String),
}

/// A compiled route table, shared by every connection of the listeners that use it.
#[derive(Debug)]
pub struct RouteTable {
    pub name: String,
    vhosts: Vec<VirtualHost>,
    exact: config::ByName<usize>,
    /// `(".example.com", vhost)` longest first.
    suffixes: Vec<(String, usize)>,
    /// `("api.", vhost)` longest first.
    prefixes: Vec<(String, usize)>,
    catch_all: Option<usize>,
}

#[derive(Debug)]
struct VirtualHost {
    routes: Vec<Route>,
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    /// The route's name, or `vhost/index` if it has none; used as a metrics label.
    pub name: Arc<str>,
    path: PathMatch,
    headers: Vec<HeaderMatcher>,
    pub action: RouteAction,
    /// Until the response is complete, retries included; `None`: no limit (`timeout: 0s`).
    pub timeout: Option<Duration>,
    /// Longest silence in an upstream response body (`idle_timeout`).
    pub idle_timeout: Duration,
    pub retry: Option<RetryPolicy>,
    pub filter_chain: Option<String>,
}

#[derive(Debug)]
enum PathMatch {
    Prefix(String),
    Exact(String),
    Regex(Regex),
}

#[derive(Debug)]
struct HeaderMatcher {
    name: http::HeaderName,
    kind: HeaderMatchKind,
    invert: bool,
}

#[derive(Debug)]
enum HeaderMatchKind {
    Exact(String),
    Prefix(String),
    Regex(Regex),
    Present(bool),
}

/// Where a matched request goes.
#[derive(Debug, Clone)]
pub enum RouteAction {
    Cluster(Arc<str>),
    Weighted {
        clusters: Vec<(Arc<str>, u32)>,
        total: u32,
    },
}

impl RouteAction {
    /// The cluster for this request; weighted splits draw a fresh number each time.
    pub fn pick_cluster(&self) -> &Arc<str> {
        match self {
            RouteAction::Cluster(name) => name,
            RouteAction::Weighted { clusters, total } => {
                let mut point = rand::rng().random_range(0..(*total).max(1));
                for (name, weight) in clusters {
                    if point < *weight {
                        return name;
                    }
                    point -= weight;
                }
                // Unreachable while weights sum to `total`; the last cluster is a safe answer.
                &clusters[clusters.len() - 1].0
            }
        }
    }
}

impl RouteTable {
    pub fn build(cfg: &config::RouteConfig) -> Result<RouteTable, RouteError> {
        let mut table = RouteTable {
            name: cfg.name.clone(),
            vhosts: Vec::with_capacity(cfg.virtual_hosts.len()),
            exact: HashMap::default(),
            suffixes: Vec::new(),
            prefixes: Vec::new(),
            catch_all: None,
        };
        for (index, vh) in cfg.virtual_hosts.iter().enumerate() {
            for domain in &vh.domains {
                let domain = domain.to_ascii_lowercase();
                if domain == "*" {
                    table.catch_all.get_or_insert(index);
                } else if let Some(suffix) = domain.strip_prefix('*') {
                    table.suffixes.push((suffix.to_string(), index));
                } else if let Some(prefix) = domain.strip_suffix('*') {
                    table.prefixes.push((prefix.to_string(), index));
                } else {
                    table.exact.entry(domain).or_insert(index);
                }
            }
            let mut routes = Vec::with_capacity(vh.routes.len());
            for (i, route) in vh.routes.iter().enumerate() {
                routes.push(compile_route(&vh.name, i, route)?);
            }
            table.vhosts.push(VirtualHost { routes });
        }
        table
            .suffixes
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        table
            .prefixes
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Ok(table)
    }

    /// Finds the route for a request. `host` may carry a port, which is ignored.
    pub fn select(&self, host: &str, path: &str, headers: &HeaderMap) -> Option<&Route> {
        let vhost = self.vhost_for(host)?;
        let path = path.split('?').next().unwrap_or(path);
        vhost.routes.iter().find(|r| r.matches(path, headers))
    }

    fn vhost_for(&self, host: &str) -> Option<&VirtualHost> {
        let host = strip_port(host);
        // Most clients send the name in lower case already: no copy for them.
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(host.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(host)
        };
        let index = self
            .exact
            .get(&*host)
            .copied()
            .or_else(|| {
                self.suffixes
                    .iter()
                    .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix))
                    .map(|(_, i)| *i)
            })
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(prefix, _)| host.len() > prefix.len() && host.starts_with(prefix))
                    .map(|(_, i)| *i)
            })
            .or(self.catch_all)?;
        self.vhosts.get(index)
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn compile_route(vhost: &str, index: usize, cfg: &config::Route) -> Result<Route, RouteError> {
    let name: Arc<str> = match &cfg.name {
        Some(name) => name.as_str().into(),
        None => format!("{vhost}/{index}").into(),
    };
    let regex_err = |source| RouteError::Regex {
        route: name.to_string(),
        source,
    };
    let path = if let Some(p) = &cfg.matcher.path {
        PathMatch::Exact(p.clone())
    } else if let Some(r) = &cfg.matcher.regex {
        PathMatch::Regex(Regex::new(&format!("^(?:{r})$")).map_err(regex_err)?)
    } else {
        PathMatch::Prefix(cfg.matcher.prefix.clone().unwrap_or_else(|| "/".into()))
    };
    let mut headers = Vec::with_capacity(cfg.matcher.headers.len());
    for h in &cfg.matcher.headers {
        let kind = if let Some(v) = &h.exact {
            HeaderMatchKind::Exact(v.clone())
        } else if let Some(v) = &h.prefix {
            HeaderMatchKind::Prefix(v.clone())
        } else if let Some(r) = &h.regex {
            HeaderMatchKind::Regex(Regex::new(&format!("^(?:{r})$")).map_err(regex_err)?)
        } else {
            HeaderMatchKind::Present(h.present.unwrap_or(true))
        };
        let Ok(header_name) = http::HeaderName::from_bytes(h.name.as_bytes()) else {
            return Err(RouteError::HeaderName {
                route: name.to_string(),
                header: h.name.clone(),
            });
        };
        headers.push(HeaderMatcher {
            name: header_name,
            kind,
            invert: h.invert,
        });
    }
    let action = match (&cfg.cluster, cfg.weighted_clusters.is_empty()) {
        (Some(cluster), _) => RouteAction::Cluster(cluster.as_str().into()),
        (None, false) => {
            let clusters: Vec<(Arc<str>, u32)> = cfg
                .weighted_clusters
                .iter()
                .map(|w| (Arc::from(w.name.as_str()), w.weight))
                .collect();
            let total = clusters.iter().map(|(_, w)| *w).sum();
            if total == 0 {
                return Err(RouteError::ZeroWeight(name.to_string()));
            }
            RouteAction::Weighted { clusters, total }
        }
        (None, true) => return Err(RouteError::NoAction(name.to_string())),
    };
    Ok(Route {
        name,
        path,
        headers,
        action,
        timeout: (!cfg.timeout.is_zero()).then_some(cfg.timeout),
        idle_timeout: cfg.idle_timeout,
        retry: cfg.retry_policy.clone(),
        filter_chain: cfg.filter_chain.clone(),
    })
}

impl Route {
    /// How long a filter may pause the request or response: the route timeout, or the idle
    /// timeout on a route without one.
    pub fn pause_limit(&self) -> Duration {
        self.timeout.unwrap_or(self.idle_timeout)
    }

    fn matches(&self, path: &str, headers: &HeaderMap) -> bool {
        let path_ok = match &self.path {
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Exact(p) => path == p,
            PathMatch::Regex(r) => r.is_match(path),
        };
        path_ok && self.headers.iter().all(|h| h.matches(headers))
    }
}

impl HeaderMatcher {
    fn matches(&self, headers: &HeaderMap) -> bool {
        let value = headers.get(&self.name).and_then(|v| v.to_str().ok());
        let hit = match (&self.kind, value) {
            (HeaderMatchKind::Present(want), v) => v.is_some() == *want,
            (_, None) => false,
            (HeaderMatchKind::Exact(e), Some(v)) => v == e,
            (HeaderMatchKind::Prefix(p), Some(v)) => v.starts_with(p.as_str()),
            (HeaderMatchKind::Regex(r), Some(v)) => r.is_match(v),
        };
        hit != self.invert
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(yaml: &str) -> RouteTable {
        let cfg: config::RouteConfig = serde_yaml::from_str(yaml).expect("test yaml");
        RouteTable::build(&cfg).expect("compiles")
    }

    const TABLE: &str = r#"
name: main
virtual_hosts:
  - name: exact
    domains: ["api.example.com"]
    routes:
      - name: api-exact
        match: { path: "/health" }
        cluster: a
      - name: api-canary
        match: { prefix: "/", headers: [{ name: x-env, exact: canary }] }
        cluster: canary
      - name: api-regex
        match: { regex: "/users/[0-9]+" }
        cluster: users
      - name: api-default
        match: { prefix: "/" }
        cluster: b
  - name: wildcard
    domains: ["*.example.com"]
    routes:
      - name: wild
        match: { prefix: "/" }
        cluster: w
  - name: prefix
    domains: ["internal.*"]
    routes:
      - name: internal
        match: { prefix: "/" }
        cluster: i
  - name: fallback
    domains: ["*"]
    routes:
      - match: { prefix: "/static" }
        cluster: s
"#;

    fn cluster_of(t: &RouteTable, host: &str, path: &str, headers: &HeaderMap) -> Option<String> {
        t.select(host, path, headers)
            .map(|r| r.action.pick_cluster().to_string())
    }

    #[test]
    fn domain_precedence_and_path_kinds() {
        let t = table(TABLE);
        let none = HeaderMap::new();
        assert_eq!(
            cluster_of(&t, "api.example.com", "/health", &none).as_deref(),
            Some("a")
        );
        assert_eq!(
            cluster_of(&t, "API.example.com:8080", "/health?x=1", &none).as_deref(),
            Some("a")
        );
        assert_eq!(
            cluster_of(&t, "api.example.com", "/healthz", &none).as_deref(),
            Some("b")
        );
        assert_eq!(
            cluster_of(&t, "api.example.com", "/users/42", &none).as_deref(),
            Some("users")
        );
        assert_eq!(
            cluster_of(&t, "api.example.com", "/users/42/x", &none).as_deref(),
            Some("b")
        );
        assert_eq!(
            cluster_of(&t, "www.example.com", "/", &none).as_deref(),
            Some("w")
        );
        assert_eq!(
            cluster_of(&t, "internal.corp", "/", &none).as_deref(),
            Some("i")
        );
        assert_eq!(
            cluster_of(&t, "other", "/static/a.css", &none).as_deref(),
            Some("s")
        );
        assert_eq!(cluster_of(&t, "other", "/dynamic", &none), None);
        assert_eq!(
            t.select("other", "/static", &none).map(|r| &*r.name),
            Some("fallback/0")
        );
    }

    #[test]
    fn header_match_selects_route() {
        let t = table(TABLE);
        let mut h = HeaderMap::new();
        h.insert("x-env", "canary".parse().expect("value"));
        assert_eq!(
            cluster_of(&t, "api.example.com", "/x", &h).as_deref(),
            Some("canary")
        );
        h.insert("x-env", "prod".parse().expect("value"));
        assert_eq!(
            cluster_of(&t, "api.example.com", "/x", &h).as_deref(),
            Some("b")
        );
    }

    #[test]
    fn weighted_split_follows_weights() {
        let action = RouteAction::Weighted {
            clusters: vec![("a".into(), 90), ("b".into(), 10)],
            total: 100,
        };
        let a = (0..10_000)
            .filter(|_| &**action.pick_cluster() == "a")
            .count();
        // 9000 expected; ±4σ of a binomial(10000, 0.9) is ±120.
        assert!((8_800..=9_200).contains(&a), "{a}");
    }

    #[test]
    fn strip_port_handles_v6() {
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("example.com:80"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
    }
}
