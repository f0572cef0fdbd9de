;; The core module of tests/guests/lookup (world in wit/world.wit): resolves
;; `only-in-container.test` through wasi:sockets/ip-name-lookup and exits 0
;; when one of its addresses is 10.1.2.77, 1 otherwise.
;;
;; Canonical ABI layouts used: result<resolve-address-stream, error-code> at 0
;; (tag u8, payload at 4); result<option<ip-address>, error-code> at 16 (tag
;; u8; error-code or option tag at 18; ip-address tag at 20, ipv4 octets at 22).
(module
  (import "wasi:sockets/instance-network@0.2.12" "instance-network" (func $instance_network (result i32)))
  (import "wasi:sockets/ip-name-lookup@0.2.12" "resolve-addresses" (func $resolve (param i32 i32 i32 i32)))
  (import "wasi:sockets/ip-name-lookup@0.2.12" "[method]resolve-address-stream.resolve-next-address" (func $next (param i32 i32)))
  (import "wasi:sockets/ip-name-lookup@0.2.12" "[method]resolve-address-stream.subscribe" (func $subscribe (param i32) (result i32)))
  (import "wasi:io/poll@0.2.12" "[method]pollable.block" (func $block (param i32)))
  (import "wasi:io/poll@0.2.12" "[resource-drop]pollable" (func $drop_pollable (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 256) "only-in-container.test")
  (func (export "wasi:cli/run@0.2.12#run") (result i32)
    (local $stream i32) (local $pollable i32)
    (call $resolve (call $instance_network) (i32.const 256) (i32.const 22) (i32.const 0))
    (if (i32.load8_u (i32.const 0)) (then (return (i32.const 1))))
    (local.set $stream (i32.load (i32.const 4)))
    (loop $again
      (call $next (local.get $stream) (i32.const 16))
      (if (i32.load8_u (i32.const 16))
        (then
          ;; An error: would-block (8) means wait for the lookup; any other fails.
          (if (i32.ne (i32.load8_u (i32.const 18)) (i32.const 8))
            (then (return (i32.const 1))))
          (local.set $pollable (call $subscribe (local.get $stream)))
          (call $block (local.get $pollable))
          (call $drop_pollable (local.get $pollable))
          (br $again)))
      ;; ok(none): no address left.
      (if (i32.eqz (i32.load8_u (i32.const 18))) (then (return (i32.const 1))))
      ;; ok(some(ipv4(10, 1, 2, 77))), the octets read as one little-endian word.
      (if (i32.and
            (i32.eqz (i32.load8_u (i32.const 20)))
            (i32.eq (i32.load (i32.const 22)) (i32.const 0x4d02010a)))
        (then (return (i32.const 0))))
      (br $again))
    (i32.const 1)))
