/* main_pthread_exit.c — the main thread ends with pthread_exit while its workers still allocate;
   the process ends, with status 0, when the last of them returns (glibc counts live threads and
   the last one out calls exit(0)). A library whose own threads were counted too kept the process
   alive for ever, a zombie main thread and all, and deaf to SIGTERM (its threads block it).

   Usage: main_pthread_exit [workers]; workers print in order, one line each, after main's. */
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_WORKERS 8
static sem_t g_turn[MAX_WORKERS + 1];
void *volatile g_keep[MAX_WORKERS];

static void *worker(void *arg)
{
    long i = (long)arg;
    unsigned long sum = 0;
    for (int k = 0; k < 50000; k++) {
        char *p = malloc(16 + k % 200);
        p[0] = (char)k;
        sum += (unsigned char)p[0];
        free(p);
    }
    g_keep[i] = malloc(64);
    sem_wait(&g_turn[i]);
    printf("worker %ld: sum %lu\n", i, sum);
    fflush(stdout);
    sem_post(&g_turn[i + 1]);
    return NULL;
}

int main(int argc, char **argv)
{
    int workers = argc > 1 ? atoi(argv[1]) : 4;
    if (workers < 1 || workers > MAX_WORKERS)
        workers = 4;
    for (int i = 0; i <= workers; i++)
        sem_init(&g_turn[i], 0, 0);
    for (long i = 0; i < workers; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, (void *)i) != 0)
            return 1;
        pthread_detach(t);
    }
    printf("main exits\n");
    fflush(stdout);
    sem_post(&g_turn[0]);
    pthread_exit(NULL);
}
