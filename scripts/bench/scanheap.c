/* scanheap.c — a big live heap for the scan benchmark (scripts/bench_scan.sh, issue 3).
 *
 *   scanheap <blocks> <leaked> <threads> <scans>
 *
 * Builds <blocks> blocks of 16..480 bytes (mean ~248: 2M blocks ~ 500 MB) on 4096 linked lists
 * hanging off a global array, in a shuffled order so that following a list jumps around the heap
 * (pointer chasing, as in a real program's object graph). Each block's payload holds a few more
 * pointers to other live blocks (a graph, not only lists) and filler words. <leaked> extra blocks
 * are allocated and dropped: exactly those must be reported. <threads> threads sit blocked in
 * read() on a pipe, so the stop-the-world has that many threads to stop.
 *
 * Then it runs <scans> leak checks and prints one line per check:
 *   check <i> wall_ms=<ms>
 * Under Interposer the check is interposer_scan() (the report file has the details); under
 * LeakSanitizer (liblsan.so.0 preloaded) it is __lsan_do_recoverable_leak_check(), whose report
 * goes to stderr. Both are looked up at run time, so the same binary serves both.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LISTS 4096

struct block {
    struct block *next;
    struct block *other[3];  /* more edges: random earlier blocks */
    uint64_t filler[];
};

static struct block *g_lists[LISTS];
static int g_pipe[2];

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void *blocked_thread(void *arg)
{
    (void)arg;
    char c;
    while (read(g_pipe[0], &c, 1) < 0)
        ; /* EINTR: the stop signal */
    return NULL;
}

__attribute__((noinline)) static void leak_some(long n)
{
    for (long i = 0; i < n; i++) {
        uint64_t *p = malloc(64 + (rnd() % 256));
        memset(p, 0, 64);
    }
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: scanheap <blocks> <leaked> <threads> <scans>\n");
        return 2;
    }
    long blocks = atol(argv[1]), leaked = atol(argv[2]), nthreads = atol(argv[3]), scans = atol(argv[4]);

    /* Allocate in one order, link in another: lists interleave across the heap. */
    struct block **all = malloc(sizeof *all * (size_t)blocks);
    double t0 = now_ms();
    for (long i = 0; i < blocks; i++) {
        size_t size = sizeof(struct block) + 8 * (rnd() % 58); /* 32..488 bytes */
        struct block *b = malloc(size);
        size_t words = (size - sizeof(struct block)) / 8;
        for (size_t w = 0; w < words; w++)
            b->filler[w] = rnd() | 1; /* odd: never a pointer */
        b->next = NULL;
        for (int k = 0; k < 3; k++)
            b->other[k] = i > 0 ? all[rnd() % (uint64_t)i] : NULL;
        all[i] = b;
    }
    for (long i = blocks - 1; i > 0; i--) { /* Fisher-Yates */
        long j = (long)(rnd() % (uint64_t)(i + 1));
        struct block *t = all[i];
        all[i] = all[j];
        all[j] = t;
    }
    for (long i = 0; i < blocks; i++) {
        struct block **head = &g_lists[i % LISTS];
        all[i]->next = *head;
        *head = all[i];
    }
    free(all);
    leak_some(leaked);
    fprintf(stderr, "built %ld blocks (+%ld leaked) in %.0f ms\n", blocks, leaked, now_ms() - t0);

    if (pipe(g_pipe) != 0)
        return 3;
    pthread_t *th = calloc((size_t)nthreads, sizeof *th);
    for (long i = 0; i < nthreads; i++)
        pthread_create(&th[i], NULL, blocked_thread, NULL);
    usleep(100000);

    int (*interposer_scan)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "interposer_scan");
    int (*lsan_check)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "__lsan_do_recoverable_leak_check");
    for (long s = 0; s < scans; s++) {
        double t = now_ms();
        int rc = interposer_scan ? interposer_scan() : lsan_check ? lsan_check() : -1;
        printf("check %ld wall_ms=%.1f rc=%d\n", s, now_ms() - t, rc);
        fflush(stdout);
        const char *report = getenv("SCANHEAP_REPORT"); /* keep each scan's report: <path>.<i> */
        if (report != NULL && interposer_scan != NULL) {
            char kept[4096];
            snprintf(kept, sizeof kept, "%s.%ld", report, s);
            rename(report, kept);
        }
    }

    for (long i = 0; i < nthreads; i++)
        if (write(g_pipe[1], "x", 1) != 1)
            return 4;
    for (long i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    return 0;
}
