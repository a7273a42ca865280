//! The configuration schema: what a `wasmesh` YAML file may say.
//!
//! Field names follow Envoy/Istio vocabulary where one exists. Every struct denies unknown
//! fields, so a typo is an error that names the field instead of a silently ignored setting.
//! Semantic checks (references between sections, ranges) live in `validate`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// A whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Named route tables; a listener refers to one by name.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    #[serde(default)]
    pub filter_chains: Vec<FilterChain>,
    #[serde(default)]
    pub admin: Option<Admin>,
    /// How `oci://` plugin sources are pulled.
    #[serde(default)]
    pub registry: Registry,
    /// How long in-flight requests may take to finish on SIGTERM/SIGINT.
    #[serde(default = "defaults::drain_timeout", with = "duration")]
    pub drain_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: Vec::new(),
            routes: Vec::new(),
            clusters: Vec::new(),
            filter_chains: Vec::new(),
            admin: None,
            registry: Registry::default(),
            drain_timeout: defaults::drain_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub address: String,
}

/// Where and how `oci://` plugin sources are pulled from.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// Registries reached over plain HTTP: `host` or `host:port`, `*` for all. Loopback
    /// registries are always plain HTTP, as Docker treats them.
    #[serde(default)]
    pub insecure: Vec<String>,
    /// PEM bundle of CAs trusted for registries, besides the Mozilla root set.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Docker-style credentials (`auths` in `config.json`); default `$DOCKER_CONFIG/config.json`
    /// or `~/.docker/config.json` when present. `WASMESH_REGISTRY_TOKEN` sets a bearer token.
    #[serde(default)]
    pub auth_file: Option<String>,
    /// Where pulled modules are kept across restarts (default `$WASMESH_CACHE_DIR/oci`, or
    /// `$TMPDIR/wasmesh-module-cache/oci`).
    #[serde(default)]
    pub cache_dir: Option<String>,
    /// Longest one pull may take; a pull that takes longer fails (and its plugin's failure
    /// policy applies at start-up).
    #[serde(default = "defaults::pull_timeout", with = "duration")]
    pub pull_timeout: Duration,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            insecure: Vec::new(),
            ca_file: None,
            auth_file: None,
            cache_dir: None,
            pull_timeout: defaults::pull_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    /// `IP:PORT` to bind, e.g. `127.0.0.1:8080` or `[::1]:8443`.
    pub address: String,
    /// Name of the route table in `routes` this listener serves (an HTTP listener)...
    #[serde(default)]
    pub route_config: Option<String>,
    /// ...or the cluster its connections are proxied to byte for byte (a TCP listener, as
    /// Envoy's `tcp_proxy`); its `filter_chain` then runs network filters.
    #[serde(default)]
    pub tcp_proxy: Option<TcpProxy>,
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// Filter chain applied to every request on this listener (before a route's own chain).
    #[serde(default)]
    pub filter_chain: Option<String>,
    /// Downstream connections beyond this are closed on accept.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Requests in flight on this listener beyond this get a 503.
    #[serde(default = "defaults::max_requests")]
    pub max_requests: usize,
    /// An HTTP/1 client must send its complete request head within this time.
    #[serde(default = "defaults::header_read_timeout", with = "duration")]
    pub header_read_timeout: Duration,
    /// An HTTP/2 connection with no stream in flight for this long is closed (Envoy's
    /// `idle_timeout`, with its default; zero: never). Between HTTP/1.1 requests,
    /// `header_read_timeout` bounds a quiet connection.
    #[serde(default = "defaults::listener_idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
    /// Largest request head accepted; larger gets 431.
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    /// Largest request body accepted (none by default): a longer declared length gets 413 at
    /// once, a longer streamed body is cut off there and answered 413.
    #[serde(default)]
    pub max_request_body_bytes: Option<u64>,
    /// Most of a body one Wasm filter may hold buffered (it paused before the body's end), and,
    /// on a `tcp_proxy` listener, most of one direction's data: beyond it a request gets 413,
    /// a response is reset and a TCP connection closed. Envoy's
    /// `per_connection_buffer_limit_bytes` plays this part there, with the same default.
    #[serde(default = "defaults::filter_buffer_limit_bytes")]
    pub filter_buffer_limit_bytes: usize,
    /// Append an `x-forwarded-client-cert` header naming the mTLS peer (Envoy's
    /// `SANITIZE_SET`); when false an incoming one is removed (`SANITIZE`).
    #[serde(default)]
    pub forward_client_cert: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TcpProxy {
    pub cluster: String,
    /// A connection with no bytes either way for this long is closed.
    #[serde(default = "defaults::tcp_idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Certificates to serve; the one whose `server_names` match the client's SNI wins, the first
    /// one is the default.
    pub certificates: Vec<CertificateFiles>,
    /// PEM bundle of CAs that sign client certificates. Setting it turns on mTLS.
    #[serde(default)]
    pub client_ca_file: Option<String>,
    /// With `client_ca_file`: reject clients that present no certificate (default true).
    #[serde(default = "defaults::yes")]
    pub require_client_cert: bool,
    /// ALPN protocols offered, in preference order. Unset: h2 and http/1.1 on an HTTP
    /// listener; none on a `tcp_proxy` one, whose relay does not speak them (as Envoy's
    /// tcp_proxy negotiates none by default). Loading a configuration fills it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn: Option<Vec<Alpn>>,
}

impl ListenerTls {
    /// The ALPN protocols offered, in preference order.
    pub fn alpn(&self) -> &[Alpn] {
        self.alpn.as_deref().unwrap_or(&[Alpn::H2, Alpn::Http11])
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    pub cert_file: String,
    pub key_file: String,
    /// SNI names this certificate answers for; `*.example.com` wildcards allowed.
    #[serde(default)]
    pub server_names: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum Alpn {
    #[serde(rename = "h2")]
    H2,
    #[serde(rename = "http/1.1")]
    Http11,
}

impl Alpn {
    pub fn wire(self) -> &'static [u8] {
        match self {
            Alpn::H2 => b"h2",
            Alpn::Http11 => b"http/1.1",
        }
    }
}

/// A named route table: virtual hosts chosen by `Host`/`:authority`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VirtualHost {
    pub name: String,
    /// `example.com`, `*.example.com`, `example.*` or `*`; a port in the request's host is ignored.
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// Send to this cluster...
    #[serde(default)]
    pub cluster: Option<String>,
    /// ...or split between these by weight.
    #[serde(default)]
    pub weighted_clusters: Vec<WeightedCluster>,
    /// Time allowed from the end of the request (at once for one without a body, else when
    /// the client's body has arrived whole) until the response is complete (its headers and
    /// its body), retries included: Envoy's route timeout, so an upload's own time does not
    /// count (while it lasts, the timeout ends it only if it makes no progress for that long).
    /// `0s` turns it off, for responses that stream without end; filter pauses are then
    /// bounded by `idle_timeout`.
    #[serde(default = "defaults::route_timeout", with = "duration")]
    pub timeout: Duration,
    /// Longest silence allowed in the client's request body, and in the upstream's response
    /// body once its headers arrived (Envoy's stream idle timeout, which watches both ways); a
    /// stalled request body is answered 408, a stalled response body is cut off.
    #[serde(default = "defaults::route_idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
    #[serde(default)]
    pub retry_policy: Option<RetryPolicy>,
    /// Filter chain for this route, run after the listener's.
    #[serde(default)]
    pub filter_chain: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Path (without query) starts with this.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Path (without query) equals this.
    #[serde(default)]
    pub path: Option<String>,
    /// Path (without query) fully matches this regular expression.
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    /// `true`: the header must be present; `false`: it must be absent.
    #[serde(default)]
    pub present: Option<bool>,
    /// Invert the result.
    #[serde(default)]
    pub invert: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WeightedCluster {
    pub name: String,
    pub weight: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Any of `connect-failure`, `reset`, `5xx`, `gateway-error`, `retriable-status-codes`.
    pub retry_on: Vec<RetryOn>,
    #[serde(default = "defaults::num_retries")]
    pub num_retries: u32,
    /// Each attempt's own limit (default: none beyond the route timeout).
    #[serde(default, with = "duration::option")]
    pub per_try_timeout: Option<Duration>,
    #[serde(default)]
    pub retriable_status_codes: Vec<u16>,
    /// First back-off; doubles per retry with full jitter, capped at 10× this.
    #[serde(default = "defaults::retry_back_off", with = "duration")]
    pub base_interval: Duration,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    ConnectFailure,
    Reset,
    #[serde(rename = "5xx")]
    FiveXx,
    GatewayError,
    RetriableStatusCodes,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    /// `IP:PORT` or `dns-name:PORT`; names are resolved at connect time.
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub lb_policy: LbPolicy,
    /// For `ring_hash`: which request header is hashed, and ring size.
    #[serde(default)]
    pub ring_hash: Option<RingHash>,
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    #[serde(default = "defaults::connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub circuit_breakers: CircuitBreakers,
    #[serde(default)]
    pub pool: Pool,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    Random,
    /// Power of two choices on in-flight requests.
    LeastRequest,
    /// Latency-aware: power of two choices on a decaying RTT average × load.
    PeakEwma,
    /// Consistent hashing on a request header.
    RingHash,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RingHash {
    pub header: String,
    #[serde(default = "defaults::virtual_nodes")]
    pub virtual_nodes: u32,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    Http2,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// Server name sent as SNI and verified (default: the endpoint's host).
    #[serde(default)]
    pub sni: Option<String>,
    /// PEM bundle of trusted CAs (default: the Mozilla root set).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Client certificate for mTLS to the upstream.
    #[serde(default)]
    pub cert_file: Option<String>,
    #[serde(default)]
    pub key_file: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub path: String,
    #[serde(default = "defaults::hc_interval", with = "duration")]
    pub interval: Duration,
    #[serde(default = "defaults::hc_timeout", with = "duration")]
    pub timeout: Duration,
    #[serde(default = "defaults::hc_threshold")]
    pub healthy_threshold: u32,
    #[serde(default = "defaults::hc_threshold")]
    pub unhealthy_threshold: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// Eject after this many 5xx in a row (0 disables).
    #[serde(default = "defaults::consecutive")]
    pub consecutive_5xx: u32,
    /// Eject after this many connect failures/resets in a row (0 disables).
    #[serde(default = "defaults::consecutive")]
    pub consecutive_gateway_failure: u32,
    /// Ejection lasts this × the number of times the endpoint has been ejected.
    #[serde(default = "defaults::base_ejection_time", with = "duration")]
    pub base_ejection_time: Duration,
    /// Never eject more than this share of a cluster's endpoints.
    #[serde(default = "defaults::max_ejection_percent")]
    pub max_ejection_percent: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakers {
    #[serde(default = "defaults::cb_limit")]
    pub max_connections: usize,
    /// Requests sent upstream that are still waiting for response headers.
    #[serde(default = "defaults::cb_limit")]
    pub max_pending_requests: usize,
    #[serde(default = "defaults::cb_limit")]
    pub max_requests: usize,
    /// Retries in flight at once; also bounded by a budget of 20% of active requests.
    #[serde(default = "defaults::cb_retries")]
    pub max_retries: usize,
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        CircuitBreakers {
            max_connections: defaults::cb_limit(),
            max_pending_requests: defaults::cb_limit(),
            max_requests: defaults::cb_limit(),
            max_retries: defaults::cb_retries(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    #[serde(default = "defaults::pool_idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
    #[serde(default = "defaults::pool_max_idle")]
    pub max_idle_per_endpoint: usize,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            idle_timeout: defaults::pool_idle_timeout(),
            max_idle_per_endpoint: defaults::pool_max_idle(),
        }
    }
}

/// An ordered list of Wasm plugins, referred to by listeners and routes.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilterChain {
    pub name: String,
    #[serde(default)]
    pub plugins: Vec<Plugin>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Plugin {
    pub name: String,
    /// `file://PATH`, `oci://HOST/REPO:TAG` or `oci://HOST/REPO@sha256:…`.
    pub source: String,
    /// For `oci://` sources: the manifest digest the pulled artifact must have (`sha256:<hex>`
    /// or `<hex>`), as Istio's `WasmPlugin.sha256`.
    #[serde(default)]
    pub sha256: Option<String>,
    /// For `oci://` tags: `if_not_present` uses a module pulled before (even across restarts);
    /// `always` asks the registry which digest the tag names on every (re)load.
    #[serde(default)]
    pub pull_policy: PullPolicy,
    /// For `oci://` tags: poll the registry and roll out the new module when the tag moves.
    #[serde(default)]
    pub follow: bool,
    /// How often a followed tag is polled (and a failed start-up pull retried).
    #[serde(default = "defaults::poll_interval", with = "duration")]
    pub poll_interval: Duration,
    /// Plugin configuration handed to `proxy_on_configure`: a string is passed as is, anything
    /// else as JSON.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    #[serde(default)]
    pub root_id: String,
    #[serde(default)]
    pub vm_id: String,
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// Longest one filter callback may run before it is stopped and counted as a failure.
    #[serde(default = "defaults::plugin_deadline", with = "duration")]
    pub deadline: Duration,
    /// Cap on each VM replica's linear memory, in bytes.
    #[serde(default = "defaults::plugin_memory_limit")]
    pub memory_limit: usize,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    #[default]
    IfNotPresent,
    Always,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// A failing filter answers 503.
    #[default]
    FailClosed,
    /// A failing filter is skipped.
    FailOpen,
}

pub(crate) mod defaults {
    use std::time::Duration;

    pub fn yes() -> bool {
        true
    }
    pub fn drain_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_connections() -> usize {
        10_000
    }
    pub fn max_requests() -> usize {
        10_000
    }
    pub fn header_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_header_bytes() -> usize {
        64 * 1024
    }
    pub fn listener_idle_timeout() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn filter_buffer_limit_bytes() -> usize {
        1024 * 1024
    }
    pub fn route_timeout() -> Duration {
        Duration::from_secs(15)
    }
    pub fn route_idle_timeout() -> Duration {
        Duration::from_secs(300)
    }
    pub fn num_retries() -> u32 {
        1
    }
    pub fn retry_back_off() -> Duration {
        Duration::from_millis(25)
    }
    pub fn virtual_nodes() -> u32 {
        128
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn hc_interval() -> Duration {
        Duration::from_secs(5)
    }
    pub fn hc_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn hc_threshold() -> u32 {
        2
    }
    pub fn consecutive() -> u32 {
        5
    }
    pub fn base_ejection_time() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_ejection_percent() -> u32 {
        50
    }
    pub fn cb_limit() -> usize {
        1024
    }
    pub fn cb_retries() -> usize {
        3
    }
    pub fn pool_idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn plugin_deadline() -> Duration {
        Duration::from_millis(100)
    }
    pub fn plugin_memory_limit() -> usize {
        64 * 1024 * 1024
    }
    pub fn pool_max_idle() -> usize {
        64
    }
    pub fn tcp_idle_timeout() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn pull_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn poll_interval() -> Duration {
        Duration::from_secs(30)
    }
}
