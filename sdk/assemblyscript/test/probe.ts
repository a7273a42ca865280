// A probe of the AssemblyScript SDK's API for the Rust tests (sdk/tools/tests/assemblyscript_api.rs):
// each request header below makes it use one part of the API and report what it saw in
// another request header. Not an example to copy: see example/filter.ts.
//
//   :path /local        → local response 418 "short and stout", x-local: yes
//   :path /call         → callout to cluster "auth"; its answer's :status and body come back
//                         as x-call-status / x-call-body, then the request resumes
//   x-property: NAME    → x-property-value: the attribute NAME (or "none")
//   x-edit: 1           → adds x-added twice, removes x-remove
//   every request       → x-header-count, metrics probe_requests_total (counter), probe_gauge
//                         (gauge, 7) and probe_size (histogram); shared data "hits"; a log line

import {
  Action, Counter, Gauge, Histogram, HttpContext, Pair, RootContext, getHttpCallResponseBody,
  getPropertyString, getSharedData, headers, logInfo, setRootContext, setSharedData,
} from "../assembly/index";

export * from "../assembly/exports";

const requests = new Counter("probe_requests_total");
const gauge = new Gauge("probe_gauge");
const sizes = new Histogram("probe_size");
const ticks = new Counter("probe_ticks_total");

class Root extends RootContext {
  onConfigure(size: usize): bool {
    this.setTickPeriod(1000);
    return true;
  }

  onTick(): void {
    ticks.increment();
  }

  createHttpContext(contextId: u32): HttpContext | null {
    return new Probe(contextId);
  }
}

class Probe extends HttpContext {
  onRequestHeaders(numHeaders: u32, endOfStream: bool): Action {
    const request = headers.request;
    requests.increment();
    gauge.set(7);
    sizes.record(<u64>numHeaders);
    request.set("x-header-count", request.all().length.toString());
    const hits = getSharedData("hits");
    const count = hits === null ? 1 : I32.parseInt(hits.value) + 1;
    setSharedData("hits", count.toString(), hits === null ? 0 : hits.cas);
    const path = request.get(":path");
    logInfo("probe saw " + (path === null ? "no path" : path));

    const property = request.get("x-property");
    if (property !== null) {
      const value = getPropertyString(property);
      request.set("x-property-value", value === null ? "none" : value);
    }
    if (request.has("x-edit")) {
      request.add("x-added", "1");
      request.add("x-added", "2");
      request.remove("x-remove");
    }
    if (path == "/local") {
      this.sendLocalResponse(418, "short and stout", [new Pair("x-local", "yes")]);
      return Action.Pause;
    }
    if (path == "/call") {
      const call = this.dispatchHttpCall("auth", [
        new Pair(":method", "GET"), new Pair(":path", "/check"), new Pair(":authority", "auth"),
      ], "", [], 500);
      if (!call.ok) {
        this.sendLocalResponse(500, "callout refused");
      }
      return Action.Pause;
    }
    return Action.Continue;
  }

  onHttpCallResponse(token: u32, numHeaders: u32, bodySize: usize, numTrailers: u32): void {
    const status = headers.callResponse.get(":status");
    headers.request.set("x-call-status", status === null ? "failed" : status);
    headers.request.set("x-call-body", getHttpCallResponseBody());
    this.resumeRequest();
  }
}

setRootContext((contextId: u32): RootContext => new Root(contextId));
