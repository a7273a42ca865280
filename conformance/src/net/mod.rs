//! The real parts on loopback the proxy environment needs: an HTTP client (HTTP/1.1, h2c, and
//! TLS with a client certificate), an upstream HTTP server that records what it received, a
//! gRPC server, a TCP echo server, and a test PKI.

pub mod client;
pub mod grpc;
pub mod tcp;
pub mod tls;
pub mod upstream;

use std::time::Duration;

/// The longest any one exchange of the suite may take before it counts as failed.
pub const EXCHANGE_LIMIT: Duration = Duration::from_secs(30);
