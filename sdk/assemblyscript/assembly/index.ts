// wasmesh-proxy-wasm: write proxy-wasm (ABI 0.2.1) filters in AssemblyScript, for wasmesh and
// any other proxy-wasm host (Envoy, Istio). The API follows the Rust SDK's shape:
//
//   import { Action, HttpContext, RootContext, headers, setRootContext, … } from "wasmesh-proxy-wasm/assembly/index";
//   class Root extends RootContext {            // one per plugin: configuration, ticks
//     onConfigure(size: usize): bool { … getPluginConfiguration() … }
//     createHttpContext(id: u32): HttpContext | null { return new Filter(id); }
//   }
//   class Filter extends HttpContext {          // one per request
//     onRequestHeaders(n: u32, end: bool): Action { headers.request.set("x-a", "1"); return Action.Continue; }
//   }
//   setRootContext((id: u32): RootContext => new Root(id));
//   export * from "wasmesh-proxy-wasm/assembly/exports";   // the ABI exports, once per filter
//
// Build with the options in this package's asconfig.json (`--exportStart _initialize`,
// `--use abort=…`), so the module is a WASI-style reactor importing only `env.proxy_*`.

export { Action, BufferType, LogLevel, MapType, MetricType, Status, StreamType } from "./types";
export { Pair } from "./memory";
export {
  Counter, Gauge, Headers, Histogram, HttpCall, SharedValue,
  continueStream, currentTimeNanoseconds, getBuffer, getHttpCallResponseBody,
  getPluginConfiguration, getProperty, getPropertyInt, getPropertyString, getSharedData,
  getVmConfiguration, headers, httpCall, log, logDebug, logError, logInfo, logTrace, logWarn,
  sendLocalResponse, setBuffer, setProperty, setSharedData, setTickPeriodMilliseconds,
} from "./host";
export { Context, HttpContext, RootContext, RootFactory, setRootContext } from "./context";
export { JsonKind, JsonResult, JsonValue, parseJson } from "./json";
export { configError, refuseConfiguration } from "./config";
