//! Filters' HTTP callouts (`proxy_http_call`), sent through the running snapshot's clusters:
//! the upstream name a filter gives is a cluster name, as in Envoy. [`ClusterCallouts`] is
//! the proxy's [`wasmesh_host::Services`]: it also starts gRPC calls ([`super::grpc`]).

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use super::pairs::{push_headers, response_pairs};
use crate::config;

pub struct ClusterCallouts {
    pub snapshot: Arc<arc_swap::ArcSwap<crate::server::Snapshot>>,
}

/// Largest callout response body kept for a filter.
const MAX_CALLOUT_BODY: usize = 1024 * 1024;

impl wasmesh_host::Services for ClusterCallouts {
    fn grpc_call(
        &self,
        request: wasmesh_host::GrpcRequest,
        reply: wasmesh_host::GrpcReply,
    ) -> Result<Box<dyn wasmesh_host::GrpcOutbound>, wasmesh_host::GrpcError> {
        super::grpc::start(&self.snapshot, request, reply)
    }

    fn http_call(
        &self,
        request: wasmesh_host::CalloutRequest,
        done: wasmesh_host::CalloutDone,
    ) -> Result<(), wasmesh_host::CalloutError> {
        let snapshot = self.snapshot.load_full();
        let cluster = snapshot
            .clusters
            .get(&request.upstream)
            .cloned()
            .ok_or_else(|| wasmesh_host::CalloutError::UnknownUpstream(request.upstream.clone()))?;
        let pseudo = |name: &str| {
            request
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let (Some(method), Some(path), Some(authority)) =
            (pseudo(":method"), pseudo(":path"), pseudo(":authority"))
        else {
            return Err(wasmesh_host::CalloutError::MissingPseudoHeaders);
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(wasmesh_host::CalloutError::UnknownUpstream(
                request.upstream,
            ));
        };
        runtime.spawn(async move {
            let timeout = if request.timeout.is_zero() {
                Duration::from_secs(5)
            } else {
                request.timeout
            };
            let response = tokio::time::timeout(
                timeout,
                callout(
                    &cluster,
                    &method,
                    &path,
                    &authority,
                    &request.headers,
                    request.body,
                ),
            )
            .await
            .ok()
            .flatten();
            done.complete(response);
        });
        Ok(())
    }
}

async fn callout(
    cluster: &crate::cluster::Cluster,
    method: &str,
    path: &str,
    authority: &str,
    pairs: &[(String, Vec<u8>)],
    body: Vec<u8>,
) -> Option<wasmesh_host::CalloutResponse> {
    use http_body_util::BodyExt;
    let upstream = cluster.pick(&HeaderMap::new())?;
    let uri = format!("{}://{authority}{path}", cluster.scheme);
    let mut builder = http::Request::builder().method(method).uri(uri);
    let h2 = cluster.config.protocol == config::UpstreamProtocol::Http2;
    for (name, value) in pairs {
        if !name.starts_with(':') {
            builder = builder.header(name.as_str(), value.as_slice());
        }
    }
    if !h2 {
        builder = builder.header(http::header::HOST, authority);
    }
    let request = builder.body(crate::body::full(body)).ok()?;
    let response = upstream.pool.send(request).await.ok()?;
    let (parts, mut incoming) = response.into_parts();
    let mut body = Vec::new();
    let mut trailers = Vec::new();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.ok()?;
        match frame.into_data() {
            Ok(data) => {
                if body.len() + data.len() > MAX_CALLOUT_BODY {
                    return None;
                }
                body.extend_from_slice(&data);
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    push_headers(&mut trailers, &t);
                }
            }
        }
    }
    Some(wasmesh_host::CalloutResponse {
        headers: response_pairs(parts.status, &parts.headers),
        body,
        trailers,
    })
}
