//! HTTP callouts (`proxy_http_call`): the host hands the request to the embedder's
//! [`crate::Services`] (the proxy sends it through its own clusters), and when the answer comes back
//! runs `proxy_on_http_call_response` on the replica that asked, with the response readable
//! through `HTTP_CALL_RESPONSE_HEADERS`/`_BODY`/`_TRAILERS` during that callback.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::headers::HeaderMap;
use crate::plugin::Plugin;

/// A callout a filter asked for.
#[derive(Debug, Clone)]
pub struct CalloutRequest {
    /// The cluster name the filter gave.
    pub upstream: String,
    /// Including `:method`, `:path` and `:authority`.
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: HeaderMap,
    pub timeout: Duration,
}

/// Its answer; `headers` include `:status`.
#[derive(Debug, Clone, Default)]
pub struct CalloutResponse {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: HeaderMap,
}

/// Why a callout could not even be sent (the filter gets `BAD_ARGUMENT`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalloutError {
    #[error("unknown upstream \"{0}\"")]
    UnknownUpstream(String),
    #[error("callout needs :method, :path and :authority")]
    MissingPseudoHeaders,
}

/// Completes one callout.
pub struct CalloutDone {
    pub(crate) plugin: Weak<Plugin>,
    pub(crate) replica: usize,
    pub(crate) generation: u64,
    pub(crate) token: u32,
}

impl CalloutDone {
    /// Delivers the answer (`None`: failed or timed out) as a task on the current tokio runtime,
    /// or on this thread when there is none.
    pub fn complete(self, response: Option<CalloutResponse>) {
        if let Some(plugin) = self.plugin.upgrade() {
            plugin.http_call_response(self.replica, self.generation, self.token, response, false);
        }
    }

    /// Delivers the answer on this thread, now, whether or not a runtime is present: for an
    /// embedder that drives the host itself (the SDK's test harness). Must not be called from
    /// inside a callback of the same plugin (that callback holds the replica).
    pub fn complete_now(self, response: Option<CalloutResponse>) {
        if let Some(plugin) = self.plugin.upgrade() {
            plugin.http_call_response(self.replica, self.generation, self.token, response, true);
        }
    }
}

impl std::fmt::Debug for CalloutDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CalloutDone")
            .field("replica", &self.replica)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

pub(crate) type SharedServices = Arc<dyn crate::services::Services>;
