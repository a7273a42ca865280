// The contexts a filter is written as, shaped like the Rust SDK's traits: one RootContext per
// plugin (configuration, ticks, callouts) and one HttpContext per request, which the root
// creates. Override the callbacks you need; the others do what a filter without them would.

import * as abi from "./imports";
import { Action, Status, StreamType } from "./types";
import { Pair } from "./memory";
import { HttpCall, continueStream, httpCall, sendLocalResponse, setTickPeriodMilliseconds } from "./host";

/** Which context dispatched each callout still in flight (token → context id). */
export const calloutOwners = new Map<u32, u32>();

/** What every context can do. */
export class Context {
  constructor(public readonly contextId: u32) {}

  /**
   * The answer to a callout this context sent: `numHeaders == 0` means it failed or timed
   * out. Read it with `headers.callResponse` and `getHttpCallResponseBody()`.
   */
  onHttpCallResponse(token: u32, numHeaders: u32, bodySize: usize, numTrailers: u32): void {}

  /** The host is done with this context; false keeps it until `done()`. */
  onDone(): bool { return true; }

  /** The request is over (access-log time): headers, properties and metrics are readable. */
  onLog(): void {}

  /** Sends an HTTP request to cluster `upstream`; the answer comes to `onHttpCallResponse`. */
  dispatchHttpCall(upstream: string, requestHeaders: Pair[], body: string, trailers: Pair[], timeoutMilliseconds: u32): HttpCall {
    const call = httpCall(upstream, requestHeaders, body, trailers, timeoutMilliseconds);
    if (call.ok) calloutOwners.set(call.token, this.contextId);
    return call;
  }

  /** Tells the host a context that answered false from `onDone` is finished. */
  done(): Status {
    abi.proxy_set_effective_context(this.contextId);
    return <Status>abi.proxy_done();
  }
}

/** One HTTP request and its response. */
export class HttpContext extends Context {
  onRequestHeaders(numHeaders: u32, endOfStream: bool): Action { return Action.Continue; }
  onRequestBody(bodySize: usize, endOfStream: bool): Action { return Action.Continue; }
  onRequestTrailers(numTrailers: u32): Action { return Action.Continue; }
  onResponseHeaders(numHeaders: u32, endOfStream: bool): Action { return Action.Continue; }
  onResponseBody(bodySize: usize, endOfStream: bool): Action { return Action.Continue; }
  onResponseTrailers(numTrailers: u32): Action { return Action.Continue; }

  /** Resumes a request this filter paused. */
  resumeRequest(): Status {
    abi.proxy_set_effective_context(this.contextId);
    return continueStream(StreamType.HttpRequest);
  }

  /** Resumes a response this filter paused. */
  resumeResponse(): Status {
    abi.proxy_set_effective_context(this.contextId);
    return continueStream(StreamType.HttpResponse);
  }

  /** Answers the request locally; return `Action.Pause` from the callback afterwards. */
  sendLocalResponse(status: u32, body: string, extraHeaders: Pair[] = [], details: string = ""): Status {
    return sendLocalResponse(status, body, extraHeaders, details);
  }
}

/** The plugin: its configuration, ticks, queues, and the factory of its HTTP contexts. */
export class RootContext extends Context {
  /** The VM started; its configuration is `getVmConfiguration()`. False: the VM is unusable. */
  onVmStart(vmConfigurationSize: usize): bool { return true; }

  /** The plugin is (re)configured with `getPluginConfiguration()`. False refuses it. */
  onConfigure(pluginConfigurationSize: usize): bool { return true; }

  /** Called every tick period (see `setTickPeriod`). */
  onTick(): void {}

  /** A shared queue this plugin registered has items. */
  onQueueReady(queueId: u32): void {}

  /** A context for a new request; null leaves the request alone. */
  createHttpContext(contextId: u32): HttpContext | null { return null; }

  /** Asks for `onTick` every `milliseconds` (0 stops it). */
  setTickPeriod(milliseconds: u32): Status {
    return setTickPeriodMilliseconds(milliseconds);
  }
}

/** Makes a filter's root context; registered once, at the top level of the filter. */
export type RootFactory = (contextId: u32) => RootContext;

let factory: RootFactory | null = null;

/** Registers the filter: `setRootContext((id) => new MyRoot(id))` at the top level. */
export function setRootContext(make: RootFactory): void {
  factory = make;
}

/** The root context for a new plugin (a do-nothing one if the filter registered none). */
export function newRootContext(contextId: u32): RootContext {
  const make = factory;
  if (make === null) return new RootContext(contextId);
  return make(contextId);
}
