/* tls_key_destructors.c — frees that happen while a thread exits, after the runtime may have
   detached it (DESIGN guard rule 3):
     - a `__thread` pointer to a heap block, freed by a pthread key destructor;
     - pthread key destructors that free their (heap) values, including one that sets a new value
       on a second destructor round (glibc re-runs destructors up to PTHREAD_DESTRUCTOR_ITERATIONS);
     - a key destructor that allocates and frees a scratch buffer;
   in THREADS threads, NROUNDS rounds of THREADS at a time. Every block a thread allocated is freed
   by the time it has exited, so the record count must come back to where it started (modulo the
   DTVs glibc keeps with cached thread stacks, at most one per thread alive at once).
   Prints "rounds R threads T destructor-frees F" and on stderr "record delta D". */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../interposer_test.h"

enum { THREADS = 8, NROUNDS = 12 };

static __thread char *tls_buffer;
static pthread_key_t key_tls_owner, key_value, key_rearm, key_scratch;
static atomic_int destructor_frees;

static void free_tls_buffer(void *marker)
{
    (void)marker;
    free(tls_buffer);
    tls_buffer = NULL;
    atomic_fetch_add(&destructor_frees, 1);
}

static void free_value(void *v)
{
    free(v);
    atomic_fetch_add(&destructor_frees, 1);
}

/* First round: free the value and set a fresh heap value; second round: free that one. */
static void rearm(void *v)
{
    int *round = (int *)v;
    if (*round == 0) {
        int *next = malloc(sizeof *next);
        *next = 1;
        pthread_setspecific(key_rearm, next);
    }
    free(round);
    atomic_fetch_add(&destructor_frees, 1);
}

static void scratch(void *v)
{
    char *tmp = malloc(512);
    memset(tmp, 1, 512);
    char *dup = strdup("formatted in a destructor");
    free(dup);
    free(tmp);
    free(v);
    atomic_fetch_add(&destructor_frees, 1);
}

static void *thread_main(void *arg)
{
    (void)arg;
    tls_buffer = malloc(1000);
    memset(tls_buffer, 7, 1000);
    pthread_setspecific(key_tls_owner, (void *)1);
    pthread_setspecific(key_value, strdup("value freed by a key destructor"));
    int *r = malloc(sizeof *r);
    *r = 0;
    pthread_setspecific(key_rearm, r);
    pthread_setspecific(key_scratch, calloc(4, 100));
    return NULL;
}

int main(void)
{
    pthread_key_create(&key_tls_owner, free_tls_buffer);
    pthread_key_create(&key_value, free_value);
    pthread_key_create(&key_rearm, rearm);
    pthread_key_create(&key_scratch, scratch);
    setvbuf(stdout, NULL, _IONBF, 0);
    int64_t before = live_blocks();
    for (int round = 0; round < NROUNDS; round++) {
        pthread_t th[THREADS];
        for (int i = 0; i < THREADS; i++)
            if (pthread_create(&th[i], NULL, thread_main, NULL) != 0)
                return 3;
        for (int i = 0; i < THREADS; i++)
            pthread_join(th[i], NULL);
    }
    int64_t after = live_blocks();
    printf("rounds %d threads %d destructor-frees %d\n", NROUNDS, THREADS, atomic_load(&destructor_frees));
    fprintf(stderr, "record delta %ld\n", (long)(after - before));
    return 0;
}
