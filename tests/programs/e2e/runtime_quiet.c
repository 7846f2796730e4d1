/* runtime_quiet.c — the library's own activity must not show in the host's records
   (DESIGN guard rules 1 and 2): the managed runtime's mallocs (nested under the guard) and the
   threads the runtime starts (the finalizer, GC helpers: internal for life) are never recorded.
   A single-threaded program with a known set of blocks asks for DUMPS dumps (each one
   symbolizes and allocates managed memory, so the runtime works and its threads wake), then
   writes a final dump. Prints "delta X expected 3" (the record count across the dumps, plus
   three blocks it allocates on purpose); the test also checks the final dump's blocks all
   belong to this (only) thread and have no frame inside the library.
     runtime_quiet DUMP [DUMPS] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../interposer_test.h"

static void *volatile s_keep[3];

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: runtime_quiet DUMP [DUMPS]\n"); return 2; }
    int dumps = argc > 2 ? atoi(argv[2]) : 20;
    setvbuf(stdout, NULL, _IONBF, 0);
    int64_t before = live_blocks();
    int failed = 0;
    for (int i = 0; i < dumps; i++) {
        if (dump_live(argv[1]) != 0)
            failed++;
        if (i == dumps / 2) {
            s_keep[0] = malloc(123);
            s_keep[1] = strdup("runtime_quiet");
            s_keep[2] = calloc(5, 5);
        }
    }
    int64_t after = live_blocks();
    if (dump_live(argv[1]) != 0)
        failed++;
    printf("dumps %d failed %d\n", dumps + 1, failed);
    printf("delta %ld expected 3\n", (long)(after - before));
    return 0;
}
