/* roots.c — one leak-scan case per mode (tests/Interposer.Tests/Scan/LeakScanEndToEndTests.cs).
 *
 *   roots <mode> <report-path>
 *
 * Prints "KEEP 0x..." for every block something still points to (it must not be reported) and
 * "LEAK 0x..." for every block nothing points to (it must be), then runs a scan with
 * interposer_scan() and prints "SCANNED <rc>". Modes that scan twice rename the first report
 * to <report-path>.1 before the second scan.
 *
 * Conservative scanning sees stale copies of a pointer, so leaking code runs in its own
 * noinline functions and scrub() zeroes the dead stack below the caller before each scan.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "../interposer_test.h"

#define NOINLINE __attribute__((noinline))
#define MASK ((uintptr_t)0x5a5a5a5a5a5a5a5aULL)

static const char *g_report;
void *g_global;              /* global root */
uintptr_t g_tagged[2];       /* interior and tagged pointers */
struct node { struct node *next; char pad[24]; };
struct node *g_list;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static int g_ready, g_release;

/* Sleeps the whole time: the stop-the-world signal interrupts nanosleep (EINTR, see stw.h), and
   a correct program resumes the sleep. */
static void sleep_for(int seconds)
{
    struct timespec left = {seconds, 0};
    while (nanosleep(&left, &left) != 0)
        ;
}

static void keep(const void *p) { printf("KEEP %p\n", p); }
static void leak(const void *p) { printf("LEAK %p\n", p); }

/* Zeroes the stack below the caller, where dead frames keep stale pointers. */
static NOINLINE void scrub(void)
{
    volatile char pad[16384];
    memset((char *)pad, 0, sizeof pad);
    __asm__ volatile("" ::: "memory");
}

static void scan(void)
{
    fflush(stdout);
    scrub();
    int rc = scan_now();
    printf("SCANNED %d\n", rc);
    fflush(stdout);
}

static NOINLINE void keep_first_report(void)
{
    char first[4096];
    snprintf(first, sizeof first, "%s.1", g_report); /* the test passes a path without %p */
    rename(g_report, first);
}

/* No big frame here: scrub() must reach the dead frames of what ran before. */
static NOINLINE void scan_twice_first(void)
{
    scan();
    keep_first_report();
}

static NOINLINE uintptr_t leak_masked(size_t n)
{
    uintptr_t v = (uintptr_t)malloc(n) ^ MASK;
    return v;
}

/* The holders below keep a pointer only where the mode says: it is handled masked and unmasked
   only inside these noinline helpers, whose registers are caller-saved (clobbered by the next
   call) and whose dead frames scrub() zeroes. */
static NOINLINE void emit(const char *what, uintptr_t masked)
{
    printf("%s %p\n", what, (void *)(masked ^ MASK));
}

static NOINLINE void store_unmasked(void **slot, uintptr_t masked)
{
    *(void *volatile *)slot = (void *)(masked ^ MASK);
}

static NOINLINE void set_specific_unmasked(pthread_key_t key, uintptr_t masked)
{
    pthread_setspecific(key, (void *)(masked ^ MASK));
}

static NOINLINE void call_unmasked(void (*fn)(void *), uintptr_t masked)
{
    fn((void *)(masked ^ MASK));
}

static NOINLINE void make_leak(void)
{
    char *p = malloc(48);
    strcpy(p, "leaked by make_leak");
    leak(p);
}

/* ---- threads that hold a pointer somewhere and wait ---- */

static void signal_ready(void)
{
    pthread_mutex_lock(&g_mu);
    g_ready++;
    pthread_cond_broadcast(&g_cv);
    while (!g_release)
        pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
}

static void wait_ready(int n)
{
    pthread_mutex_lock(&g_mu);
    while (g_ready < n)
        pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
}

static void release_all(void)
{
    pthread_mutex_lock(&g_mu);
    g_release = 1;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static void *stack_holder(void *arg)
{
    (void)arg;
    void *volatile held = NULL;
    uintptr_t m = leak_masked(72);
    emit("KEEP", m);
    store_unmasked((void **)&held, m);
    m = 0;
    fflush(stdout);
    scrub();
    signal_ready();
    return (void *)held == NULL ? NULL : arg;
}

/* The pointer lives only in r12 while the thread spins; every other register that may hold a
   copy is cleared, and the dead stack below is scrubbed first. */
static volatile int g_spin_release;
static void *register_holder(void *arg)
{
    (void)arg;
    uintptr_t masked = leak_masked(88);
    emit("KEEP", masked);
    fflush(stdout);
    scrub();
    __atomic_store_n(&g_ready, 1, __ATOMIC_RELEASE);
    __asm__ volatile(
        "mov %0, %%r12\n\t"
        "xor %1, %%r12\n\t"
        "xor %%eax, %%eax\n\txor %%ecx, %%ecx\n\txor %%edx, %%edx\n\txor %%esi, %%esi\n\t"
        "xor %%edi, %%edi\n\txor %%r8d, %%r8d\n\txor %%r9d, %%r9d\n\txor %%r10d, %%r10d\n\t"
        "xor %%r11d, %%r11d\n\t"
        "1: pause\n\t"
        "cmpl $0, %2\n\t"
        "je 1b\n\t"
        "xor %%r12, %%r12\n\t"
        :
        : "r"(masked), "r"(MASK), "m"(g_spin_release)
        : "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "memory");
    return NULL;
}

__thread void *t_static; /* static TLS */

static void *tls_holder(void *arg)
{
    (void)arg;
    uintptr_t m = leak_masked(56);
    emit("KEEP", m);
    store_unmasked(&t_static, m);
    fflush(stdout);
    scrub();
    signal_ready();
    return NULL;
}

static void *dlopen_tls_holder(void *arg)
{
    void (*set)(void *) = (void (*)(void *))arg;
    uintptr_t m = leak_masked(120);
    emit("KEEP", m);
    call_unmasked(set, m);
    fflush(stdout);
    scrub();
    signal_ready();
    return NULL;
}

static pthread_key_t g_keys[40];
static void *specific_holder(void *arg)
{
    (void)arg;
    for (int i = 0; i < 40; i++) {
        if (i == 0 || i == 39) { /* key 0 (< 32) and key 39 (>= 32: a second-level block) */
            uintptr_t m = leak_masked(40 + (size_t)i);
            emit("KEEP", m);
            set_specific_unmasked(g_keys[i], m);
        }
    }
    fflush(stdout);
    scrub();
    signal_ready();
    return NULL;
}

/* Blocks every signal (so it cannot be stopped) and holds a block on its stack. */
/* A thread under seccomp, the sandbox pattern: strict mode (read, write, exit only) or a filter
   of its own that kills the thread on gettid. It holds a block from its stack, says it is ready
   through memory (no futex: strict mode forbids it), blocks in read(), and after the scan writes
   ALIVE and exits with the raw exit syscall. It never mallocs, so it never registers with us. */
static int g_seccomp_pipe[2];
static int g_seccomp_ready;
static int g_seccomp_tid;
static int g_seccomp_filter; /* 0: strict mode, 1: the gettid filter */
static void *g_seccomp_block;

static int enter_seccomp(void)
{
    if (!g_seccomp_filter)
        return prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT);
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_gettid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_THREAD),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {(unsigned short)(sizeof code / sizeof code[0]), code};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

static void *seccomp_holder(void *arg)
{
    (void)arg;
    void *volatile held = g_seccomp_block;
    g_seccomp_block = NULL;
    g_seccomp_tid = (int)gettid();
    if (enter_seccomp() != 0) {
        perror("seccomp");
        exit(4);
    }
    __atomic_store_n(&g_seccomp_ready, 1, __ATOMIC_RELEASE);
    char c = 0;
    while (read(g_seccomp_pipe[0], &c, 1) != 1)
        ;
    (void)held;
    static const char alive[] = "ALIVE\n";
    write(1, alive, sizeof alive - 1);
    syscall(SYS_exit, 0);
    return NULL;
}

static NOINLINE void seccomp_mode(int filter)
{
    pthread_t th;
    g_seccomp_filter = filter;
    if (pipe(g_seccomp_pipe) != 0)
        exit(5);
    uintptr_t m = leak_masked(120);
    emit("KEEP", m);
    store_unmasked(&g_seccomp_block, m);
    m = 0;
    pthread_create(&th, NULL, seccomp_holder, NULL);
    while (!__atomic_load_n(&g_seccomp_ready, __ATOMIC_ACQUIRE))
        usleep(1000);
    printf("SECCOMP %d\n", g_seccomp_tid);
    make_leak();
    scan();
    if (write(g_seccomp_pipe[1], "x", 1) != 1)
        exit(6);
    pthread_join(th, NULL);
}

static void *blocking_holder(void *arg)
{
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, NULL);
    void *volatile held = NULL;
    uintptr_t m = leak_masked(112);
    emit("KEEP", m);
    store_unmasked((void **)&held, m);
    m = 0;
    printf("BLOCKER %d\n", (int)gettid());
    fflush(stdout);
    scrub();
    signal_ready();
    return (void *)held == NULL ? NULL : arg;
}

static void *leaker(void *arg)
{
    (void)arg;
    make_leak();
    fflush(stdout);
    return NULL;
}

/* ---- modes ---- */

static NOINLINE void mode_global(void)
{
    g_global = malloc(64);
    keep(g_global);
}

static NOINLINE void run_stack_mode(void)
{
    void *volatile held[2];
    held[0] = malloc(96);
    held[1] = NULL;
    keep(held[0]);
    scan();
    __asm__ volatile("" ::: "memory");
    free(held[0]);
}

static NOINLINE void make_tree(void)
{
    void **root = malloc(4 * sizeof(void *));
    leak(root);
    for (int i = 0; i < 4; i++) {
        root[i] = malloc(32);
        leak(root[i]);
    }
}

static NOINLINE void make_cycle(void)
{
    void **a = malloc(16), **b = malloc(16);
    a[0] = b;
    b[0] = a;
    leak(a);
    leak(b);
}

static NOINLINE void mode_list(void)
{
    for (int i = 0; i < 1000; i++) {
        struct node *n = malloc(sizeof *n);
        n->next = g_list;
        g_list = n;
        keep(n);
    }
}

static NOINLINE void mode_realloc(void)
{
    char *p = malloc(8);
    for (size_t n = 16; n <= 65536; n *= 4)
        p = realloc(p, n);
    g_global = p;
    keep(p);
    char *q = realloc(NULL, 200);
    q = realloc(q, 400);
    leak(q);
    static void *aligned[4];
    aligned[0] = memalign(64, 100);
    posix_memalign(&aligned[1], 128, 100);
    aligned[2] = aligned_alloc(256, 512);
    aligned[3] = valloc(100);
    for (int i = 0; i < 4; i++)
        keep(aligned[i]);
    void *l1 = memalign(64, 100);
    void *l2 = NULL;
    posix_memalign(&l2, 128, 100);
    leak(l1);
    leak(l2);
    /* interior pointers and tagged pointers */
    void *i1 = malloc(64), *i2 = malloc(64);
    g_tagged[0] = (uintptr_t)i1 + 40;
    g_tagged[1] = (uintptr_t)i2 | 3;
    keep(i1);
    keep(i2);
}

static NOINLINE void mode_libc(void)
{
    char *s = strdup("strdup leak");
    leak(s);
    char *a = NULL;
    if (asprintf(&a, "asprintf leak %d", 42) > 0)
        leak(a);
    s = strdup("kept");
    g_global = s;
    keep(s);
}

static NOINLINE void mode_freed(void)
{
    for (int i = 0; i < 1000; i++) {
        void *p = malloc(16 + i);
        free(p);
    }
    void *q = calloc(10, 10);
    q = realloc(q, 1000);
    free(q);
}

static NOINLINE void mode_mmap(void)
{
    void **region = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED)
        exit(3);
    region[1000] = malloc(136);
    keep(region[1000]);
    /* a region unmapped again must not be scanned (nor fault) */
    void **gone = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    gone[5] = malloc(24);
    leak(gone[5]);
    munmap(gone, 1 << 16);
    /* mprotect'ed to PROT_NONE: skipped, not faulted on */
    void **hidden = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    hidden[7] = malloc(40);
    leak(hidden[7]);
    mprotect(hidden, 1 << 16, PROT_NONE);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: roots <mode> <report-path>\n");
        return 2;
    }
    const char *mode = argv[1];
    g_report = argv[2];
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    printf("PID %d\n", (int)getpid());
    pthread_t th[16];

    if (strcmp(mode, "leak") == 0) {
        make_leak();
        scan();
    } else if (strcmp(mode, "global") == 0) {
        mode_global();
        scan();
    } else if (strcmp(mode, "stack") == 0) {
        run_stack_mode();
    } else if (strcmp(mode, "thread_stack") == 0 || strcmp(mode, "tls_static") == 0 ||
               strcmp(mode, "specific") == 0) {
        void *(*fn)(void *) = mode[0] == 't' && mode[1] == 'h' ? stack_holder
                            : mode[0] == 't' ? tls_holder : specific_holder;
        if (fn == specific_holder)
            for (int i = 0; i < 40; i++)
                pthread_key_create(&g_keys[i], NULL);
        if (fn == tls_holder) { /* the main thread's static TLS too */
            uintptr_t m = leak_masked(60);
            emit("KEEP", m);
            store_unmasked(&t_static, m);
        }
        pthread_create(&th[0], NULL, fn, NULL);
        wait_ready(1);
        scan();
        release_all();
        pthread_join(th[0], NULL);
    } else if (strcmp(mode, "blocker") == 0) {
        pthread_create(&th[0], NULL, blocking_holder, NULL);
        wait_ready(1);
        make_leak();
        scan();
        release_all();
        pthread_join(th[0], NULL);
    } else if (strcmp(mode, "seccomp_strict") == 0 || strcmp(mode, "seccomp_filter") == 0) {
        seccomp_mode(mode[8] == 'f');
    } else if (strcmp(mode, "register") == 0) {
        pthread_create(&th[0], NULL, register_holder, NULL);
        while (!__atomic_load_n(&g_ready, __ATOMIC_ACQUIRE))
            usleep(1000);
        usleep(20000); /* into the spin loop */
        scan();
        g_spin_release = 1;
        pthread_join(th[0], NULL);
    } else if (strcmp(mode, "tls_dlopen") == 0) {
        if (argc < 4)
            return 2;
        void *h = dlopen(argv[3], RTLD_NOW);
        if (h == NULL) {
            fprintf(stderr, "dlopen: %s\n", dlerror());
            return 3;
        }
        void (*set)(void *) = (void (*)(void *))dlsym(h, "tls_lib_set");
        uintptr_t m = leak_masked(104);
        emit("KEEP", m);
        call_unmasked(set, m);
        pthread_create(&th[0], NULL, dlopen_tls_holder, (void *)set);
        wait_ready(1);
        scan();
        release_all();
        pthread_join(th[0], NULL);
    } else if (strcmp(mode, "cycle") == 0) {
        make_cycle();
        scan();
    } else if (strcmp(mode, "tree") == 0) {
        make_tree();
        scan();
    } else if (strcmp(mode, "list") == 0) {
        mode_list();
        scan();
    } else if (strcmp(mode, "realloc") == 0) {
        mode_realloc();
        scan();
    } else if (strcmp(mode, "libc") == 0) {
        mode_libc();
        scan();
    } else if (strcmp(mode, "freed") == 0) {
        mode_freed();
        scan();
    } else if (strcmp(mode, "writeback") == 0) {
        uintptr_t masked = leak_masked(77);
        emit("LEAK", masked);
        scan_twice_first();
        store_unmasked(&g_global, masked);
        emit("KEEP", masked);
        scan();
    } else if (strcmp(mode, "threads16") == 0) {
        for (int i = 0; i < 16; i++)
            pthread_create(&th[i], NULL, leaker, NULL);
        for (int i = 0; i < 16; i++)
            pthread_join(th[i], NULL);
        scan();
    } else if (strcmp(mode, "mmap") == 0) {
        mode_mmap();
        scan();
    } else if (strcmp(mode, "serve") == 0) {
        /* Leaks, then waits for the test's scan signal; ends when stdin closes. */
        make_leak();
        printf("READY\n");
        fflush(stdout);
        scrub();
        char buf[64];
        while (fgets(buf, sizeof buf, stdin) != NULL)
            ;
    } else if (strcmp(mode, "ignore_signal") == 0 || strcmp(mode, "block_signal") == 0) {
        /* The program takes the scan signal for itself: ignored, or blocked in every thread. */
        if (mode[0] == 'i') {
            signal(SIGUSR2, SIG_IGN);
        } else {
            sigset_t set;
            sigemptyset(&set);
            sigaddset(&set, SIGUSR2);
            pthread_sigmask(SIG_BLOCK, &set, NULL);
        }
        printf("READY\n");
        fflush(stdout);
        char buf[64];
        while (fgets(buf, sizeof buf, stdin) != NULL)
            ;
    } else if (strcmp(mode, "periodic") == 0) {
        /* scan_interval_s=1: one leak, a pause, a second leak, a pause; then a leak that is
           written back (its "referenced again" line). */
        make_leak();
        fflush(stdout);
        scrub();
        sleep_for(3);
        uintptr_t masked = leak_masked(99);
        emit("LEAK2", masked);
        fflush(stdout);
        scrub();
        sleep_for(3);
        store_unmasked(&g_global, masked);
        sleep_for(3);
    } else if (strcmp(mode, "exit_leak") == 0) {
        make_leak();
        mode_global();
        fflush(stdout);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    return 0;
}
