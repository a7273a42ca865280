//! The attributes a host answers to `proxy_get_property`, by Envoy's names, decoded from
//! Envoy's encodings: strings and bytes raw, integers as 8 bytes little-endian, booleans as
//! one byte (0 or 1). Kong answers booleans as the text `true`/`false`; [`decode_bool`]
//! accepts both.
//!
//! Each accessor answers `None` when the host has no value (for example the mTLS attributes
//! on a plain-text connection) or the value is not of the expected type. wasmesh answers:
//!
//! | attribute | accessor | type |
//! |---|---|---|
//! | `request.path` (with query) | [`request_path`] | string |
//! | `request.url_path` (without query) | [`request_url_path`] | string |
//! | `request.method`, `.host`, `.scheme`, `.id` | [`request_method`], [`request_host`], [`request_scheme`], [`request_id`] | string |
//! | `request.protocol` | [`request_protocol`] | string (not answered by wasmesh yet) |
//! | `source.address`, `destination.address` (`ip:port`) | [`source_address`], [`destination_address`] | string |
//! | `source.port`, `destination.port` | [`source_port`], [`destination_port`] | int |
//! | `connection.mtls` | [`connection_mtls`] | bool |
//! | `connection.requested_server_name` | [`requested_server_name`] | string |
//! | `connection.uri_san_peer_certificate`, `.dns_san_peer_certificate`, `.subject_peer_certificate` | [`uri_san_peer_certificate`], [`dns_san_peer_certificate`], [`subject_peer_certificate`] | string |
//! | `route_name`, `cluster_name`, `listener_name` | [`route_name`], [`cluster_name`], [`listener_name`] | string |
//! | `plugin_name`, `plugin_root_id`, `plugin_vm_id` | [`plugin_name`], [`plugin_root_id`], [`plugin_vm_id`] | string |
//!
//! Any other path can be read with [`get`], [`string`], [`int`] or [`boolean`].

/// How a host encodes an attribute's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Raw bytes, usually UTF-8 text.
    String,
    /// 8 bytes, little-endian, signed.
    Int,
    /// One byte, 0 or 1.
    Bool,
}

/// The encoding of a known attribute (by dotted path); unknown ones are [`Kind::String`].
pub fn kind_of(path: &str) -> Kind {
    match path {
        "source.port"
        | "destination.port"
        | "upstream.port"
        | "request.size"
        | "request.total_size"
        | "response.code"
        | "response.size"
        | "response.total_size"
        | "connection.id" => Kind::Int,
        "connection.mtls" => Kind::Bool,
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

/// A value as text, decoded by the attribute's [`Kind`]: integers in decimal, booleans as
/// `true`/`false`, strings as they are (bytes that are not UTF-8 become U+FFFD). A value that
/// does not fit its kind is shown as a string.
pub fn display(path: &str, bytes: &[u8]) -> String {
    let decoded = match kind_of(path) {
        Kind::Int => decode_int(bytes).map(|n| n.to_string()),
        Kind::Bool => decode_bool(bytes).map(|b| b.to_string()),
        Kind::String => None,
    };
    decoded.unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned())
}

/// The raw value at a dotted `path` (`request.path`, `connection.mtls`); `None` if the host
/// has none.
pub fn get(path: &str) -> Option<Vec<u8>> {
    let segments: Vec<&str> = path.split('.').collect();
    proxy_wasm::hostcalls::get_property(segments).ok().flatten()
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

fn port(path: &str) -> Option<u16> {
    int(path).and_then(|n| u16::try_from(n).ok())
}

/// `request.path`: the request target, query included.
pub fn request_path() -> Option<String> {
    string("request.path")
}

/// `request.url_path`: the path without the query.
pub fn request_url_path() -> Option<String> {
    string("request.url_path")
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

/// `request.protocol`: `HTTP/1.1`, `HTTP/2`, … (Envoy answers it; wasmesh does not yet).
pub fn request_protocol() -> Option<String> {
    string("request.protocol")
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

/// `connection.mtls`: whether the downstream presented a verified client certificate.
pub fn connection_mtls() -> Option<bool> {
    boolean("connection.mtls")
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
    fn display_follows_the_attribute_kind() {
        assert_eq!(display("source.port", &51234i64.to_le_bytes()), "51234");
        assert_eq!(display("connection.mtls", &[1]), "true");
        assert_eq!(display("connection.mtls", &[0]), "false");
        assert_eq!(display("source.address", b"10.0.0.1:5"), "10.0.0.1:5");
        // A value that does not fit its kind is shown as it is.
        assert_eq!(display("source.port", b"80"), "80");
        assert_eq!(display("custom.thing", &[0x66, 0xff]), "f\u{fffd}");
    }
}
