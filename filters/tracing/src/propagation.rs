//! Reading the caller's trace context from request headers and writing this proxy's span as
//! the upstream's parent, in every configured format.

use wasmesh_sdk::headers::Headers;

use crate::config::Propagator;
use crate::context::{
    self, Incoming, Remote, format_b3_single, format_traceparent, parse_b3_multi, parse_b3_single,
    parse_traceparent,
};
use crate::span::Started;

/// What one format says, if anything valid.
fn read(propagator: Propagator, request: Headers) -> Option<Incoming> {
    match propagator {
        Propagator::TraceContext => {
            // Two `traceparent` headers are as good as a malformed one (W3C §3.2.1).
            let values = request.get_all("traceparent");
            let [value] = values.as_slice() else {
                return None;
            };
            let (trace_id, span_id, flags) = parse_traceparent(value)?;
            Some(Incoming {
                parent: Some(Remote {
                    trace_id,
                    span_id,
                    // Several `tracestate` headers make one list (W3C §3.3.1.1).
                    trace_state: request.get_all("tracestate").join(","),
                }),
                sampled: Some(flags & 1 == 1),
            })
        }
        Propagator::B3 => parse_b3_single(&request.get("b3")?),
        Propagator::B3Multi => parse_b3_multi(|name| request.get(name)),
    }
}

/// The caller's context: the first format (in the configured order) that names a parent
/// span; failing that, the first that carries a sampling decision alone (B3 allows it).
pub fn extract(propagators: &[Propagator], request: Headers) -> Incoming {
    let mut decision_only = None;
    for &propagator in propagators {
        match read(propagator, request) {
            Some(incoming) if incoming.parent.is_some() => return incoming,
            Some(incoming) => {
                decision_only.get_or_insert(incoming);
            }
            None => {}
        }
    }
    decision_only.unwrap_or_default()
}

/// Writes `started` as the upstream's parent in every configured format. The `tracestate`
/// goes on unchanged when the trace continues one that had it; a new trace drops it.
pub fn inject(propagators: &[Propagator], request: Headers, started: &Started) {
    let (trace, span, sampled) = (started.trace_id, started.span_id, started.sampled);
    for propagator in propagators {
        match propagator {
            Propagator::TraceContext => {
                request.set("traceparent", &format_traceparent(trace, span, sampled));
                if started.trace_state.is_empty() {
                    request.remove("tracestate");
                } else {
                    request.set("tracestate", &started.trace_state);
                }
            }
            Propagator::B3 => request.set("b3", &format_b3_single(trace, span, sampled)),
            Propagator::B3Multi => {
                request.set("x-b3-traceid", &trace.to_string());
                request.set("x-b3-spanid", &span.to_string());
                request.set("x-b3-sampled", if sampled { "1" } else { "0" });
                // The caller's parent and debug flag describe the caller's span, not this one.
                request.remove("x-b3-parentspanid");
                request.remove("x-b3-flags");
            }
        }
    }
}

/// The request's trace id and this span's id, from `random` (24 random bytes): the trace id
/// is the caller's when there is one. An all-zero id is invalid, so one (a 2^-64 chance) gets
/// a last bit set.
pub fn new_ids(incoming: &Incoming, random: [u8; 24]) -> (context::TraceId, context::SpanId) {
    fn nonzero<const N: usize>(mut bytes: [u8; N]) -> [u8; N] {
        if bytes == [0; N] {
            bytes[N - 1] = 1;
        }
        bytes
    }
    let mut trace = [0u8; 16];
    trace.copy_from_slice(&random[..16]);
    let mut span = [0u8; 8];
    span.copy_from_slice(&random[16..]);
    let trace_id = incoming
        .parent
        .as_ref()
        .map_or(context::TraceId(nonzero(trace)), |p| p.trace_id);
    (trace_id, context::SpanId(nonzero(span)))
}
