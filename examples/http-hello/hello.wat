;; A wasi:http handler written by hand in WAT: the core module of a component
;; whose world is wit/world.wit. `wit-component` (see
;; tests/src/lib.rs `guests::http_hello`) wraps it into the component.
;;
;; GET /PATH answers `hello from wasm at /PATH` and prints the path on stdout;
;; /slow answers after 2 seconds (a request in flight during shutdown),
;; /hang after 60 (one that outlasts a grace period);
;; /trap traps (the server answers 500 and counts a failure);
;; /grow takes 16 MiB more memory, writes all of it and holds it for a
;; second before it answers (under a memory limit, the requests that do
;; not fit trap and get 500 while the others are served).
(module
  (import "wasi:http/types@0.2.12" "[constructor]fields" (func $fields_new (result i32)))
  (import "wasi:http/types@0.2.12" "[constructor]outgoing-response" (func $response_new (param i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-response.body" (func $response_body (param i32 i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-body.write" (func $body_write (param i32 i32)))
  (import "wasi:http/types@0.2.12" "[static]outgoing-body.finish" (func $body_finish (param i32 i32 i32 i32)))
  (import "wasi:http/types@0.2.12" "[static]response-outparam.set" (func $outparam_set (param i32 i32 i32 i32 i64 i32 i32 i32 i32)))
  (import "wasi:http/types@0.2.12" "[method]incoming-request.path-with-query" (func $request_path (param i32 i32)))
  (import "wasi:http/types@0.2.12" "[resource-drop]incoming-request" (func $request_drop (param i32)))
  (import "wasi:io/streams@0.2.12" "[method]output-stream.blocking-write-and-flush" (func $write (param i32 i32 i32 i32)))
  (import "wasi:io/streams@0.2.12" "[resource-drop]output-stream" (func $stream_drop (param i32)))
  (import "wasi:cli/stdout@0.2.12" "get-stdout" (func $get_stdout (result i32)))
  (import "wasi:clocks/monotonic-clock@0.2.12" "subscribe-duration" (func $sleep_for (param i64) (result i32)))
  (import "wasi:io/poll@0.2.12" "[method]pollable.block" (func $block (param i32)))
  (import "wasi:io/poll@0.2.12" "[resource-drop]pollable" (func $pollable_drop (param i32)))

  ;; 0..1023: static data and return areas; 4096..: the bump heap for
  ;; strings the host hands in (a fresh instance per request, never freed).
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 16) "hello from wasm at ")
  (data (i32.const 48) "\n")
  (data (i32.const 64) "/slow")
  (data (i32.const 80) "/trap")
  (data (i32.const 96) "/hang")
  (data (i32.const 112) "/grow")

  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
    (local $p i32)
    (local.set $p
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then unreachable))
    (local.get $p))

  (func $write_all (param $stream i32) (param $ptr i32) (param $len i32)
    (call $write (local.get $stream) (local.get $ptr) (local.get $len) (i32.const 512)))

  ;; Whether the LEN bytes at PTR are the 5 bytes at LIT.
  (func $is (param $ptr i32) (param $len i32) (param $lit i32) (result i32)
    (i32.and
      (i32.eq (local.get $len) (i32.const 5))
      (i32.and
        (i32.eq (i32.load (local.get $ptr)) (i32.load (local.get $lit)))
        (i32.eq (i32.load8_u offset=4 (local.get $ptr)) (i32.load8_u offset=4 (local.get $lit))))))

  (func $sleep (param $nanos i64)
    (local $pollable i32)
    (local.set $pollable (call $sleep_for (local.get $nanos)))
    (call $block (local.get $pollable))
    (call $pollable_drop (local.get $pollable)))

  ;; PAGES more pages of memory, every byte written; a trap when refused.
  (func $grow_and_fill (param $pages i32)
    (local $old i32)
    (local.set $old (memory.grow (local.get $pages)))
    (if (i32.eq (local.get $old) (i32.const -1))
      (then unreachable))
    (memory.fill
      (i32.mul (local.get $old) (i32.const 65536))
      (i32.const 1)
      (i32.mul (local.get $pages) (i32.const 65536))))

  (func (export "wasi:http/incoming-handler@0.2.12#handle") (param $request i32) (param $outparam i32)
    (local $path i32) (local $len i32) (local $response i32) (local $body i32)
    (local $stream i32) (local $stdout i32)
    ;; option<string> at 528: tag, pointer, length.
    (call $request_path (local.get $request) (i32.const 528))
    (if (i32.load8_u (i32.const 528))
      (then
        (local.set $path (i32.load (i32.const 532)))
        (local.set $len (i32.load (i32.const 536)))))
    (call $request_drop (local.get $request))

    (local.set $stdout (call $get_stdout))
    (call $write_all (local.get $stdout) (local.get $path) (local.get $len))
    (call $write_all (local.get $stdout) (i32.const 48) (i32.const 1))
    (call $stream_drop (local.get $stdout))

    (if (call $is (local.get $path) (local.get $len) (i32.const 80))
      (then unreachable))
    (if (call $is (local.get $path) (local.get $len) (i32.const 64))
      (then (call $sleep (i64.const 2000000000))))
    (if (call $is (local.get $path) (local.get $len) (i32.const 96))
      (then (call $sleep (i64.const 60000000000))))
    (if (call $is (local.get $path) (local.get $len) (i32.const 112))
      (then
        (call $grow_and_fill (i32.const 256))
        (call $sleep (i64.const 1000000000))))

    ;; result<outgoing-body> / result<output-stream> at 560: tag, handle.
    (local.set $response (call $response_new (call $fields_new)))
    (call $response_body (local.get $response) (i32.const 560))
    (local.set $body (i32.load (i32.const 564)))
    (call $body_write (local.get $body) (i32.const 560))
    (local.set $stream (i32.load (i32.const 564)))
    ;; ok(response): the rest of the flattened result<_, error-code> is unused.
    (call $outparam_set (local.get $outparam) (i32.const 0) (local.get $response)
      (i32.const 0) (i64.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))
    (call $write_all (local.get $stream) (i32.const 16) (i32.const 19))
    (call $write_all (local.get $stream) (local.get $path) (local.get $len))
    (call $write_all (local.get $stream) (i32.const 48) (i32.const 1))
    (call $stream_drop (local.get $stream))
    ;; no trailers
    (call $body_finish (local.get $body) (i32.const 0) (i32.const 0) (i32.const 576))))
