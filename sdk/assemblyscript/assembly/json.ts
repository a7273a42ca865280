// A small, strict JSON reader for plugin configuration (RFC 8259: objects, arrays, strings,
// numbers, true, false, null). AssemblyScript has no exceptions, so a mistake comes back as
// `JsonResult.error` ("line 1 column 9: expected ':'"), never as a trap.

export enum JsonKind {
  Null,
  Bool,
  Number,
  String,
  Array,
  Object,
}

/** One JSON value. Objects keep their members in document order. */
export class JsonValue {
  kind: JsonKind = JsonKind.Null;
  bool: bool = false;
  number: f64 = 0;
  string: string = "";
  items: JsonValue[] = [];
  keys: string[] = [];
  values: JsonValue[] = [];

  /** The member `key` of an object (the last one if repeated), or null. */
  get(key: string): JsonValue | null {
    for (let i = this.keys.length - 1; i >= 0; i--) {
      if (this.keys[i] == key) return this.values[i];
    }
    return null;
  }

  get isObject(): bool { return this.kind == JsonKind.Object; }
  get isString(): bool { return this.kind == JsonKind.String; }

  /** The kind as a word for error messages ("an object", "a string", …). */
  describe(): string {
    switch (this.kind) {
      case JsonKind.Null: return "null";
      case JsonKind.Bool: return "a boolean";
      case JsonKind.Number: return "a number";
      case JsonKind.String: return "a string";
      case JsonKind.Array: return "an array";
      default: return "an object";
    }
  }
}

/** A parsed document, or why it is not one. */
export class JsonResult {
  constructor(public readonly value: JsonValue | null, public readonly error: string) {}
  get ok(): bool { return this.value !== null; }
}

/** Parses `text` as one JSON document. */
export function parseJson(text: string): JsonResult {
  const parser = new Parser(text);
  parser.skipSpace();
  const value = parser.value(0);
  if (value !== null) {
    parser.skipSpace();
    if (parser.pos < text.length) parser.fail("trailing characters after the document");
  }
  if (parser.error.length > 0) return new JsonResult(null, parser.error);
  return new JsonResult(value, "");
}

/** Nesting deeper than this is refused rather than risking the stack. */
const MAX_DEPTH = 64;

class Parser {
  pos: i32 = 0;
  error: string = "";

  constructor(public readonly text: string) {}

  fail(message: string): void {
    if (this.error.length > 0) return;
    let line = 1;
    let column = 1;
    for (let i = 0; i < this.pos && i < this.text.length; i++) {
      if (this.text.charCodeAt(i) == 10) {
        line++;
        column = 1;
      } else {
        column++;
      }
    }
    this.error = "line " + line.toString() + " column " + column.toString() + ": " + message;
  }

  peek(): i32 {
    return this.pos < this.text.length ? this.text.charCodeAt(this.pos) : -1;
  }

  skipSpace(): void {
    while (true) {
      const c = this.peek();
      if (c != 0x20 && c != 0x09 && c != 0x0a && c != 0x0d) return;
      this.pos++;
    }
  }

  expect(c: i32, what: string): bool {
    if (this.peek() != c) {
      this.fail("expected " + what);
      return false;
    }
    this.pos++;
    return true;
  }

  literal(word: string): bool {
    if (this.text.substr(this.pos, word.length) != word) {
      this.fail("expected a value");
      return false;
    }
    this.pos += word.length;
    return true;
  }

  value(depth: i32): JsonValue | null {
    if (depth > MAX_DEPTH) {
      this.fail("nested too deeply");
      return null;
    }
    const out = new JsonValue();
    const c = this.peek();
    if (c == 0x7b) { // {
      out.kind = JsonKind.Object;
      this.pos++;
      this.skipSpace();
      if (this.peek() == 0x7d) { this.pos++; return out; }
      while (true) {
        this.skipSpace();
        if (this.peek() != 0x22) { this.fail("expected a member name in double quotes"); return null; }
        const key = this.string();
        if (key === null) return null;
        this.skipSpace();
        if (!this.expect(0x3a, "':'")) return null;
        this.skipSpace();
        const member = this.value(depth + 1);
        if (member === null) return null;
        out.keys.push(key);
        out.values.push(member);
        this.skipSpace();
        if (this.peek() == 0x2c) { this.pos++; continue; }
        if (!this.expect(0x7d, "',' or '}'")) return null;
        return out;
      }
    }
    if (c == 0x5b) { // [
      out.kind = JsonKind.Array;
      this.pos++;
      this.skipSpace();
      if (this.peek() == 0x5d) { this.pos++; return out; }
      while (true) {
        this.skipSpace();
        const item = this.value(depth + 1);
        if (item === null) return null;
        out.items.push(item);
        this.skipSpace();
        if (this.peek() == 0x2c) { this.pos++; continue; }
        if (!this.expect(0x5d, "',' or ']'")) return null;
        return out;
      }
    }
    if (c == 0x22) {
      const s = this.string();
      if (s === null) return null;
      out.kind = JsonKind.String;
      out.string = s;
      return out;
    }
    if (c == 0x74) { out.kind = JsonKind.Bool; out.bool = true; return this.literal("true") ? out : null; }
    if (c == 0x66) { out.kind = JsonKind.Bool; return this.literal("false") ? out : null; }
    if (c == 0x6e) { return this.literal("null") ? out : null; }
    if (c == 0x2d || (c >= 0x30 && c <= 0x39)) {
      out.kind = JsonKind.Number;
      return this.number(out);
    }
    this.fail(c < 0 ? "unexpected end of input" : "expected a value");
    return null;
  }

  digits(): i32 {
    const start = this.pos;
    while (this.peek() >= 0x30 && this.peek() <= 0x39) this.pos++;
    return this.pos - start;
  }

  number(out: JsonValue): JsonValue | null {
    const start = this.pos;
    if (this.peek() == 0x2d) this.pos++;
    if (this.peek() == 0x30) {
      this.pos++;
    } else if (this.digits() == 0) {
      this.fail("expected a digit");
      return null;
    }
    if (this.peek() == 0x2e) {
      this.pos++;
      if (this.digits() == 0) { this.fail("expected a digit after '.'"); return null; }
    }
    if (this.peek() == 0x65 || this.peek() == 0x45) {
      this.pos++;
      if (this.peek() == 0x2b || this.peek() == 0x2d) this.pos++;
      if (this.digits() == 0) { this.fail("expected a digit in the exponent"); return null; }
    }
    out.number = parseFloat(this.text.substring(start, this.pos));
    return out;
  }

  hex4(): i32 {
    let v = 0;
    for (let i = 0; i < 4; i++) {
      const c = this.peek();
      let d = -1;
      if (c >= 0x30 && c <= 0x39) d = c - 0x30;
      else if (c >= 0x61 && c <= 0x66) d = c - 0x61 + 10;
      else if (c >= 0x41 && c <= 0x46) d = c - 0x41 + 10;
      if (d < 0) { this.fail("expected four hex digits after \\u"); return -1; }
      v = v * 16 + d;
      this.pos++;
    }
    return v;
  }

  /** A string starting at the opening quote. */
  string(): string | null {
    this.pos++;
    const parts = new Array<string>();
    let run = this.pos;
    while (true) {
      const c = this.peek();
      if (c < 0) { this.fail("unterminated string"); return null; }
      if (c < 0x20) { this.fail("control character in a string"); return null; }
      if (c == 0x22) {
        parts.push(this.text.substring(run, this.pos));
        this.pos++;
        return parts.join("");
      }
      if (c != 0x5c) { this.pos++; continue; }
      parts.push(this.text.substring(run, this.pos));
      this.pos++;
      const e = this.peek();
      this.pos++;
      if (e == 0x22) parts.push("\"");
      else if (e == 0x5c) parts.push("\\");
      else if (e == 0x2f) parts.push("/");
      else if (e == 0x62) parts.push("\b");
      else if (e == 0x66) parts.push("\f");
      else if (e == 0x6e) parts.push("\n");
      else if (e == 0x72) parts.push("\r");
      else if (e == 0x74) parts.push("\t");
      else if (e == 0x75) {
        const unit = this.hex4();
        if (unit < 0) return null;
        // UTF-16 code units, surrogate pairs included, are what AssemblyScript strings hold.
        parts.push(String.fromCharCode(unit));
      } else {
        this.pos--;
        this.fail("invalid escape");
        return null;
      }
      run = this.pos;
    }
  }
}
