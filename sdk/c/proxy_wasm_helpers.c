/* proxy_wasm_helpers.c: see proxy_wasm_helpers.h. */

#include "proxy_wasm_helpers.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- What every module exports ---------------------------------------------------------- */

/* The ABI marker the host detects the version by; never called. */
__attribute__((export_name("proxy_abi_version_0_2_1"))) void proxy_abi_version_0_2_1(void) {}

/* The host allocates the buffers it returns here; the filter frees them with free(). */
__attribute__((export_name("proxy_on_memory_allocate"))) void *proxy_on_memory_allocate(size_t size) {
  return malloc(size == 0 ? 1 : size);
}

/* ---- Logging, configuration, headers, local responses ----------------------------------- */

void pw_log(proxy_log_level_t level, const char *format, ...) {
  char line[1024];
  va_list args;
  va_start(args, format);
  int n = vsnprintf(line, sizeof line, format, args);
  va_end(args);
  if (n < 0) return;
  size_t size = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
  proxy_log(level, line, size);
}

/* Copies a host-returned buffer into a NUL-terminated string and frees the original. */
static char *take_string(char *data, size_t size) {
  char *out = malloc(size + 1);
  if (out != NULL) {
    if (size > 0) memcpy(out, data, size);
    out[size] = '\0';
  }
  free(data);
  return out;
}

char *pw_plugin_config(size_t *size) {
  char *data = NULL;
  size_t n = 0;
  proxy_status_t status =
      proxy_get_buffer_bytes(PROXY_BUFFER_PLUGIN_CONFIGURATION, 0, SIZE_MAX, &data, &n);
  if (status != PROXY_RESULT_OK) {
    data = NULL;
    n = 0;
  }
  if (size != NULL) *size = n;
  return take_string(data, n);
}

char *pw_header_get(proxy_map_type_t map, const char *name) {
  char *data = NULL;
  size_t size = 0;
  if (proxy_get_header_map_value(map, name, strlen(name), &data, &size) != PROXY_RESULT_OK) return NULL;
  return take_string(data, size);
}

proxy_status_t pw_header_set(proxy_map_type_t map, const char *name, const char *value) {
  return proxy_replace_header_map_value(map, name, strlen(name), value, strlen(value));
}

proxy_status_t pw_header_add(proxy_map_type_t map, const char *name, const char *value) {
  return proxy_add_header_map_value(map, name, strlen(name), value, strlen(value));
}

proxy_status_t pw_header_remove(proxy_map_type_t map, const char *name) {
  return proxy_remove_header_map_value(map, name, strlen(name));
}

static void put_u32(char *at, uint32_t v) {
  at[0] = (char)(v & 0xff);
  at[1] = (char)((v >> 8) & 0xff);
  at[2] = (char)((v >> 16) & 0xff);
  at[3] = (char)((v >> 24) & 0xff);
}

proxy_status_t pw_send_local_response(uint32_t status, const char *body, const pw_header *headers,
                                      size_t header_count) {
  /* The spec's map encoding: count, (name size, value size) per pair, then name\0value\0. */
  size_t size = 4 + 8 * header_count;
  for (size_t i = 0; i < header_count; i++) {
    size += strlen(headers[i].name) + strlen(headers[i].value) + 2;
  }
  char *pairs = malloc(size);
  if (pairs == NULL) return PROXY_RESULT_INTERNAL_FAILURE;
  put_u32(pairs, (uint32_t)header_count);
  char *data = pairs + 4 + 8 * header_count;
  for (size_t i = 0; i < header_count; i++) {
    size_t name = strlen(headers[i].name);
    size_t value = strlen(headers[i].value);
    put_u32(pairs + 4 + 8 * i, (uint32_t)name);
    put_u32(pairs + 8 + 8 * i, (uint32_t)value);
    memcpy(data, headers[i].name, name + 1);
    data += name + 1;
    memcpy(data, headers[i].value, value + 1);
    data += value + 1;
  }
  const char *content = body == NULL ? "" : body;
  proxy_status_t result = proxy_send_local_response(status, NULL, 0, content, strlen(content), pairs,
                                                    size, -1);
  free(pairs);
  return result;
}

/* ---- JSON --------------------------------------------------------------------------------- */

enum { JSON_MAX_DEPTH = 64 };

typedef struct {
  const char *text;
  size_t size;
  size_t pos;
  char *error;
  size_t error_size;
} json_reader;

static int json_fail(json_reader *r, const char *message) {
  if (r->error != NULL && r->error_size > 0) {
    unsigned line = 1, column = 1;
    for (size_t i = 0; i < r->pos && i < r->size; i++) {
      if (r->text[i] == '\n') {
        line++;
        column = 1;
      } else {
        column++;
      }
    }
    snprintf(r->error, r->error_size, "line %u column %u: %s", line, column, message);
  }
  return -1;
}

static int json_peek(const json_reader *r) {
  return r->pos < r->size ? (unsigned char)r->text[r->pos] : -1;
}

static void json_space(json_reader *r) {
  while (r->pos < r->size) {
    char c = r->text[r->pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return;
    r->pos++;
  }
}

static int json_hex(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Scans a string at the opening quote; with `out`, writes it decoded (UTF-8) there. */
static int json_string(json_reader *r, char *out, size_t *out_size) {
  size_t n = 0;
  r->pos++;
  for (;;) {
    int c = json_peek(r);
    if (c < 0) return json_fail(r, "unterminated string");
    if (c < 0x20) return json_fail(r, "control character in a string");
    r->pos++;
    if (c == '"') break;
    if (c != '\\') {
      if (out) out[n] = (char)c;
      n++;
      continue;
    }
    int e = json_peek(r);
    r->pos++;
    char plain = 0;
    switch (e) {
      case '"': plain = '"'; break;
      case '\\': plain = '\\'; break;
      case '/': plain = '/'; break;
      case 'b': plain = '\b'; break;
      case 'f': plain = '\f'; break;
      case 'n': plain = '\n'; break;
      case 'r': plain = '\r'; break;
      case 't': plain = '\t'; break;
      case 'u': {
        uint32_t cp = 0;
        for (int i = 0; i < 4; i++) {
          int d = json_hex(json_peek(r));
          if (d < 0) return json_fail(r, "expected four hex digits after \\u");
          cp = cp * 16 + (uint32_t)d;
          r->pos++;
        }
        /* A high surrogate followed by \uDC00-\uDFFF is one code point. */
        if (cp >= 0xD800 && cp <= 0xDBFF && r->pos + 6 <= r->size && r->text[r->pos] == '\\' &&
            r->text[r->pos + 1] == 'u') {
          uint32_t low = 0;
          int ok = 1;
          for (int i = 0; i < 4; i++) {
            int d = json_hex((unsigned char)r->text[r->pos + 2 + i]);
            if (d < 0) ok = 0;
            low = low * 16 + (uint32_t)(d < 0 ? 0 : d);
          }
          if (ok && low >= 0xDC00 && low <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            r->pos += 6;
          }
        }
        char utf8[4];
        size_t len;
        if (cp < 0x80) {
          utf8[0] = (char)cp;
          len = 1;
        } else if (cp < 0x800) {
          utf8[0] = (char)(0xC0 | (cp >> 6));
          utf8[1] = (char)(0x80 | (cp & 0x3F));
          len = 2;
        } else if (cp < 0x10000) {
          utf8[0] = (char)(0xE0 | (cp >> 12));
          utf8[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
          utf8[2] = (char)(0x80 | (cp & 0x3F));
          len = 3;
        } else {
          utf8[0] = (char)(0xF0 | (cp >> 18));
          utf8[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
          utf8[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
          utf8[3] = (char)(0x80 | (cp & 0x3F));
          len = 4;
        }
        if (out) memcpy(out + n, utf8, len);
        n += len;
        continue;
      }
      default:
        r->pos--;
        return json_fail(r, "invalid escape");
    }
    if (out) out[n] = plain;
    n++;
  }
  if (out_size) *out_size = n;
  return 0;
}

static int json_digits(json_reader *r) {
  size_t start = r->pos;
  while (json_peek(r) >= '0' && json_peek(r) <= '9') r->pos++;
  return r->pos > start;
}

/* Scans one value, setting its kind. */
static int json_value(json_reader *r, pw_json_kind *kind, int depth) {
  if (depth > JSON_MAX_DEPTH) return json_fail(r, "nested too deeply");
  int c = json_peek(r);
  if (c == '{' || c == '[') {
    int close = c == '{' ? '}' : ']';
    *kind = c == '{' ? PW_JSON_OBJECT : PW_JSON_ARRAY;
    r->pos++;
    json_space(r);
    if (json_peek(r) == close) {
      r->pos++;
      return 0;
    }
    for (;;) {
      json_space(r);
      if (close == '}') {
        if (json_peek(r) != '"') return json_fail(r, "expected a member name in double quotes");
        if (json_string(r, NULL, NULL) != 0) return -1;
        json_space(r);
        if (json_peek(r) != ':') return json_fail(r, "expected ':'");
        r->pos++;
        json_space(r);
      }
      pw_json_kind inner;
      if (json_value(r, &inner, depth + 1) != 0) return -1;
      json_space(r);
      if (json_peek(r) == ',') {
        r->pos++;
        continue;
      }
      if (json_peek(r) != close) return json_fail(r, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
      r->pos++;
      return 0;
    }
  }
  if (c == '"') {
    *kind = PW_JSON_STRING;
    return json_string(r, NULL, NULL);
  }
  static const struct {
    const char *word;
    pw_json_kind kind;
  } literals[] = {{"true", PW_JSON_BOOL}, {"false", PW_JSON_BOOL}, {"null", PW_JSON_NULL}};
  for (size_t i = 0; i < sizeof literals / sizeof literals[0]; i++) {
    size_t len = strlen(literals[i].word);
    if (r->size - r->pos >= len && memcmp(r->text + r->pos, literals[i].word, len) == 0) {
      r->pos += len;
      *kind = literals[i].kind;
      return 0;
    }
  }
  if (c == '-' || (c >= '0' && c <= '9')) {
    *kind = PW_JSON_NUMBER;
    if (c == '-') r->pos++;
    if (json_peek(r) == '0') {
      r->pos++;
    } else if (!json_digits(r)) {
      return json_fail(r, "expected a digit");
    }
    if (json_peek(r) == '.') {
      r->pos++;
      if (!json_digits(r)) return json_fail(r, "expected a digit after '.'");
    }
    if (json_peek(r) == 'e' || json_peek(r) == 'E') {
      r->pos++;
      if (json_peek(r) == '+' || json_peek(r) == '-') r->pos++;
      if (!json_digits(r)) return json_fail(r, "expected a digit in the exponent");
    }
    return 0;
  }
  return json_fail(r, c < 0 ? "unexpected end of input" : "expected a value");
}

int pw_json_object_each(const char *json, size_t size, pw_json_member_fn member, void *context,
                        char *error, size_t error_size) {
  json_reader r = {json, size, 0, error, error_size};
  /* Validate the whole document first, so no member is applied from a broken one. */
  json_space(&r);
  pw_json_kind kind;
  if (json_value(&r, &kind, 0) != 0) return -1;
  json_space(&r);
  if (r.pos < r.size) return json_fail(&r, "trailing characters after the document");
  if (kind != PW_JSON_OBJECT) {
    r.pos = 0;
    return json_fail(&r, "expected an object");
  }
  r.pos = 0;
  json_space(&r);
  r.pos++; /* '{' */
  for (;;) {
    json_space(&r);
    if (json_peek(&r) == '}') return 0;
    size_t key_size = 0;
    size_t key_at = r.pos;
    json_string(&r, NULL, &key_size);
    char *key = malloc(key_size + 1);
    if (key == NULL) return json_fail(&r, "out of memory");
    r.pos = key_at;
    json_string(&r, key, NULL);
    key[key_size] = '\0';
    json_space(&r);
    r.pos++; /* ':' */
    json_space(&r);
    pw_json_value value = {PW_JSON_NULL, r.text + r.pos, 0};
    size_t start = r.pos;
    json_value(&r, &value.kind, 1);
    value.size = r.pos - start;
    int stop = member(key, value, context);
    free(key);
    if (stop != 0) return stop;
    json_space(&r);
    if (json_peek(&r) == ',') r.pos++;
  }
}

char *pw_json_string(pw_json_value value) {
  if (value.kind != PW_JSON_STRING) return NULL;
  json_reader r = {value.text, value.size, 0, NULL, 0};
  size_t size = 0;
  if (json_string(&r, NULL, &size) != 0) return NULL;
  char *out = malloc(size + 1);
  if (out == NULL) return NULL;
  r.pos = 0;
  json_string(&r, out, NULL);
  out[size] = '\0';
  return out;
}

const char *pw_json_kind_name(pw_json_kind kind) {
  switch (kind) {
    case PW_JSON_NULL: return "null";
    case PW_JSON_BOOL: return "a boolean";
    case PW_JSON_NUMBER: return "a number";
    case PW_JSON_STRING: return "a string";
    case PW_JSON_ARRAY: return "an array";
    default: return "an object";
  }
}
