//! The attributes a host answers to `proxy_get_property`, by Envoy's names, decoded from
//! Envoy's encodings: strings and bytes raw; integers as 8 bytes little-endian; booleans as
//! one byte (0 or 1); timestamps as 8-byte little-endian nanoseconds since the Unix epoch and
//! durations as 8-byte little-endian nanoseconds. Kong answers booleans as the text
//! `true`/`false`; [`decode_bool`] accepts both. And [`set`], for the filter state later
//! filters read.
//!
//! Each accessor answers `None` when the host has no value (for example the mTLS attributes
//! on a plain-text connection, or the response's before there is one) or the value is not of
//! the expected type. Request attributes are there from the first callback; those marked
//! *end* hold the whole exchange only in `on_log`. The last column says whether wasmesh
//! answers the attribute (Envoy answers all of them):
//!
//! | attribute | accessor | type | wasmesh |
//! |---|---|---|---|
//! | `request.path` (with query), `request.url_path` (without) | [`request_path`], [`request_url_path`] | string | yes |
//! | `request.query` | [`request_query`] | string | yes |
//! | `request.method`, `.host`, `.scheme`, `.id` | [`request_method`], [`request_host`], [`request_scheme`], [`request_id`] | string | yes |
//! | `request.protocol` (`HTTP/1.0`, `HTTP/1.1`, `HTTP/2`) | [`request_protocol`] | string | yes |
//! | `request.useragent`, `request.referer` | [`request_useragent`], [`request_referer`] | string | yes |
//! | `request.time`: when the request arrived | [`request_time`] | timestamp | yes |
//! | `request.duration` (*end*) | [`request_duration`] | duration | yes |
//! | `request.size` (*end*): body bytes | [`request_size`] | int | yes |
//! | `request.total_size` (*end*): headers and body | [`request_total_size`] | int | no |
//! | `response.code` (*end*) | [`response_code`] | int | yes |
//! | `response.code_details` (*end*) | [`response_code_details`] | string | no |
//! | `response.flags` (*end*): Envoy's bit-vector | [`response_flags`] | int | yes |
//! | `response.grpc_status` (*end*) | [`response_grpc_status`] | int | no |
//! | `response.size` (*end*): body bytes | [`response_size`] | int | yes |
//! | `response.total_size` (*end*): headers, body and trailers | [`response_total_size`] | int | no |
//! | `response.backend_latency` (*end*) | [`response_backend_latency`] | duration | no |
//! | `upstream.address` (`ip:port`), `upstream.port` (*end*) | [`upstream_address`], [`upstream_port`] | string, int | yes |
//! | `source.address`, `destination.address` (`ip:port`) | [`source_address`], [`destination_address`] | string | yes |
//! | `source.port`, `destination.port` | [`source_port`], [`destination_port`] | int | yes |
//! | `connection.id` | [`connection_id`] | int | no |
//! | `connection.mtls` | [`connection_mtls`] | bool | yes |
//! | `connection.tls_version` | [`connection_tls_version`] | string | yes |
//! | `connection.requested_server_name` | [`requested_server_name`] | string | yes |
//! | `connection.uri_san_peer_certificate`, `.dns_san_peer_certificate`, `.subject_peer_certificate` | [`uri_san_peer_certificate`], [`dns_san_peer_certificate`], [`subject_peer_certificate`] | string | yes |
//! | `route_name`, `cluster_name`, `listener_name` | [`route_name`], [`cluster_name`], [`listener_name`] | string | yes |
//! | `plugin_name`, `plugin_root_id`, `plugin_vm_id` | [`plugin_name`], [`plugin_root_id`], [`plugin_vm_id`] | string | yes |
//!
//! Any other path can be read with [`get`], [`string`], [`int`] or [`boolean`]; [`kind_of`]
//! knows the encoding of every attribute on Envoy's list.
//!
//! # Filter state
//!
//! A filter publishes a value for the filters after it (and the access log) with
//! [`set`]`("wasmesh.jwt.claims", bytes)`, and they read it with [`filter_state`]. Both pass
//! the path as *one* name, dots and all: Envoy keys filter state by that name (as
//! `wasm.<name>`) and looks a multi-segment path up attribute by attribute, so only the
//! one-name form round-trips there; wasmesh treats both forms alike.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proxy_wasm::types::Status;

/// How a host encodes an attribute's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Raw bytes, usually UTF-8 text.
    String,
    /// 8 bytes, little-endian, signed (Envoy's `uint` attributes are encoded the same way).
    Int,
    /// One byte, 0 or 1.
    Bool,
    /// 8 bytes, little-endian: nanoseconds since the Unix epoch.
    Timestamp,
    /// 8 bytes, little-endian: nanoseconds.
    Duration,
}

/// The encoding of a known attribute (by dotted path, from Envoy's attribute list); unknown
/// ones are [`Kind::String`]. Maps (`request.headers`) and messages (`xds.node`) are given as
/// strings too: their serialized bytes.
pub fn kind_of(path: &str) -> Kind {
    match path {
        "request.headers_bytes"
        | "request.size"
        | "request.total_size"
        | "response.code"
        | "response.flags"
        | "response.grpc_status"
        | "response.headers_bytes"
        | "response.size"
        | "response.total_size"
        | "source.port"
        | "destination.port"
        | "upstream.port"
        | "upstream.num_endpoints"
        | "upstream.request_attempt_count"
        | "connection.id"
        | "xds.listener_direction"
        | "listener_direction" => Kind::Int,
        "connection.mtls" => Kind::Bool,
        "request.time" => Kind::Timestamp,
        "request.duration" | "response.backend_latency" | "upstream.cx_pool_ready_duration" => {
            Kind::Duration
        }
        _ => Kind::String,
    }
}

/// A string attribute: UTF-8, else `None`.
pub fn decode_string(bytes: &[u8]) -> Option<String> {
    String::from_utf8(bytes.to_vec()).ok()
}

/// An integer attribute: exactly 8 bytes, little-endian.
pub fn decode_int(bytes: &[u8]) -> Option<i64> {
    let raw: [u8; 8] = bytes.try_into().ok()?;
    Some(i64::from_le_bytes(raw))
}

/// A boolean attribute: one byte (0 false, anything else true), or the text `true`/`false`.
pub fn decode_bool(bytes: &[u8]) -> Option<bool> {
    match bytes {
        [b] => Some(*b != 0),
        b"true" => Some(true),
        b"false" => Some(false),
        _ => None,
    }
}

/// A timestamp attribute: 8 bytes little-endian, nanoseconds since the Unix epoch (negative
/// before it).
pub fn decode_timestamp(bytes: &[u8]) -> Option<SystemTime> {
    let nanos = decode_int(bytes)?;
    let offset = Duration::from_nanos(nanos.unsigned_abs());
    if nanos >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    }
}

/// A duration attribute: 8 bytes little-endian, nanoseconds; a negative one is `None`.
pub fn decode_duration(bytes: &[u8]) -> Option<Duration> {
    let nanos = decode_int(bytes)?;
    u64::try_from(nanos).ok().map(Duration::from_nanos)
}

/// A value as text, decoded by the attribute's [`Kind`]: integers and durations (in
/// nanoseconds) in decimal, booleans as `true`/`false`, timestamps in RFC 3339 UTC
/// (`2024-01-01T00:00:00.123Z`, as many fractional digits as needed), strings as they are
/// (bytes that are not UTF-8 become U+FFFD). A value that does not fit its kind is shown as a
/// string.
pub fn display(path: &str, bytes: &[u8]) -> String {
    let decoded = match kind_of(path) {
        Kind::Int | Kind::Duration => decode_int(bytes).map(|n| n.to_string()),
        Kind::Bool => decode_bool(bytes).map(|b| b.to_string()),
        Kind::Timestamp => decode_int(bytes).map(rfc3339),
        Kind::String => None,
    };
    decoded.unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned())
}

/// Nanoseconds since the Unix epoch as an RFC 3339 UTC time.
fn rfc3339(nanos: i64) -> String {
    const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;
    let days = nanos.div_euclid(NANOS_PER_DAY);
    let of_day = nanos.rem_euclid(NANOS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let secs = of_day / 1_000_000_000;
    let frac = of_day % 1_000_000_000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}");
    if frac > 0 {
        let digits = format!("{frac:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01), by Howard Hinnant's
/// `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The raw value at a dotted `path` (`request.path`, `connection.mtls`); `None` if the host
/// has none. The path goes to the host as segments (`request`, `path`), which is how Envoy
/// walks its attributes; for filter state use [`filter_state`].
pub fn get(path: &str) -> Option<Vec<u8>> {
    let segments: Vec<&str> = path.split('.').collect();
    proxy_wasm::hostcalls::get_property(segments).ok().flatten()
}

/// A value another filter (or this one) set with [`set`] for this request; `None` if there is
/// none. The path goes to the host as one name (see the module docs).
pub fn filter_state(path: &str) -> Option<Vec<u8>> {
    proxy_wasm::hostcalls::get_property(vec![path])
        .ok()
        .flatten()
}

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    // Declared here rather than called through `proxy_wasm::hostcalls::set_property`, which
    // panics (traps the filter) on any status but OK.
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
}

/// A `proxy_status_t` as the SDK's [`Status`]; codes it cannot name (`INVALID_MEMORY_ACCESS`,
/// `UNIMPLEMENTED`, …) read as [`Status::InternalFailure`].
fn status(raw: u32) -> Result<(), Status> {
    match raw {
        0 => Ok(()),
        1 => Err(Status::NotFound),
        2 => Err(Status::BadArgument),
        3 => Err(Status::SerializationFailure),
        4 => Err(Status::ParseFailure),
        7 => Err(Status::Empty),
        8 => Err(Status::CasMismatch),
        _ => Err(Status::InternalFailure),
    }
}

/// Sets filter state `path` (one name, dots and all: `wasmesh.jwt.claims`) to `value` for
/// the rest of the request: later filters read it with [`filter_state`], and the host's
/// access log may too. The host's refusal comes back as its status, never as a trap: outside
/// a request (in a root context) wasmesh and Envoy answer [`Status::NotFound`]; Envoy answers
/// [`Status::SerializationFailure`] for a value that does not fit a declared property's type.
/// wasmesh bounds what one request may hold and fails the filter past it (see its
/// `host-abi` limits).
pub fn set(path: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: both buffers are live for the call; the host only reads them.
    let raw = unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) };
    status(raw)
}

/// A string attribute.
pub fn string(path: &str) -> Option<String> {
    get(path).and_then(|b| decode_string(&b))
}

/// An integer attribute.
pub fn int(path: &str) -> Option<i64> {
    get(path).and_then(|b| decode_int(&b))
}

/// A boolean attribute.
pub fn boolean(path: &str) -> Option<bool> {
    get(path).and_then(|b| decode_bool(&b))
}

/// A timestamp attribute.
pub fn timestamp(path: &str) -> Option<SystemTime> {
    get(path).and_then(|b| decode_timestamp(&b))
}

/// A duration attribute.
pub fn duration(path: &str) -> Option<Duration> {
    get(path).and_then(|b| decode_duration(&b))
}

fn port(path: &str) -> Option<u16> {
    int(path).and_then(|n| u16::try_from(n).ok())
}

fn count(path: &str) -> Option<u64> {
    int(path).and_then(|n| u64::try_from(n).ok())
}

/// `request.path`: the request target, query included.
pub fn request_path() -> Option<String> {
    string("request.path")
}

/// `request.url_path`: the path without the query.
pub fn request_url_path() -> Option<String> {
    string("request.url_path")
}

/// `request.query`: what follows `?` in the request target, without the `?`.
pub fn request_query() -> Option<String> {
    string("request.query")
}

/// `request.method`.
pub fn request_method() -> Option<String> {
    string("request.method")
}

/// `request.host`: the `:authority`.
pub fn request_host() -> Option<String> {
    string("request.host")
}

/// `request.scheme`: `http` or `https`.
pub fn request_scheme() -> Option<String> {
    string("request.scheme")
}

/// `request.id`: the `x-request-id`.
pub fn request_id() -> Option<String> {
    string("request.id")
}

/// `request.protocol`: `HTTP/1.0`, `HTTP/1.1`, `HTTP/2` (or, on Envoy, `HTTP/3`).
pub fn request_protocol() -> Option<String> {
    string("request.protocol")
}

/// `request.useragent`: the `user-agent` header.
pub fn request_useragent() -> Option<String> {
    string("request.useragent")
}

/// `request.referer`: the `referer` header.
pub fn request_referer() -> Option<String> {
    string("request.referer")
}

/// `request.time`: when the request's first byte arrived.
pub fn request_time() -> Option<SystemTime> {
    timestamp("request.time")
}

/// `request.duration`: from the request's arrival to the end of the exchange (in `on_log`).
pub fn request_duration() -> Option<Duration> {
    duration("request.duration")
}

/// `request.size`: request body bytes received.
pub fn request_size() -> Option<u64> {
    count("request.size")
}

/// `request.total_size`: request bytes received, headers included (approximately, on Envoy).
pub fn request_total_size() -> Option<u64> {
    count("request.total_size")
}

/// `response.code`: the status sent downstream.
pub fn response_code() -> Option<u16> {
    int("response.code").and_then(|n| u16::try_from(n).ok())
}

/// `response.code_details`: why the host answered as it did (Envoy's internal wording,
/// `via_upstream`, `route_not_found`, …).
pub fn response_code_details() -> Option<String> {
    string("response.code_details")
}

/// `response.flags`: what went wrong beyond the status code, as Envoy's bit-vector.
pub fn response_flags() -> Option<ResponseFlags> {
    int("response.flags")
        .and_then(|n| u64::try_from(n).ok())
        .map(ResponseFlags)
}

/// `response.grpc_status`: the gRPC status of a gRPC response.
pub fn response_grpc_status() -> Option<u32> {
    int("response.grpc_status").and_then(|n| u32::try_from(n).ok())
}

/// `response.size`: response body bytes sent.
pub fn response_size() -> Option<u64> {
    count("response.size")
}

/// `response.total_size`: response bytes sent, headers and trailers included.
pub fn response_total_size() -> Option<u64> {
    count("response.total_size")
}

/// `response.backend_latency`: from the first byte sent upstream to the last received.
pub fn response_backend_latency() -> Option<Duration> {
    duration("response.backend_latency")
}

/// `upstream.address`: the upstream endpoint that answered, `ip:port`.
pub fn upstream_address() -> Option<String> {
    string("upstream.address")
}

/// `upstream.port`: the upstream endpoint's port.
pub fn upstream_port() -> Option<u16> {
    port("upstream.port")
}

/// `source.address`: the downstream peer, `ip:port`.
pub fn source_address() -> Option<String> {
    string("source.address")
}

/// `source.port`.
pub fn source_port() -> Option<u16> {
    port("source.port")
}

/// `destination.address`: the local address the connection came in on, `ip:port`.
pub fn destination_address() -> Option<String> {
    string("destination.address")
}

/// `destination.port`.
pub fn destination_port() -> Option<u16> {
    port("destination.port")
}

/// `connection.id`: the downstream connection's number.
pub fn connection_id() -> Option<u64> {
    count("connection.id")
}

/// `connection.mtls`: whether the downstream presented a verified client certificate.
pub fn connection_mtls() -> Option<bool> {
    boolean("connection.mtls")
}

/// `connection.tls_version`: `TLSv1.2`, `TLSv1.3` on a TLS connection.
pub fn connection_tls_version() -> Option<String> {
    string("connection.tls_version")
}

/// `connection.requested_server_name`: the TLS SNI.
pub fn requested_server_name() -> Option<String> {
    string("connection.requested_server_name")
}

/// `connection.uri_san_peer_certificate`: the peer certificate's first URI SAN (a SPIFFE ID
/// in a mesh).
pub fn uri_san_peer_certificate() -> Option<String> {
    string("connection.uri_san_peer_certificate")
}

/// `connection.dns_san_peer_certificate`: the peer certificate's first DNS SAN.
pub fn dns_san_peer_certificate() -> Option<String> {
    string("connection.dns_san_peer_certificate")
}

/// `connection.subject_peer_certificate`: the peer certificate's subject.
pub fn subject_peer_certificate() -> Option<String> {
    string("connection.subject_peer_certificate")
}

/// `route_name`: the route the request matched.
pub fn route_name() -> Option<String> {
    string("route_name")
}

/// `cluster_name`: the cluster the route sends to.
pub fn cluster_name() -> Option<String> {
    string("cluster_name")
}

/// `listener_name`.
pub fn listener_name() -> Option<String> {
    string("listener_name")
}

/// `plugin_name`: this plugin's name in the host's configuration.
pub fn plugin_name() -> Option<String> {
    string("plugin_name")
}

/// `plugin_root_id`.
pub fn plugin_root_id() -> Option<String> {
    string("plugin_root_id")
}

/// `plugin_vm_id`.
pub fn plugin_vm_id() -> Option<String> {
    string("plugin_vm_id")
}

/// Envoy's response flags (`response.flags`): a bit per thing that went wrong, shown in
/// access logs by short codes (`UF,URX`). wasmesh sets [`ResponseFlags::NO_HEALTHY_UPSTREAM`],
/// [`ResponseFlags::UPSTREAM_REQUEST_TIMEOUT`], [`ResponseFlags::UPSTREAM_REMOTE_RESET`],
/// [`ResponseFlags::UPSTREAM_CONNECTION_FAILURE`] and [`ResponseFlags::UPSTREAM_OVERFLOW`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResponseFlags(pub u64);

impl ResponseFlags {
    /// `LH`: the local health check failed.
    pub const FAILED_LOCAL_HEALTH_CHECK: u64 = 0x1;
    /// `UH`: no healthy upstream endpoint.
    pub const NO_HEALTHY_UPSTREAM: u64 = 0x2;
    /// `UT`: the upstream request timed out.
    pub const UPSTREAM_REQUEST_TIMEOUT: u64 = 0x4;
    /// `LR`: reset locally.
    pub const LOCAL_RESET: u64 = 0x8;
    /// `UR`: the upstream reset the stream.
    pub const UPSTREAM_REMOTE_RESET: u64 = 0x10;
    /// `UF`: the upstream connection failed.
    pub const UPSTREAM_CONNECTION_FAILURE: u64 = 0x20;
    /// `UC`: the upstream connection ended.
    pub const UPSTREAM_CONNECTION_TERMINATION: u64 = 0x40;
    /// `UO`: a circuit breaker overflowed.
    pub const UPSTREAM_OVERFLOW: u64 = 0x80;
    /// `NR`: no route matched.
    pub const NO_ROUTE_FOUND: u64 = 0x100;
    /// `DI`: a fault filter delayed the request.
    pub const DELAY_INJECTED: u64 = 0x200;
    /// `FI`: a fault filter aborted the request.
    pub const FAULT_INJECTED: u64 = 0x400;
    /// `RL`: rate limited locally.
    pub const RATE_LIMITED: u64 = 0x800;
    /// `UAEX`: an external authorization service refused.
    pub const UNAUTHORIZED_EXTERNAL_SERVICE: u64 = 0x1000;
    /// `RLSE`: the rate limit service failed.
    pub const RATE_LIMIT_SERVICE_ERROR: u64 = 0x2000;
    /// `DC`: the downstream connection ended.
    pub const DOWNSTREAM_CONNECTION_TERMINATION: u64 = 0x4000;
    /// `URX`: the upstream retry limit was reached.
    pub const UPSTREAM_RETRY_LIMIT_EXCEEDED: u64 = 0x8000;
    /// `SI`: the stream idle timeout fired.
    pub const STREAM_IDLE_TIMEOUT: u64 = 0x10000;
    /// `IH`: invalid `x-envoy-*` request headers.
    pub const INVALID_ENVOY_REQUEST_HEADERS: u64 = 0x20000;
    /// `DPE`: a downstream protocol error.
    pub const DOWNSTREAM_PROTOCOL_ERROR: u64 = 0x40000;
    /// `UMSDR`: the upstream stream's maximum duration was reached.
    pub const UPSTREAM_MAX_STREAM_DURATION_REACHED: u64 = 0x80000;
    /// `RFCF`: answered from a cache filter.
    pub const RESPONSE_FROM_CACHE_FILTER: u64 = 0x100000;
    /// `NFCF`: no filter configuration arrived in time.
    pub const NO_FILTER_CONFIG_FOUND: u64 = 0x200000;
    /// `DT`: the connection or request ran past its maximum duration.
    pub const DURATION_TIMEOUT: u64 = 0x400000;
    /// `UPE`: an upstream protocol error.
    pub const UPSTREAM_PROTOCOL_ERROR: u64 = 0x800000;
    /// `NC`: no cluster found.
    pub const NO_CLUSTER_FOUND: u64 = 0x1000000;
    /// `OM`: the overload manager ended the stream.
    pub const OVERLOAD_MANAGER: u64 = 0x2000000;
    /// `DF`: DNS resolution failed.
    pub const DNS_RESOLUTION_FAILURE: u64 = 0x4000000;

    /// Envoy's short codes, in bit order, for the `%RESPONSE_FLAGS%` of an access log.
    const CODES: [(u64, &'static str); 27] = [
        (Self::FAILED_LOCAL_HEALTH_CHECK, "LH"),
        (Self::NO_HEALTHY_UPSTREAM, "UH"),
        (Self::UPSTREAM_REQUEST_TIMEOUT, "UT"),
        (Self::LOCAL_RESET, "LR"),
        (Self::UPSTREAM_REMOTE_RESET, "UR"),
        (Self::UPSTREAM_CONNECTION_FAILURE, "UF"),
        (Self::UPSTREAM_CONNECTION_TERMINATION, "UC"),
        (Self::UPSTREAM_OVERFLOW, "UO"),
        (Self::NO_ROUTE_FOUND, "NR"),
        (Self::DELAY_INJECTED, "DI"),
        (Self::FAULT_INJECTED, "FI"),
        (Self::RATE_LIMITED, "RL"),
        (Self::UNAUTHORIZED_EXTERNAL_SERVICE, "UAEX"),
        (Self::RATE_LIMIT_SERVICE_ERROR, "RLSE"),
        (Self::DOWNSTREAM_CONNECTION_TERMINATION, "DC"),
        (Self::UPSTREAM_RETRY_LIMIT_EXCEEDED, "URX"),
        (Self::STREAM_IDLE_TIMEOUT, "SI"),
        (Self::INVALID_ENVOY_REQUEST_HEADERS, "IH"),
        (Self::DOWNSTREAM_PROTOCOL_ERROR, "DPE"),
        (Self::UPSTREAM_MAX_STREAM_DURATION_REACHED, "UMSDR"),
        (Self::RESPONSE_FROM_CACHE_FILTER, "RFCF"),
        (Self::NO_FILTER_CONFIG_FOUND, "NFCF"),
        (Self::DURATION_TIMEOUT, "DT"),
        (Self::UPSTREAM_PROTOCOL_ERROR, "UPE"),
        (Self::NO_CLUSTER_FOUND, "NC"),
        (Self::OVERLOAD_MANAGER, "OM"),
        (Self::DNS_RESOLUTION_FAILURE, "DF"),
    ];

    /// Whether every bit of `flags` (one of the constants, or several or-ed) is set.
    pub fn contains(self, flags: u64) -> bool {
        self.0 & flags == flags
    }

    /// No flag set: nothing went wrong beyond the status code.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The short codes of the set flags, comma-separated (`UF,URX`), as Envoy's access log
    /// shows them; `-` when none is set. Bits Envoy does not define are left out.
    pub fn codes(self) -> String {
        let codes: Vec<&str> = Self::CODES
            .iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, code)| *code)
            .collect();
        if codes.is_empty() {
            "-".to_string()
        } else {
            codes.join(",")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_encodings_decode() {
        assert_eq!(decode_int(&8443i64.to_le_bytes()), Some(8443));
        assert_eq!(decode_int(&(-2i64).to_le_bytes()), Some(-2));
        assert_eq!(
            decode_int(b"8443"),
            None,
            "text is not Envoy's int encoding"
        );
        assert_eq!(decode_int(&[1, 2, 3]), None);
        assert_eq!(decode_bool(&[1]), Some(true));
        assert_eq!(decode_bool(&[0]), Some(false));
        assert_eq!(decode_bool(b"true"), Some(true));
        assert_eq!(decode_bool(b"false"), Some(false));
        assert_eq!(decode_bool(b""), None);
        assert_eq!(decode_bool(b"yes"), None);
        assert_eq!(decode_string(b"/a?b"), Some("/a?b".to_string()));
        assert_eq!(decode_string(&[0xff]), None);
    }

    #[test]
    fn timestamps_and_durations_are_nanoseconds() {
        let t = 1_704_067_200_123_000_000i64;
        assert_eq!(
            decode_timestamp(&t.to_le_bytes()),
            Some(UNIX_EPOCH + Duration::new(1_704_067_200, 123_000_000))
        );
        assert_eq!(
            decode_timestamp(&(-1_500_000_000i64).to_le_bytes()),
            Some(UNIX_EPOCH - Duration::from_millis(1_500)),
            "before the epoch"
        );
        assert_eq!(decode_timestamp(b"1704067200"), None);
        assert_eq!(
            decode_duration(&42_000_000i64.to_le_bytes()),
            Some(Duration::from_millis(42))
        );
        assert_eq!(decode_duration(&0i64.to_le_bytes()), Some(Duration::ZERO));
        assert_eq!(decode_duration(&(-1i64).to_le_bytes()), None);
        assert_eq!(decode_duration(&[0; 4]), None);
    }

    #[test]
    fn every_attribute_on_envoys_list_has_its_kind() {
        for path in [
            "request.size",
            "request.total_size",
            "request.headers_bytes",
            "response.code",
            "response.flags",
            "response.grpc_status",
            "response.size",
            "response.total_size",
            "response.headers_bytes",
            "source.port",
            "destination.port",
            "upstream.port",
            "connection.id",
            "upstream.request_attempt_count",
        ] {
            assert_eq!(kind_of(path), Kind::Int, "{path}");
        }
        assert_eq!(kind_of("request.time"), Kind::Timestamp);
        for path in [
            "request.duration",
            "response.backend_latency",
            "upstream.cx_pool_ready_duration",
        ] {
            assert_eq!(kind_of(path), Kind::Duration, "{path}");
        }
        assert_eq!(kind_of("connection.mtls"), Kind::Bool);
        for path in ["request.protocol", "upstream.address", "wasmesh.jwt.claims"] {
            assert_eq!(kind_of(path), Kind::String, "{path}");
        }
    }

    #[test]
    fn display_follows_the_attribute_kind() {
        assert_eq!(display("source.port", &51234i64.to_le_bytes()), "51234");
        assert_eq!(display("connection.mtls", &[1]), "true");
        assert_eq!(display("connection.mtls", &[0]), "false");
        assert_eq!(display("source.address", b"10.0.0.1:5"), "10.0.0.1:5");
        assert_eq!(display("response.flags", &0x20i64.to_le_bytes()), "32");
        assert_eq!(
            display("request.duration", &42_000_000i64.to_le_bytes()),
            "42000000"
        );
        // A value that does not fit its kind is shown as it is.
        assert_eq!(display("source.port", b"80"), "80");
        assert_eq!(display("custom.thing", &[0x66, 0xff]), "f\u{fffd}");
    }

    #[test]
    fn timestamps_display_in_rfc3339() {
        let show = |nanos: i64| display("request.time", &nanos.to_le_bytes());
        assert_eq!(show(0), "1970-01-01T00:00:00Z");
        assert_eq!(show(1_704_067_200_123_000_000), "2024-01-01T00:00:00.123Z");
        assert_eq!(
            show(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
        assert_eq!(show(4_107_542_399_000_000_000), "2100-02-28T23:59:59Z");
        assert_eq!(show(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn response_flags_show_envoys_codes() {
        assert_eq!(ResponseFlags(0).codes(), "-");
        assert!(ResponseFlags(0).is_empty());
        let flags = ResponseFlags(
            ResponseFlags::UPSTREAM_CONNECTION_FAILURE
                | ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED,
        );
        assert_eq!(flags.codes(), "UF,URX");
        assert!(flags.contains(ResponseFlags::UPSTREAM_CONNECTION_FAILURE));
        assert!(!flags.contains(ResponseFlags::NO_ROUTE_FOUND));
        assert_eq!(
            ResponseFlags(ResponseFlags::DNS_RESOLUTION_FAILURE | 1 << 40).codes(),
            "DF",
            "bits Envoy does not define are left out"
        );
        let all = ResponseFlags::CODES
            .iter()
            .fold(0, |acc, (bit, _)| acc | bit);
        assert_eq!(all, (1 << 27) - 1, "27 consecutive bits, none twice");
    }

    #[test]
    fn statuses_map_without_panicking() {
        assert_eq!(status(0), Ok(()));
        assert_eq!(status(1), Err(Status::NotFound));
        assert_eq!(status(3), Err(Status::SerializationFailure));
        assert_eq!(status(12), Err(Status::InternalFailure), "UNIMPLEMENTED");
        assert_eq!(status(u32::MAX), Err(Status::InternalFailure));
    }
}
