// The hello-world of wasmbox: a WASI command that greets its arguments.
// Build: clang --target=wasm32-wasi -O2 -o hello.wasm hello.c
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  const char *greeting = getenv("GREETING");
  if (greeting == NULL) greeting = "Hello";
  if (argc < 2) {
    printf("%s from WebAssembly!\n", greeting);
  }
  for (int i = 1; i < argc; i++) {
    printf("%s, %s, from WebAssembly!\n", greeting, argv[i]);
  }
  return 0;
}
