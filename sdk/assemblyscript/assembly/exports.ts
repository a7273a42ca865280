// The module's exports the host calls: the ABI marker, the allocator, and every callback of
// proxy-wasm 0.2.1 that HTTP filters use, dispatched to the filter's contexts. A filter's entry
// file re-exports them all with `export * from "wasmesh-proxy-wasm/assembly/exports";`.
//
// A callback for a context the filter never created (its root returned no HttpContext) does
// nothing, as the host expects.

import * as abi from "./imports";
import { Action } from "./types";
// Loaded here so every filter has the `proxyAbort` the build names in `--use abort=…`.
import "./abort";
import { Context, HttpContext, RootContext, calloutOwners, newRootContext } from "./context";

const roots = new Map<u32, RootContext>();
const streams = new Map<u32, HttpContext>();

/** The marker the host reads the ABI version from; never called. */
export function proxy_abi_version_0_2_1(): void {}

/** The host allocates the buffers it hands the filter here; the SDK frees them. */
export function proxy_on_memory_allocate(size: usize): usize {
  return heap.alloc(size);
}

export function proxy_on_context_create(contextId: u32, parentId: u32): void {
  if (parentId == 0) {
    roots.set(contextId, newRootContext(contextId));
    return;
  }
  if (!roots.has(parentId)) return;
  const stream = roots.get(parentId).createHttpContext(contextId);
  if (stream !== null) streams.set(contextId, stream);
}

export function proxy_on_vm_start(contextId: u32, size: usize): bool {
  return roots.has(contextId) ? roots.get(contextId).onVmStart(size) : true;
}

export function proxy_on_configure(contextId: u32, size: usize): bool {
  return roots.has(contextId) ? roots.get(contextId).onConfigure(size) : true;
}

export function proxy_on_tick(contextId: u32): void {
  if (roots.has(contextId)) roots.get(contextId).onTick();
}

export function proxy_on_queue_ready(contextId: u32, queueId: u32): void {
  if (roots.has(contextId)) roots.get(contextId).onQueueReady(queueId);
}

export function proxy_on_request_headers(contextId: u32, numHeaders: u32, endOfStream: bool): Action {
  return streams.has(contextId) ? streams.get(contextId).onRequestHeaders(numHeaders, endOfStream) : Action.Continue;
}

export function proxy_on_request_body(contextId: u32, bodySize: usize, endOfStream: bool): Action {
  return streams.has(contextId) ? streams.get(contextId).onRequestBody(bodySize, endOfStream) : Action.Continue;
}

export function proxy_on_request_trailers(contextId: u32, numTrailers: u32): Action {
  return streams.has(contextId) ? streams.get(contextId).onRequestTrailers(numTrailers) : Action.Continue;
}

export function proxy_on_response_headers(contextId: u32, numHeaders: u32, endOfStream: bool): Action {
  return streams.has(contextId) ? streams.get(contextId).onResponseHeaders(numHeaders, endOfStream) : Action.Continue;
}

export function proxy_on_response_body(contextId: u32, bodySize: usize, endOfStream: bool): Action {
  return streams.has(contextId) ? streams.get(contextId).onResponseBody(bodySize, endOfStream) : Action.Continue;
}

export function proxy_on_response_trailers(contextId: u32, numTrailers: u32): Action {
  return streams.has(contextId) ? streams.get(contextId).onResponseTrailers(numTrailers) : Action.Continue;
}

function find(contextId: u32): Context | null {
  if (streams.has(contextId)) return streams.get(contextId);
  if (roots.has(contextId)) return roots.get(contextId);
  return null;
}

export function proxy_on_http_call_response(contextId: u32, token: u32, numHeaders: u32, bodySize: usize, numTrailers: u32): void {
  // The answer goes to the context that sent the call, as in the Rust SDK.
  let owner = contextId;
  if (calloutOwners.has(token)) {
    owner = calloutOwners.get(token);
    calloutOwners.delete(token);
  }
  const context = find(owner);
  if (context === null) return;
  abi.proxy_set_effective_context(owner);
  context.onHttpCallResponse(token, numHeaders, bodySize, numTrailers);
}

export function proxy_on_done(contextId: u32): bool {
  const context = find(contextId);
  return context === null ? true : context.onDone();
}

export function proxy_on_log(contextId: u32): void {
  const context = find(contextId);
  if (context !== null) context.onLog();
}

export function proxy_on_delete(contextId: u32): void {
  streams.delete(contextId);
  roots.delete(contextId);
}
