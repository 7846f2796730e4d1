/* small_stack.c — threads with the smallest stack glibc accepts (PTHREAD_STACK_MIN) that use
   most of it, then allocate. glibc carves every thread's static TLS out of its stack, so a
   library whose initial-exec TLS is large takes that much from each of these threads; and the
   allocation hook itself runs on the thread's stack. Both must leave such a thread room for
   what it ran in without the library.

   Each thread fills `use` bytes of its stack, then allocates one block it keeps (listed in a
   dump as allocated by small_thread) and frees another.
   Usage: small_stack <use bytes> [threads]; prints one line per thread, in order. */
#define _GNU_SOURCE
#include "../interposer_test.h"
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t g_use;
void *volatile g_keep[16];

__attribute__((noinline)) void *small_thread(void *arg)
{
    long i = (long)arg;
    volatile char buf[g_use];
    memset((char *)buf, (int)i, g_use);
    g_keep[i] = malloc(64);
    void *p = malloc(100);
    free(p);
    return (void *)(long)buf[g_use - 1];
}

int main(int argc, char **argv)
{
    g_use = argc > 1 ? (size_t)atol(argv[1]) : 7000;
    int threads = argc > 2 ? atoi(argv[2]) : 4;
    if (threads > 16)
        threads = 16;
    for (long i = 0; i < threads; i++) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        int rc = pthread_attr_setstacksize(&attr, PTHREAD_STACK_MIN);
        pthread_t t;
        void *ret = NULL;
        if (rc == 0)
            rc = pthread_create(&t, &attr, small_thread, (void *)i);
        if (rc == 0)
            rc = pthread_join(t, &ret);
        pthread_attr_destroy(&attr);
        printf("thread %ld: rc %d, stack %d, used %zu, last byte %ld\n", i, rc, (int)PTHREAD_STACK_MIN, g_use, (long)ret);
    }
    const char *dump = getenv("DUMP_PATH");
    if (dump != NULL && interposer_dump != NULL) /* only under the library */
        return dump_live(dump) == 0 ? 0 : 1;
    return 0;
}
