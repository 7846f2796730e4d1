/* short_threads.c — hundreds of short-lived threads that malloc and free, a few at a time and
   also many at once (thread start and exit racing with other threads' allocations).
   Prints "threads N checksum C" (C is independent of addresses) and then the record delta:
   every block a thread allocated was freed before the thread exited, so the count of live
   records must be back where it was ("-1" without the library). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../interposer_test.h"

enum { TOTAL = 400, BATCH = 16, PER_THREAD = 200 };

static void *work(void *arg)
{
    uintptr_t seed = (uintptr_t)arg;
    void *keep[16] = {0};
    unsigned long sum = 0;
    for (int i = 0; i < PER_THREAD; i++) {
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        size_t n = 1 + (seed >> 33) % 2000;
        int slot = (int)((seed >> 20) % 16);
        free(keep[slot]);
        keep[slot] = (i & 1) ? malloc(n) : calloc(1, n);
        memset(keep[slot], (int)i, n);
        sum += n;
    }
    for (int i = 0; i < 16; i++)
        free(keep[i]);
    return (void *)sum;
}

int main(void)
{
    pthread_t th[BATCH];
    unsigned long checksum = 0;
    int started = 0;
    /* warm up stdio and glibc's thread-stack cache outside the measured window */
    printf("start\n");
    fflush(stdout);
    int64_t before = live_blocks();
    while (started < TOTAL) {
        int n = 0;
        for (; n < BATCH && started < TOTAL; n++, started++)
            if (pthread_create(&th[n], NULL, work, (void *)(uintptr_t)(started + 1)) != 0) {
                perror("pthread_create");
                return 3;
            }
        for (int i = 0; i < n; i++) {
            void *r;
            pthread_join(th[i], &r);
            checksum += (unsigned long)r;
        }
    }
    int64_t after = live_blocks();
    /* detached threads too: they exit while the main thread goes on allocating */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (int i = 0; i < 64; i++) {
        pthread_t t;
        if (pthread_create(&t, &attr, work, (void *)(uintptr_t)(1000 + i)) != 0)
            return 3;
        free(malloc(100));
    }
    printf("threads %d checksum %lu\n", started, checksum);
    fflush(stdout);
    fprintf(stderr, "record delta %ld\n", (long)(after - before));
    return 0;
}
