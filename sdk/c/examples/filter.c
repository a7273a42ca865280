/*
 * Example filter in C: sets the request and response headers its configuration names.
 *
 *   {"request": {"x-hello": "world"}, "response": {"x-served-by": "c"}}
 *
 * Both members are optional; anything else — an unknown member, a value that is not a string,
 * text that is not JSON — refuses the configuration with a log line naming the field.
 *
 * One configuration per VM: wasmesh gives each plugin VM replicas of its own.
 */

#include <stdlib.h>
#include <string.h>

#include "proxy_wasm_helpers.h"

enum { MAX_HEADERS = 32 };

typedef struct {
  char *name;
  char *value;
} header_rule;

typedef struct {
  header_rule request[MAX_HEADERS];
  size_t request_count;
  header_rule response[MAX_HEADERS];
  size_t response_count;
} rules;

static rules active;

static void rules_free(rules *r) {
  for (size_t i = 0; i < r->request_count; i++) {
    free(r->request[i].name);
    free(r->request[i].value);
  }
  for (size_t i = 0; i < r->response_count; i++) {
    free(r->response[i].name);
    free(r->response[i].value);
  }
  r->request_count = r->response_count = 0;
}

/* Where member callbacks put what they read, and which field they are in. */
typedef struct {
  const char *field;
  header_rule *list;
  size_t *count;
  rules *into;
} reading;

static int refuse(const char *field, const char *message) {
  pw_log(PROXY_LOG_ERROR, "configuration field `%s`: %s", field, message);
  return 1;
}

static int header_member(const char *name, pw_json_value value, void *context) {
  reading *at = context;
  if (value.kind != PW_JSON_STRING) {
    pw_log(PROXY_LOG_ERROR, "configuration field `%s.%s`: expected a string, found %s", at->field,
           name, pw_json_kind_name(value.kind));
    return 1;
  }
  if (name[0] == '\0') return refuse(at->field, "a header name is empty");
  if (*at->count == MAX_HEADERS) return refuse(at->field, "more than 32 headers");
  char *copy = strdup(name);
  char *text = pw_json_string(value);
  if (copy == NULL || text == NULL) {
    free(copy);
    free(text);
    return refuse(at->field, "out of memory");
  }
  /* Header names travel lowercase. */
  for (char *c = copy; *c; c++) {
    if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
  }
  at->list[*at->count] = (header_rule){copy, text};
  (*at->count)++;
  return 0;
}

static int top_member(const char *key, pw_json_value value, void *context) {
  rules *into = context;
  reading at = {key, NULL, NULL, into};
  if (strcmp(key, "request") == 0) {
    at.list = into->request;
    at.count = &into->request_count;
  } else if (strcmp(key, "response") == 0) {
    at.list = into->response;
    at.count = &into->response_count;
  } else {
    return refuse(key, "unknown field, expected `request` or `response`");
  }
  if (value.kind != PW_JSON_OBJECT) {
    pw_log(PROXY_LOG_ERROR,
           "configuration field `%s`: expected an object of header names to values, found %s", key,
           pw_json_kind_name(value.kind));
    return 1;
  }
  char error[160];
  int result = pw_json_object_each(value.text, value.size, header_member, &at, error, sizeof error);
  return result < 0 ? refuse(key, error) : result;
}

uint32_t proxy_on_configure(uint32_t root_context_id, uint32_t plugin_configuration_size) {
  (void)root_context_id;
  (void)plugin_configuration_size;
  size_t size = 0;
  char *config = pw_plugin_config(&size);
  if (config == NULL) return 0;
  /* No configuration reads as {}. */
  size_t start = strspn(config, " \t\r\n");
  rules next = {0};
  int result = 0;
  if (start < size) {
    char error[160];
    result = pw_json_object_each(config, size, top_member, &next, error, sizeof error);
    if (result < 0) pw_log(PROXY_LOG_ERROR, "configuration: %s", error);
  }
  free(config);
  if (result != 0) {
    rules_free(&next);
    return 0;
  }
  rules_free(&active);
  active = next;
  return 1;
}

proxy_action_t proxy_on_request_headers(uint32_t context_id, uint32_t num_headers,
                                        uint32_t end_of_stream) {
  (void)context_id;
  (void)num_headers;
  (void)end_of_stream;
  for (size_t i = 0; i < active.request_count; i++) {
    pw_header_set(PROXY_MAP_HTTP_REQUEST_HEADERS, active.request[i].name, active.request[i].value);
  }
  return PROXY_ACTION_CONTINUE;
}

proxy_action_t proxy_on_response_headers(uint32_t context_id, uint32_t num_headers,
                                         uint32_t end_of_stream) {
  (void)context_id;
  (void)num_headers;
  (void)end_of_stream;
  for (size_t i = 0; i < active.response_count; i++) {
    pw_header_set(PROXY_MAP_HTTP_RESPONSE_HEADERS, active.response[i].name, active.response[i].value);
  }
  return PROXY_ACTION_CONTINUE;
}
