/* fork_scan.c — fork while leak scans run back to back, each scan rendering a report of a few
 * thousand leaked blocks (so the core allocates, and collects, inside its GC window). A child that
 * enters the library while the parent's runtime was mid-GC at the fork used to wait forever for a
 * GC thread it does not have; now fork and the window exclude each other (gc_window.c).
 *
 *   fork_scan <seconds>
 *
 * Every child allocates, frees and exits; the parent gives each 10 s, then kills it and counts it
 * as hung. Prints "forks N scans N hung N"; exits 0 only with no hung child and at least one
 * scan and one fork.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "../interposer_test.h"

#define MASK ((uintptr_t)0x5a5a5a5a5a5a5a5aULL)
#define LEAKS 3000

static volatile int g_stop;
static long g_forks, g_scans, g_hung;
uintptr_t g_masked[LEAKS];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *scanner(void *arg)
{
    (void)arg;
    while (!g_stop) {
        if (scan_now() == 0)
            g_scans++;
    }
    return NULL;
}

static void *forker(void *arg)
{
    (void)arg;
    while (!g_stop) {
        pid_t c = fork();
        if (c == 0) {
            void *p = malloc(100);
            free(p);
            _exit(0);
        }
        if (c < 0)
            continue;
        double deadline = now_s() + 10;
        int status;
        while (waitpid(c, &status, WNOHANG) == 0) {
            if (now_s() > deadline) {
                g_hung++;
                kill(c, SIGKILL);
                waitpid(c, &status, 0);
                break;
            }
            usleep(1000);
        }
        g_forks++;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    for (int i = 0; i < LEAKS; i++)
        g_masked[i] = (uintptr_t)malloc(24 + i % 100) ^ MASK;
    pthread_t s, f;
    pthread_create(&s, NULL, scanner, NULL);
    pthread_create(&f, NULL, forker, NULL);
    double end = now_s() + atof(argv[1]);
    while (now_s() < end && g_hung == 0)
        usleep(20000);
    g_stop = 1;
    pthread_join(f, NULL);
    pthread_join(s, NULL);
    printf("forks %ld scans %ld hung %ld\n", g_forks, g_scans, g_hung);
    return g_hung == 0 && g_forks > 0 && g_scans > 0 ? 0 : 1;
}
