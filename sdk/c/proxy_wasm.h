/*
 * proxy_wasm.h: the proxy-wasm ABI 0.2.1 for C (and Zig, through @cImport).
 *
 * Declares the host functions a filter imports (module "env") and the callbacks a filter may
 * export, with the specification's types and numbering. A filter defines the callbacks it
 * needs under these names; the declarations here carry the `export_name` attribute, so a
 * definition is exported without more ceremony. proxy_wasm_helpers.c defines the ABI marker
 * (`proxy_abi_version_0_2_1`) and the allocator (`proxy_on_memory_allocate`).
 *
 * Memory: buffers the host returns (`*_out` pointers) were allocated in the module through
 * `proxy_on_memory_allocate` (malloc); the filter owns them and frees them with free().
 * Pointers and sizes are 32-bit on wasm32.
 *
 * Build as a WASI reactor:
 *   zig cc -target wasm32-wasi -mexec-model=reactor -Os filter.c proxy_wasm_helpers.c -o filter.wasm
 */
#ifndef PROXY_WASM_H
#define PROXY_WASM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Enumerations (spec "Types") ------------------------------------------------------- */

typedef enum {
  PROXY_RESULT_OK = 0,
  PROXY_RESULT_NOT_FOUND = 1,
  PROXY_RESULT_BAD_ARGUMENT = 2,
  PROXY_RESULT_SERIALIZATION_FAILURE = 3,
  PROXY_RESULT_PARSE_FAILURE = 4,
  PROXY_RESULT_INVALID_MEMORY_ACCESS = 6,
  PROXY_RESULT_EMPTY = 7,
  PROXY_RESULT_CAS_MISMATCH = 8,
  PROXY_RESULT_INTERNAL_FAILURE = 10,
  PROXY_RESULT_UNIMPLEMENTED = 12,
} proxy_status_t;

typedef enum {
  PROXY_ACTION_CONTINUE = 0,
  PROXY_ACTION_PAUSE = 1,
} proxy_action_t;

typedef enum {
  PROXY_LOG_TRACE = 0,
  PROXY_LOG_DEBUG = 1,
  PROXY_LOG_INFO = 2,
  PROXY_LOG_WARN = 3,
  PROXY_LOG_ERROR = 4,
  PROXY_LOG_CRITICAL = 5,
} proxy_log_level_t;

typedef enum {
  PROXY_BUFFER_HTTP_REQUEST_BODY = 0,
  PROXY_BUFFER_HTTP_RESPONSE_BODY = 1,
  PROXY_BUFFER_DOWNSTREAM_DATA = 2,
  PROXY_BUFFER_UPSTREAM_DATA = 3,
  PROXY_BUFFER_HTTP_CALL_RESPONSE_BODY = 4,
  PROXY_BUFFER_GRPC_CALL_MESSAGE = 5,
  PROXY_BUFFER_VM_CONFIGURATION = 6,
  PROXY_BUFFER_PLUGIN_CONFIGURATION = 7,
  PROXY_BUFFER_FOREIGN_FUNCTION_ARGUMENTS = 8,
} proxy_buffer_type_t;

typedef enum {
  PROXY_MAP_HTTP_REQUEST_HEADERS = 0,
  PROXY_MAP_HTTP_REQUEST_TRAILERS = 1,
  PROXY_MAP_HTTP_RESPONSE_HEADERS = 2,
  PROXY_MAP_HTTP_RESPONSE_TRAILERS = 3,
  PROXY_MAP_GRPC_CALL_INITIAL_METADATA = 4,
  PROXY_MAP_GRPC_CALL_TRAILING_METADATA = 5,
  PROXY_MAP_HTTP_CALL_RESPONSE_HEADERS = 6,
  PROXY_MAP_HTTP_CALL_RESPONSE_TRAILERS = 7,
} proxy_map_type_t;

typedef enum {
  PROXY_STREAM_HTTP_REQUEST = 0,
  PROXY_STREAM_HTTP_RESPONSE = 1,
  PROXY_STREAM_DOWNSTREAM = 2,
  PROXY_STREAM_UPSTREAM = 3,
} proxy_stream_type_t;

typedef enum {
  PROXY_METRIC_COUNTER = 0,
  PROXY_METRIC_GAUGE = 1,
  PROXY_METRIC_HISTOGRAM = 2,
} proxy_metric_type_t;

typedef enum {
  PROXY_PEER_UNKNOWN = 0,
  PROXY_PEER_LOCAL = 1,
  PROXY_PEER_REMOTE = 2,
} proxy_peer_type_t;

/* ---- Host functions (imports from "env") ------------------------------------------------ */

#define PROXY_WASM_IMPORT(name) __attribute__((import_module("env"), import_name(#name)))

PROXY_WASM_IMPORT(proxy_log)
proxy_status_t proxy_log(proxy_log_level_t level, const char *message, size_t message_size);
PROXY_WASM_IMPORT(proxy_get_log_level)
proxy_status_t proxy_get_log_level(proxy_log_level_t *level_out);
PROXY_WASM_IMPORT(proxy_get_current_time_nanoseconds)
proxy_status_t proxy_get_current_time_nanoseconds(uint64_t *time_out);
PROXY_WASM_IMPORT(proxy_set_tick_period_milliseconds)
proxy_status_t proxy_set_tick_period_milliseconds(uint32_t period);
PROXY_WASM_IMPORT(proxy_set_effective_context)
proxy_status_t proxy_set_effective_context(uint32_t context_id);
PROXY_WASM_IMPORT(proxy_done)
proxy_status_t proxy_done(void);

PROXY_WASM_IMPORT(proxy_get_buffer_bytes)
proxy_status_t proxy_get_buffer_bytes(proxy_buffer_type_t buffer_type, size_t start, size_t max_size,
                                      char **ptr_out, size_t *size_out);
PROXY_WASM_IMPORT(proxy_set_buffer_bytes)
proxy_status_t proxy_set_buffer_bytes(proxy_buffer_type_t buffer_type, size_t start, size_t size,
                                      const char *value, size_t value_size);
PROXY_WASM_IMPORT(proxy_get_buffer_status)
proxy_status_t proxy_get_buffer_status(proxy_buffer_type_t buffer_type, size_t *length_out,
                                       uint32_t *flags_out);

PROXY_WASM_IMPORT(proxy_get_header_map_pairs)
proxy_status_t proxy_get_header_map_pairs(proxy_map_type_t map_type, char **ptr_out, size_t *size_out);
PROXY_WASM_IMPORT(proxy_set_header_map_pairs)
proxy_status_t proxy_set_header_map_pairs(proxy_map_type_t map_type, const char *pairs, size_t size);
PROXY_WASM_IMPORT(proxy_get_header_map_value)
proxy_status_t proxy_get_header_map_value(proxy_map_type_t map_type, const char *key, size_t key_size,
                                          char **ptr_out, size_t *size_out);
PROXY_WASM_IMPORT(proxy_add_header_map_value)
proxy_status_t proxy_add_header_map_value(proxy_map_type_t map_type, const char *key, size_t key_size,
                                          const char *value, size_t value_size);
PROXY_WASM_IMPORT(proxy_replace_header_map_value)
proxy_status_t proxy_replace_header_map_value(proxy_map_type_t map_type, const char *key, size_t key_size,
                                              const char *value, size_t value_size);
PROXY_WASM_IMPORT(proxy_remove_header_map_value)
proxy_status_t proxy_remove_header_map_value(proxy_map_type_t map_type, const char *key, size_t key_size);

PROXY_WASM_IMPORT(proxy_continue_stream)
proxy_status_t proxy_continue_stream(proxy_stream_type_t stream_type);
PROXY_WASM_IMPORT(proxy_close_stream)
proxy_status_t proxy_close_stream(proxy_stream_type_t stream_type);
PROXY_WASM_IMPORT(proxy_send_local_response)
proxy_status_t proxy_send_local_response(uint32_t status_code, const char *details, size_t details_size,
                                         const char *body, size_t body_size, const char *headers,
                                         size_t headers_size, int32_t grpc_status);

PROXY_WASM_IMPORT(proxy_http_call)
proxy_status_t proxy_http_call(const char *upstream, size_t upstream_size, const char *headers,
                               size_t headers_size, const char *body, size_t body_size,
                               const char *trailers, size_t trailers_size, uint32_t timeout_ms,
                               uint32_t *token_out);
PROXY_WASM_IMPORT(proxy_get_status)
proxy_status_t proxy_get_status(uint32_t *code_out, char **message_out, size_t *message_size_out);

PROXY_WASM_IMPORT(proxy_grpc_call)
proxy_status_t proxy_grpc_call(const char *upstream, size_t upstream_size, const char *service,
                               size_t service_size, const char *method, size_t method_size,
                               const char *metadata, size_t metadata_size, const char *message,
                               size_t message_size, uint32_t timeout_ms, uint32_t *token_out);
PROXY_WASM_IMPORT(proxy_grpc_stream)
proxy_status_t proxy_grpc_stream(const char *upstream, size_t upstream_size, const char *service,
                                 size_t service_size, const char *method, size_t method_size,
                                 const char *metadata, size_t metadata_size, uint32_t *token_out);
PROXY_WASM_IMPORT(proxy_grpc_send)
proxy_status_t proxy_grpc_send(uint32_t token, const char *message, size_t message_size, uint32_t end_stream);
PROXY_WASM_IMPORT(proxy_grpc_cancel)
proxy_status_t proxy_grpc_cancel(uint32_t token);
PROXY_WASM_IMPORT(proxy_grpc_close)
proxy_status_t proxy_grpc_close(uint32_t token);

PROXY_WASM_IMPORT(proxy_get_shared_data)
proxy_status_t proxy_get_shared_data(const char *key, size_t key_size, char **value_out,
                                     size_t *value_size_out, uint32_t *cas_out);
PROXY_WASM_IMPORT(proxy_set_shared_data)
proxy_status_t proxy_set_shared_data(const char *key, size_t key_size, const char *value,
                                     size_t value_size, uint32_t cas);
PROXY_WASM_IMPORT(proxy_register_shared_queue)
proxy_status_t proxy_register_shared_queue(const char *name, size_t name_size, uint32_t *queue_id_out);
PROXY_WASM_IMPORT(proxy_resolve_shared_queue)
proxy_status_t proxy_resolve_shared_queue(const char *vm_id, size_t vm_id_size, const char *name,
                                          size_t name_size, uint32_t *queue_id_out);
PROXY_WASM_IMPORT(proxy_enqueue_shared_queue)
proxy_status_t proxy_enqueue_shared_queue(uint32_t queue_id, const char *value, size_t value_size);
PROXY_WASM_IMPORT(proxy_dequeue_shared_queue)
proxy_status_t proxy_dequeue_shared_queue(uint32_t queue_id, char **value_out, size_t *value_size_out);

PROXY_WASM_IMPORT(proxy_define_metric)
proxy_status_t proxy_define_metric(proxy_metric_type_t metric_type, const char *name, size_t name_size,
                                   uint32_t *metric_id_out);
PROXY_WASM_IMPORT(proxy_increment_metric)
proxy_status_t proxy_increment_metric(uint32_t metric_id, int64_t offset);
PROXY_WASM_IMPORT(proxy_record_metric)
proxy_status_t proxy_record_metric(uint32_t metric_id, uint64_t value);
PROXY_WASM_IMPORT(proxy_get_metric)
proxy_status_t proxy_get_metric(uint32_t metric_id, uint64_t *value_out);

PROXY_WASM_IMPORT(proxy_get_property)
proxy_status_t proxy_get_property(const char *path, size_t path_size, char **value_out, size_t *value_size_out);
PROXY_WASM_IMPORT(proxy_set_property)
proxy_status_t proxy_set_property(const char *path, size_t path_size, const char *value, size_t value_size);

PROXY_WASM_IMPORT(proxy_call_foreign_function)
proxy_status_t proxy_call_foreign_function(const char *name, size_t name_size, const char *arguments,
                                           size_t arguments_size, char **results_out,
                                           size_t *results_size_out);

/* ---- Callbacks (exports) ---------------------------------------------------------------- *
 * All optional: define those the filter needs. Booleans are 0/1 as uint32_t.
 * Zig filters export their own (`export fn`) and define PROXY_WASM_NO_CALLBACKS before the
 * @cInclude so these declarations do not clash with them. */

#ifndef PROXY_WASM_NO_CALLBACKS
#define PROXY_WASM_EXPORT(name) __attribute__((export_name(#name)))

PROXY_WASM_EXPORT(proxy_on_context_create)
void proxy_on_context_create(uint32_t context_id, uint32_t parent_context_id);
PROXY_WASM_EXPORT(proxy_on_vm_start)
uint32_t proxy_on_vm_start(uint32_t root_context_id, uint32_t vm_configuration_size);
PROXY_WASM_EXPORT(proxy_on_configure)
uint32_t proxy_on_configure(uint32_t root_context_id, uint32_t plugin_configuration_size);
PROXY_WASM_EXPORT(proxy_on_tick)
void proxy_on_tick(uint32_t root_context_id);
PROXY_WASM_EXPORT(proxy_on_queue_ready)
void proxy_on_queue_ready(uint32_t root_context_id, uint32_t queue_id);
PROXY_WASM_EXPORT(proxy_on_request_headers)
proxy_action_t proxy_on_request_headers(uint32_t context_id, uint32_t num_headers, uint32_t end_of_stream);
PROXY_WASM_EXPORT(proxy_on_request_body)
proxy_action_t proxy_on_request_body(uint32_t context_id, uint32_t body_size, uint32_t end_of_stream);
PROXY_WASM_EXPORT(proxy_on_request_trailers)
proxy_action_t proxy_on_request_trailers(uint32_t context_id, uint32_t num_trailers);
PROXY_WASM_EXPORT(proxy_on_response_headers)
proxy_action_t proxy_on_response_headers(uint32_t context_id, uint32_t num_headers, uint32_t end_of_stream);
PROXY_WASM_EXPORT(proxy_on_response_body)
proxy_action_t proxy_on_response_body(uint32_t context_id, uint32_t body_size, uint32_t end_of_stream);
PROXY_WASM_EXPORT(proxy_on_response_trailers)
proxy_action_t proxy_on_response_trailers(uint32_t context_id, uint32_t num_trailers);
PROXY_WASM_EXPORT(proxy_on_http_call_response)
void proxy_on_http_call_response(uint32_t root_context_id, uint32_t token, uint32_t num_headers,
                                 uint32_t body_size, uint32_t num_trailers);
PROXY_WASM_EXPORT(proxy_on_done)
uint32_t proxy_on_done(uint32_t context_id);
PROXY_WASM_EXPORT(proxy_on_log)
void proxy_on_log(uint32_t context_id);
PROXY_WASM_EXPORT(proxy_on_delete)
void proxy_on_delete(uint32_t context_id);
#endif

#ifdef __cplusplus
}
#endif

#endif /* PROXY_WASM_H */
