// The host functions of proxy-wasm ABI 0.2.1, imported from module `env`, exactly as the
// specification declares them (every one answers a `Status`). The compiler imports only
// those a filter's code reaches, so a small filter imports little.
//
// Pointers and sizes are 32-bit; out-parameters (`*_out`) are addresses the host writes to.

// @ts-ignore: decorator
@external("env", "proxy_log")
export declare function proxy_log(level: u32, message: usize, size: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_get_log_level")
export declare function proxy_get_log_level(level_out: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_get_current_time_nanoseconds")
export declare function proxy_get_current_time_nanoseconds(time_out: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_set_tick_period_milliseconds")
export declare function proxy_set_tick_period_milliseconds(period: u32): u32;

// @ts-ignore: decorator
@external("env", "proxy_set_effective_context")
export declare function proxy_set_effective_context(context_id: u32): u32;

// @ts-ignore: decorator
@external("env", "proxy_done")
export declare function proxy_done(): u32;

// @ts-ignore: decorator
@external("env", "proxy_get_buffer_bytes")
export declare function proxy_get_buffer_bytes(
  buffer_type: u32, start: usize, max_size: usize, ptr_out: usize, size_out: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_set_buffer_bytes")
export declare function proxy_set_buffer_bytes(
  buffer_type: u32, start: usize, size: usize, value: usize, value_size: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_get_buffer_status")
export declare function proxy_get_buffer_status(
  buffer_type: u32, length_out: usize, flags_out: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_get_header_map_pairs")
export declare function proxy_get_header_map_pairs(map_type: u32, ptr_out: usize, size_out: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_set_header_map_pairs")
export declare function proxy_set_header_map_pairs(map_type: u32, pairs: usize, size: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_get_header_map_value")
export declare function proxy_get_header_map_value(
  map_type: u32, key: usize, key_size: usize, ptr_out: usize, size_out: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_add_header_map_value")
export declare function proxy_add_header_map_value(
  map_type: u32, key: usize, key_size: usize, value: usize, value_size: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_replace_header_map_value")
export declare function proxy_replace_header_map_value(
  map_type: u32, key: usize, key_size: usize, value: usize, value_size: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_remove_header_map_value")
export declare function proxy_remove_header_map_value(map_type: u32, key: usize, key_size: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_continue_stream")
export declare function proxy_continue_stream(stream_type: u32): u32;

// @ts-ignore: decorator
@external("env", "proxy_close_stream")
export declare function proxy_close_stream(stream_type: u32): u32;

// @ts-ignore: decorator
@external("env", "proxy_send_local_response")
export declare function proxy_send_local_response(
  status_code: u32, details: usize, details_size: usize, body: usize, body_size: usize,
  headers: usize, headers_size: usize, grpc_status: i32): u32;

// @ts-ignore: decorator
@external("env", "proxy_http_call")
export declare function proxy_http_call(
  upstream: usize, upstream_size: usize, headers: usize, headers_size: usize,
  body: usize, body_size: usize, trailers: usize, trailers_size: usize,
  timeout_ms: u32, token_out: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_get_status")
export declare function proxy_get_status(code_out: usize, ptr_out: usize, size_out: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_get_property")
export declare function proxy_get_property(path: usize, path_size: usize, ptr_out: usize, size_out: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_set_property")
export declare function proxy_set_property(path: usize, path_size: usize, value: usize, value_size: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_define_metric")
export declare function proxy_define_metric(metric_type: u32, name: usize, name_size: usize, id_out: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_increment_metric")
export declare function proxy_increment_metric(metric_id: u32, delta: i64): u32;

// @ts-ignore: decorator
@external("env", "proxy_record_metric")
export declare function proxy_record_metric(metric_id: u32, value: u64): u32;

// @ts-ignore: decorator
@external("env", "proxy_get_metric")
export declare function proxy_get_metric(metric_id: u32, value_out: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_get_shared_data")
export declare function proxy_get_shared_data(
  key: usize, key_size: usize, ptr_out: usize, size_out: usize, cas_out: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_set_shared_data")
export declare function proxy_set_shared_data(
  key: usize, key_size: usize, value: usize, value_size: usize, cas: u32): u32;

// @ts-ignore: decorator
@external("env", "proxy_register_shared_queue")
export declare function proxy_register_shared_queue(name: usize, name_size: usize, id_out: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_resolve_shared_queue")
export declare function proxy_resolve_shared_queue(
  vm_id: usize, vm_id_size: usize, name: usize, name_size: usize, id_out: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_enqueue_shared_queue")
export declare function proxy_enqueue_shared_queue(queue_id: u32, value: usize, value_size: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_dequeue_shared_queue")
export declare function proxy_dequeue_shared_queue(queue_id: u32, ptr_out: usize, size_out: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_grpc_call")
export declare function proxy_grpc_call(
  upstream: usize, upstream_size: usize, service: usize, service_size: usize,
  method: usize, method_size: usize, metadata: usize, metadata_size: usize,
  message: usize, message_size: usize, timeout_ms: u32, token_out: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_grpc_stream")
export declare function proxy_grpc_stream(
  upstream: usize, upstream_size: usize, service: usize, service_size: usize,
  method: usize, method_size: usize, metadata: usize, metadata_size: usize, token_out: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_grpc_send")
export declare function proxy_grpc_send(token: u32, message: usize, message_size: usize, end_stream: u32): u32;

// @ts-ignore: decorator
@external("env", "proxy_grpc_cancel")
export declare function proxy_grpc_cancel(token: u32): u32;

// @ts-ignore: decorator
@external("env", "proxy_grpc_close")
export declare function proxy_grpc_close(token: u32): u32;

// @ts-ignore: decorator
@external("env", "proxy_call_foreign_function")
export declare function proxy_call_foreign_function(
  name: usize, name_size: usize, args: usize, args_size: usize, ptr_out: usize, size_out: usize): u32;
