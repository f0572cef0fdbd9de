;; The core module of tests/guests/sockets (world in wit/world.wit): creates
;; IPv4 TCP sockets until that fails, and exits 0 when it failed with
;; new-socket-limit after at least 100 of them, 1 otherwise.
;;
;; Canonical ABI layout used: result<tcp-socket, error-code> at 0 (tag u8;
;; payload at 4: the socket's handle, or the error-code enum as u8).
(module
  (import "wasi:sockets/tcp-create-socket@0.2.12" "create-tcp-socket" (func $create (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "wasi:cli/run@0.2.12#run") (result i32)
    (local $created i32)
    (loop $again
      (call $create (i32.const 0) (i32.const 0))
      (if (i32.eqz (i32.load8_u (i32.const 0)))
        (then
          (local.set $created (i32.add (local.get $created) (i32.const 1)))
          (br $again))))
    ;; error-code 10 is new-socket-limit.
    (if (result i32)
      (i32.and
        (i32.eq (i32.load8_u (i32.const 4)) (i32.const 10))
        (i32.ge_u (local.get $created) (i32.const 100)))
      (then (i32.const 0))
      (else (i32.const 1)))))
