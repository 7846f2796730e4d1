/* raw_exit.c — threads that leave with the raw exit syscall, as a seccomp strict-mode worker must
   (strict mode allows read, write and exit, not exit_group or anything pthread_exit needs). They
   run no destructor. Each allocates first (so a preloaded tracker registers it), 40 at once, all
   joined, so glibc unmaps most of their stacks (its stack cache keeps 40 MiB); then the program
   asks for a leak scan, allocates, and ends.

   Under the library the scan's window opener read the dead threads' TLS and died of SIGSEGV.
   Prints "threads <n>" and "scan <rc>" (-1 without the library); exits 0. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "../interposer_test.h"

#define THREADS 40

static void *worker(void *arg)
{
    char *volatile p = malloc(64 + (size_t)(uintptr_t)arg); /* volatile: gcc may not drop the pair */
    memset(p, 1, 64);
    free(p);                      /* a pending removal waits in the thread's batch */
    syscall(SYS_exit, 0);         /* not pthread_exit: no destructor, no cleanup */
    return NULL;
}

int main(void)
{
    pthread_t th[THREADS];
    int n = 0;
    for (int i = 0; i < THREADS; i++)
        n += pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)i) == 0;
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    printf("threads %d\n", n);
    int rc = scan_now();
    printf("scan %s\n", rc >= 0 || rc == -1 ? "done" : "failed");
    char *volatile q = malloc(32);
    free(q);
    return 0;
}
