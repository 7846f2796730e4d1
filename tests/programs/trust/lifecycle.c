/* lifecycle.c — scans while the process changes shape (issue 4).
 *
 *   lifecycle threads <count> <report>   <count> threads created and joined, 32 at a time,
 *                                        each leaking one block, while scans run back to back
 *   lifecycle forkdl <seconds> <report> <lib.so>
 *                                        one thread forks (the child allocates and _exits), one
 *                                        dlopens and dlcloses <lib.so>, while scans run
 *
 * Every report is checked: each listed block must be one the program leaked (addresses kept
 * masked), and the last scan must list all of them. Prints "scans <n> leaked <n> false <n>
 * missing <n> failed <n> ...", exit 0 when clean.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "../interposer_test.h"

#define MASK ((uintptr_t)0x5a5a5a5a5a5a5a5aULL)
#define MAX 65536

static uintptr_t g_leaked[MAX];
static long g_nleaked;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static volatile int g_stop;
static const char *g_report;
static long g_scans, g_failed, g_false, g_missing, g_forks, g_dlopens;
static uintptr_t g_reported[MAX]; /* masked */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static __attribute__((noinline)) void leak_one(void)
{
    char *p = malloc(40);
    memset(p, 0x22, 40);
    pthread_mutex_lock(&g_mu);
    if (g_nleaked < MAX)
        g_leaked[g_nleaked++] = (uintptr_t)p ^ MASK;
    pthread_mutex_unlock(&g_mu);
}

static __attribute__((noinline)) void scrub(void)
{
    volatile char pad[32768];
    memset((char *)pad, 0, sizeof pad);
    __asm__ volatile("" ::: "memory");
}

static int is_leak(uintptr_t a)
{
    for (long i = 0; i < g_nleaked; i++)
        if ((g_leaked[i] ^ MASK) == a)
            return 1;
    return 0;
}

/* One scan and its check; want_all: every leak must be listed. */
static __attribute__((noinline)) void scan_and_check(int want_all)
{
    scrub();
    if (scan_now() != 0) {
        g_failed++;
        return;
    }
    FILE *f = fopen(g_report, "r");
    if (f == NULL) {
        g_failed++;
        return;
    }
    char line[512];
    long n = 0;
    int complete = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        unsigned long a;
        if (sscanf(line, "unreferenced object %lx", &a) == 1 && n < MAX)
            g_reported[n++] = (uintptr_t)a ^ MASK;
        complete |= strncmp(line, "summary: ", 9) == 0;
    }
    fclose(f);
    if (!complete) {
        g_failed++;
        return;
    }
    g_scans++;
    pthread_mutex_lock(&g_mu);
    for (long i = 0; i < n; i++)
        if (!is_leak(g_reported[i] ^ MASK)) {
            g_false++;
            fprintf(stderr, "false report 0x%lx\n", (unsigned long)(g_reported[i] ^ MASK));
        }
    if (want_all)
        for (long k = 0; k < g_nleaked; k++) {
            int found = 0;
            for (long i = 0; i < n && !found; i++)
                found = g_reported[i] == g_leaked[k];
            g_missing += !found;
        }
    pthread_mutex_unlock(&g_mu);
}

static void *scanner(void *arg)
{
    (void)arg;
    while (!g_stop)
        scan_and_check(0);
    return NULL;
}

static void *short_lived(void *arg)
{
    (void)arg;
    void *keep[8];
    for (int i = 0; i < 8; i++)
        keep[i] = malloc(16 + 16 * (size_t)i);
    leak_one();
    for (int i = 0; i < 8; i++)
        free(keep[i]);
    return NULL;
}

static void *forker(void *arg)
{
    (void)arg;
    while (!g_stop) {
        pid_t c = fork();
        if (c == 0) {
            void *p = malloc(100); /* the child's own heap, in its own process */
            free(p);
            _exit(0);
        }
        if (c > 0) {
            waitpid(c, NULL, 0);
            g_forks++;
        }
    }
    return NULL;
}

static void *dlcycler(void *arg)
{
    const char *lib = arg;
    while (!g_stop) {
        void *h = dlopen(lib, RTLD_NOW);
        if (h == NULL) {
            fprintf(stderr, "dlopen: %s\n", dlerror());
            exit(3);
        }
        void (*set)(void *) = (void (*)(void *))dlsym(h, "tls_lib_set");
        set(NULL); /* touch its dynamic TLS */
        dlclose(h);
        g_dlopens++;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: lifecycle threads <count> <report> | forkdl <seconds> <report> <lib>\n");
        return 2;
    }
    g_report = argv[3];
    pthread_t scan_thread;
    pthread_create(&scan_thread, NULL, scanner, NULL);
    if (strcmp(argv[1], "threads") == 0) {
        long count = atol(argv[2]);
        for (long done = 0; done < count; done += 32) {
            pthread_t th[32];
            for (int i = 0; i < 32; i++)
                pthread_create(&th[i], NULL, short_lived, NULL);
            for (int i = 0; i < 32; i++)
                pthread_join(th[i], NULL);
        }
    } else if (strcmp(argv[1], "forkdl") == 0 && argc >= 5) {
        pthread_t f, d;
        pthread_create(&f, NULL, forker, NULL);
        pthread_create(&d, NULL, dlcycler, argv[4]);
        double end = now_s() + atof(argv[2]);
        while (now_s() < end)
            usleep(20000);
        g_stop = 1;
        pthread_join(f, NULL);
        pthread_join(d, NULL);
    } else {
        return 2;
    }
    g_stop = 1;
    pthread_join(scan_thread, NULL);
    /* The final scan reads main's live frames, scan_and_check's among them: scrub here too, so
       its uninitialized locals do not hold a stale copy of a leaked pointer (left at that depth
       by earlier calls: pthread_create/join and the allocation hooks they ran). Without this, 1
       run in ~12 missed one leak, and never with use_stacks=0. */
    scrub();
    scan_and_check(1);
    printf("scans %ld leaked %ld false %ld missing %ld failed %ld forks %ld dlopens %ld\n", g_scans, g_nleaked,
           g_false, g_missing, g_failed, g_forks, g_dlopens);
    return g_false == 0 && g_missing == 0 && g_failed == 0 && g_scans > 1 ? 0 : 1;
}
