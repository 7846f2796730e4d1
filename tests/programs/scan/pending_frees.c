/* pending_frees.c — blocks whose record removal still waits in a thread's batch (BATCHED FREES
 * in native-shim/interposer_abi.h) are never reported, and a pending removal never touches the
 * record of a block glibc handed out again at the same address.
 *
 *   pending_frees same     main frees a few blocks (fewer than a batch) and scans at once
 *   pending_frees thread   a worker frees a few blocks, then waits while main scans
 *   pending_frees exit     a worker frees a few blocks and exits; main joins and scans
 *   pending_frees fork     a worker frees a few blocks and waits; main forks, the child scans
 *   pending_frees reuse    a worker frees a few blocks and waits (its removals pending); main
 *                          allocates the same size, gets those addresses back (run with tcache
 *                          off and one arena), leaks them, and scans: they must be reported
 *
 * Every case also leaks 3 blocks (LEAK lines) so the report is known not to be empty; FREED
 * lines name the blocks that were freed and must not appear (except as a LEAK in reuse).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "../interposer_test.h"

#define NOINLINE __attribute__((noinline))
#define MASK ((uintptr_t)0x5a5a5a5a5a5a5a5aULL)
#define FREED 5

uintptr_t g_masked[16];
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static int g_ready, g_release;

static NOINLINE void scrub(void)
{
    volatile char pad[16384];
    memset((char *)pad, 0, sizeof pad);
    __asm__ volatile("" ::: "memory");
}

/* Allocates and frees FREED blocks; their addresses are printed, masked nowhere. */
static NOINLINE void free_some(void)
{
    for (int i = 0; i < FREED; i++) {
        char *p = malloc(40 + i);
        memset(p, 0x11, 40 + i);
        printf("FREED %p\n", (void *)p);
        free(p);
    }
}

/* Leaks FREED blocks of free_some's sizes: with tcache off they come from the worker's frees. */
static NOINLINE void leak_reused(int base)
{
    for (int i = 0; i < FREED; i++) {
        char *p = malloc(40 + i);
        memset(p, 0x33, 40 + i);
        g_masked[base + i] = (uintptr_t)p ^ MASK;
        printf("LEAK %p\n", (void *)p);
    }
}

static NOINLINE void leak_three(int base)
{
    for (int i = 0; i < 3; i++) {
        char *p = malloc(24);
        memset(p, 0x22, 24);
        g_masked[base + i] = (uintptr_t)p ^ MASK;
        printf("LEAK %p\n", (void *)p);
    }
}

static void *worker(void *arg)
{
    int exit_at_once = arg != NULL;
    leak_three(3);
    free_some();
    scrub();
    if (exit_at_once)
        return NULL;
    pthread_mutex_lock(&g_mu);
    g_ready = 1;
    pthread_cond_broadcast(&g_cv);
    while (!g_release)
        pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
    return NULL;
}

static void wait_ready(void)
{
    pthread_mutex_lock(&g_mu);
    while (!g_ready)
        pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
}

static void release(void)
{
    pthread_mutex_lock(&g_mu);
    g_release = 1;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2)
        return 2;
    const char *mode = argv[1];
    pthread_t th;
    leak_three(0);
    if (strcmp(mode, "same") == 0) {
        free_some();
        scrub();
        printf("SCANNED %d\n", scan_now());
        return 0;
    }
    if (strcmp(mode, "exit") == 0) {
        pthread_create(&th, NULL, worker, (void *)1);
        pthread_join(th, NULL);
        scrub();
        printf("SCANNED %d\n", scan_now());
        return 0;
    }
    pthread_create(&th, NULL, worker, NULL);
    wait_ready();
    scrub();
    if (strcmp(mode, "thread") == 0) {
        printf("SCANNED %d\n", scan_now());
    } else if (strcmp(mode, "reuse") == 0) {
        leak_reused(6);
        scrub();
        printf("SCANNED %d\n", scan_now());
    } else if (strcmp(mode, "fork") == 0) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            /* The worker did not follow: its pending frees are the child's to finish. */
            printf("SCANNED %d\n", scan_now());
            fflush(stdout);
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            return 3;
    } else {
        return 2;
    }
    release();
    pthread_join(th, NULL);
    return 0;
}
