//! The `env.proxy_*` host functions of ABI v0.2.1, v0.2.0 and v0.1.0.
//!
//! Each answers within the status set the SDKs accept for it (NOTES §3.2): the Rust SDK panics
//! on any other status, so, for example, writes to a header map that does not exist in the
//! current context answer `OK` and change nothing, rather than `NOT_FOUND`. HTTP and gRPC
//! callouts go to the embedder's [`crate::Services`] (gRPC's side of the ABI is in `grpc`).

use std::collections::HashSet;
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};
use wasmtime::{IntoFunc, Linker};

use crate::abi::{LogLevel, MetricType, buffer, map, status};
use crate::grpc;
use crate::headers::{self, HeaderMap};
use crate::limits;
use crate::shared::QueueOwner;
use crate::state::{Ctx, HostState, RootEnd, read, read_str, return_bytes, write_u32, write_u64};
use crate::stream::{KeptHeaders, LocalResponse};

type R = wasmtime::Result<i32>;

/// Turns a guest-memory or argument problem into the status it answers with.
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(status) => return Ok(status),
        }
    };
}

fn def<Params, Results>(
    linker: &mut Linker<HostState>,
    provided: &mut HashSet<(String, String)>,
    name: &str,
    f: impl IntoFunc<HostState, Params, Results>,
) -> wasmtime::Result<()> {
    provided.insert(("env".to_string(), name.to_string()));
    linker.func_wrap("env", name, f)?;
    Ok(())
}

fn header_map(state: &HostState, map_type: i32) -> Result<Option<&HeaderMap>, i32> {
    match (map_type, state.call_response.as_ref()) {
        (map::HTTP_CALL_RESPONSE_HEADERS, Some(r)) => return Ok(Some(&r.headers)),
        (map::HTTP_CALL_RESPONSE_TRAILERS, Some(r)) => return Ok(Some(&r.trailers)),
        _ => {}
    }
    if let Some(metadata) = state.grpc.metadata(map_type) {
        return Ok(Some(metadata));
    }
    let Some(stream) = state.stream.as_ref() else {
        return match map_type {
            0..=7 => Ok(None),
            _ => Err(status::BAD_ARGUMENT),
        };
    };
    Ok(match map_type {
        map::HTTP_REQUEST_HEADERS => Some(&stream.request_headers),
        map::HTTP_REQUEST_TRAILERS => Some(&stream.request_trailers),
        map::HTTP_RESPONSE_HEADERS => Some(&stream.response_headers),
        map::HTTP_RESPONSE_TRAILERS => Some(&stream.response_trailers),
        4..=7 => None,
        _ => return Err(status::BAD_ARGUMENT),
    })
}

/// Fetches a request or response header map (or the response's trailers) back from the
/// embedder if it moved the map on after its phase and left the stream's empty (see
/// `StreamEnv::kept_headers`), so a filter reads the request's headers in its body and
/// response callbacks, and all three in `proxy_on_log`, as in Envoy; once per map, and only
/// when a filter touches it. Edits made then stay the filter's own: what they would have
/// changed has already gone on, and a map the filter empties is not fetched again.
fn fill_kept(state: &mut HostState, map_type: i32) {
    let Some(stream) = state.stream.as_mut() else {
        return;
    };
    let (map, which) = match map_type {
        map::HTTP_REQUEST_HEADERS => (&mut stream.request_headers, KeptHeaders::Request),
        map::HTTP_RESPONSE_HEADERS => (&mut stream.response_headers, KeptHeaders::Response),
        map::HTTP_RESPONSE_TRAILERS => {
            (&mut stream.response_trailers, KeptHeaders::ResponseTrailers)
        }
        _ => return,
    };
    let bit = 1u8 << which as u8;
    if map.is_empty()
        && stream.kept_fetched & bit == 0
        && let Some(kept) = stream.env.kept_headers(which)
    {
        *map = kept;
        stream.kept_fetched |= bit;
    }
}

/// Envoy's header attributes: `request.headers`, `response.headers` and `response.trailers`
/// (the map type they read), with the rest of the path (a name, or nothing for the whole map).
fn header_attribute(path: &[String]) -> Option<(i32, &[String])> {
    let [scope, kind, rest @ ..] = path else {
        return None;
    };
    let map_type = match (scope.as_str(), kind.as_str()) {
        ("request", "headers") => map::HTTP_REQUEST_HEADERS,
        ("response", "headers") => map::HTTP_RESPONSE_HEADERS,
        ("response", "trailers") => map::HTTP_RESPONSE_TRAILERS,
        _ => return None,
    };
    Some((map_type, rest))
}

/// A header attribute's value as Envoy encodes it: one header's values joined with `,`
/// (`HeaderUtility::getAllOfHeaderAsString`), or the whole map as proxy-wasm pairs, one per
/// name, values joined the same way (a CEL map serialized by `Context::getProperty`).
fn header_attribute_value(m: &HeaderMap, rest: &[String]) -> Option<Vec<u8>> {
    let joined = |name: &str| {
        let mut values = m
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice());
        let first = values.next()?.to_vec();
        Some(values.fold(first, |mut all, v| {
            all.push(b',');
            all.extend_from_slice(v);
            all
        }))
    };
    match rest {
        [] => {
            let mut names: Vec<&str> = Vec::new();
            for (k, _) in m {
                if !names.contains(&k.as_str()) {
                    names.push(k);
                }
            }
            let pairs: HeaderMap = names
                .into_iter()
                .filter_map(|name| Some((name.to_string(), joined(name)?)))
                .collect();
            Some(headers::serialize(&pairs))
        }
        [name] => joined(&name.to_ascii_lowercase()),
        _ => None,
    }
}

/// A header map to change. Changing the request's headers also asks for the route to be
/// chosen again, as Envoy's `Context` does (`clearRouteCache` on every request-header edit):
/// a filter that sets a header a route matches on sends the request there.
fn header_map_mut(state: &mut HostState, map_type: i32) -> Result<Option<&mut HeaderMap>, i32> {
    let Some(stream) = state.stream.as_mut() else {
        return match map_type {
            0..=7 => Ok(None),
            _ => Err(status::BAD_ARGUMENT),
        };
    };
    Ok(match map_type {
        map::HTTP_REQUEST_HEADERS => {
            stream.clear_route_cache = true;
            Some(&mut stream.request_headers)
        }
        map::HTTP_REQUEST_TRAILERS => Some(&mut stream.request_trailers),
        map::HTTP_RESPONSE_HEADERS => Some(&mut stream.response_headers),
        map::HTTP_RESPONSE_TRAILERS => Some(&mut stream.response_trailers),
        4..=7 => None,
        _ => return Err(status::BAD_ARGUMENT),
    })
}

fn buffer_bytes(state: &HostState, buffer_type: i32) -> Result<Vec<u8>, i32> {
    match buffer_type {
        buffer::HTTP_REQUEST_BODY => state
            .stream
            .as_ref()
            .map(|s| s.request_body.clone())
            .ok_or(status::NOT_FOUND),
        buffer::HTTP_RESPONSE_BODY => state
            .stream
            .as_ref()
            .map(|s| s.response_body.clone())
            .ok_or(status::NOT_FOUND),
        buffer::VM_CONFIGURATION => Ok(state.plugin.vm_config.clone()),
        buffer::PLUGIN_CONFIGURATION => Ok(state.plugin.plugin_config.clone()),
        buffer::FOREIGN_FUNCTION_ARGUMENTS => Ok(state.foreign_args.clone()),
        buffer::HTTP_CALL_RESPONSE_BODY => state
            .call_response
            .as_ref()
            .map(|r| r.body.clone())
            .ok_or(status::NOT_FOUND),
        buffer::GRPC_CALL_MESSAGE => state
            .grpc
            .message()
            .map(<[u8]>::to_vec)
            .ok_or(status::NOT_FOUND),
        buffer::DOWNSTREAM_DATA => state
            .stream
            .as_ref()
            .map(|s| s.downstream_data.clone())
            .ok_or(status::NOT_FOUND),
        buffer::UPSTREAM_DATA => state
            .stream
            .as_ref()
            .map(|s| s.upstream_data.clone())
            .ok_or(status::NOT_FOUND),
        _ => Err(status::BAD_ARGUMENT),
    }
}

/// Fails the callback (see `limits`) if adding `key: value` to the stream's header map `ty`
/// (replacing any `key` when `replace`) would take it past the host's bounds.
fn check_growth(
    c: &Ctx<'_>,
    ty: i32,
    key: &str,
    value_len: usize,
    replace: bool,
) -> wasmtime::Result<()> {
    let state = c.data();
    let Some(m) = stream_map(state, ty) else {
        return Ok(());
    };
    let before = (m.len(), limits::header_bytes(m));
    let (mut pairs, mut bytes) = (before.0 + 1, before.1 + key.len() + value_len);
    if replace {
        for (k, v) in m.iter().filter(|(k, _)| k == key) {
            pairs -= 1;
            bytes -= k.len() + v.len();
        }
    }
    limits::header_map(&state.plugin.name, (pairs, bytes), before)
}

/// The stream's own header or trailer map `ty`, if a stream callback runs.
fn stream_map(state: &HostState, ty: i32) -> Option<&HeaderMap> {
    state.stream.as_ref().and_then(|s| match ty {
        map::HTTP_REQUEST_HEADERS => Some(&s.request_headers),
        map::HTTP_REQUEST_TRAILERS => Some(&s.request_trailers),
        map::HTTP_RESPONSE_HEADERS => Some(&s.response_headers),
        map::HTTP_RESPONSE_TRAILERS => Some(&s.response_trailers),
        _ => None,
    })
}

/// Replaces `size` bytes at `start` (start 0 with size 0 prepends; start at or past the end
/// appends), as the ABI defines `proxy_set_buffer_bytes`.
pub(crate) fn splice(buf: &mut Vec<u8>, start: usize, size: usize, value: &[u8]) {
    let start = start.min(buf.len());
    let end = start.saturating_add(size).min(buf.len());
    if start == buf.len() {
        // Appending (the common case, and a flood's): one copy, not a byte-wise splice.
        buf.extend_from_slice(value);
        return;
    }
    buf.splice(start..end, value.iter().copied());
}

/// Property paths arrive as NUL-separated segments.
fn property_path(bytes: &[u8]) -> Result<Vec<String>, i32> {
    bytes
        .split(|b| *b == 0)
        .filter(|seg| !seg.is_empty())
        .map(|seg| String::from_utf8(seg.to_vec()).map_err(|_| status::BAD_ARGUMENT))
        .collect()
}

pub(crate) fn link(
    linker: &mut Linker<HostState>,
    provided: &mut HashSet<(String, String)>,
) -> wasmtime::Result<()> {
    // --- context lifecycle ---
    // Only a root context pending finalization (its `proxy_on_done` said false) can say it is
    // done now; any other context gets NOT_FOUND, as from cpp-host's `WasmBase::done`.
    def(linker, provided, "proxy_done", |mut c: Ctx<'_>| -> R {
        let state = c.data_mut();
        if state.effective == state.root_context_id && state.root_end == RootEnd::Pending {
            state.root_end = RootEnd::Done;
            return Ok(status::OK);
        }
        Ok(status::NOT_FOUND)
    })?;
    def(
        linker,
        provided,
        "proxy_set_effective_context",
        |mut c: Ctx<'_>, ctx: i32| -> R {
            let id = ctx as u32;
            let state = c.data_mut();
            if id == state.root_context_id || state.signals.contains_key(&id) {
                // A root callback switching to a paused stream borrows its data so the
                // filter can edit it or answer for it; switching on to another one (or back
                // to the root) first puts the borrowed one back where it was.
                if state.borrowed.is_some_and(|b| b != id)
                    && let (Some(previous), Some(data)) =
                        (state.borrowed.take(), state.stream.take())
                {
                    state.parked.insert(previous, data);
                }
                if state.stream.is_none()
                    && let Some(data) = state.parked.remove(&id)
                {
                    state.stream = Some(data);
                    state.borrowed = Some(id);
                }
                state.effective = id;
                Ok(status::OK)
            } else {
                Ok(status::BAD_ARGUMENT)
            }
        },
    )?;

    // --- logging, time, timers ---
    def(
        linker,
        provided,
        "proxy_log",
        |mut c: Ctx<'_>, level: i32, ptr: i32, len: i32| -> R {
            let Some(level) = LogLevel::from_raw(level) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let message = tri!(read(&mut c, ptr, len));
            let message = String::from_utf8_lossy(&message);
            c.data_mut().log(level, &message);
            Ok(status::OK)
        },
    )?;
    def(
        linker,
        provided,
        "proxy_get_log_level",
        |mut c: Ctx<'_>, out: i32| -> R {
            let level = c.data().shared.services().log_level();
            tri!(write_u32(&mut c, out, level.as_raw()));
            Ok(status::OK)
        },
    )?;
    def(
        linker,
        provided,
        "proxy_get_current_time_nanoseconds",
        |mut c: Ctx<'_>, out: i32| -> R {
            let now = c
                .data()
                .shared
                .services()
                .now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            tri!(write_u64(&mut c, out, now));
            Ok(status::OK)
        },
    )?;
    def(
        linker,
        provided,
        "proxy_set_tick_period_milliseconds",
        |mut c: Ctx<'_>, ms: i32| -> R {
            let period = (ms > 0).then(|| std::time::Duration::from_millis(ms as u32 as u64));
            let state = c.data_mut();
            state.tick_period = period;
            // The replica's tick task follows the period, set or changed at any time (0 stops).
            state.tick_watch.send_replace(period);
            Ok(status::OK)
        },
    )?;

    // --- configuration and buffers ---
    def(
        linker,
        provided,
        "proxy_get_configuration",
        |mut c: Ctx<'_>, ptr_out: i32, len_out: i32| -> R {
            let config = c.data().plugin.plugin_config.clone();
            return_bytes(&mut c, &config, ptr_out, len_out)
        },
    )?;
    def(
        linker,
        provided,
        "proxy_get_buffer_bytes",
        |mut c: Ctx<'_>, ty: i32, start: i32, max: i32, ptr_out: i32, len_out: i32| -> R {
            let bytes = tri!(buffer_bytes(c.data(), ty));
            let (start, max) = (start as u32 as usize, max as u32 as usize);
            if start > bytes.len() {
                return Ok(status::BAD_ARGUMENT);
            }
            let end = start.saturating_add(max).min(bytes.len());
            let slice = bytes[start..end].to_vec();
            return_bytes(&mut c, &slice, ptr_out, len_out)
        },
    )?;
    def(
        linker,
        provided,
        "proxy_set_buffer_bytes",
        |mut c: Ctx<'_>, ty: i32, start: i32, size: i32, ptr: i32, len: i32| -> R {
            let value = tri!(read(&mut c, ptr, len));
            let plugin = c.data().plugin.clone();
            let Some(stream) = c.data_mut().stream.as_mut() else {
                return Ok(status::NOT_FOUND);
            };
            let buf = match ty {
                buffer::HTTP_REQUEST_BODY => &mut stream.request_body,
                buffer::HTTP_RESPONSE_BODY => &mut stream.response_body,
                buffer::DOWNSTREAM_DATA => &mut stream.downstream_data,
                buffer::UPSTREAM_DATA => &mut stream.upstream_data,
                4..=8 => return Ok(status::NOT_FOUND),
                _ => return Ok(status::BAD_ARGUMENT),
            };
            let (start, size) = (start as u32 as usize, size as u32 as usize);
            let kept = start.min(buf.len()) + buf.len().saturating_sub(start.saturating_add(size));
            let grown = kept + value.len();
            if grown > limits::MAX_BODY_BYTES && grown > buf.len() {
                return Err(limits::exceeded(
                    &plugin.name,
                    "body",
                    format!(
                        "a body buffer of {grown} bytes (at most {} unless the proxy's was larger)",
                        limits::MAX_BODY_BYTES
                    ),
                ));
            }
            splice(buf, start, size, &value);
            Ok(status::OK)
        },
    )?;
    def(
        linker,
        provided,
        "proxy_get_buffer_status",
        |mut c: Ctx<'_>, ty: i32, len_out: i32, flags_out: i32| -> R {
            let len = tri!(buffer_bytes(c.data(), ty)).len() as u32;
            tri!(write_u32(&mut c, len_out, len));
            tri!(write_u32(&mut c, flags_out, 0));
            Ok(status::OK)
        },
    )?;

    // --- header maps ---
    def(
        linker,
        provided,
        "proxy_get_header_map_size",
        |mut c: Ctx<'_>, ty: i32, out: i32| -> R {
            fill_kept(c.data_mut(), ty);
            let size = match tri!(header_map(c.data(), ty)) {
                Some(m) => headers::serialize(m).len(),
                None => 4,
            };
            tri!(write_u32(&mut c, out, size as u32));
            Ok(status::OK)
        },
    )?;
    def(
        linker,
        provided,
        "proxy_get_header_map_pairs",
        |mut c: Ctx<'_>, ty: i32, ptr_out: i32, len_out: i32| -> R {
            fill_kept(c.data_mut(), ty);
            let bytes = match tri!(header_map(c.data(), ty)) {
                Some(m) => headers::serialize(m),
                None => headers::serialize(&[]),
            };
            return_bytes(&mut c, &bytes, ptr_out, len_out)
        },
    )?;
    def(
        linker,
        provided,
        "proxy_set_header_map_pairs",
        |mut c: Ctx<'_>, ty: i32, ptr: i32, len: i32| -> R {
            let bytes = tri!(read(&mut c, ptr, len));
            let Ok(pairs) = headers::deserialize(&bytes) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let before =
                stream_map(c.data(), ty).map_or((0, 0), |m| (m.len(), limits::header_bytes(m)));
            limits::header_map(
                &c.data().plugin.name,
                (pairs.len(), limits::header_bytes(&pairs)),
                before,
            )?;
            if let Some(m) = tri!(header_map_mut(c.data_mut(), ty)) {
                *m = pairs;
            }
            Ok(status::OK)
        },
    )?;
    def(
        linker,
        provided,
        "proxy_get_header_map_value",
        |mut c: Ctx<'_>, ty: i32, kp: i32, kl: i32, ptr_out: i32, len_out: i32| -> R {
            let key = tri!(read_str(&mut c, kp, kl)).to_ascii_lowercase();
            fill_kept(c.data_mut(), ty);
            let value = match tri!(header_map(c.data(), ty)) {
                Some(m) => m.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()),
                None => None,
            };
            match value {
                Some(v) => return_bytes(&mut c, &v, ptr_out, len_out),
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    def(
        linker,
        provided,
        "proxy_add_header_map_value",
        |mut c: Ctx<'_>, ty: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> R {
            let key = tri!(read_str(&mut c, kp, kl)).to_ascii_lowercase();
            let value = tri!(read(&mut c, vp, vl));
            fill_kept(c.data_mut(), ty);
            check_growth(&c, ty, &key, value.len(), false)?;
            if let Some(m) = tri!(header_map_mut(c.data_mut(), ty)) {
                m.push((key, value));
            }
            Ok(status::OK)
        },
    )?;
    def(
        linker,
        provided,
        "proxy_replace_header_map_value",
        |mut c: Ctx<'_>, ty: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> R {
            let key = tri!(read_str(&mut c, kp, kl)).to_ascii_lowercase();
            let value = tri!(read(&mut c, vp, vl));
            fill_kept(c.data_mut(), ty);
            check_growth(&c, ty, &key, value.len(), true)?;
            if let Some(m) = tri!(header_map_mut(c.data_mut(), ty)) {
                m.retain(|(k, _)| *k != key);
                m.push((key, value));
            }
            Ok(status::OK)
        },
    )?;
    def(
        linker,
        provided,
        "proxy_remove_header_map_value",
        |mut c: Ctx<'_>, ty: i32, kp: i32, kl: i32| -> R {
            let key = tri!(read_str(&mut c, kp, kl)).to_ascii_lowercase();
            fill_kept(c.data_mut(), ty);
            if let Some(m) = tri!(header_map_mut(c.data_mut(), ty)) {
                m.retain(|(k, _)| *k != key);
            }
            Ok(status::OK)
        },
    )?;

    // --- stream control ---
    fn resume(c: &mut Ctx<'_>) -> i32 {
        let state = c.data();
        if let Some(signals) = state.signals.get(&state.effective) {
            signals
                .resumes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            signals.resume.notify_one();
        }
        status::OK
    }
    def(
        linker,
        provided,
        "proxy_continue_stream",
        |mut c: Ctx<'_>, ty: i32| -> R {
            if !(0..=3).contains(&ty) {
                return Ok(status::BAD_ARGUMENT);
            }
            Ok(resume(&mut c))
        },
    )?;
    def(
        linker,
        provided,
        "proxy_continue_request",
        |mut c: Ctx<'_>| -> R { Ok(resume(&mut c)) },
    )?;
    def(
        linker,
        provided,
        "proxy_continue_response",
        |mut c: Ctx<'_>| -> R { Ok(resume(&mut c)) },
    )?;
    def(
        linker,
        provided,
        "proxy_close_stream",
        |mut c: Ctx<'_>, ty: i32| -> R {
            if !(0..=3).contains(&ty) {
                return Ok(status::BAD_ARGUMENT);
            }
            let state = c.data_mut();
            if let Some(stream) = state.stream.as_mut() {
                stream.close_requested = true;
            }
            // A paused stream closed from a callout or tick must wake up to be reset.
            if state.borrowed.is_some()
                && let Some(signals) = state.signals.get(&state.effective)
            {
                signals.resume.notify_one();
            }
            Ok(status::OK)
        },
    )?;
    def(
        linker,
        provided,
        "proxy_clear_route_cache",
        |mut c: Ctx<'_>| -> R {
            if let Some(stream) = c.data_mut().stream.as_mut() {
                stream.clear_route_cache = true;
            }
            Ok(status::OK)
        },
    )?;
    def(
        linker,
        provided,
        "proxy_get_status",
        |mut c: Ctx<'_>, code_out: i32, ptr_out: i32, len_out: i32| -> R {
            // The status of the gRPC call whose `proxy_on_grpc_close` runs; OK elsewhere.
            let (code, message) = c.data().grpc.status();
            let message = message.as_bytes().to_vec();
            tri!(write_u32(&mut c, code_out, code));
            return_bytes(&mut c, &message, ptr_out, len_out)
        },
    )?;
    def(
        linker,
        provided,
        "proxy_send_local_response",
        |mut c: Ctx<'_>,
         status_code: i32,
         dp: i32,
         dl: i32,
         bp: i32,
         bl: i32,
         hp: i32,
         hl: i32,
         grpc: i32|
         -> R {
            let details = String::from_utf8_lossy(&tri!(read(&mut c, dp, dl))).into_owned();
            let body = tri!(read(&mut c, bp, bl));
            let header_bytes = tri!(read(&mut c, hp, hl));
            let Ok(headers) = headers::deserialize(&header_bytes) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let response = LocalResponse {
                status: status_code as u32,
                details,
                body,
                headers,
                grpc_status: (grpc >= 0).then_some(grpc as u32),
            };
            let state = c.data_mut();
            match state.stream.as_mut() {
                Some(stream) => stream.local_response = Some(response),
                None => tracing::debug!("proxy_send_local_response outside a stream ignored"),
            }
            // A paused stream answered from a callout or tick must wake up to send it.
            if state.borrowed.is_some()
                && let Some(signals) = state.signals.get(&state.effective)
            {
                signals.resume.notify_one();
            }
            Ok(status::OK)
        },
    )?;

    // --- HTTP callouts ---
    def(
        linker,
        provided,
        "proxy_http_call",
        |mut c: Ctx<'_>,
         up: i32,
         upl: i32,
         hp: i32,
         hl: i32,
         bp: i32,
         bl: i32,
         tp: i32,
         tl: i32,
         timeout_ms: i32,
         token_out: i32|
         -> R {
            let upstream = tri!(read_str(&mut c, up, upl));
            let Ok(headers) = headers::deserialize(&tri!(read(&mut c, hp, hl))) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let body = tri!(read(&mut c, bp, bl));
            let Ok(trailers) = headers::deserialize(&tri!(read(&mut c, tp, tl))) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let services = c
                .data()
                .shared
                .services
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let Some(services) = services else {
                return Ok(status::INTERNAL_FAILURE);
            };
            let state = c.data_mut();
            let token = state.next_token;
            state.next_token = state.next_token.wrapping_add(1).max(1);
            let done = crate::callout::CalloutDone {
                plugin: state.plugin_ref.clone(),
                replica: state.replica,
                generation: state.generation,
                token,
            };
            let request = crate::callout::CalloutRequest {
                upstream,
                headers,
                body,
                trailers,
                timeout: std::time::Duration::from_millis(timeout_ms.max(0) as u64),
            };
            if services.http_call(request, done).is_err() {
                return Ok(status::BAD_ARGUMENT);
            }
            tri!(write_u32(&mut c, token_out, token));
            Ok(status::OK)
        },
    )?;
    // --- gRPC calls and streams (see `grpc`) ---
    def(
        linker,
        provided,
        "proxy_grpc_call",
        |mut c: Ctx<'_>,
         up: i32,
         upl: i32,
         sp: i32,
         sl: i32,
         mp: i32,
         ml: i32,
         hp: i32,
         hl: i32,
         bp: i32,
         bl: i32,
         timeout_ms: i32,
         token_out: i32|
         -> R {
            let args = grpc::OpenArgs {
                upstream: (up, upl),
                service: (sp, sl),
                method: (mp, ml),
                metadata: (hp, hl),
            };
            grpc::call(&mut c, args, (bp, bl), timeout_ms, token_out)
        },
    )?;
    def(
        linker,
        provided,
        "proxy_grpc_stream",
        |mut c: Ctx<'_>,
         up: i32,
         upl: i32,
         sp: i32,
         sl: i32,
         mp: i32,
         ml: i32,
         hp: i32,
         hl: i32,
         token_out: i32|
         -> R {
            let args = grpc::OpenArgs {
                upstream: (up, upl),
                service: (sp, sl),
                method: (mp, ml),
                metadata: (hp, hl),
            };
            grpc::stream(&mut c, args, token_out)
        },
    )?;
    def(
        linker,
        provided,
        "proxy_grpc_send",
        |mut c: Ctx<'_>, token: i32, ptr: i32, len: i32, end_stream: i32| -> R {
            grpc::send(&mut c, token, ptr, len, end_stream)
        },
    )?;
    def(
        linker,
        provided,
        "proxy_grpc_cancel",
        |mut c: Ctx<'_>, token: i32| -> R { grpc::cancel(&mut c, token) },
    )?;
    def(
        linker,
        provided,
        "proxy_grpc_close",
        |mut c: Ctx<'_>, token: i32| -> R { grpc::close(&mut c, token) },
    )?;

    // --- shared data and queues ---
    def(
        linker,
        provided,
        "proxy_get_shared_data",
        |mut c: Ctx<'_>, kp: i32, kl: i32, ptr_out: i32, len_out: i32, cas_out: i32| -> R {
            let key = tri!(read_str(&mut c, kp, kl));
            let vm = c.data().plugin.vm_id.clone();
            let Some((value, cas)) = c.data().shared.data.get(&vm, &key) else {
                return Ok(status::NOT_FOUND);
            };
            tri!(write_u32(&mut c, cas_out, cas));
            return_bytes(&mut c, &value, ptr_out, len_out)
        },
    )?;
    def(
        linker,
        provided,
        "proxy_set_shared_data",
        |mut c: Ctx<'_>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| -> R {
            let key = tri!(read_str(&mut c, kp, kl));
            let value = tri!(read(&mut c, vp, vl));
            let state = c.data();
            let answer = state
                .shared
                .data
                .set(&state.plugin.vm_id, &key, value, cas as u32);
            if answer == status::INTERNAL_FAILURE {
                limits::count(&state.plugin.name, "shared_data");
            }
            Ok(answer)
        },
    )?;
    def(
        linker,
        provided,
        "proxy_register_shared_queue",
        |mut c: Ctx<'_>, np: i32, nl: i32, out: i32| -> R {
            let name = tri!(read_str(&mut c, np, nl));
            let state = c.data();
            let owner = QueueOwner {
                plugin: state.plugin.key,
                replica: state.replica,
            };
            let id = match state
                .shared
                .data
                .register_queue(&state.plugin.vm_id, &name, owner)
            {
                Ok(id) => id,
                Err(answer) => {
                    limits::count(&state.plugin.name, "shared_queues");
                    return Ok(answer);
                }
            };
            tri!(write_u32(&mut c, out, id));
            Ok(status::OK)
        },
    )?;
    def(
        linker,
        provided,
        "proxy_resolve_shared_queue",
        |mut c: Ctx<'_>, vp: i32, vl: i32, np: i32, nl: i32, out: i32| -> R {
            let vm = tri!(read_str(&mut c, vp, vl));
            let name = tri!(read_str(&mut c, np, nl));
            let Some(id) = c.data().shared.data.resolve_queue(&vm, &name) else {
                return Ok(status::NOT_FOUND);
            };
            tri!(write_u32(&mut c, out, id));
            Ok(status::OK)
        },
    )?;
    def(
        linker,
        provided,
        "proxy_enqueue_shared_queue",
        |mut c: Ctx<'_>, id: i32, vp: i32, vl: i32| -> R {
            let value = tri!(read(&mut c, vp, vl));
            let state = c.data();
            match state.shared.enqueue(id as u32, value) {
                Ok(dropped) => {
                    limits::count_many(&state.plugin.name, "shared_queue_items", dropped);
                    Ok(status::OK)
                }
                Err(status::INTERNAL_FAILURE) => {
                    limits::count(&state.plugin.name, "shared_queue_items");
                    Ok(status::INTERNAL_FAILURE)
                }
                Err(answer) => Ok(answer),
            }
        },
    )?;
    def(
        linker,
        provided,
        "proxy_dequeue_shared_queue",
        |mut c: Ctx<'_>, id: i32, ptr_out: i32, len_out: i32| -> R {
            let value = tri!(c.data().shared.data.dequeue(id as u32));
            return_bytes(&mut c, &value, ptr_out, len_out)
        },
    )?;

    // --- metrics ---
    def(
        linker,
        provided,
        "proxy_define_metric",
        |mut c: Ctx<'_>, ty: i32, np: i32, nl: i32, out: i32| -> R {
            let Some(kind) = MetricType::from_raw(ty) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let name = tri!(read_str(&mut c, np, nl));
            let Some(id) = c.data().metrics.define(kind, &name) else {
                limits::count(&c.data().plugin.name, "metrics");
                return Ok(status::BAD_ARGUMENT);
            };
            tri!(write_u32(&mut c, out, id));
            Ok(status::OK)
        },
    )?;
    def(
        linker,
        provided,
        "proxy_increment_metric",
        |c: Ctx<'_>, id: i32, delta: i64| -> R { Ok(c.data().metrics.increment(id as u32, delta)) },
    )?;
    def(
        linker,
        provided,
        "proxy_record_metric",
        |c: Ctx<'_>, id: i32, value: i64| -> R { Ok(c.data().metrics.record(id as u32, value)) },
    )?;
    def(
        linker,
        provided,
        "proxy_get_metric",
        |mut c: Ctx<'_>, id: i32, out: i32| -> R {
            let Some(value) = c.data().metrics.get(id as u32) else {
                return Ok(status::NOT_FOUND);
            };
            tri!(write_u64(&mut c, out, value as u64));
            Ok(status::OK)
        },
    )?;

    // --- properties ---
    def(
        linker,
        provided,
        "proxy_get_property",
        |mut c: Ctx<'_>, pp: i32, pl: i32, ptr_out: i32, len_out: i32| -> R {
            let raw = tri!(read(&mut c, pp, pl));
            let path = tri!(property_path(&raw));
            // Attributes come before filter state, as in Envoy (`Context::FindValue`).
            if let Some((map_type, rest)) = header_attribute(&path) {
                fill_kept(c.data_mut(), map_type);
                let value =
                    stream_map(c.data(), map_type).and_then(|m| header_attribute_value(m, rest));
                return match value {
                    Some(v) => return_bytes(&mut c, &v, ptr_out, len_out),
                    None => Ok(status::NOT_FOUND),
                };
            }
            let joined = path.join(".");
            let state = c.data();
            let value = match joined.as_str() {
                "plugin_name" => Some(state.plugin.name.as_bytes().to_vec()),
                "plugin_root_id" => Some(state.plugin.root_id.as_bytes().to_vec()),
                "plugin_vm_id" => Some(state.plugin.vm_id.as_bytes().to_vec()),
                _ => state.stream.as_ref().and_then(|s| {
                    match s.env.filter_state() {
                        Some(shared) => shared.get(&joined),
                        None => s.filter_state.get(&joined).cloned(),
                    }
                    .or_else(|| {
                        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
                        s.env.property(&segments)
                    })
                }),
            };
            match value {
                Some(v) => return_bytes(&mut c, &v, ptr_out, len_out),
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    def(
        linker,
        provided,
        "proxy_set_property",
        |mut c: Ctx<'_>, pp: i32, pl: i32, vp: i32, vl: i32| -> R {
            let raw = tri!(read(&mut c, pp, pl));
            let path = tri!(property_path(&raw)).join(".");
            let value = tri!(read(&mut c, vp, vl));
            let plugin = c.data().plugin.clone();
            match c.data_mut().stream.as_mut() {
                Some(stream) => {
                    // The request's shared state if the embedder keeps one, else the
                    // filter's own; bounded either way.
                    let set = match stream.env.filter_state() {
                        Some(shared) => shared.set(path, value),
                        None => {
                            crate::filter_state::set_bounded(&mut stream.filter_state, path, value)
                        }
                    };
                    if let Err(detail) = set {
                        return Err(limits::exceeded(&plugin.name, "filter_state", detail));
                    }
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;

    // --- foreign functions ---
    def(
        linker,
        provided,
        "proxy_call_foreign_function",
        |mut c: Ctx<'_>, np: i32, nl: i32, ap: i32, al: i32, ptr_out: i32, len_out: i32| -> R {
            let name = tri!(read_str(&mut c, np, nl));
            let args = tri!(read(&mut c, ap, al));
            let result = match name.as_str() {
                // Digest of the arguments; lets filters hash without shipping a hash crate.
                "sha256" => Sha256::digest(&args).to_vec(),
                // Envoy's declare_property: properties here are untyped, so declaring is a no-op.
                "declare_property" => Vec::new(),
                // Envoy's clear_route_cache (ABI 0.2.x has no import for it): route again.
                "clear_route_cache" => {
                    if let Some(stream) = c.data_mut().stream.as_mut() {
                        stream.clear_route_cache = true;
                    }
                    Vec::new()
                }
                _ => return Ok(status::NOT_FOUND),
            };
            return_bytes(&mut c, &result, ptr_out, len_out)
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_follows_the_abi() {
        let mut b = b"hello".to_vec();
        splice(&mut b, 0, 0, b">> ");
        assert_eq!(b, b">> hello");
        splice(&mut b, 100, 0, b"!");
        assert_eq!(b, b">> hello!");
        splice(&mut b, 3, 5, b"world");
        assert_eq!(b, b">> world!");
        splice(&mut b, 0, usize::MAX, b"");
        assert_eq!(b, b"");
    }

    #[test]
    fn property_paths_split_on_nul() {
        assert_eq!(
            property_path(b"request\0path"),
            Ok(vec!["request".into(), "path".into()])
        );
        assert_eq!(
            property_path(b"plugin_name"),
            Ok(vec!["plugin_name".into()])
        );
        assert_eq!(property_path(b"\xff"), Err(status::BAD_ARGUMENT));
    }

    #[test]
    fn header_attributes_join_repeated_values_as_envoy_does() {
        let path = |p: &[u8]| property_path(p).unwrap_or_default();
        let multi = path(b"request\0headers\0X-Multi");
        let (ty, rest) = header_attribute(&multi).unwrap();
        assert_eq!(ty, map::HTTP_REQUEST_HEADERS);
        let m: HeaderMap = vec![
            (":path".into(), b"/".to_vec()),
            ("x-multi".into(), b"a".to_vec()),
            ("x-other".into(), b"o".to_vec()),
            ("x-multi".into(), b"b".to_vec()),
        ];
        assert_eq!(header_attribute_value(&m, rest), Some(b"a,b".to_vec()));
        assert_eq!(header_attribute_value(&m, &["x-none".into()]), None);
        // The whole map: each name once, in first-seen order.
        let whole = header_attribute_value(&m, &[]).unwrap();
        let expected: HeaderMap = vec![
            (":path".into(), b"/".to_vec()),
            ("x-multi".into(), b"a,b".to_vec()),
            ("x-other".into(), b"o".to_vec()),
        ];
        assert_eq!(whole, headers::serialize(&expected));
        assert!(header_attribute(&path(b"response\0headers")).is_some());
        assert_eq!(
            header_attribute(&path(b"response\0trailers\0grpc-status")).map(|(ty, _)| ty),
            Some(map::HTTP_RESPONSE_TRAILERS)
        );
        // Envoy has no request trailers attribute.
        assert!(header_attribute(&path(b"request\0trailers")).is_none());
        assert!(header_attribute(&path(b"request\0path")).is_none());
        assert!(header_attribute(&path(b"upstream\0headers")).is_none());
    }
}
