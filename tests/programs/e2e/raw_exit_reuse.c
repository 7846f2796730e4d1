/* raw_exit_reuse.c — threads that leave with the raw exit syscall (a seccomp strict-mode worker's
   only way out) with frees still pending, then other threads that get the same addresses back.
   40 threads each allocate 12 blocks of 48 bytes and free them (7 go to the thread's tcache, 5 to
   its arena, whose removals wait in the thread's batch), then exit raw; all are joined, so glibc
   unmaps most of their stacks (its stack cache keeps 40 MiB). 40 more threads then allocate the
   same size: past 16 arenas glibc shares them, so they take the dead threads' freed blocks back,
   and each such insert asks every thread's batch whether the old record's removal is pending.

   Under the library that question read the dead threads' TLS, where the batches were, and died of
   SIGSEGV on every run. No scan, no dump: the crash came before any. Prints "reused some" when
   the second wave got any of the first wave's addresses (the case under test) and "done"; exits
   0. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define THREADS 40
#define BLOCKS 12

static void *g_first[THREADS][BLOCKS];  /* the first wave's blocks (addresses only, once freed) */
static void *g_second[THREADS][BLOCKS];

static void *dying(void *arg)
{
    intptr_t k = (intptr_t)arg;
    for (int i = 0; i < BLOCKS; i++) {
        g_first[k][i] = malloc(48);
        memset(g_first[k][i], 1, 48);
    }
    for (int i = 0; i < BLOCKS; i++)
        free(g_first[k][i]);
    syscall(SYS_exit, 0); /* not pthread_exit: no destructor, no cleanup */
    return NULL;
}

static void *reusing(void *arg)
{
    intptr_t k = (intptr_t)arg;
    for (int i = 0; i < BLOCKS; i++) {
        g_second[k][i] = malloc(48);
        memset(g_second[k][i], 2, 48);
    }
    for (int i = 0; i < BLOCKS; i++)
        free(g_second[k][i]);
    return NULL;
}

int main(void)
{
    pthread_t th[THREADS];
    for (intptr_t i = 0; i < THREADS; i++)
        if (pthread_create(&th[i], NULL, dying, (void *)i) != 0)
            return 1;
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    for (intptr_t i = 0; i < THREADS; i++)
        if (pthread_create(&th[i], NULL, reusing, (void *)i) != 0)
            return 1;
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    int reused = 0, total = 0;
    for (int k = 0; k < THREADS; k++)
        for (int i = 0; i < BLOCKS; i++, total++)
            for (int j = 0; j < THREADS * BLOCKS; j++)
                if (g_second[k][i] == g_first[j / BLOCKS][j % BLOCKS]) {
                    reused++;
                    break;
                }
    printf("reused %s\n", reused > 0 ? "some" : "none");
    printf("done\n");
    return 0;
}
