//! Semantic checks: what serde cannot see — references between sections, ranges, files on
//! disk. Every problem is collected, so one `wasmesh validate` run shows all of them.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::Read;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::model::*;

/// `(field path, message)` pairs in the order found.
pub(crate) type Problems = Vec<(String, String)>;

pub(crate) fn validate(config: &Config) -> Problems {
    let mut v = Validator::default();
    v.unique_names(
        "listeners",
        "listener",
        config.listeners.iter().map(|l| &l.name),
    );
    v.unique_names(
        "routes",
        "route config",
        config.routes.iter().map(|r| &r.name),
    );
    v.unique_names(
        "clusters",
        "cluster",
        config.clusters.iter().map(|c| &c.name),
    );
    v.unique_names(
        "filter_chains",
        "filter chain",
        config.filter_chains.iter().map(|f| &f.name),
    );

    let names = Names {
        routes: config.routes.iter().map(|r| r.name.as_str()).collect(),
        clusters: config.clusters.iter().map(|c| c.name.as_str()).collect(),
        filter_chains: config
            .filter_chains
            .iter()
            .map(|f| f.name.as_str())
            .collect(),
    };

    // Which listener (or the admin API) took each address first; port 0 asks the OS for a
    // fresh port each time, so it never clashes.
    let mut bound: Vec<(SocketAddr, String)> = Vec::new();
    for (i, listener) in config.listeners.iter().enumerate() {
        let at = format!("listeners[{i}]");
        v.listener(&at, listener, &names);
        if let Ok(addr) = listener.address.parse::<SocketAddr>() {
            v.claim_address(&mut bound, addr, &format!("{at}.address"), &at);
        }
    }
    if let Some(admin) = &config.admin {
        match admin.address.parse::<SocketAddr>() {
            Ok(addr) => v.claim_address(&mut bound, addr, "admin.address", "the admin API"),
            Err(_) => v.error("admin.address", bad_socket_addr(&admin.address)),
        }
    }

    for (i, routes) in config.routes.iter().enumerate() {
        v.route_config(&format!("routes[{i}]"), routes, &names);
    }
    for (i, cluster) in config.clusters.iter().enumerate() {
        v.cluster(&format!("clusters[{i}]"), cluster);
    }
    for (i, chain) in config.filter_chains.iter().enumerate() {
        v.filter_chain(&format!("filter_chains[{i}]"), chain);
    }
    v.registry(&config.registry);
    v.positive("drain_timeout", config.drain_timeout);
    v.problems
}

/// Names other sections may refer to.
struct Names<'a> {
    routes: Vec<&'a str>,
    clusters: Vec<&'a str>,
    filter_chains: Vec<&'a str>,
}

#[derive(Default)]
struct Validator {
    problems: Problems,
}

impl Validator {
    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push((field.into(), message.into()));
    }

    fn unique_names<'a>(
        &mut self,
        section: &str,
        what: &str,
        names: impl Iterator<Item = &'a String>,
    ) {
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, name) in names.enumerate() {
            let field = format!("{section}[{i}].name");
            if name.trim().is_empty() {
                self.error(field, format!("{what} name must not be empty"));
                continue;
            }
            match first.entry(name.as_str()) {
                Entry::Occupied(earlier) => self.error(
                    field,
                    format!(
                        "duplicate {what} name {name:?} (also {section}[{}])",
                        earlier.get()
                    ),
                ),
                Entry::Vacant(slot) => {
                    slot.insert(i);
                }
            }
        }
    }

    fn claim_address(
        &mut self,
        bound: &mut Vec<(SocketAddr, String)>,
        addr: SocketAddr,
        field: &str,
        owner: &str,
    ) {
        if addr.port() == 0 {
            return;
        }
        match bound
            .iter()
            .find(|(taken, _)| addresses_clash(*taken, addr))
        {
            Some((taken, first)) if *taken == addr => {
                self.error(field, format!("address {addr} is already used by {first}"));
            }
            Some((taken, first)) => self.error(
                field,
                format!("address {addr} clashes with {taken} of {first}"),
            ),
            None => bound.push((addr, owner.to_string())),
        }
    }

    fn positive(&mut self, field: &str, duration: Duration) {
        if duration.is_zero() {
            self.error(field, "must be greater than 0");
        }
    }

    fn at_least_one(&mut self, field: &str, value: u64) {
        if value == 0 {
            self.error(field, "must be at least 1");
        }
    }

    fn reference(&mut self, field: &str, name: &str, known: &[&str], what: &str, section: &str) {
        if !known.contains(&name) {
            self.error(field, format!("no {what} named {name:?} in {section}"));
        }
    }

    fn readable_file(&mut self, field: &str, what: &str, path: &str) {
        if let Err(reason) = check_readable(path) {
            self.error(field, format!("cannot read {what} {path:?}: {reason}"));
        }
    }

    fn header_name(&mut self, field: &str, name: &str) {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            self.error(field, format!("{name:?} is not a valid HTTP header name"));
        }
    }

    /// Compiled anchored, the way the router uses it, so what passes here compiles there
    /// (a trailing `#` comment under `(?x)` would swallow the closing anchor, for one).
    fn regex(&mut self, field: &str, pattern: &str) {
        if let Err(err) = regex::Regex::new(&format!("^(?:{pattern})$")) {
            self.error(
                field,
                format!("invalid regex {pattern:?}: {}", regex_reason(&err)),
            );
        }
    }

    fn listener(&mut self, at: &str, listener: &Listener, names: &Names) {
        if listener.address.parse::<SocketAddr>().is_err() {
            self.error(format!("{at}.address"), bad_socket_addr(&listener.address));
        }
        match (&listener.route_config, &listener.tcp_proxy) {
            (Some(routes), None) => self.reference(
                &format!("{at}.route_config"),
                routes,
                &names.routes,
                "route config",
                "routes",
            ),
            (None, Some(tcp)) => {
                self.reference(
                    &format!("{at}.tcp_proxy.cluster"),
                    &tcp.cluster,
                    &names.clusters,
                    "cluster",
                    "clusters",
                );
                self.positive(&format!("{at}.tcp_proxy.idle_timeout"), tcp.idle_timeout);
            }
            (Some(_), Some(_)) => self.error(
                at.to_string(),
                "route_config (HTTP) and tcp_proxy (TCP) exclude each other; keep one",
            ),
            (None, None) => self.error(
                format!("{at}.route_config"),
                "required (or tcp_proxy, for a TCP listener)",
            ),
        }
        if let Some(chain) = &listener.filter_chain {
            self.reference(
                &format!("{at}.filter_chain"),
                chain,
                &names.filter_chains,
                "filter chain",
                "filter_chains",
            );
        }
        self.positive(
            &format!("{at}.header_read_timeout"),
            listener.header_read_timeout,
        );
        self.at_least_one(
            &format!("{at}.max_connections"),
            listener.max_connections as u64,
        );
        self.at_least_one(&format!("{at}.max_requests"), listener.max_requests as u64);
        self.at_least_one(
            &format!("{at}.max_header_bytes"),
            listener.max_header_bytes as u64,
        );
        if let Some(max) = listener.max_request_body_bytes {
            self.at_least_one(&format!("{at}.max_request_body_bytes"), max);
        }
        self.at_least_one(
            &format!("{at}.filter_buffer_limit_bytes"),
            listener.filter_buffer_limit_bytes as u64,
        );
        if let Some(tls) = &listener.tls {
            self.listener_tls(&format!("{at}.tls"), tls, listener.tcp_proxy.is_some());
        }
    }

    fn listener_tls(&mut self, at: &str, tls: &ListenerTls, tcp: bool) {
        if tls.certificates.is_empty() {
            self.error(
                format!("{at}.certificates"),
                "at least one certificate is required",
            );
        }
        for (i, files) in tls.certificates.iter().enumerate() {
            let cert_at = format!("{at}.certificates[{i}]");
            self.readable_file(
                &format!("{cert_at}.cert_file"),
                "certificate file",
                &files.cert_file,
            );
            self.readable_file(&format!("{cert_at}.key_file"), "key file", &files.key_file);
        }
        if let Some(ca) = &tls.client_ca_file {
            self.readable_file(&format!("{at}.client_ca_file"), "client CA file", ca);
        }
        if tls.alpn().is_empty() && !tcp {
            self.error(
                format!("{at}.alpn"),
                "an HTTP listener needs at least one protocol",
            );
        }
        let alpn = tls.alpn();
        for (i, protocol) in alpn.iter().enumerate() {
            if alpn[..i].contains(protocol) {
                let wire = String::from_utf8_lossy(protocol.wire()).into_owned();
                self.error(
                    format!("{at}.alpn[{i}]"),
                    format!("duplicate protocol {wire:?}"),
                );
            }
        }
    }

    fn route_config(&mut self, at: &str, routes: &RouteConfig, names: &Names) {
        if routes.virtual_hosts.is_empty() {
            self.error(
                format!("{at}.virtual_hosts"),
                "at least one virtual host is required",
            );
        }
        // Lowercased domain → the virtual host that claimed it first.
        let mut claimed: HashMap<String, usize> = HashMap::new();
        for (h, vhost) in routes.virtual_hosts.iter().enumerate() {
            let vhost_at = format!("{at}.virtual_hosts[{h}]");
            if vhost.domains.is_empty() {
                self.error(
                    format!("{vhost_at}.domains"),
                    "at least one domain is required",
                );
            }
            for (d, domain) in vhost.domains.iter().enumerate() {
                let field = format!("{vhost_at}.domains[{d}]");
                if let Err(why) = check_domain(domain) {
                    self.error(field, format!("invalid domain {domain:?}: {why}"));
                    continue;
                }
                match claimed.entry(domain.to_ascii_lowercase()) {
                    Entry::Occupied(first) if *first.get() != h => self.error(
                        field,
                        format!(
                            "domain {domain:?} is also in {at}.virtual_hosts[{}]",
                            first.get()
                        ),
                    ),
                    Entry::Occupied(_) => {}
                    Entry::Vacant(slot) => {
                        slot.insert(h);
                    }
                }
            }
            for (r, route) in vhost.routes.iter().enumerate() {
                self.route(&format!("{vhost_at}.routes[{r}]"), route, names);
            }
        }
    }

    fn route(&mut self, at: &str, route: &Route, names: &Names) {
        self.route_match(&format!("{at}.match"), &route.matcher);

        match (&route.cluster, route.weighted_clusters.is_empty()) {
            (None, true) => self.error(at, "one of cluster or weighted_clusters is required"),
            (Some(_), false) => self.error(
                at,
                "cluster and weighted_clusters are mutually exclusive; set only one",
            ),
            _ => {}
        }
        if let Some(cluster) = &route.cluster {
            self.reference(
                &format!("{at}.cluster"),
                cluster,
                &names.clusters,
                "cluster",
                "clusters",
            );
        }
        for (i, weighted) in route.weighted_clusters.iter().enumerate() {
            self.reference(
                &format!("{at}.weighted_clusters[{i}].name"),
                &weighted.name,
                &names.clusters,
                "cluster",
                "clusters",
            );
        }
        let total: u64 = route
            .weighted_clusters
            .iter()
            .map(|w| u64::from(w.weight))
            .sum();
        if !route.weighted_clusters.is_empty() && total == 0 {
            self.error(
                format!("{at}.weighted_clusters"),
                "weights must add up to more than 0",
            );
        }
        // The router keeps the total in a u32.
        if total > u64::from(u32::MAX) {
            self.error(
                format!("{at}.weighted_clusters"),
                format!("weights must add up to at most {}", u32::MAX),
            );
        }
        self.positive(&format!("{at}.idle_timeout"), route.idle_timeout);
        if let Some(policy) = &route.retry_policy {
            self.retry_policy(&format!("{at}.retry_policy"), policy);
        }
        if let Some(chain) = &route.filter_chain {
            self.reference(
                &format!("{at}.filter_chain"),
                chain,
                &names.filter_chains,
                "filter chain",
                "filter_chains",
            );
        }
    }

    fn route_match(&mut self, at: &str, matcher: &RouteMatch) {
        let set: Vec<&str> = [
            ("prefix", matcher.prefix.is_some()),
            ("path", matcher.path.is_some()),
            ("regex", matcher.regex.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, is_set)| is_set.then_some(name))
        .collect();
        match set.len() {
            0 => self.error(at, "one of prefix, path or regex is required"),
            1 => {}
            _ => self.error(
                at,
                format!(
                    "only one of prefix, path or regex may be set, found {}",
                    set.join(" and ")
                ),
            ),
        }
        for (field, value) in [("prefix", &matcher.prefix), ("path", &matcher.path)] {
            if let Some(value) = value
                && !value.starts_with('/')
            {
                self.error(
                    format!("{at}.{field}"),
                    format!("{value:?} must start with '/'"),
                );
            }
        }
        if let Some(pattern) = &matcher.regex {
            self.regex(&format!("{at}.regex"), pattern);
        }
        for (i, header) in matcher.headers.iter().enumerate() {
            self.header_match(&format!("{at}.headers[{i}]"), header);
        }
    }

    fn header_match(&mut self, at: &str, header: &HeaderMatch) {
        self.header_name(&format!("{at}.name"), &header.name);
        let set = [
            header.exact.is_some(),
            header.prefix.is_some(),
            header.regex.is_some(),
            header.present.is_some(),
        ]
        .into_iter()
        .filter(|is_set| *is_set)
        .count();
        if set != 1 {
            self.error(
                at,
                "exactly one of exact, prefix, regex or present is required",
            );
        }
        if let Some(pattern) = &header.regex {
            self.regex(&format!("{at}.regex"), pattern);
        }
    }

    fn retry_policy(&mut self, at: &str, policy: &RetryPolicy) {
        if policy.retry_on.is_empty() {
            self.error(
                format!("{at}.retry_on"),
                "at least one retry condition is required",
            );
        }
        if policy.retry_on.contains(&RetryOn::RetriableStatusCodes)
            && policy.retriable_status_codes.is_empty()
        {
            self.error(
                format!("{at}.retriable_status_codes"),
                "required when retry_on includes retriable-status-codes",
            );
        }
        for (i, code) in policy.retriable_status_codes.iter().enumerate() {
            if !(100..=599).contains(code) {
                self.error(
                    format!("{at}.retriable_status_codes[{i}]"),
                    format!("{code} is not an HTTP status code (100..=599)"),
                );
            }
        }
        if policy.num_retries > MAX_RETRIES {
            self.error(
                format!("{at}.num_retries"),
                format!("must be at most {MAX_RETRIES}"),
            );
        }
        if let Some(per_try) = policy.per_try_timeout {
            self.positive(&format!("{at}.per_try_timeout"), per_try);
        }
    }

    fn cluster(&mut self, at: &str, cluster: &Cluster) {
        if cluster.endpoints.is_empty() {
            self.error(
                format!("{at}.endpoints"),
                "at least one endpoint is required",
            );
        }
        for (i, endpoint) in cluster.endpoints.iter().enumerate() {
            if let Err(why) = check_endpoint(endpoint) {
                self.error(
                    format!("{at}.endpoints[{i}]"),
                    format!(
                        "invalid endpoint {endpoint:?}: {why}; expected HOST:PORT, e.g. \
                         10.0.0.1:8080, backend.local:80 or [::1]:80"
                    ),
                );
            }
        }
        match (&cluster.lb_policy, &cluster.ring_hash) {
            (LbPolicy::RingHash, None) => self.error(
                format!("{at}.lb_policy"),
                "ring_hash needs a ring_hash section naming the header to hash",
            ),
            (LbPolicy::RingHash, Some(ring)) => {
                self.header_name(&format!("{at}.ring_hash.header"), &ring.header);
                if !(1..=MAX_VIRTUAL_NODES).contains(&ring.virtual_nodes) {
                    self.error(
                        format!("{at}.ring_hash.virtual_nodes"),
                        format!("must be in 1..={MAX_VIRTUAL_NODES}"),
                    );
                }
            }
            (_, Some(_)) => self.error(
                format!("{at}.ring_hash"),
                "only used with lb_policy: ring_hash; remove it or change lb_policy",
            ),
            (_, None) => {}
        }
        self.positive(&format!("{at}.connect_timeout"), cluster.connect_timeout);
        if let Some(tls) = &cluster.tls {
            self.upstream_tls(&format!("{at}.tls"), tls);
        }
        if let Some(check) = &cluster.health_check {
            let check_at = format!("{at}.health_check");
            if !check.path.starts_with('/') {
                self.error(
                    format!("{check_at}.path"),
                    format!("{:?} must start with '/'", check.path),
                );
            }
            self.positive(&format!("{check_at}.interval"), check.interval);
            self.positive(&format!("{check_at}.timeout"), check.timeout);
            self.at_least_one(
                &format!("{check_at}.healthy_threshold"),
                u64::from(check.healthy_threshold),
            );
            self.at_least_one(
                &format!("{check_at}.unhealthy_threshold"),
                u64::from(check.unhealthy_threshold),
            );
        }
        if let Some(outlier) = &cluster.outlier_detection
            && outlier.max_ejection_percent > 100
        {
            self.error(
                format!("{at}.outlier_detection.max_ejection_percent"),
                "must be at most 100",
            );
        }
        let breakers = &cluster.circuit_breakers;
        let breakers_at = format!("{at}.circuit_breakers");
        for (field, value) in [
            ("max_connections", breakers.max_connections),
            ("max_pending_requests", breakers.max_pending_requests),
            ("max_requests", breakers.max_requests),
            ("max_retries", breakers.max_retries),
        ] {
            self.at_least_one(&format!("{breakers_at}.{field}"), value as u64);
        }
    }

    fn upstream_tls(&mut self, at: &str, tls: &UpstreamTls) {
        if let Some(sni) = &tls.sni
            && rustls_pki_types::ServerName::try_from(sni.as_str()).is_err()
        {
            self.error(
                format!("{at}.sni"),
                format!("{sni:?} is not a valid server name"),
            );
        }
        if let Some(ca) = &tls.ca_file {
            self.readable_file(&format!("{at}.ca_file"), "CA file", ca);
        }
        match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => {
                self.readable_file(&format!("{at}.cert_file"), "certificate file", cert);
                self.readable_file(&format!("{at}.key_file"), "key file", key);
            }
            (Some(_), None) => self.error(format!("{at}.key_file"), "required with cert_file"),
            (None, Some(_)) => self.error(format!("{at}.cert_file"), "required with key_file"),
            (None, None) => {}
        }
    }

    /// An `oci://` plugin: the reference parses, a pin is a sha256 digest, and following needs
    /// a tag to follow.
    fn oci_plugin(&mut self, at: &str, plugin: &Plugin, reference: &str) {
        let parsed = match wasmesh_registry::client::ImageRef::parse(reference) {
            Ok(parsed) => parsed,
            Err(err) => {
                self.error(
                    format!("{at}.source"),
                    format!("{err}; expected oci://HOST[:PORT]/REPO:TAG or oci://HOST[:PORT]/REPO@sha256:HEX"),
                );
                return;
            }
        };
        if let Some(pin) = &plugin.sha256
            && let Err(why) = check_sha256_pin(pin)
        {
            self.error(format!("{at}.sha256"), why);
        }
        if plugin.follow {
            if parsed.digest.is_some() {
                self.error(
                    format!("{at}.follow"),
                    "a digest reference never moves; follow needs a tag",
                );
            }
            if plugin.sha256.is_some() {
                self.error(
                    format!("{at}.follow"),
                    "cannot follow a tag and pin a digest (sha256) at once",
                );
            }
        }
        self.positive(&format!("{at}.poll_interval"), plugin.poll_interval);
    }

    fn registry(&mut self, registry: &Registry) {
        if let Some(path) = &registry.ca_file {
            self.readable_file("registry.ca_file", "CA file", path);
        }
        if let Some(path) = &registry.auth_file {
            self.readable_file("registry.auth_file", "credentials file", path);
        }
        for (i, host) in registry.insecure.iter().enumerate() {
            if host.is_empty() || host.contains('/') {
                self.error(
                    format!("registry.insecure[{i}]"),
                    format!("{host:?} is not a registry host: use HOST, HOST:PORT or *"),
                );
            }
        }
        self.positive("registry.pull_timeout", registry.pull_timeout);
    }

    fn filter_chain(&mut self, at: &str, chain: &FilterChain) {
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, plugin) in chain.plugins.iter().enumerate() {
            let plugin_at = format!("{at}.plugins[{i}]");
            if plugin.name.trim().is_empty() {
                self.error(format!("{plugin_at}.name"), "plugin name must not be empty");
            } else {
                match first.entry(plugin.name.as_str()) {
                    Entry::Occupied(earlier) => self.error(
                        format!("{plugin_at}.name"),
                        format!(
                            "duplicate plugin name {:?} (also {at}.plugins[{}])",
                            plugin.name,
                            earlier.get()
                        ),
                    ),
                    Entry::Vacant(slot) => {
                        slot.insert(i);
                    }
                }
            }
            if plugin.deadline.is_zero() {
                self.error(format!("{plugin_at}.deadline"), "must be greater than 0");
            }
            if plugin.memory_limit < 64 * 1024 {
                self.error(
                    format!("{plugin_at}.memory_limit"),
                    "must be at least 65536 (one Wasm page)",
                );
            }
            let source_at = format!("{plugin_at}.source");
            if !plugin.source.starts_with("oci://") {
                for (set, field) in [
                    (plugin.sha256.is_some(), "sha256"),
                    (plugin.follow, "follow"),
                    (plugin.pull_policy != PullPolicy::default(), "pull_policy"),
                ] {
                    if set {
                        self.error(
                            format!("{plugin_at}.{field}"),
                            "only applies to oci:// sources",
                        );
                    }
                }
            }
            match plugin_source(&plugin.source) {
                Ok(PluginSource::File(path)) => {
                    if path.is_empty() {
                        self.error(
                            source_at,
                            "file:// needs a path, e.g. file://filters/auth.wasm",
                        );
                    } else {
                        self.readable_file(&source_at, "plugin file", path);
                    }
                }
                Ok(PluginSource::Oci(reference)) => {
                    self.oci_plugin(&plugin_at, plugin, reference);
                }
                Err(why) => self.error(source_at, why),
            }
        }
    }
}

const MAX_RETRIES: u32 = 10;
const MAX_VIRTUAL_NODES: u32 = 10_000;

enum PluginSource<'a> {
    File(&'a str),
    Oci(&'a str),
}

fn plugin_source(source: &str) -> Result<PluginSource<'_>, String> {
    if let Some(path) = source.strip_prefix("file://") {
        Ok(PluginSource::File(path))
    } else if let Some(reference) = source.strip_prefix("oci://") {
        Ok(PluginSource::Oci(reference))
    } else {
        Err(format!(
            "{source:?} is not a plugin source: use file://PATH or oci://HOST/REPO:TAG"
        ))
    }
}

/// A manifest digest pin: `sha256:` and 64 lowercase hex digits (the prefix may be left out).
fn check_sha256_pin(pin: &str) -> Result<(), String> {
    let hex = pin.strip_prefix("sha256:").unwrap_or(pin);
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "{pin:?} is not a sha256 digest (sha256: and 64 lowercase hex digits)"
        ))
    }
}

/// Whether binding both would fail: the same port on the same IP, or on any IP of a family
/// where one of them is the wildcard (`0.0.0.0`, `::`).
fn addresses_clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn bad_socket_addr(address: &str) -> String {
    format!("invalid address {address:?}: expected IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8443")
}

/// Opens the file and reads a byte, because opening alone succeeds on a directory.
fn check_readable(path: &str) -> Result<(), String> {
    let mut file = std::fs::File::open(path).map_err(|err| io_reason(&err))?;
    file.read(&mut [0u8; 1]).map_err(|err| io_reason(&err))?;
    Ok(())
}

/// `No such file or directory` rather than `... (os error 2)`: the number helps nobody
/// reading a config error.
pub(crate) fn io_reason(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(cut) if text.ends_with(')') => text[..cut].to_string(),
        _ => text,
    }
}

/// The regex crate's error is a multi-line drawing with a caret; the last line is the
/// reason, and one line per problem keeps the error list readable.
fn regex_reason(err: &regex::Error) -> String {
    let text = err.to_string();
    text.lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix("error: "))
        .map(str::to_string)
        .unwrap_or_else(|| text.lines().map(str::trim).collect::<Vec<_>>().join(" "))
}

fn is_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'
}

/// `*`, an exact host, `*.suffix` or `prefix.*`.
fn check_domain(domain: &str) -> Result<(), &'static str> {
    const FORMS: &str = "use \"*\", an exact host, \"*.suffix\" or \"prefix.*\"";
    if domain == "*" {
        return Ok(());
    }
    let host = domain
        .strip_prefix("*.")
        .or_else(|| domain.strip_suffix(".*"))
        .unwrap_or(domain);
    if host.is_empty() {
        return Err(FORMS);
    }
    if host.contains('*') {
        return Err(
            "a wildcard may only be the whole domain, a leading \"*.\" or a trailing \".*\"",
        );
    }
    let bracketed_v6 = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .is_some_and(|h| h.parse::<Ipv6Addr>().is_ok());
    if bracketed_v6 || host.parse::<Ipv6Addr>().is_ok() || host.chars().all(is_host_char) {
        Ok(())
    } else {
        Err(FORMS)
    }
}

fn check_endpoint(endpoint: &str) -> Result<(), &'static str> {
    let (host, port) = if let Some(rest) = endpoint.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or("missing ']'")?;
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err("not an IPv6 address between the brackets");
        }
        (v6, after.strip_prefix(':').ok_or("missing port")?)
    } else {
        let (host, port) = endpoint.rsplit_once(':').ok_or("missing port")?;
        if host.contains(':') {
            return Err("IPv6 addresses need brackets");
        }
        if host.is_empty() || !host.chars().all(is_host_char) {
            return Err("bad host");
        }
        (host, port)
    };
    debug_assert!(!host.is_empty());
    match port.parse::<u16>() {
        Ok(port) if port != 0 => Ok(()),
        _ => Err("port must be 1..65535"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        for good in [
            "10.0.0.1:8080",
            "backend.local:80",
            "[::1]:80",
            "a_b-c:65535",
        ] {
            assert_eq!(check_endpoint(good), Ok(()), "{good}");
        }
        for bad in [
            "10.0.0.1",
            "10.0.0.1:0",
            "10.0.0.1:65536",
            "::1:80",
            "[::1]80",
            "[zz]:80",
            ":80",
            "host name:80",
            "http://a:80",
            "a:-1",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn address_clashes() {
        let addr = |s: &str| s.parse::<SocketAddr>().expect("test address");
        assert!(addresses_clash(addr("127.0.0.1:80"), addr("127.0.0.1:80")));
        assert!(addresses_clash(addr("0.0.0.0:80"), addr("127.0.0.1:80")));
        assert!(addresses_clash(addr("[::1]:80"), addr("[::]:80")));
        assert!(!addresses_clash(addr("127.0.0.1:80"), addr("127.0.0.2:80")));
        assert!(!addresses_clash(addr("127.0.0.1:80"), addr("127.0.0.1:81")));
        assert!(!addresses_clash(addr("0.0.0.0:80"), addr("[::1]:80")));
    }

    #[test]
    fn domains() {
        for good in [
            "*",
            "example.com",
            "*.example.com",
            "example.*",
            "localhost",
            "[::1]",
            "10.0.0.1",
        ] {
            assert_eq!(check_domain(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "*.",
            ".*",
            "a*.com",
            "*.*",
            "ex*ample.com",
            "*example.com",
            "a.*.b",
            "a b",
            "a/b",
        ] {
            assert!(check_domain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn regex_errors_fit_on_one_line() {
        // Through a variable, so clippy's invalid_regex lint does not reject the test itself.
        let pattern = String::from("a(");
        let err = regex::Regex::new(&pattern).expect_err("unclosed group");
        assert_eq!(regex_reason(&err), "unclosed group");
    }

    #[test]
    fn io_errors_drop_the_os_error_number() {
        let err = std::fs::File::open("/definitely/not/here.pem").expect_err("missing");
        assert_eq!(io_reason(&err), "No such file or directory");
    }

    #[test]
    fn a_directory_is_not_a_readable_file() {
        assert_eq!(check_readable("/"), Err("Is a directory".to_string()));
    }

    fn chain_problems(plugins: &str) -> Vec<String> {
        let text = format!("filter_chains:\n  - name: c\n    plugins:\n{plugins}");
        let config: Config = serde_yaml::from_str(&text).expect("parses");
        validate(&config)
            .into_iter()
            .map(|(field, message)| format!("{field}: {message}"))
            .collect()
    }

    #[test]
    fn oci_plugins() {
        let ok = chain_problems(
            "      - { name: a, source: oci://127.0.0.1:5000/f/a:v1, follow: true, poll_interval: 1s }\n      - { name: b, source: oci://r.example/f/b:v1, sha256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef }\n      - { name: c, source: oci://r.example/f/c:v1, pull_policy: always }\n",
        );
        assert_eq!(ok, Vec::<String>::new());
        let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let bad = chain_problems(&format!(
            "      - {{ name: a, source: \"oci://r.example/f/a@{digest}\", follow: true }}\n      - {{ name: b, source: oci://r.example/f/b:v1, sha256: nope }}\n      - {{ name: c, source: oci://r.example/f/c:v1, follow: true, sha256: {digest} }}\n      - {{ name: d, source: file:///dev/null, follow: true, pull_policy: always }}\n      - {{ name: e, source: oci://r.example/f/e:v1, poll_interval: 0s }}\n"
        ));
        assert_eq!(
            bad,
            [
                "filter_chains[0].plugins[0].follow: a digest reference never moves; follow needs a tag",
                "filter_chains[0].plugins[1].sha256: \"nope\" is not a sha256 digest (sha256: and 64 lowercase hex digits)",
                "filter_chains[0].plugins[2].follow: cannot follow a tag and pin a digest (sha256) at once",
                "filter_chains[0].plugins[3].follow: only applies to oci:// sources",
                "filter_chains[0].plugins[3].pull_policy: only applies to oci:// sources",
                "filter_chains[0].plugins[4].poll_interval: must be greater than 0",
            ]
        );
    }
}
