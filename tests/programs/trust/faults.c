/* faults.c — the host under faults and odd calls (issue 4). One mode per case:
 *
 *   faults enomem            malloc/calloc/realloc/memalign that fail: NULL and errno as glibc
 *                            gives them, the library's record count unchanged
 *   faults metadata          RLIMIT_AS leaves room for the heap but not for the library's table:
 *                            tracking stops with one stderr line, the program goes on
 *   faults frees             free(NULL), free of a block the library never saw
 *   faults doublefree        a double free: glibc's own abort, as without the library
 *   faults rtsig             the program owns SIGRTMIN+3 (the stop-the-world signal): its handler
 *                            keeps working; scans are refused with a message
 *   faults vfork <report>    a thread sits in vfork() (unstoppable) while the main thread scans
 *   faults children <self>   fork, vfork+exec and posix_spawn children, each leaking its own block
 *   faults leakchild <tag>   (a spawned child) leaks a block holding <tag>, then exits
 *   faults twoscans          leaks a block, scans twice (the report path may be unwritable)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include "../interposer_test.h"

/* enomem reads a block after a realloc that failed, on purpose: it must be intact. */
#pragma GCC diagnostic ignored "-Wuse-after-free"

extern char **environ;
extern void *__libc_malloc(size_t);
static volatile int g_never;
void *g_sink;

static __attribute__((noinline)) void leak_tagged(const char *tag)
{
    char *p = malloc(64);
    memset(p, 0, 64);
    strncpy(p, tag, 63);
    if (g_never)
        g_sink = p;
}

static volatile size_t g_huge = (size_t)1 << 62, g_half = (size_t)1 << 40;

static void enomem(void)
{
    printf("enomem\n"); /* stdout's buffer is allocated now, not between the two counts */
    int64_t before = live_blocks();
    errno = 0;
    void *a = malloc(g_huge);
    int ea = errno;
    errno = 0;
    void *b = calloc(g_half, g_half); /* n * size overflows */
    int eb = errno;
    char *keep = malloc(100);
    memset(keep, 7, 100);
    errno = 0;
    void *c = realloc(keep, g_huge);
    int ec = errno;
    int kept = keep[99]; /* a failed realloc leaves the block as it was */
    void *d = memalign(64, g_huge);
    int ed = errno;
    errno = 0;
    void *e = NULL;
    int re = posix_memalign(&e, 3, 16); /* bad alignment: EINVAL, returned not set */
    int64_t during = live_blocks();
    free(keep);
    int64_t after = live_blocks();
    printf("malloc %s %d calloc %s %d realloc %s %d kept %d memalign %s %d posix_memalign %d\n", a ? "ptr" : "NULL", ea,
           b ? "ptr" : "NULL", eb, c ? "ptr" : "NULL", ec, kept, d ? "ptr" : "NULL", ed, re);
    /* Without the library live_blocks() is -1: print what the library must show. */
    printf("records: +%lld while the realloc'ed block lives, +%lld after its free\n",
           before < 0 ? 1LL : (long long)(during - before), before < 0 ? 0LL : (long long)(after - before));
}

static long vm_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = 0;
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmSize: %ld kB", &kb) == 1)
            break;
    if (f != NULL)
        fclose(f);
    return kb;
}

static void metadata(void)
{
    /* Room for ~24 MB more of anything: glibc's heap grows by brk in small steps and fills it;
       the library's table doubles its shards by mmap and is refused first. */
    struct rlimit rl = {(rlim_t)(vm_kb() + 24 * 1024) * 1024, RLIM_INFINITY};
    if (setrlimit(RLIMIT_AS, &rl) != 0)
        return;
    static void *blocks[2000000];
    long n = 0;
    while (n < 2000000 && (blocks[n] = malloc(8)) != NULL)
        n++;
    for (long i = 0; i < n; i++)
        free(blocks[i]);
    void *p = malloc(32); /* still works */
    printf("allocated %s, then %s\n", n > 1000 ? "many" : "few", p ? "malloc works" : "malloc fails");
    free(p);
}

static void frees(void)
{
    int64_t before = live_blocks();
    free(NULL);
    void *unseen = __libc_malloc(48); /* glibc's own: the library never saw it */
    free(unseen);
    int64_t after = live_blocks();
    printf("free(NULL) and an unseen free: live delta %lld\n", before < 0 ? 0LL : (long long)(after - before));
}

static volatile sig_atomic_t g_rt_hits;
static void on_rt(int sig)
{
    (void)sig;
    g_rt_hits++;
}

static void rtsig(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_rt;
    sigaction(SIGRTMIN + 3, &sa, NULL);
    raise(SIGRTMIN + 3);
    int rc = scan_now();
    raise(SIGRTMIN + 3);
    printf("handler ran %d times, scan %s\n", (int)g_rt_hits, rc == 0 ? "ran" : "refused");
}

static void *vforker(void *arg)
{
    (void)arg;
    pid_t c = vfork();
    if (c == 0) {
        sleep(2); /* the parent thread waits, unstoppable, until we exit */
        _exit(0);
    }
    waitpid(c, NULL, 0);
    return NULL;
}

static void vfork_scan(void)
{
    pthread_t t;
    pthread_create(&t, NULL, vforker, NULL);
    usleep(300000);
    int rc = scan_now();
    printf("scan %d while a thread sat in vfork\n", rc);
    pthread_join(t, NULL);
}

static void children(const char *self)
{
    leak_tagged("leak-of-parent");
    pid_t f = fork();
    if (f == 0) {
        leak_tagged("leak-of-fork-child");
        exit(0); /* exit, not _exit: the child's at-exit scan runs */
    }
    waitpid(f, NULL, 0);
    pid_t v = vfork();
    if (v == 0) {
        execl(self, self, "leakchild", "leak-of-vfork-child", (char *)NULL);
        _exit(127);
    }
    waitpid(v, NULL, 0);
    pid_t s;
    char *argv[] = {(char *)self, "leakchild", "leak-of-spawn-child", NULL};
    if (posix_spawn(&s, self, NULL, NULL, argv, environ) == 0)
        waitpid(s, NULL, 0);
    printf("children %d %d %d\n", (int)f, (int)v, (int)s);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2)
        return 2;
    const char *m = argv[1];
    if (strcmp(m, "enomem") == 0)
        enomem();
    else if (strcmp(m, "metadata") == 0)
        metadata();
    else if (strcmp(m, "frees") == 0)
        frees();
    else if (strcmp(m, "doublefree") == 0) {
        char *volatile p = malloc(40);
        free(p);
        free(p);
        printf("not reached\n");
    } else if (strcmp(m, "rtsig") == 0)
        rtsig();
    else if (strcmp(m, "vfork") == 0)
        vfork_scan();
    else if (strcmp(m, "children") == 0)
        children(argv[0]);
    else if (strcmp(m, "twoscans") == 0) {
        leak_tagged("two scans");
        int a = scan_now();
        int b = scan_now();
        printf("scans %d %d\n", a, b);
    } else if (strcmp(m, "leakchild") == 0 && argc > 2)
        leak_tagged(argv[2]);
    else
        return 2;
    return 0;
}
