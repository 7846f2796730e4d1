/* cancel_during_gc.c — pthread_cancel of threads that churn malloc/free while another thread
   keeps the managed core's garbage collector busy (dump_live in a loop). malloc and free are not
   cancellation points in glibc: a deferred cancel may only act at the worker's
   pthread_testcancel(), and the cleanup handler then frees exactly the blocks the worker holds.
   If the library's hook reaches a cancellation point (a thread entering managed code waits for
   the GC on a condition variable), the cancel acts inside malloc: malloc never returns, the
   cleanup handler frees a pointer that was already freed, and glibc aborts ("double free").
     cancel_during_gc DUMP [ROUNDS]
   Prints "rounds N". */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "../interposer_test.h"

enum { WORKERS = 4, SLOTS = 32 };
static atomic_int s_stop;
static const char *s_dump;

static void release(void *arg)
{
    void **slots = arg;
    for (int i = 0; i < SLOTS; i++) {
        free(slots[i]);
        slots[i] = NULL;
    }
}

static void *worker(void *arg)
{
    void *slots[SLOTS] = {0};
    unsigned seed = (unsigned)(long)arg;
    pthread_cleanup_push(release, slots);
    for (;;) {
        seed = seed * 1103515245u + 12345u;
        int i = (int)((seed >> 16) % SLOTS);
        free(slots[i]);
        slots[i] = malloc(16 + (seed >> 8) % 500);
        if ((seed & 63) == 0)
            pthread_testcancel();
    }
    pthread_cleanup_pop(1);
    return NULL;
}

static void *collector(void *arg)
{
    (void)arg;
    while (!atomic_load(&s_stop)) {
        if (dump_live(s_dump) != 0) {
            struct timespec pause = {0, 100 * 1000}; /* no library: do not spin */
            nanosleep(&pause, NULL);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: cancel_during_gc DUMP [ROUNDS]\n"); return 2; }
    s_dump = argv[1];
    int rounds = argc > 2 ? atoi(argv[2]) : 200;
    pthread_t gc;
    pthread_create(&gc, NULL, collector, NULL);
    for (int r = 0; r < rounds; r++) {
        pthread_t th[WORKERS];
        for (long i = 0; i < WORKERS; i++)
            pthread_create(&th[i], NULL, worker, (void *)(i + 8L * r));
        struct timespec pause = {0, 500 * 1000};
        nanosleep(&pause, NULL);
        for (int i = 0; i < WORKERS; i++)
            pthread_cancel(th[i]);
        for (int i = 0; i < WORKERS; i++)
            pthread_join(th[i], NULL);
    }
    atomic_store(&s_stop, 1);
    pthread_join(gc, NULL);
    printf("rounds %d\n", rounds);
    return 0;
}
