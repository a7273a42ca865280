// Example filter: sets the request and response headers its configuration names.
//
//   {"request": {"x-hello": "world"}, "response": {"x-served-by": "assemblyscript"}}
//
// Both members are optional; anything else — an unknown member, a value that is not a
// string, text that is not JSON — refuses the configuration with a log line naming the field.

import {
  Action, HttpContext, JsonValue, Pair, RootContext, getPluginConfiguration, headers,
  parseJson, refuseConfiguration, setRootContext,
} from "../assembly/index";

export * from "../assembly/exports";

/** The headers to set, read once per configuration and shared by every request. */
class Rules {
  request: Pair[] = [];
  response: Pair[] = [];
}

/** Reads `{"name": "value", …}` at `field` into `out`; false after logging the mistake. */
function readHeaders(field: string, value: JsonValue, out: Pair[]): bool {
  if (!value.isObject) return refuseConfiguration(field, "expected an object of header names to values, found " + value.describe());
  for (let i = 0; i < value.keys.length; i++) {
    const name = value.keys[i];
    const v = value.values[i];
    if (!v.isString) return refuseConfiguration(field + "." + name, "expected a string, found " + v.describe());
    if (name.length == 0) return refuseConfiguration(field, "a header name is empty");
    out.push(new Pair(name, v.string));
  }
  return true;
}

class Root extends RootContext {
  rules: Rules = new Rules();

  onConfigure(size: usize): bool {
    const text = getPluginConfiguration();
    const parsed = parseJson(text.trim().length == 0 ? "{}" : text);
    const doc = parsed.value;
    if (doc === null) return refuseConfiguration(".", parsed.error);
    if (!doc.isObject) return refuseConfiguration(".", "expected an object, found " + doc.describe());
    const rules = new Rules();
    for (let i = 0; i < doc.keys.length; i++) {
      const key = doc.keys[i];
      if (key == "request") {
        if (!readHeaders(key, doc.values[i], rules.request)) return false;
      } else if (key == "response") {
        if (!readHeaders(key, doc.values[i], rules.response)) return false;
      } else {
        return refuseConfiguration(key, "unknown field, expected `request` or `response`");
      }
    }
    this.rules = rules;
    return true;
  }

  createHttpContext(contextId: u32): HttpContext | null {
    return new Filter(contextId, this.rules);
  }
}

class Filter extends HttpContext {
  constructor(contextId: u32, private rules: Rules) {
    super(contextId);
  }

  onRequestHeaders(numHeaders: u32, endOfStream: bool): Action {
    for (let i = 0; i < this.rules.request.length; i++) {
      headers.request.set(this.rules.request[i].name, this.rules.request[i].value);
    }
    return Action.Continue;
  }

  onResponseHeaders(numHeaders: u32, endOfStream: bool): Action {
    for (let i = 0; i < this.rules.response.length; i++) {
      headers.response.set(this.rules.response[i].name, this.rules.response[i].value);
    }
    return Action.Continue;
  }
}

setRootContext((contextId: u32): RootContext => new Root(contextId));
