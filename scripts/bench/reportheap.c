/* reportheap.c — scripts/bench_report.sh: leaks N blocks from varied stacks (half through
 * strdup, so libc's frames are symbolized too, with file:line from libc6-dbg), then runs
 * <scans> scans in a row. Interposer's verbosity=2 line per scan gives the time of its "report"
 * phase: symbolizing every frame and writing the report.
 *
 *   reportheap <blocks> <scans>
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern int interposer_scan(void) __attribute__((weak));
uintptr_t g_sink;

__attribute__((noinline)) static void *down(int depth, size_t n)
{
    if (depth == 0)
        return malloc(n);
    void *p = down(depth - 1, n);
    g_sink += (uintptr_t)depth; /* not a tail call: every level is a frame */
    return p;
}

__attribute__((noinline)) static char *copy(int i)
{
    char text[32];
    snprintf(text, sizeof text, "leak %d", i);
    return strdup(text);
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    int blocks = atoi(argv[1]), scans = atoi(argv[2]);
    for (int i = 0; i < blocks; i++) {
        void *p = (i & 1) ? down(i % 12, 32 + i % 64) : copy(i);
        g_sink ^= (uintptr_t)p * 3; /* the pointer is lost */
    }
    for (int k = 0; k < scans; k++)
        printf("scan %d: %d\n", k, interposer_scan ? interposer_scan() : -1);
    return 0;
}
