/* address_reuse.c — DESIGN guard rule 5 (remove the record before the real free). 8 threads
   malloc and free blocks of one size class as fast as they can, so glibc hands an address that
   one thread just freed to another thread almost at once (all threads share the size class;
   frees of another arena's blocks and tcache refills move addresses between threads). If a
   record were removed after the real free, another thread could insert its record for the same
   address first and then lose it to the late removal: the count drifts and the table sees
   "stale records replaced".
     address_reuse DUMP [THREADS]
   THREADS (default 8, at most MAX_THREADS) share 1,600,000 iterations. With batched frees the
   removal comes after the real free, stamped; past 256 threads an insert that replaces a record
   no longer asks the batches whether its removal is pending ("records replaced unchecked").
   Prints "delta X expected Y" (each thread keeps KEEP blocks at the end) and writes the dump. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "../interposer_test.h"

enum { MAX_THREADS = 512, TOTAL_ITERATIONS = 1600000, KEEP = 50, RING = 8 };
static int THREADS = 8, ITERATIONS = TOTAL_ITERATIONS / 8;
static pthread_barrier_t s_ready, s_go, s_done, s_measured;
static void *volatile s_kept[MAX_THREADS][KEEP];
/* blocks handed from thread to thread, so frees happen on a thread other than the allocating one */
static void *volatile s_mailbox[MAX_THREADS];

static void *hammer(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    void *ring[RING] = {0};
    pthread_barrier_wait(&s_ready);
    pthread_barrier_wait(&s_go);
    for (int i = 0; i < ITERATIONS; i++) {
        int k = i % RING;
        free(ring[k]);
        ring[k] = malloc(40); /* one size class for everybody */
        if ((i & 15) == 0) {
            /* swap a block with the next thread: cross-thread frees */
            void *mine = ring[k];
            ring[k] = __atomic_exchange_n(&s_mailbox[(id + 1) % THREADS], mine, __ATOMIC_ACQ_REL);
        }
    }
    for (int k = 0; k < RING; k++)
        free(ring[k]);
    for (int i = 0; i < KEEP; i++)
        s_kept[id][i] = malloc(40);
    pthread_barrier_wait(&s_done);
    pthread_barrier_wait(&s_measured);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: address_reuse DUMP [THREADS]\n"); return 2; }
    if (argc > 2)
        THREADS = atoi(argv[2]);
    if (THREADS < 2 || THREADS > MAX_THREADS) { fprintf(stderr, "THREADS: 2..%d\n", MAX_THREADS); return 2; }
    ITERATIONS = TOTAL_ITERATIONS / THREADS;
    setvbuf(stdout, NULL, _IONBF, 0);
    pthread_barrier_init(&s_ready, NULL, THREADS + 1);
    pthread_barrier_init(&s_go, NULL, THREADS + 1);
    pthread_barrier_init(&s_done, NULL, THREADS + 1);
    pthread_barrier_init(&s_measured, NULL, THREADS + 1);
    pthread_t th[MAX_THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, hammer, (void *)(uintptr_t)i);
    pthread_barrier_wait(&s_ready);
    int64_t before = live_blocks();
    pthread_barrier_wait(&s_go);
    pthread_barrier_wait(&s_done);
    /* the mailboxes still hold one block each */
    for (int i = 0; i < THREADS; i++) {
        free(s_mailbox[i]);
        s_mailbox[i] = NULL;
    }
    int64_t after = live_blocks();
    int rc = dump_live(argv[1]);
    pthread_barrier_wait(&s_measured);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    printf("delta %ld expected %d dump %d\n", (long)(after - before), THREADS * KEEP, rc);
    return 0;
}
