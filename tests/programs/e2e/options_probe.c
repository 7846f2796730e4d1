/* options_probe.c — a small, deterministic program for the option tests. It allocates, prints
   a checksum on stdout (identical whatever the options), prints "live_blocks N" on stderr, and
   when given a path writes the live-block dump there after allocating one block DEPTH calls
   deep (so the full backtrace is longer than a small max_frames).
     options_probe [DUMP] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../interposer_test.h"

static void *volatile s_deep;

__attribute__((noinline)) static void *descend(int depth)
{
    void *p = depth == 0 ? malloc(99) : descend(depth - 1);
    __asm__ volatile("" ::: "memory"); /* not a tail call: every level keeps its frame */
    return p;
}

int main(int argc, char **argv)
{
    unsigned long sum = 0;
    char *strings[50];
    for (int i = 0; i < 50; i++) {
        strings[i] = malloc(32);
        snprintf(strings[i], 32, "line %d", i * 7);
        sum = sum * 31 + strlen(strings[i]);
    }
    for (int i = 0; i < 50; i += 2)
        free(strings[i]);
    s_deep = descend(12);
    printf("options probe checksum %lu\n", sum);
    for (int i = 1; i < 50; i += 2)
        printf("%s\n", strings[i]);
    fflush(stdout);
    fprintf(stderr, "live_blocks %ld\n", (long)live_blocks());
    if (argc > 1)
        fprintf(stderr, "dump %d\n", dump_live(argv[1]));
    return 0;
}
