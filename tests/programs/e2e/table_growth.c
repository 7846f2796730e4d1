/* table_growth.c — the allocation table grows while 8 threads insert: each thread allocates PER
   blocks (and frees every other one) between two barriers, so the table goes from a few records
   to THREADS*PER/2 live ones (a million by default) through several resizes under contention.
     table_growth [PER]
   Prints "delta X expected Y". */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include "../interposer_test.h"

enum { THREADS = 8 };
static long per;
static void **s_blocks[THREADS];
static pthread_barrier_t s_ready, s_go, s_done;

static void *run(void *arg)
{
    long id = (long)arg;
    s_blocks[id] = malloc(per * sizeof(void *));
    pthread_barrier_wait(&s_ready);
    pthread_barrier_wait(&s_go);
    for (long i = 0; i < per; i++)
        s_blocks[id][i] = malloc(16 + i % 64);
    for (long i = 0; i < per; i += 2)
        free(s_blocks[id][i]);
    pthread_barrier_wait(&s_done);
    return NULL;
}

int main(int argc, char **argv)
{
    per = argc > 1 ? atol(argv[1]) : 250000;
    setvbuf(stdout, NULL, _IONBF, 0);
    pthread_barrier_init(&s_ready, NULL, THREADS + 1);
    pthread_barrier_init(&s_go, NULL, THREADS + 1);
    pthread_barrier_init(&s_done, NULL, THREADS + 1);
    pthread_t th[THREADS];
    for (long i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, run, (void *)i);
    pthread_barrier_wait(&s_ready);
    int64_t before = live_blocks();
    pthread_barrier_wait(&s_go);
    pthread_barrier_wait(&s_done);
    int64_t after = live_blocks();
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        for (long j = 1; j < per; j += 2)
            free(s_blocks[i][j]);
        free(s_blocks[i]);
    }
    printf("delta %ld expected %ld\n", (long)(after - before), (long)(THREADS * (per / 2)));
    return 0;
}
