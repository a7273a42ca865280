;; Integration probe: a WASI reactor declaring ABI v0.2.0, exporting `_initialize` and `main`
;; and both allocators. Observes which start functions ran, in what order
;; (`integration.reactor_start`: 2 = `_initialize` then `main`), and which allocator the host used
;; (`integration.reactor_allocator`: 1 = `proxy_on_memory_allocate`, 2 = `malloc`, 3 = both).
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  ;; 0 before any start function, 1 after the start function, 2 after main followed it,
  ;; 3 if main ran without it.
  (global $start (mut i32) (i32.const 0))
  ;; Which allocator the host called: 1 proxy_on_memory_allocate, 2 malloc, 3 both.
  (global $alloc (mut i32) (i32.const 0))
  (global $heap (mut i32) (i32.const 8192))
  (data (i32.const 1024) "observed integration.reactor_start 0")
  (data (i32.const 2048) "observed integration.reactor_allocator 0")
  (func (export "proxy_abi_version_0_2_0"))
  (func (export "_initialize") (global.set $start (i32.const 1)))
  (func (export "main") (param i32 i32) (result i32)
    (global.set $start
      (select (i32.const 2) (i32.const 3) (i32.eq (global.get $start) (i32.const 1))))
    (i32.const 0))
  (func $bump (param $size i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap)
      (i32.and (i32.add (local.get $size) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (global.set $alloc (i32.or (global.get $alloc) (i32.const 1)))
    (call $bump (local.get $size)))
  (func (export "malloc") (param $size i32) (result i32)
    (global.set $alloc (i32.or (global.get $alloc) (i32.const 2)))
    (call $bump (local.get $size)))
  ;; Logs the message at `ptr` with its last byte replaced by the digit.
  (func $log_digit (param $ptr i32) (param $len i32) (param $digit i32)
    (i32.store8 (i32.sub (i32.add (local.get $ptr) (local.get $len)) (i32.const 1))
      (i32.add (i32.const 48) (local.get $digit)))
    (drop (call $log (i32.const 2) (local.get $ptr) (local.get $len))))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (call $log_digit (i32.const 1024) (i32.const 36) (global.get $start))
    (i32.const 1))
  ;; Reading the (non-empty) plugin configuration makes the host allocate in the module.
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $get_buffer (i32.const 7) (i32.const 0) (i32.const 100) (i32.const 512) (i32.const 516)))
    (call $log_digit (i32.const 2048) (i32.const 40) (global.get $alloc))
    (i32.const 1)))
