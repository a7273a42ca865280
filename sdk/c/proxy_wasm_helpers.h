/*
 * proxy_wasm_helpers.h: a thin layer over proxy_wasm.h for the calls every filter makes —
 * logging, reading the plugin configuration (and walking a JSON object in it), header
 * get/set/add/remove, and local responses. Strings are NUL-terminated; what a helper
 * returns as `char *` was malloc'd and is the caller's to free().
 *
 * proxy_wasm_helpers.c also defines the ABI marker and the allocator export the host needs,
 * so it must be linked into every filter.
 */
#ifndef PROXY_WASM_HELPERS_H
#define PROXY_WASM_HELPERS_H

#include <stdbool.h>
#include <stddef.h>

#include "proxy_wasm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* printf-style logging through proxy_log (lines longer than 1 KiB are cut). */
void pw_log(proxy_log_level_t level, const char *format, ...) __attribute__((format(printf, 2, 3)));

/* The plugin configuration (in proxy_on_configure), NUL-terminated, with its size in *size;
 * an empty string when there is none. NULL only when out of memory. */
char *pw_plugin_config(size_t *size);

/* The first value of header `name` (lowercase) in `map`, or NULL when absent. */
char *pw_header_get(proxy_map_type_t map, const char *name);
/* Replaces every value of `name` with `value` (adds it when absent). */
proxy_status_t pw_header_set(proxy_map_type_t map, const char *name, const char *value);
/* Adds a value of `name` after those it has. */
proxy_status_t pw_header_add(proxy_map_type_t map, const char *name, const char *value);
/* Removes every value of `name`. */
proxy_status_t pw_header_remove(proxy_map_type_t map, const char *name);

typedef struct {
  const char *name;
  const char *value;
} pw_header;

/* Answers the current request locally; the callback then returns PROXY_ACTION_PAUSE. */
proxy_status_t pw_send_local_response(uint32_t status, const char *body, const pw_header *headers,
                                      size_t header_count);

/* ---- A minimal JSON reader, for configuration ------------------------------------------- */

typedef enum {
  PW_JSON_NULL,
  PW_JSON_BOOL,
  PW_JSON_NUMBER,
  PW_JSON_STRING,
  PW_JSON_ARRAY,
  PW_JSON_OBJECT,
} pw_json_kind;

/* One value: its kind and its text in the document (validated). */
typedef struct {
  pw_json_kind kind;
  const char *text;
  size_t size;
} pw_json_value;

/* Called per member, in order, with the decoded key; a non-zero answer stops the walk. */
typedef int (*pw_json_member_fn)(const char *key, pw_json_value value, void *context);

/* Walks the members of the JSON object `json` (the whole document, RFC 8259, validated).
 * Returns 0 after the last member, a member callback's non-zero answer, or -1 with a message
 * ("line 1 column 9: expected ':'") written to `error`. */
int pw_json_object_each(const char *json, size_t size, pw_json_member_fn member, void *context,
                        char *error, size_t error_size);

/* A string value, unescaped, or NULL if `value` is not a string (or out of memory). */
char *pw_json_string(pw_json_value value);

/* "a string", "an object", … for error messages. */
const char *pw_json_kind_name(pw_json_kind kind);

#ifdef __cplusplus
}
#endif

#endif /* PROXY_WASM_HELPERS_H */
