/* live.c — peak RSS per live block, for scripts/bench.sh.
 *
 *   live <blocks> [size]
 *
 * Allocates <blocks> blocks of [size] bytes (default 32) and keeps them all live, then prints
 * ru_maxrss. Each block is allocated 12 frames deep (malloc's caller to _start), through one of
 * 10 x 10 x 10 = 1000 distinct call paths (three levels each pick one of ten distinct
 * functions), so a stack depot holds ~1000 distinct, non-trivial stacks. The blocks stay
 * reachable from a global array (no leak is reported at exit).
 *
 * Output, one line:  maxrss_kb=<peak RSS in KiB> blocks=<n> size=<bytes> ns_per_alloc=<t>
 * where t is the fill loop's CLOCK_MONOTONIC time per malloc (every call from a different stack
 * than the one before it, and the live set growing: the opposite of the churn's hot loop).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define NOIPA __attribute__((noipa)) /* noinline, noclone, no identical-code folding */
#define BARRIER() __asm__ volatile("" ::: "memory")

static void **g_blocks;
static size_t g_size = 32;

NOIPA static void leaf(long i)
{
    char *p = malloc(g_size);
    if (p == NULL) {
        perror("malloc");
        exit(1);
    }
    memset(p, (int)i, g_size); /* touch it */
    g_blocks[i] = p;
}

NOIPA static void mid3(long i) { leaf(i); BARRIER(); }

#define LEVEL(prefix, next)                                                                        \
    NOIPA static void prefix##0(long i) { next(i); BARRIER(); }                                   \
    NOIPA static void prefix##1(long i) { next(i); BARRIER(); }                                   \
    NOIPA static void prefix##2(long i) { next(i); BARRIER(); }                                   \
    NOIPA static void prefix##3(long i) { next(i); BARRIER(); }                                   \
    NOIPA static void prefix##4(long i) { next(i); BARRIER(); }                                   \
    NOIPA static void prefix##5(long i) { next(i); BARRIER(); }                                   \
    NOIPA static void prefix##6(long i) { next(i); BARRIER(); }                                   \
    NOIPA static void prefix##7(long i) { next(i); BARRIER(); }                                   \
    NOIPA static void prefix##8(long i) { next(i); BARRIER(); }                                   \
    NOIPA static void prefix##9(long i) { next(i); BARRIER(); }                                   \
    static void (*const prefix##_table[10])(long) = {prefix##0, prefix##1, prefix##2, prefix##3, \
                                                    prefix##4, prefix##5, prefix##6, prefix##7, \
                                                    prefix##8, prefix##9};

LEVEL(c, mid3)
NOIPA static void mid2(long i) { c_table[(i / 100) % 10](i); BARRIER(); }
LEVEL(b, mid2)
NOIPA static void mid1(long i) { b_table[(i / 10) % 10](i); BARRIER(); }
LEVEL(a, mid1)

NOIPA static void fill(long n)
{
    for (long i = 0; i < n; i++)
        a_table[i % 10](i);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s <blocks> [size]\n", argv[0]);
        return 2;
    }
    long n = atol(argv[1]);
    if (argc == 3)
        g_size = (size_t)atol(argv[2]);
    if (n < 0 || g_size == 0)
        return 2;
    g_blocks = calloc((size_t)n + 1, sizeof *g_blocks);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fill(n);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("maxrss_kb=%ld blocks=%ld size=%zu ns_per_alloc=%.1f\n", ru.ru_maxrss, n, g_size,
           n > 0 ? ns / (double)n : 0.0);
    return 0;
}
