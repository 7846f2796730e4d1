/* handoff.c — cross-thread frees for scripts/bench.sh: producers malloc, consumers free.
 *
 *   handoff <pairs> <items per pair>
 *
 * Each of <pairs> producer/consumer pairs shares a single-producer single-consumer ring of 8
 * batches of 64 blocks. The producer mallocs 64 blocks of 16..512 bytes (fixed-seed xorshift),
 * writes each one's first byte and pushes the batch; the consumer pops it, reads the bytes and
 * frees the 64 blocks. Every block is freed by a thread other than the one that allocated it, and
 * the same addresses come back to the producer while the consumer's removals may still wait
 * (Interposer's batched frees; the replacement check asks the other threads' batches). Handing
 * over whole batches keeps the ring's own cache-line traffic out of the figure (one item at a
 * time, glibc alone measured 70 to 770 ns per item depending on how closely the two threads
 * followed each other). A side that waits spins (pause) and yields after 4096 spins.
 * Timed: each thread's loop, from the earliest start to the latest end, after a barrier.
 *
 * Output, one line:  ns_per_item=<wall ns / items per pair> mitems_per_s=<all items / wall>
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define RING 8
#define BATCH 64

typedef struct ring {
    char *slot[RING][BATCH];
    _Alignas(64) uint64_t head; /* written by the producer */
    _Alignas(64) uint64_t tail; /* written by the consumer */
} ring;

typedef struct span {
    uint64_t start, end;
} span;

static long g_items;
static pthread_barrier_t g_start;
static ring *g_rings;
static span *g_spans;

static void wait_a_little(unsigned *spins)
{
    if (++*spins < 4096)
        __builtin_ia32_pause();
    else {
        *spins = 0;
        sched_yield();
    }
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *producer(void *arg)
{
    long pair = (long)arg;
    ring *r = &g_rings[pair];
    uint64_t seed = 0x9E3779B97F4A7C15ull ^ (uint64_t)(pair + 1);
    pthread_barrier_wait(&g_start);
    g_spans[2 * pair].start = now_ns();
    for (long i = 0; i < g_items; i += BATCH) {
        uint64_t h = r->head;
        unsigned spins = 0;
        while (h - __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE) >= RING)
            wait_a_little(&spins);
        char **batch = r->slot[h % RING];
        for (int k = 0; k < BATCH; k++) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            char *p = malloc(16 + (size_t)(seed % 497));
            if (p == NULL)
                abort();
            p[0] = (char)k;
            batch[k] = p;
        }
        __atomic_store_n(&r->head, h + 1, __ATOMIC_RELEASE);
    }
    g_spans[2 * pair].end = now_ns();
    return NULL;
}

static void *consumer(void *arg)
{
    long pair = (long)arg;
    ring *r = &g_rings[pair];
    long sum = 0;
    pthread_barrier_wait(&g_start);
    g_spans[2 * pair + 1].start = now_ns();
    for (long i = 0; i < g_items; i += BATCH) {
        uint64_t t = r->tail;
        unsigned spins = 0;
        while (__atomic_load_n(&r->head, __ATOMIC_ACQUIRE) == t)
            wait_a_little(&spins);
        char **batch = r->slot[t % RING];
        for (int k = 0; k < BATCH; k++) {
            sum += batch[k][0];
            free(batch[k]);
        }
        __atomic_store_n(&r->tail, t + 1, __ATOMIC_RELEASE);
    }
    g_spans[2 * pair + 1].end = now_ns();
    return (void *)sum;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: handoff <pairs> <items per pair>\n");
        return 2;
    }
    int pairs = atoi(argv[1]);
    g_items = (atol(argv[2]) + BATCH - 1) / BATCH * BATCH; /* whole batches */
    if (pairs < 1 || pairs > 64 || g_items < 1) {
        fprintf(stderr, "handoff: pairs must be 1..64 and items at least 1\n");
        return 2;
    }
    g_rings = aligned_alloc(64, sizeof(ring) * (size_t)pairs);
    g_spans = calloc(2 * (size_t)pairs, sizeof(span));
    if (g_rings == NULL || g_spans == NULL)
        return 1;
    for (int i = 0; i < pairs; i++)
        g_rings[i].head = g_rings[i].tail = 0;
    pthread_barrier_init(&g_start, NULL, 2 * (unsigned)pairs);
    pthread_t *th = calloc(2 * (size_t)pairs, sizeof(pthread_t));
    for (long i = 0; i < pairs; i++) {
        if (pthread_create(&th[2 * i], NULL, producer, (void *)i) != 0 ||
            pthread_create(&th[2 * i + 1], NULL, consumer, (void *)i) != 0)
            return 1;
    }
    for (int i = 0; i < 2 * pairs; i++)
        pthread_join(th[i], NULL);
    uint64_t start = UINT64_MAX, end = 0;
    for (int i = 0; i < 2 * pairs; i++) {
        if (g_spans[i].start < start)
            start = g_spans[i].start;
        if (g_spans[i].end > end)
            end = g_spans[i].end;
    }
    double wall = (double)(end - start);
    printf("ns_per_item=%.2f mitems_per_s=%.3f\n", wall / (double)g_items,
           (double)g_items * pairs / wall * 1e3);
    free(th);
    free(g_spans);
    free(g_rings);
    return 0;
}
