// Typed wrappers of the host functions: text in and out as strings, statuses as `Status`,
// nothing that traps on what the host or a request sends.

import * as abi from "./imports";
import { BufferType, LogLevel, MapType, MetricType, Status, StreamType } from "./types";
import {
  OUT_EXTRA, OUT_PTR, OUT_SIZE, Pair, addr, deserializePairs, serializePairs, takeReturned,
  text, utf8,
} from "./memory";

// ---------------------------------------------------------------------------------------------
// Logging and time

/** Logs `message` at `level`; the host may drop lines below its level. */
export function log(level: LogLevel, message: string): void {
  const bytes = utf8(message);
  abi.proxy_log(<u32>level, addr(bytes), bytes.byteLength);
}

export function logTrace(message: string): void { log(LogLevel.Trace, message); }
export function logDebug(message: string): void { log(LogLevel.Debug, message); }
export function logInfo(message: string): void { log(LogLevel.Info, message); }
export function logWarn(message: string): void { log(LogLevel.Warn, message); }
export function logError(message: string): void { log(LogLevel.Error, message); }

/** The wall-clock time, in nanoseconds since the Unix epoch. */
export function currentTimeNanoseconds(): u64 {
  abi.proxy_get_current_time_nanoseconds(OUT_PTR);
  return load<u64>(OUT_PTR);
}

// ---------------------------------------------------------------------------------------------
// Buffers and configuration

/** Bytes `[start, start + maxSize)` of a buffer; empty if the host has none here. */
export function getBuffer(kind: BufferType, start: usize = 0, maxSize: usize = <usize>u32.MAX_VALUE): ArrayBuffer {
  const status = abi.proxy_get_buffer_bytes(<u32>kind, start, maxSize, OUT_PTR, OUT_SIZE);
  if (status != Status.Ok) return new ArrayBuffer(0);
  return takeReturned();
}

/** Replaces `size` bytes at `start` of a buffer with `value` (see the specification). */
export function setBuffer(kind: BufferType, start: usize, size: usize, value: ArrayBuffer): Status {
  return <Status>abi.proxy_set_buffer_bytes(<u32>kind, start, size, addr(value), value.byteLength);
}

/** The plugin configuration (in `onConfigure`), as text. */
export function getPluginConfiguration(): string {
  return text(getBuffer(BufferType.PluginConfiguration));
}

/** The VM configuration (in `onVmStart`), as text. */
export function getVmConfiguration(): string {
  return text(getBuffer(BufferType.VmConfiguration));
}

// ---------------------------------------------------------------------------------------------
// Header maps

/**
 * One header map of the current context. Names are matched case-insensitively: they are
 * lowercased before they reach the host, which keeps them lowercase as HTTP/2 does.
 */
export class Headers {
  constructor(public readonly map: MapType) {}

  /** The first value of `name`, or null when absent. */
  get(name: string): string | null {
    const key = utf8(name.toLowerCase());
    const status = abi.proxy_get_header_map_value(<u32>this.map, addr(key), key.byteLength, OUT_PTR, OUT_SIZE);
    if (status != Status.Ok) return null;
    return text(takeReturned());
  }

  /** Whether `name` is present. */
  has(name: string): bool {
    return this.get(name) !== null;
  }

  /** Every pair of the map, in order. */
  all(): Pair[] {
    const status = abi.proxy_get_header_map_pairs(<u32>this.map, OUT_PTR, OUT_SIZE);
    if (status != Status.Ok) return new Array<Pair>();
    return deserializePairs(takeReturned());
  }

  /** Every value of `name`, in order. */
  getAll(name: string): string[] {
    const lower = name.toLowerCase();
    const out = new Array<string>();
    const pairs = this.all();
    for (let i = 0; i < pairs.length; i++) {
      if (pairs[i].name.toLowerCase() == lower) out.push(pairs[i].value);
    }
    return out;
  }

  /** Replaces every value of `name` with `value` (adds it when absent). */
  set(name: string, value: string): Status {
    const key = utf8(name.toLowerCase());
    const val = utf8(value);
    return <Status>abi.proxy_replace_header_map_value(<u32>this.map, addr(key), key.byteLength, addr(val), val.byteLength);
  }

  /** Adds a value of `name` after those it has. */
  add(name: string, value: string): Status {
    const key = utf8(name.toLowerCase());
    const val = utf8(value);
    return <Status>abi.proxy_add_header_map_value(<u32>this.map, addr(key), key.byteLength, addr(val), val.byteLength);
  }

  /** Removes every value of `name`. */
  remove(name: string): Status {
    const key = utf8(name.toLowerCase());
    return <Status>abi.proxy_remove_header_map_value(<u32>this.map, addr(key), key.byteLength);
  }

  /** Replaces the whole map. */
  replaceAll(pairs: Pair[]): Status {
    const bytes = serializePairs(pairs);
    return <Status>abi.proxy_set_header_map_pairs(<u32>this.map, addr(bytes), bytes.byteLength);
  }
}

/** The maps of the current HTTP context. */
export namespace headers {
  /** Request headers, pseudo headers (`:method`, `:path`, `:authority`, `:scheme`) included. */
  export const request = new Headers(MapType.HttpRequestHeaders);
  /** Response headers, `:status` included. */
  export const response = new Headers(MapType.HttpResponseHeaders);
  export const requestTrailers = new Headers(MapType.HttpRequestTrailers);
  export const responseTrailers = new Headers(MapType.HttpResponseTrailers);
  /** The answer to an HTTP callout (in `onHttpCallResponse`), `:status` included. */
  export const callResponse = new Headers(MapType.HttpCallResponseHeaders);
}

// ---------------------------------------------------------------------------------------------
// Streams

/** Resumes a stream the filter paused. */
export function continueStream(stream: StreamType): Status {
  return <Status>abi.proxy_continue_stream(<u32>stream);
}

/**
 * Answers the current request locally with `status`, `body` and `extraHeaders`; the filter
 * then returns `Action.Pause` from its callback. `details` is the reason the host may log.
 */
export function sendLocalResponse(status: u32, body: string, extraHeaders: Pair[] = [], details: string = ""): Status {
  const reason = utf8(details);
  const content = utf8(body);
  const pairs = serializePairs(extraHeaders);
  return <Status>abi.proxy_send_local_response(
    status, addr(reason), reason.byteLength, addr(content), content.byteLength,
    addr(pairs), pairs.byteLength, -1);
}

// ---------------------------------------------------------------------------------------------
// Properties (Envoy's attribute names: `request.path`, `source.address`, `plugin_name`, …)

function propertyPath(path: string): ArrayBuffer {
  // The ABI separates path segments with NUL bytes.
  return utf8(path.replaceAll(".", "\0"));
}

/** The raw value at a dotted `path`, or null when the host has none. */
export function getProperty(path: string): ArrayBuffer | null {
  const key = propertyPath(path);
  const status = abi.proxy_get_property(addr(key), key.byteLength, OUT_PTR, OUT_SIZE);
  if (status != Status.Ok) return null;
  return takeReturned();
}

/** A string attribute, or null. */
export function getPropertyString(path: string): string | null {
  const value = getProperty(path);
  return value === null ? null : text(value);
}

/** An integer attribute (8 bytes little-endian, as Envoy encodes them), or `fallback`. */
export function getPropertyInt(path: string, fallback: i64 = 0): i64 {
  const value = getProperty(path);
  if (value === null || value.byteLength != 8) return fallback;
  return load<i64>(addr(value));
}

/** Sets a property (filter state) later filters can read. */
export function setProperty(path: string, value: string): Status {
  const key = propertyPath(path);
  const bytes = utf8(value);
  return <Status>abi.proxy_set_property(addr(key), key.byteLength, addr(bytes), bytes.byteLength);
}

// ---------------------------------------------------------------------------------------------
// Metrics

/** A metric defined with the host on first use; a refused definition makes it do nothing. */
class Metric {
  private id: u32 = 0;
  private defined: bool = false;
  private usable: bool = false;

  constructor(public readonly name: string, public readonly kind: MetricType) {}

  protected metricId(): u32 {
    if (!this.defined) {
      this.defined = true;
      const name = utf8(this.name);
      this.usable = abi.proxy_define_metric(<u32>this.kind, addr(name), name.byteLength, OUT_PTR) == Status.Ok;
      this.id = load<u32>(OUT_PTR);
    }
    return this.id;
  }

  protected ready(): bool {
    this.metricId();
    return this.usable;
  }

  /** The value as the host has it (0 when undefined). */
  value(): i64 {
    if (!this.ready()) return 0;
    if (abi.proxy_get_metric(this.metricId(), OUT_PTR) != Status.Ok) return 0;
    return load<i64>(OUT_PTR);
  }
}

/** A counter: only goes up. */
export class Counter extends Metric {
  constructor(name: string) { super(name, MetricType.Counter); }
  increment(delta: i64 = 1): void {
    if (this.ready()) abi.proxy_increment_metric(this.metricId(), delta);
  }
}

/** A gauge: goes up and down. */
export class Gauge extends Metric {
  constructor(name: string) { super(name, MetricType.Gauge); }
  set(value: i64): void {
    if (this.ready()) abi.proxy_record_metric(this.metricId(), <u64>value);
  }
  add(delta: i64): void {
    if (this.ready()) abi.proxy_increment_metric(this.metricId(), delta);
  }
}

/** A histogram: the host keeps the distribution of recorded values. */
export class Histogram extends Metric {
  constructor(name: string) { super(name, MetricType.Histogram); }
  record(value: u64): void {
    if (this.ready()) abi.proxy_record_metric(this.metricId(), value);
  }
}

// ---------------------------------------------------------------------------------------------
// Ticks and HTTP callouts

/** Asks for `onTick` every `milliseconds` (0 stops it). */
export function setTickPeriodMilliseconds(milliseconds: u32): Status {
  return <Status>abi.proxy_set_tick_period_milliseconds(milliseconds);
}

/** An HTTP callout the host accepted (`ok`) with its token, or the status it refused with. */
export class HttpCall {
  constructor(public readonly status: Status, public readonly token: u32) {}
  get ok(): bool { return this.status == Status.Ok; }
}

/** Sends a request through the host (`proxy_http_call`); `upstream` is a cluster name. */
export function httpCall(upstream: string, requestHeaders: Pair[], body: string, trailers: Pair[], timeoutMilliseconds: u32): HttpCall {
  const cluster = utf8(upstream);
  const headerBytes = serializePairs(requestHeaders);
  const content = utf8(body);
  const trailerBytes = serializePairs(trailers);
  const status = <Status>abi.proxy_http_call(
    addr(cluster), cluster.byteLength, addr(headerBytes), headerBytes.byteLength,
    addr(content), content.byteLength, addr(trailerBytes), trailerBytes.byteLength,
    timeoutMilliseconds, OUT_PTR);
  return new HttpCall(status, status == Status.Ok ? load<u32>(OUT_PTR) : 0);
}

/** The body of a callout's answer (in `onHttpCallResponse`), as text. */
export function getHttpCallResponseBody(): string {
  return text(getBuffer(BufferType.HttpCallResponseBody));
}

// ---------------------------------------------------------------------------------------------
// Shared data

/** A shared-data value of the plugin's `vm_id` and its CAS, or null. */
export class SharedValue {
  constructor(public readonly value: string, public readonly cas: u32) {}
}

export function getSharedData(key: string): SharedValue | null {
  const name = utf8(key);
  const status = abi.proxy_get_shared_data(addr(name), name.byteLength, OUT_PTR, OUT_SIZE, OUT_EXTRA);
  if (status != Status.Ok) return null;
  const cas = load<u32>(OUT_EXTRA);
  return new SharedValue(text(takeReturned()), cas);
}

/** Sets a shared-data value; a non-zero `cas` must match the current one (else `CasMismatch`). */
export function setSharedData(key: string, value: string, cas: u32 = 0): Status {
  const name = utf8(key);
  const bytes = utf8(value);
  return <Status>abi.proxy_set_shared_data(addr(name), name.byteLength, addr(bytes), bytes.byteLength, cas);
}
