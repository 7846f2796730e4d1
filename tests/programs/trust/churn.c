/* churn.c — load for the trust suite (issue 4): threads churn the allocator while scans run back
 * to back, and every report is checked against what the program knows it leaked.
 *
 *   churn <threads> <seconds> <leak_every> <report-path>
 *
 * Each churn thread keeps 256 live slots and loops over random operations: malloc, calloc,
 * realloc (grow and shrink), memalign, strdup, free, and now and then a large block (mmap'ed by
 * glibc). With leak_every > 0, every leak_every-th operation allocates a block and drops it; its
 * address is remembered only masked (XOR), so the program holds no pointer to it. Meanwhile the
 * main thread calls interposer_scan() back to back and reads each report: every block listed must
 * be one the program leaked (no false report), and a last scan after the threads stop must list
 * every leaked block that is still allocated: all of them (exactly its leaks).
 *
 * Output: "ops <n> scans <n> leaked <n> false <n> missing <n> ops_per_s <x>", exit 0 when clean.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "../interposer_test.h"

#define MASK ((uintptr_t)0x5a5a5a5a5a5a5a5aULL)
#define SLOTS 256
#define MAX_LEAKS (1 << 20)

static volatile int g_stop;
static uintptr_t g_leaked[MAX_LEAKS];      /* masked addresses */
static long g_nleaked;                      /* under g_mu */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static long g_ops[64];
static int g_leak_every;

static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static __attribute__((noinline)) void leak_one(uint64_t *rng)
{
    size_t n = 16 + next_rand(rng) % 200;
    char *p = malloc(n);
    if (p == NULL)
        return;
    memset(p, 0x11, n); /* no pointers inside */
    pthread_mutex_lock(&g_mu);
    if (g_nleaked < MAX_LEAKS)
        g_leaked[g_nleaked++] = (uintptr_t)p ^ MASK;
    pthread_mutex_unlock(&g_mu);
}

static void *churn(void *arg)
{
    long id = (long)arg;
    uint64_t rng = 0x9E3779B97F4A7C15ULL * (uint64_t)(id + 1);
    void *slot[SLOTS] = {0};
    long ops = 0;
    while (!g_stop) {
        uint64_t r = next_rand(&rng);
        int i = (int)(r % SLOTS);
        switch ((r >> 8) % 10) {
        case 0: case 1: case 2:
            free(slot[i]);
            slot[i] = malloc(1 + (r >> 16) % 512);
            break;
        case 3:
            free(slot[i]);
            slot[i] = calloc(1 + (r >> 16) % 16, 24);
            break;
        case 4: case 5: {
            void *q = realloc(slot[i], 1 + (r >> 16) % 2048);
            if (q != NULL)
                slot[i] = q;
            break;
        }
        case 6:
            free(slot[i]);
            slot[i] = memalign(64, 1 + (r >> 16) % 300);
            break;
        case 7:
            free(slot[i]);
            slot[i] = strdup("churn");
            break;
        case 8:
            free(slot[i]);
            slot[i] = (r >> 16) % 64 == 0 ? malloc(256 * 1024) : NULL; /* now and then a mmap'ed chunk */
            break;
        default:
            /* slot i points at slot j's block: blocks reachable only from other blocks */
            if (slot[i] != NULL && slot[(i + 1) % SLOTS] != NULL && malloc_usable_size(slot[i]) >= 8)
                *(void **)slot[i] = slot[(i + 1) % SLOTS];
            break;
        }
        if (g_leak_every > 0 && ++ops % g_leak_every == 0)
            leak_one(&rng);
        g_ops[id]++;
    }
    for (int i = 0; i < SLOTS; i++)
        free(slot[i]);
    return NULL;
}

/* Reads the report's "unreferenced object 0x..." addresses; returns how many, or -1. */
static long read_report(const char *path, uintptr_t *out, long max)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char line[512];
    long n = 0;
    int complete = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        unsigned long a;
        if (sscanf(line, "unreferenced object %lx", &a) == 1 && n < max)
            out[n++] = (uintptr_t)a ^ MASK; /* masked: this array is a root of the next scan */
        if (strncmp(line, "summary: ", 9) == 0)
            complete = 1;
    }
    fclose(f);
    return complete ? n : -1;
}

static int cmp(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

/* Counts reported blocks that are not leaks (false) and leaks not reported (missing). Unmasked
   addresses live only in heap arrays that are zeroed before they are freed. */
static __attribute__((noinline)) void check(const uintptr_t *masked, long n, long *false_reports, long *missing,
                                            int want_all)
{
    uintptr_t *reported = malloc(sizeof *reported * (size_t)(n + 1));
    for (long i = 0; i < n; i++)
        reported[i] = masked[i] ^ MASK;
    pthread_mutex_lock(&g_mu);
    long nl = g_nleaked;
    uintptr_t *leaks = malloc(sizeof *leaks * (size_t)(nl + 1));
    for (long i = 0; i < nl; i++)
        leaks[i] = g_leaked[i] ^ MASK;
    pthread_mutex_unlock(&g_mu);
    qsort(leaks, (size_t)nl, sizeof *leaks, cmp);
    for (long i = 0; i < n; i++) {
        uintptr_t a = reported[i];
        if (bsearch(&a, leaks, (size_t)nl, sizeof *leaks, cmp) == NULL) {
            (*false_reports)++;
            fprintf(stderr, "false report: 0x%lx\n", (unsigned long)a);
        }
    }
    if (want_all) {
        uintptr_t *rep = malloc(sizeof *rep * (size_t)(n + 1));
        memcpy(rep, reported, sizeof *rep * (size_t)n);
        qsort(rep, (size_t)n, sizeof *rep, cmp);
        for (long i = 0; i < nl; i++)
            if (bsearch(&leaks[i], rep, (size_t)n, sizeof *rep, cmp) == NULL)
                (*missing)++;
        memset(rep, 0, sizeof *rep * (size_t)n);
        free(rep);
    }
    memset(leaks, 0, sizeof *leaks * (size_t)nl);
    free(leaks);
    memset(reported, 0, sizeof *reported * (size_t)n);
    free(reported);
}

/* Zeroes the dead stack below the caller (stale copies of addresses from check's callees). */
static __attribute__((noinline)) void scrub(void)
{
    volatile char pad[32768];
    memset((char *)pad, 0, sizeof pad);
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: churn <threads> <seconds> <leak_every> <report-path>\n");
        return 2;
    }
    int nthreads = atoi(argv[1]);
    double seconds = atof(argv[2]);
    g_leak_every = atoi(argv[3]);
    const char *report = argv[4];
    if (nthreads < 1 || nthreads > 64)
        return 2;
    pthread_t th[64];
    for (long i = 0; i < nthreads; i++)
        pthread_create(&th[i], NULL, churn, (void *)i);

    static uintptr_t reported[MAX_LEAKS];
    long scans = 0, failed = 0, false_reports = 0, missing = 0;
    double start = now_s();
    while (now_s() - start < seconds) {
        scrub();
        if (scan_now() != 0) {
            failed++;
            continue;
        }
        long n = read_report(report, reported, MAX_LEAKS);
        if (n < 0) {
            failed++;
            continue;
        }
        scans++;
        check(reported, n, &false_reports, &missing, 0);
    }
    g_stop = 1;
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    double elapsed = now_s() - start;

    /* Final scan: everything the threads kept is freed; exactly the leaks remain. */
    scrub();
    long n = scan_now() == 0 ? read_report(report, reported, MAX_LEAKS) : -1;
    if (n < 0)
        failed++;
    else
        check(reported, n, &false_reports, &missing, 1);

    long ops = 0;
    for (int i = 0; i < nthreads; i++)
        ops += g_ops[i];
    printf("ops %ld scans %ld failed %ld leaked %ld false %ld missing %ld ops_per_s %.0f final_reported %ld\n",
           ops, scans, failed, g_nleaked, false_reports, missing, ops / elapsed, n);
    return false_reports == 0 && missing == 0 && failed == 0 && scans > 0 ? 0 : 1;
}
