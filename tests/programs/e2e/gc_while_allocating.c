/* gc_while_allocating.c — "managed GCs while host threads allocate": the main thread calls
   dump_live(DUMP) over and over (each dump symbolizes every live block and allocates plenty of
   managed memory, so the core's garbage collector runs), while 8 threads churn malloc/free.
   At the end each churner keeps exactly KEEP blocks, so the record count must have grown by
   exactly CHURNERS*KEEP.
     gc_while_allocating DUMP [DUMPS]
   Prints "dumps D failed F" and "delta X expected Y". */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../interposer_test.h"

enum { CHURNERS = 8, SLOTS = 256, KEEP = 100 };
static atomic_int stop;
static pthread_barrier_t s_ready, s_go, s_done, s_measured;
/* volatile: the compiler must not elide the mallocs whose results nothing reads */
static void *volatile s_kept[CHURNERS][KEEP];

static void *churn(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    uintptr_t seed = id + 1;
    void *slots[SLOTS] = {0};
    pthread_barrier_wait(&s_ready);
    pthread_barrier_wait(&s_go);
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        int i = (int)((seed >> 33) % SLOTS);
        switch ((seed >> 45) % 4) {
        case 0: free(slots[i]); slots[i] = malloc(8 + (seed >> 50) % 1000); break;
        case 1: slots[i] = realloc(slots[i], 8 + (seed >> 50) % 3000); break;
        case 2: free(slots[i]); slots[i] = calloc(2, 40); break;
        default: free(slots[i]); slots[i] = strdup("churning while the collector runs"); break;
        }
    }
    for (int i = 0; i < SLOTS; i++)
        free(slots[i]);
    for (int i = 0; i < KEEP; i++)
        s_kept[id][i] = malloc(24);
    pthread_barrier_wait(&s_done);
    pthread_barrier_wait(&s_measured);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: gc_while_allocating DUMP [DUMPS]\n"); return 2; }
    int dumps = argc > 2 ? atoi(argv[2]) : 25;
    setvbuf(stdout, NULL, _IONBF, 0);
    pthread_barrier_init(&s_ready, NULL, CHURNERS + 1);
    pthread_barrier_init(&s_go, NULL, CHURNERS + 1);
    pthread_barrier_init(&s_done, NULL, CHURNERS + 1);
    pthread_barrier_init(&s_measured, NULL, CHURNERS + 1);
    pthread_t th[CHURNERS];
    for (int i = 0; i < CHURNERS; i++)
        pthread_create(&th[i], NULL, churn, (void *)(uintptr_t)i);
    pthread_barrier_wait(&s_ready);
    int64_t before = live_blocks();
    pthread_barrier_wait(&s_go);
    int failed = 0;
    for (int d = 0; d < dumps; d++)
        if (dump_live(argv[1]) != 0)
            failed++;
    atomic_store(&stop, 1);
    pthread_barrier_wait(&s_done);
    int64_t after = live_blocks();
    pthread_barrier_wait(&s_measured);
    for (int i = 0; i < CHURNERS; i++)
        pthread_join(th[i], NULL);
    printf("dumps %d failed %d\n", dumps, failed);
    printf("delta %ld expected %d\n", (long)(after - before), CHURNERS * KEEP);
    return 0;
}
