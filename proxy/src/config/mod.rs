//! Loading and checking the YAML configuration.
//!
//! [`load_file`]/[`load_str`] parse (the schema is [`model`]) and then validate, and report
//! problems as `FILE:LINE: FIELD: MESSAGE`, one per line: every semantic problem at once, so
//! an operator fixes a file in one pass instead of one error per run.

pub mod model;

pub(crate) mod duration;
mod locate;
mod validate;

use std::fmt;
use std::path::Path;

pub use model::*;

use locate::Locator;

/// A map keyed by names the configuration gives (route tables, clusters, domains). Requests
/// look these up on every call and clients never add to them, so a fast unkeyed hash is safe.
pub type ByName<V> = std::collections::HashMap<String, V, rustc_hash::FxBuildHasher>;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based; `None` when the problem is not tied to a place in the text (unreadable file).
    pub line: Option<usize>,
    /// Where in the document, e.g. `clusters[1].endpoints[0]`; empty for the whole file.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Everything wrong with a configuration; never empty when returned as an error.
#[derive(Debug, thiserror::Error)]
#[error("{}", lines(.0))]
pub struct ConfigErrors(pub Vec<ConfigError>);

fn lines(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads, parses and validates a configuration file.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&text, &file),
        Err(err) => Err(ConfigErrors(vec![ConfigError {
            file,
            line: None,
            field: String::new(),
            message: format!("cannot read config file: {}", validate::io_reason(&err)),
        }])),
    }
}

/// Parses and validates configuration text; `file` names it in errors.
pub fn load_str(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    let mut config: Config = parse(text, file)?;
    located(validate::validate(&config), text, file, "")?;
    for listener in &mut config.listeners {
        if let Some(tls) = &mut listener.tls {
            // What `/config` shows is what is offered.
            let offered = match listener.tcp_proxy {
                Some(_) => Vec::new(),
                None => tls.alpn().to_vec(),
            };
            tls.alpn.get_or_insert(offered);
        }
    }
    Ok(config)
}

/// One filter chain as `PUT /chains/{name}` takes it: `plugins:` (and optionally `name:`,
/// which must then be `name`), checked like a chain in a file, with errors located in `text`.
pub fn load_chain_str(text: &str, name: &str, file: &str) -> Result<FilterChain, ConfigErrors> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ChainDocument {
        #[serde(default)]
        name: Option<String>,
        plugins: Vec<Plugin>,
    }
    let document: ChainDocument = parse(text, file)?;
    if let Some(given) = document.name.as_deref()
        && given != name
    {
        return Err(ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            line: Locator::new(text).line("name"),
            field: "name".into(),
            message: format!("says {given:?}, but the request is for chain {name:?}"),
        }]));
    }
    let chain = FilterChain {
        name: name.to_string(),
        plugins: document.plugins,
    };
    let alone = Config {
        filter_chains: vec![chain],
        ..Config::default()
    };
    located(validate::validate(&alone), text, file, "filter_chains[0].")?;
    let [chain] = <[FilterChain; 1]>::try_from(alone.filter_chains).map_err(|_| {
        ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            line: None,
            field: String::new(),
            message: "internal: the chain went missing".into(),
        }])
    })?;
    Ok(chain)
}

fn parse<T: serde::de::DeserializeOwned>(text: &str, file: &str) -> Result<T, ConfigErrors> {
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer)
        .map_err(|err| ConfigErrors(vec![parse_error(&err, text, file)]))
}

/// Turns semantic problems into located errors; `prefix` is stripped from field paths when the
/// text holds only part of a configuration.
fn located(
    problems: validate::Problems,
    text: &str,
    file: &str,
    prefix: &str,
) -> Result<(), ConfigErrors> {
    if problems.is_empty() {
        return Ok(());
    }
    let locator = Locator::new(text);
    let mut errors: Vec<ConfigError> = problems
        .into_iter()
        .map(|(field, message)| {
            let field = field.strip_prefix(prefix).unwrap_or(&field).to_string();
            // Messages may name other fields ("also filter_chains[0].plugins[0]").
            let message = if prefix.is_empty() {
                message
            } else {
                message.replace(prefix, "")
            };
            ConfigError {
                file: file.to_string(),
                line: locator.line(&field),
                field,
                message,
            }
        })
        .collect();
    // Reading order, so the list follows the file; stable, so problems on one line keep the
    // order they were found in.
    errors.sort_by_key(|error| error.line.unwrap_or(usize::MAX));
    Err(ConfigErrors(errors))
}

/// Validates a configuration built in code rather than read from a file (no lines to report).
pub fn validate(config: &Config) -> Result<(), ConfigErrors> {
    let errors: Vec<ConfigError> = validate::validate(config)
        .into_iter()
        .map(|(field, message)| ConfigError {
            file: "<config>".to_string(),
            line: None,
            field,
            message,
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Turns a serde_yaml error (syntax, type, unknown or missing field) into a `ConfigError`.
///
/// serde_yaml's message already embeds a path and ` at line L column C`; both move into
/// their own fields so the display is not doubled. Its path may stop at the parent (for an
/// unknown field it names the mapping, not the key), so every ancestor of the full path is
/// tried as the prefix to strip.
fn parse_error(
    err: &serde_path_to_error::Error<serde_yaml::Error>,
    text: &str,
    file: &str,
) -> ConfigError {
    let inner = err.inner();
    let prefixes = path_prefixes(err.path());
    let mut field = prefixes.last().cloned().unwrap_or_default();

    let mut message = inner.to_string();
    let mut line = None;
    if let Some(location) = inner.location() {
        let at = format!(" at line {} column {}", location.line(), location.column());
        // serde_yaml leaves the mark out when it has none (it then reports line 1 column 1
        // for a position it does not know), so only trust a location the message carried.
        if let Some(start) = message.find(&at) {
            message.replace_range(start..start + at.len(), "");
            line = Some(location.line());
        }
    }
    for prefix in prefixes.iter().rev().filter(|prefix| !prefix.is_empty()) {
        if let Some(rest) = message.strip_prefix(&format!("{prefix}: ")) {
            message = rest.to_string();
            break;
        }
    }
    // serde_yaml points a repeated key at its mapping, or nowhere at the top level; the
    // second occurrence is what to point at, and naming the key reads better.
    let repeated = message
        .strip_prefix("duplicate field `")
        .and_then(|rest| rest.strip_suffix('`'));
    let locator = Locator::new(text);
    if let Some(key) = repeated
        && let Some(at) = locator.repeated_key_line(&field, key)
    {
        line = Some(at);
        field = if field.is_empty() {
            key.to_string()
        } else {
            format!("{field}.{key}")
        };
    }
    let line = line.or_else(|| locator.line(&field));
    if let Some(suggested) = suggest(&message) {
        message = suggested;
    }
    ConfigError {
        file: file.to_string(),
        line,
        field,
        message,
    }
}

/// For a misspelt field or enum value, replaces serde's full list of what was expected with
/// the one it most likely meant: "unknown field `lb_polcy`; did you mean `lb_policy`?".
fn suggest(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (given, expected) = rest.split_once('`')?;
    let candidates = expected.split('`').skip(1).step_by(2);
    // A typo is a couple of edits at most; further away, the list helps more than a guess.
    let budget = (given.chars().count() / 3).clamp(1, 3);
    let (distance, best) = candidates
        .map(|candidate| (edit_distance(given, candidate), candidate))
        .min()?;
    if distance > budget {
        return None;
    }
    let head = &message[..message.len() - expected.len()];
    Some(format!("{head}; did you mean `{best}`?"))
}

/// Levenshtein distance, over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// `listeners`, `listeners[1]`, `listeners[1].tls`, ...: the path and each of its ancestors,
/// shortest first, in the notation used for fields everywhere in these errors. The root is
/// the empty string; an unknown segment ends the path.
fn path_prefixes(path: &serde_path_to_error::Path) -> Vec<String> {
    use serde_path_to_error::Segment;

    let mut out = vec![String::new()];
    let mut current = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => current.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !current.is_empty() {
                    current.push('.');
                }
                current.push_str(key);
            }
            Segment::Unknown => break,
        }
        out.push(current.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::Duration;

    use super::*;

    /// A directory holding the files a valid config points at.
    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Files {
            let dir = tempfile::tempdir().expect("temp dir");
            for name in [
                "server.pem",
                "server.key",
                "ca.pem",
                "client.pem",
                "client.key",
            ] {
                fs::write(dir.path().join(name), "-----BEGIN PLACEHOLDER-----\n").expect("write");
            }
            fs::write(dir.path().join("auth.wasm"), b"\0asm\x01\0\0\0").expect("write");
            Files { dir }
        }

        fn path(&self, name: &str) -> String {
            self.dir.path().join(name).display().to_string()
        }

        fn full_config(&self) -> String {
            FULL.replace("DIR", &self.dir.path().display().to_string())
        }
    }

    const FULL: &str = r#"
listeners:
  - name: public
    address: 127.0.0.1:8443
    route_config: main
    filter_chain: edge
    max_connections: 500
    header_read_timeout: 2s
    forward_client_cert: true
    tls:
      certificates:
        - cert_file: DIR/server.pem
          key_file: DIR/server.key
          server_names: ["*.example.com"]
      client_ca_file: DIR/ca.pem
      require_client_cert: false
      alpn: [h2, http/1.1]
  - name: plain
    address: "[::1]:8080"
    route_config: main
routes:
  - name: main
    virtual_hosts:
      - name: api
        domains: [api.example.com, "api.*"]
        routes:
          - name: users
            match:
              prefix: /users
              headers:
                - name: x-canary
                  present: true
                - name: X-Tenant
                  regex: "^t-[0-9]+$"
                  invert: true
            weighted_clusters:
              - {name: users-v1, weight: 90}
              - {name: users-v2, weight: 10}
            timeout: 1.5s
            retry_policy:
              retry_on: [connect-failure, 5xx, retriable-status-codes]
              retriable_status_codes: [503]
              num_retries: 3
              per_try_timeout: 500ms
              base_interval: 10ms
            filter_chain: edge
      - name: fallback
        domains: ["*"]
        routes:
          - match: {regex: "/v[0-9]+/.*"}
            cluster: users-v1
          - match: {path: /}
            cluster: users-v2
clusters:
  - name: users-v1
    endpoints: ["10.0.0.1:8080", "backend.local:80", "[::1]:9000"]
    lb_policy: ring_hash
    ring_hash: {header: x-user, virtual_nodes: 256}
    protocol: http2
    connect_timeout: 250ms
    tls:
      sni: users.internal
      ca_file: DIR/ca.pem
      cert_file: DIR/client.pem
      key_file: DIR/client.key
    health_check:
      path: /healthz
      interval: 2s
      timeout: 500ms
      healthy_threshold: 1
      unhealthy_threshold: 3
    outlier_detection:
      consecutive_5xx: 3
      consecutive_gateway_failure: 2
      base_ejection_time: 1m
      max_ejection_percent: 100
    circuit_breakers:
      max_connections: 10
      max_pending_requests: 20
      max_requests: 30
      max_retries: 1
    pool:
      idle_timeout: 90s
      max_idle_per_endpoint: 8
  - name: users-v2
    endpoints: ["10.0.0.2:8080"]
    lb_policy: peak_ewma
filter_chains:
  - name: edge
    plugins:
      - name: auth
        source: file://DIR/auth.wasm
        config: {issuer: "https://id.example.com", audiences: [a, b]}
        root_id: auth_root
        vm_id: auth_vm
        failure_policy: fail_open
      - name: headers
        source: file://DIR/auth.wasm
        config: "plain string"
admin:
  address: 127.0.0.1:9901
drain_timeout: 30s
"#;

    fn errors_of(text: &str) -> Vec<String> {
        match load_str(text, "test.yaml") {
            Ok(config) => panic!("expected errors, got {config:?}"),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_full_valid_config_loads_and_round_trips() {
        let files = Files::new();
        let config = load_str(&files.full_config(), "full.yaml").expect("valid config");

        assert_eq!(config.listeners.len(), 2);
        let tls = config.listeners[0].tls.as_ref().expect("tls");
        assert_eq!(tls.alpn, Some(vec![Alpn::H2, Alpn::Http11]));
        assert!(!tls.require_client_cert);
        assert_eq!(config.listeners[1].max_connections, 10_000);
        let route = &config.routes[0].virtual_hosts[0].routes[0];
        assert_eq!(route.timeout, Duration::from_millis(1500));
        let retry = route.retry_policy.as_ref().expect("retry policy");
        assert_eq!(retry.per_try_timeout, Some(Duration::from_millis(500)));
        assert_eq!(retry.retry_on[1], RetryOn::FiveXx);
        assert_eq!(config.clusters[0].lb_policy, LbPolicy::RingHash);
        assert_eq!(config.clusters[1].connect_timeout, Duration::from_secs(5));
        assert_eq!(
            config.clusters[0]
                .outlier_detection
                .as_ref()
                .map(|o| o.base_ejection_time),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            config.filter_chains[0].plugins[0].config,
            Some(serde_json::json!({"issuer": "https://id.example.com", "audiences": ["a", "b"]}))
        );
        assert_eq!(config.drain_timeout, Duration::from_secs(30));

        let text = serde_yaml::to_string(&config).expect("serializes");
        let again = load_str(&text, "round-trip.yaml").expect("serialized config is valid");
        assert_eq!(again, config);
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        let config = load_str("", "empty.yaml").expect("empty is valid");
        assert!(config.listeners.is_empty());
        assert_eq!(config.drain_timeout, Duration::from_secs(10));
    }

    #[test]
    fn an_unknown_field_is_named_with_its_line() {
        let files = Files::new();
        let text = files.full_config().replace(
            "      require_client_cert: false\n",
            "      require_client_certs: false\n",
        );
        let errors = errors_of(&text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            errors,
            vec![
                "test.yaml:16: listeners[0].tls.require_client_certs: unknown field \
                 `require_client_certs`; did you mean `require_client_cert`?"
            ]
        );
    }

    #[test]
    fn a_typo_far_from_any_field_lists_them_all() {
        assert_eq!(
            errors_of("admin:\n  address: 127.0.0.1:9901\n  whatever: 1\n"),
            vec!["test.yaml:3: admin.whatever: unknown field `whatever`, expected `address`"]
        );
        assert_eq!(
            errors_of(
                "clusters:\n  - name: c\n    endpoints: [\"a:1\"]\n    lb_policy: roundrobin\n"
            ),
            vec![
                "test.yaml:4: clusters[0].lb_policy: unknown variant `roundrobin`; did you mean \
                 `round_robin`?"
            ]
        );
    }

    #[test]
    fn a_type_error_is_named_with_its_line() {
        let errors = errors_of(
            "listeners:\n  - name: a\n    address: 127.0.0.1:80\n    route_config: r\n    \
             max_connections: lots\n",
        );
        assert_eq!(
            errors,
            vec![
                "test.yaml:5: listeners[0].max_connections: invalid type: string \"lots\", \
                 expected usize"
            ]
        );
    }

    #[test]
    fn a_bad_duration_is_named_with_its_line() {
        let errors = errors_of("drain_timeout: 5x\n");
        assert_eq!(
            errors,
            vec![
                "test.yaml:1: drain_timeout: invalid duration \"5x\": expected a number \
                 followed by ms, s, m or h (or us, ns), e.g. \"250ms\", \"1.5s\" or \"1m30s\""
            ]
        );
    }

    #[test]
    fn a_missing_field_names_the_mapping_and_its_line() {
        let errors =
            errors_of("clusters:\n  - name: a\n    endpoints: [\"a:1\"]\n  - endpoints: []\n");
        assert_eq!(
            errors,
            vec!["test.yaml:4: clusters[1]: missing field `name`"]
        );
    }

    #[test]
    fn a_syntax_error_has_a_line() {
        let errors = errors_of("drain_timeout: 1s\nlisteners: [\n");
        assert_eq!(
            errors,
            vec![
                "test.yaml:3: listeners: did not find expected node content, while parsing a \
                 flow node"
            ]
        );
    }

    #[test]
    fn a_repeated_key_points_at_the_repeat() {
        assert_eq!(
            errors_of("drain_timeout: 1s\ndrain_timeout: 2s\n"),
            vec!["test.yaml:2: drain_timeout: duplicate field `drain_timeout`"]
        );
        assert_eq!(
            errors_of("listeners:\n  - name: a\n    address: x\n    name: b\n"),
            vec!["test.yaml:4: listeners[0].name: duplicate field `name`"]
        );
    }

    #[test]
    fn every_semantic_error_is_reported_with_its_line() {
        let text = r#"listeners:
  - name: web
    address: 127.0.0.1:8080
    route_config: missing-routes
  - name: web
    address: 127.0.0.1:8080
    route_config: main
routes:
  - name: main
    virtual_hosts:
      - name: a
        domains: ["a.com", "b*.com"]
        routes:
          - match: {prefix: users}
            cluster: nowhere
          - match: {prefix: /, path: /x}
            cluster: c
            timeout: 0s
            retry_policy:
              retry_on: [retriable-status-codes]
              num_retries: 11
      - name: b
        domains: ["A.com"]
        routes:
          - match:
              regex: "a("
              headers:
                - name: "bad header"
                  exact: x
                  prefix: y
clusters:
  - name: c
    endpoints: ["10.0.0.1", "[::1]:80", "::1:80"]
    lb_policy: ring_hash
    connect_timeout: 0ms
    health_check:
      path: healthz
      healthy_threshold: 0
    outlier_detection:
      max_ejection_percent: 101
    circuit_breakers:
      max_requests: 0
  - name: d
    endpoints: []
    ring_hash: {header: x-id, virtual_nodes: 0}
    tls:
      cert_file: /no/such/client.pem
filter_chains:
  - name: f
    plugins:
      - name: p
        source: oci://registry.example.com/P:1
      - name: p
        source: https://example.com/p.wasm
      - name: q
        source: file:///no/such/q.wasm
admin:
  address: localhost:9901
drain_timeout: 0s
"#;
        let errors = errors_of(text);
        let want = [
            "test.yaml:4: listeners[0].route_config: no route config named \"missing-routes\" in routes",
            "test.yaml:5: listeners[1].name: duplicate listener name \"web\" (also listeners[0])",
            "test.yaml:6: listeners[1].address: address 127.0.0.1:8080 is already used by listeners[0]",
            "test.yaml:12: routes[0].virtual_hosts[0].domains[1]: invalid domain \"b*.com\": a wildcard may only be the whole domain, a leading \"*.\" or a trailing \".*\"",
            "test.yaml:14: routes[0].virtual_hosts[0].routes[0].match.prefix: \"users\" must start with '/'",
            "test.yaml:15: routes[0].virtual_hosts[0].routes[0].cluster: no cluster named \"nowhere\" in clusters",
            "test.yaml:16: routes[0].virtual_hosts[0].routes[1].match: only one of prefix, path or regex may be set, found prefix and path",
            "test.yaml:19: routes[0].virtual_hosts[0].routes[1].retry_policy.retriable_status_codes: required when retry_on includes retriable-status-codes",
            "test.yaml:21: routes[0].virtual_hosts[0].routes[1].retry_policy.num_retries: must be at most 10",
            "test.yaml:23: routes[0].virtual_hosts[1].domains[0]: domain \"A.com\" is also in routes[0].virtual_hosts[0]",
            "test.yaml:25: routes[0].virtual_hosts[1].routes[0]: one of cluster or weighted_clusters is required",
            "test.yaml:26: routes[0].virtual_hosts[1].routes[0].match.regex: invalid regex \"a(\": unclosed group",
            "test.yaml:28: routes[0].virtual_hosts[1].routes[0].match.headers[0].name: \"bad header\" is not a valid HTTP header name",
            "test.yaml:28: routes[0].virtual_hosts[1].routes[0].match.headers[0]: exactly one of exact, prefix, regex or present is required",
            "test.yaml:33: clusters[0].endpoints[0]: invalid endpoint \"10.0.0.1\": missing port; expected HOST:PORT, e.g. 10.0.0.1:8080, backend.local:80 or [::1]:80",
            "test.yaml:33: clusters[0].endpoints[2]: invalid endpoint \"::1:80\": IPv6 addresses need brackets; expected HOST:PORT, e.g. 10.0.0.1:8080, backend.local:80 or [::1]:80",
            "test.yaml:34: clusters[0].lb_policy: ring_hash needs a ring_hash section naming the header to hash",
            "test.yaml:35: clusters[0].connect_timeout: must be greater than 0",
            "test.yaml:37: clusters[0].health_check.path: \"healthz\" must start with '/'",
            "test.yaml:38: clusters[0].health_check.healthy_threshold: must be at least 1",
            "test.yaml:40: clusters[0].outlier_detection.max_ejection_percent: must be at most 100",
            "test.yaml:42: clusters[0].circuit_breakers.max_requests: must be at least 1",
            "test.yaml:44: clusters[1].endpoints: at least one endpoint is required",
            "test.yaml:45: clusters[1].ring_hash: only used with lb_policy: ring_hash; remove it or change lb_policy",
            "test.yaml:46: clusters[1].tls.key_file: required with cert_file",
            "test.yaml:52: filter_chains[0].plugins[0].source: invalid repository name \"P\"; expected oci://HOST[:PORT]/REPO:TAG or oci://HOST[:PORT]/REPO@sha256:HEX",
            "test.yaml:53: filter_chains[0].plugins[1].name: duplicate plugin name \"p\" (also filter_chains[0].plugins[0])",
            "test.yaml:54: filter_chains[0].plugins[1].source: \"https://example.com/p.wasm\" is not a plugin source: use file://PATH or oci://HOST/REPO:TAG",
            "test.yaml:56: filter_chains[0].plugins[2].source: cannot read plugin file \"/no/such/q.wasm\": No such file or directory",
            "test.yaml:58: admin.address: invalid address \"localhost:9901\": expected IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8443",
            "test.yaml:59: drain_timeout: must be greater than 0",
        ];
        assert_eq!(errors, want, "\ngot:\n{}", errors.join("\n"));
    }

    #[test]
    fn more_semantic_errors() {
        let text = r#"listeners:
  - {name: "", address: "0.0.0.0:9000", route_config: r, max_connections: 0}
  - {name: b, address: "127.0.0.1:9000", route_config: r, filter_chain: nope}
routes:
  - name: r
    virtual_hosts:
      - name: v
        domains: []
        routes:
          - match: {path: /a, headers: [{name: x, present: true}]}
            cluster: c
            weighted_clusters: [{name: c, weight: 1}]
          - match: {regex: "(?x)a # comment"}
            weighted_clusters: [{name: c, weight: 0}, {name: gone, weight: 0}]
            retry_policy: {retry_on: [], retriable_status_codes: [99, 200], per_try_timeout: 0s}
clusters:
  - name: c
    endpoints: ["c:1"]
    lb_policy: ring_hash
    ring_hash: {header: "x y", virtual_nodes: 10001}
    tls: {key_file: /no/such/key.pem, sni: "bad name"}
    health_check: {path: /h, interval: 0s}
admin:
  address: 127.0.0.1:9000
"#;
        let errors = errors_of(text);
        let want = [
            "test.yaml:2: listeners[0].name: listener name must not be empty",
            "test.yaml:2: listeners[0].max_connections: must be at least 1",
            "test.yaml:3: listeners[1].filter_chain: no filter chain named \"nope\" in filter_chains",
            "test.yaml:3: listeners[1].address: address 127.0.0.1:9000 clashes with 0.0.0.0:9000 of listeners[0]",
            "test.yaml:8: routes[0].virtual_hosts[0].domains: at least one domain is required",
            "test.yaml:10: routes[0].virtual_hosts[0].routes[0]: cluster and weighted_clusters are mutually exclusive; set only one",
            "test.yaml:13: routes[0].virtual_hosts[0].routes[1].match.regex: invalid regex \"(?x)a # comment\": unclosed group",
            "test.yaml:14: routes[0].virtual_hosts[0].routes[1].weighted_clusters[1].name: no cluster named \"gone\" in clusters",
            "test.yaml:14: routes[0].virtual_hosts[0].routes[1].weighted_clusters: weights must add up to more than 0",
            "test.yaml:15: routes[0].virtual_hosts[0].routes[1].retry_policy.retry_on: at least one retry condition is required",
            "test.yaml:15: routes[0].virtual_hosts[0].routes[1].retry_policy.retriable_status_codes[0]: 99 is not an HTTP status code (100..=599)",
            "test.yaml:15: routes[0].virtual_hosts[0].routes[1].retry_policy.per_try_timeout: must be greater than 0",
            "test.yaml:20: clusters[0].ring_hash.header: \"x y\" is not a valid HTTP header name",
            "test.yaml:20: clusters[0].ring_hash.virtual_nodes: must be in 1..=10000",
            "test.yaml:21: clusters[0].tls.sni: \"bad name\" is not a valid server name",
            "test.yaml:21: clusters[0].tls.cert_file: required with key_file",
            "test.yaml:22: clusters[0].health_check.interval: must be greater than 0",
            "test.yaml:24: admin.address: address 127.0.0.1:9000 clashes with 0.0.0.0:9000 of listeners[0]",
        ];
        assert_eq!(errors, want, "\ngot:\n{}", errors.join("\n"));
    }

    #[test]
    fn a_missing_certificate_file_is_named() {
        let files = Files::new();
        let text = files
            .full_config()
            .replace(&files.path("server.pem"), "x.pem");
        let errors = errors_of(&text);
        assert_eq!(
            errors,
            vec![
                "test.yaml:12: listeners[0].tls.certificates[0].cert_file: cannot read \
                 certificate file \"x.pem\": No such file or directory"
            ]
        );
    }

    #[test]
    fn listener_tls_needs_certificates_and_sane_alpn() {
        let errors = errors_of(
            "listeners:\n  - name: a\n    address: 127.0.0.1:80\n    route_config: r\n    tls:\n      \
             certificates: []\n      alpn: [h2, h2]\nroutes:\n  - name: r\n    virtual_hosts: []\n",
        );
        assert_eq!(
            errors,
            vec![
                "test.yaml:6: listeners[0].tls.certificates: at least one certificate is required",
                "test.yaml:7: listeners[0].tls.alpn[1]: duplicate protocol \"h2\"",
                "test.yaml:10: routes[0].virtual_hosts: at least one virtual host is required",
            ]
        );
    }

    #[test]
    fn an_unreadable_file_is_one_error_naming_it() {
        let errors = load_file(Path::new("/no/such/wasmesh.yaml")).expect_err("missing file");
        assert_eq!(
            errors.to_string(),
            "/no/such/wasmesh.yaml: cannot read config file: No such file or directory"
        );
    }

    #[test]
    fn load_file_reads_and_validates() {
        let files = Files::new();
        let path = files.dir.path().join("wasmesh.yaml");
        fs::write(&path, files.full_config()).expect("write");
        assert!(load_file(&path).is_ok());
    }

    #[test]
    fn errors_display_one_per_line() {
        let errors = ConfigErrors(vec![
            ConfigError {
                file: "a.yaml".into(),
                line: Some(3),
                field: "clusters[1].endpoints[0]".into(),
                message: "bad".into(),
            },
            ConfigError {
                file: "a.yaml".into(),
                line: None,
                field: "drain_timeout".into(),
                message: "worse".into(),
            },
        ]);
        assert_eq!(
            errors.to_string(),
            "a.yaml:3: clusters[1].endpoints[0]: bad\na.yaml: drain_timeout: worse"
        );
    }

    #[test]
    fn validate_checks_configs_built_in_code() {
        assert!(validate(&Config::default()).is_ok());
        let errors = validate(&Config {
            drain_timeout: Duration::ZERO,
            ..Config::default()
        })
        .expect_err("zero drain timeout");
        assert_eq!(
            errors.to_string(),
            "<config>: drain_timeout: must be greater than 0"
        );
    }

    #[test]
    fn a_chain_document_is_checked_and_located_on_its_own() {
        let chain = load_chain_str(
            "plugins:\n  - name: a\n    source: file:///dev/null\n",
            "edge",
            "<put>",
        )
        .expect("valid chain");
        assert_eq!(chain.name, "edge");
        assert_eq!(chain.plugins[0].name, "a");

        let errors = load_chain_str(
            "plugins:\n  - name: a\n    source: file:///dev/null\n  - name: a\n    source: ftp://x\n",
            "edge",
            "<put>",
        )
        .expect_err("two problems");
        let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "<put>:4: plugins[1].name: duplicate plugin name \"a\" (also plugins[0])",
                "<put>:5: plugins[1].source: \"ftp://x\" is not a plugin source: use file://PATH or oci://HOST/REPO:TAG",
            ]
        );

        let errors = load_chain_str("name: other\nplugins: []\n", "edge", "<put>")
            .expect_err("name mismatch");
        assert_eq!(
            errors.to_string(),
            "<put>:1: name: says \"other\", but the request is for chain \"edge\""
        );
        let errors =
            load_chain_str("plugins: []\nextra: 1\n", "edge", "<put>").expect_err("unknown field");
        assert!(
            errors.to_string().contains("unknown field `extra`"),
            "{errors}"
        );
    }
}
