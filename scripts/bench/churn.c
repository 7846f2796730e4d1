/* churn.c — malloc/free churn for scripts/bench.sh.
 *
 *   churn <deep|shallow> <threads> <iterations per thread> [keep]
 *
 * Every thread keeps a ring of 64 live blocks and, per iteration, picks a slot with a fixed-seed
 * xorshift, frees that slot's block and allocates a new one of 16..512 bytes: one malloc+free
 * pair per iteration, addresses and sizes varying. Each thread first runs a warm-up (fills the
 * ring, lets an interposer register the thread and resolve its unwind rules), then waits on a
 * barrier with the other threads. The timed region is each thread's loop, measured with
 * CLOCK_MONOTONIC, from the earliest start to the latest end: process start-up, thread creation,
 * the warm-up and the final frees are excluded. With <threads> = 1 the loop runs on the main
 * thread and no thread is created.
 *
 * deep:    malloc's caller is 10 frames below the thread's entry function: run and 4 frames
 *          of this executable (built with frame pointers), then 5 of libbenchchain.so (built
 *          -fomit-frame-pointer; bench.sh also builds a copy with frame pointers). 15 frames
 *          from malloc's caller to _start on the main thread,
 *          13 to clone3 on a created thread.
 * shallow: malloc's caller (lib_step) is called straight from the loop: 7 frames to _start,
 *          5 to clone3.
 *
 * keep: leave every thread's last 64 blocks allocated and unreferenced at exit (leaks), so a
 * leak detector's report shows the backtraces it recorded (scripts/bench.sh's depth check).
 *
 * Output, one line:  ns_per_pair=<wall ns / pairs per thread> mpairs_per_s=<all pairs / wall>
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "chain.h"

#define NOIPA __attribute__((noipa))
#define BARRIER() __asm__ volatile("" ::: "memory")
#define RING 64
#define WARMUP 20000

static int g_deep;
static int g_keep;
static long g_iterations;
static int g_threads;
static pthread_barrier_t g_start;

/* Each thread's timed loop, [start, end) in CLOCK_MONOTONIC ns. The wall time is the earliest
   start to the latest end (not main's view of the barrier: main can be descheduled after it). */
typedef struct span {
    uint64_t start, end;
} span;
static span *g_spans;

static inline uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* The executable's half of the deep chain: four frames with frame pointers. */
NOIPA static void exe_level4(churn_op *op) { lib_chain_entry(op); BARRIER(); }
NOIPA static void exe_level3(churn_op *op) { exe_level4(op); BARRIER(); }
NOIPA static void exe_level2(churn_op *op) { exe_level3(op); BARRIER(); }
NOIPA static void exe_level1(churn_op *op) { exe_level2(op); BARRIER(); }

NOIPA static void run(void **ring, uint64_t *seed, long n, int deep)
{
    churn_op op = {.ring = ring};
    for (long i = 0; i < n; i++) {
        uint64_t r = xorshift64(seed);
        op.slot = (unsigned)(r & (RING - 1));
        op.size = 16 + (size_t)((r >> 8) % 497); /* 16..512 */
        if (deep)
            exe_level1(&op);
        else
            lib_step(&op);
    }
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *worker(void *arg)
{
    uintptr_t index = (uintptr_t)arg;
    void *ring[RING] = {0};
    uint64_t seed = 0x9E3779B97F4A7C15ull ^ (index * 0x100000001B3ull);
    run(ring, &seed, WARMUP, g_deep);
    if (g_threads > 1)
        pthread_barrier_wait(&g_start);
    g_spans[index].start = now_ns();
    run(ring, &seed, g_iterations, g_deep);
    g_spans[index].end = now_ns();
    if (!g_keep)
        for (int i = 0; i < RING; i++)
            free(ring[i]);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 5 || (strcmp(argv[1], "deep") != 0 && strcmp(argv[1], "shallow") != 0) ||
        (argc == 5 && strcmp(argv[4], "keep") != 0)) {
        fprintf(stderr, "usage: %s <deep|shallow> <threads> <iterations per thread> [keep]\n", argv[0]);
        return 2;
    }
    g_deep = strcmp(argv[1], "deep") == 0;
    g_keep = argc == 5;
    int threads = g_threads = atoi(argv[2]);
    g_iterations = atol(argv[3]);
    if (threads < 1 || threads > 256 || g_iterations < 1)
        return 2;
    g_spans = calloc((size_t)threads, sizeof *g_spans);
    if (threads == 1) {
        /* Single-threaded: on the main thread, and no thread is ever created (glibc's malloc
           keeps its single-thread fast path; the interposer's runtime threads still exist). */
        worker((void *)0);
    } else {
        pthread_t *tids = calloc((size_t)threads, sizeof *tids);
        pthread_barrier_init(&g_start, NULL, (unsigned)threads);
        for (int t = 0; t < threads; t++)
            if (pthread_create(&tids[t], NULL, worker, (void *)(uintptr_t)t) != 0)
                return perror("pthread_create"), 1;
        for (int t = 0; t < threads; t++)
            pthread_join(tids[t], NULL);
        free(tids);
    }
    uint64_t t0 = g_spans[0].start, t1 = g_spans[0].end;
    for (int t = 1; t < threads; t++) {
        if (g_spans[t].start < t0)
            t0 = g_spans[t].start;
        if (g_spans[t].end > t1)
            t1 = g_spans[t].end;
    }
    double wall = (double)(t1 - t0);
    printf("ns_per_pair=%.2f mpairs_per_s=%.3f\n", wall / (double)g_iterations,
           (double)g_iterations * threads / wall * 1e3);
    free(g_spans);
    return 0;
}
