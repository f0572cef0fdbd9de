// A WASI guest for the shim tests: argv[1] picks what it does, and it reports
// on stdout/stderr and through its exit code what it could and could not do.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

// Recursion without end: the guest's stack runs out (a trap, not a crash).
__attribute__((noinline)) int recurse(volatile int depth) {
  volatile char frame[256];
  frame[0] = (char)depth;
  return recurse(depth + 1) + frame[0];
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "hello";
  if (strcmp(mode, "hello") == 0) {
    puts("hello from probe");
    return 0;
  }
  if (strcmp(mode, "args") == 0) {
    for (int i = 0; i < argc; i++) printf("arg[%d]=%s\n", i, argv[i]);
    return 0;
  }
  if (strcmp(mode, "env") == 0) {
    for (char **e = environ; *e; e++) printf("%s\n", *e);
    return 0;
  }
  if (strcmp(mode, "stderr") == 0) {
    fprintf(stderr, "to stderr\n");
    return 0;
  }
  if (strcmp(mode, "exit") == 0 && argc > 2) {
    return atoi(argv[2]);
  }
  if (strcmp(mode, "cat") == 0 && argc > 2) {
    FILE *f = fopen(argv[2], "r");
    if (!f) {
      fprintf(stderr, "cannot open %s: %s\n", argv[2], strerror(errno));
      return 1;
    }
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stdout);
    fclose(f);
    return 0;
  }
  if (strcmp(mode, "fill") == 0 && argc > 2) {
    // Writes 1 MiB blocks into the file until a write fails; prints how many.
    static char block[1 << 20];
    memset(block, 1, sizeof block);
    FILE *f = fopen(argv[2], "w");
    size_t mib = 0;
    while (f && fwrite(block, 1, sizeof block, f) == sizeof block && fflush(f) == 0) mib++;
    printf("wrote_mib=%zu\n", mib);
    return 0;
  }
  if (strcmp(mode, "write") == 0 && argc > 2) {
    FILE *f = fopen(argv[2], "w");
    if (!f || fputs("written\n", f) < 0 || fclose(f) != 0) {
      fprintf(stderr, "cannot write %s: %s\n", argv[2], strerror(errno));
      return 1;
    }
    puts("wrote");
    return 0;
  }
  if (strcmp(mode, "stdin") == 0) {
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) fwrite(buf, 1, n, stdout);
    puts("<eof>");
    return 0;
  }
  if (strcmp(mode, "hog") == 0) {
    // Takes 1 MiB at a time, writing every byte (so the pages are really
    // there), until malloc fails; then says how far it got and exits 0.
    // volatile, and a byte of each block read back: otherwise the compiler
    // may drop allocations nobody reads, and with them the whole loop.
    size_t mib = 0, sum = 0;
    for (char *volatile p; (p = malloc(1 << 20)) != NULL; mib++) {
      memset(p, 1, 1 << 20);
      sum += (size_t)p[(1 << 20) - 1];
    }
    printf("allocated_mib=%zu\n", sum == mib ? mib : 0);
    return 0;
  }
  if (strcmp(mode, "alloc") == 0 && argc > 2) {
    size_t mb = (size_t)atoi(argv[2]);
    // volatile: without it the compiler drops an allocation nobody reads.
    char *volatile p = malloc(mb << 20);
    if (!p) {
      fprintf(stderr, "allocation of %zu MiB failed\n", mb);
      return 1;
    }
    memset(p, 1, mb << 20);
    printf("allocated %zu MiB\n", mb + (size_t)(p[(mb << 20) - 1] - 1));
    return 0;
  }
  if (strcmp(mode, "sleep") == 0) {
    puts("sleeping");
    fflush(stdout);
    sleep(1000);
    return 0;
  }
  if (strcmp(mode, "spin") == 0) {
    puts("spinning");
    fflush(stdout);
    volatile unsigned long i = 0;
    for (;;) i++;
  }
  if (strcmp(mode, "bulk") == 0 && argc > 2) {
    // N MiB on stdout, in 64-byte lines, to check that output arrives whole.
    char line[64];
    memset(line, 'x', sizeof line - 1);
    line[sizeof line - 1] = '\n';
    long lines = atol(argv[2]) * (1 << 20) / (long)sizeof line;
    for (long i = 0; i < lines; i++) fwrite(line, 1, sizeof line, stdout);
    return 0;
  }
  if (strcmp(mode, "openloop") == 0) {
    // Opens / until that fails and reports how far it got; with "hold",
    // then keeps them open.
    int n = 0;
    while (fopen("/", "r") != NULL) n++;
    printf("opened %d: %s\n", n, strerror(errno));
    fflush(stdout);
    if (argc > 2 && strcmp(argv[2], "hold") == 0) sleep(1000);
    return 0;
  }
  if (strcmp(mode, "recurse") == 0) {
    printf("depth %d\n", recurse(1));
    return 0;
  }
  fprintf(stderr, "unknown mode %s\n", mode);
  return 2;
}
