/* getattr_first.c — threads whose first allocation happens inside pthread_getattr_np on
   themselves, as Rust's std, the JVM and Boehm GC do when a thread starts (to find its stack).
   glibc's pthread_getattr_np holds the thread's own lock while it reallocs its cpuset buffer; a
   hook that registers the thread on that first call and asks pthread_getattr_np for the stack
   bounds then waits for a lock its own thread holds: the program hangs.

   Each thread reads its stack bounds, then allocates one block it keeps (listed in a dump as
   allocated by getattr_thread) and frees another.
   Usage: getattr_first [threads]; prints one line per thread, in order. */
#define _GNU_SOURCE
#include "../interposer_test.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

void *volatile g_keep[16];

__attribute__((noinline)) void *getattr_thread(void *arg)
{
    long i = (long)arg;
    pthread_attr_t attr;
    void *addr = NULL;
    size_t size = 0;
    int rc = pthread_getattr_np(pthread_self(), &attr); /* the thread's first malloc is in here */
    if (rc == 0) {
        rc = pthread_attr_getstack(&attr, &addr, &size);
        pthread_attr_destroy(&attr);
    }
    char here;
    int inside = rc == 0 && (char *)addr < &here && &here < (char *)addr + size;
    g_keep[i] = malloc(64);
    void *p = malloc(100);
    free(p);
    return (void *)(long)(rc == 0 && inside);
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    if (threads > 16)
        threads = 16;
    for (long i = 0; i < threads; i++) {
        pthread_t t;
        void *ok = NULL;
        int rc = pthread_create(&t, NULL, getattr_thread, (void *)i);
        if (rc == 0)
            rc = pthread_join(t, &ok);
        printf("thread %ld: rc %d, stack found %ld\n", i, rc, (long)ok);
    }
    const char *dump = getenv("DUMP_PATH");
    if (dump != NULL && interposer_dump != NULL) /* only under the library */
        return dump_live(dump) == 0 ? 0 : 1;
    return 0;
}
