/* stack_left.c — threads that allocate with only <left> bytes of their stack to spare (measured
   with pthread_getattr_np): the end of a deep recursion. glibc's malloc needs ~0.25 KB of stack
   there once the thread has its arena; a hook that needs more than what is left must not run
   there, or the thread dies of SIGSEGV where it lived without the library.

   Each thread first allocates at the same call site with its whole stack to spare (its arena, its
   registration and unwind rules are then set up), then again with <left> bytes left. It keeps one
   block of each (listed in a dump as allocated by allocate_here) and frees another.
   Usage: stack_left <left bytes> [threads (at most 8)]; prints one line per thread, in order. */
#define _GNU_SOURCE
#include "../interposer_test.h"
#include <alloca.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t g_left;
void *volatile g_keep[32];

__attribute__((noinline)) static void allocate_here(long i)
{
    g_keep[i] = malloc(64);
    void *p = malloc(100);
    free(p);
}

__attribute__((noinline)) void *left_thread(void *arg)
{
    long i = (long)arg;
    pthread_attr_t attr;
    void *lo = NULL;
    size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &attr) != 0 || pthread_attr_getstack(&attr, &lo, &size) != 0)
        return (void *)-1;
    pthread_attr_destroy(&attr);
    allocate_here(i + 8); /* warm: plenty of stack here */
    char here;
    size_t remaining = (size_t)(&here - (char *)lo);
    if (remaining < g_left + 512)
        return (void *)-2;
    volatile char *pad = alloca(remaining - g_left);
    for (size_t k = 0; k < remaining - g_left; k += 64)
        pad[k] = 0; /* touch it all: it is really used (no library call here: a lazy PLT binding
                       needs ~2 KB of stack) */
    allocate_here(i);
    return (void *)(uintptr_t)pad[0];
}

int main(int argc, char **argv)
{
    g_left = argc > 1 ? (size_t)atol(argv[1]) : 4096;
    int threads = argc > 2 ? atoi(argv[2]) : 4;
    if (threads > 8)
        threads = 8;
    for (long i = 0; i < threads; i++) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        int rc = pthread_attr_setstacksize(&attr, PTHREAD_STACK_MIN);
        pthread_t t;
        void *ret = NULL;
        if (rc == 0)
            rc = pthread_create(&t, &attr, left_thread, (void *)i);
        if (rc == 0)
            rc = pthread_join(t, &ret);
        pthread_attr_destroy(&attr);
        printf("thread %ld: rc %d, left %zu, result %ld\n", i, rc, g_left, (long)ret);
    }
    const char *dump = getenv("DUMP_PATH");
    if (dump != NULL && interposer_dump != NULL) /* only under the library */
        return dump_live(dump) == 0 ? 0 : 1;
    return 0;
}
