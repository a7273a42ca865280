//! The one body type the proxy moves around: a boxed stream of `Bytes` frames, so downstream
//! bodies flow to the upstream (and back) chunk by chunk, with trailers, and never buffered whole
//! unless a retry or a filter needs it.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn empty() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A downstream or upstream hyper body, boxed.
pub fn incoming(body: hyper::body::Incoming) -> ProxyBody {
    body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()
}
