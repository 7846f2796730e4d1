/*
 * stw_probe.c — drives native-shim/stw.c (compiled into this program, no libinterposer.so).
 * Driven by tests/Interposer.Tests/StopTheWorld/StopTheWorldTests.cs.
 *
 *   stw_probe basic                       one stop over every kind of thread (below)
 *   stw_probe cycles NBUSY NREAD NCYCLES  stop/resume cycles: frozen, registers, latency
 *   stw_probe blocked NCYCLES TIMEOUT_MS  a thread blocking every signal, stopped again and again
 *   stw_probe dstate TIMEOUT_MS           a thread in uninterruptible sleep (vfork parent)
 *   stw_probe spawner NCYCLES             threads created and exiting all the time
 *   stw_probe eintr                       which blocking calls a stop makes fail with EINTR
 *   stw_probe veto NCYCLES                the park check: threads never park inside "the core"
 *   stw_probe errors                      argument, ownership, overflow, nesting and fork checks
 *
 * Output: one line per fact, "<tag> key=value ...". While the world is stopped the main thread
 * only reads memory, raw syscalls and clock_gettime: a stopped thread may hold stdio's or
 * malloc's lock, so everything is printed after ip_stw_resume.
 *
 * Kinds of worker threads:
 *   busy      spins in asm with a known value in every general register (marker + register
 *             number; r15 = address of its counter) and counts in its counter
 *   alt       the same, with a sigaltstack installed (the handler runs there: SA_ONSTACK)
 *   read      blocked in read() on a pipe (SA_RESTART: must not see EINTR)
 *   sleep     loops in nanosleep (never restarted: sees EINTR once per stop, the known cost)
 *   blocked   blocks every signal with pthread_sigmask until told to unblock
 *   exit      blocks the stop signal, waits until one is pending (so it was listed), exits
 *   internal  marked with ip_stw_mark_internal: never stopped, keeps counting
 *   late_internal  blocks the stop signal until one is pending (it was listed), then marks
 *             itself internal and unblocks: must be left out, and not waited for
 *   errno     sets errno, spins, checks that errno did not change under it
 *   core      alternates 100 us "inside the core" (a TLS flag the park check reads) and 100 us
 *             outside; stuck: inside the core for good (veto mode)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <semaphore.h>
#include <linux/futex.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/select.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "../../../native-shim/stw.h"

enum kind { K_BUSY, K_ALT, K_READ, K_SLEEP, K_BLOCKED, K_EXIT, K_INTERNAL, K_ERRNO, K_VFORK,
            K_CORE, K_STUCK, K_LATE_INTERNAL };
static const char *const kind_names[] = {"busy",  "alt",   "read", "sleep", "blocked",
                                         "exit",  "internal", "errno", "vfork", "core",
                                         "stuck", "late_internal"};

typedef struct worker {
    volatile uint64_t counter;  /* first: its own cache line (the struct is 64-aligned) */
    pthread_t th;
    int kind, index;
    volatile int32_t tid;
    volatile int ready, release, done;
    volatile int eintr;         /* sleep/read: EINTR returns seen; errno: clobbers seen;
                                   blocked: stop signals found queued */
    volatile int in_core;       /* core: mirror of t_in_core, for the main thread to read */
    uint64_t lo, hi;            /* its stack, from pthread_getattr_np */
    uint64_t alt_lo, alt_hi;    /* its sigaltstack, if any */
} __attribute__((aligned(64))) worker;

#define MAX_WORKERS 64
static worker g_w[MAX_WORKERS];
static int g_nw;
static volatile int g_go, g_quit;
static int g_pipe[2];
static int g_signo;
static __thread volatile int t_in_core;
static uint64_t g_vetoes;

static int may_park(void)
{
    if (t_in_core) {
        __atomic_fetch_add(&g_vetoes, 1, __ATOMIC_RELAXED);
        return 0;
    }
    return 1;
}

/* Labels around the asm loop, to check a stopped busy thread's rip. */
extern const char stw_busy_loop_start[], stw_busy_loop_end[];

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static uint64_t marker(int index) { return 0x5a5a000000000000ull | ((uint64_t)index << 16); }

/* Expected value of register r (enum ip_stw_reg) of busy worker w. */
static int reg_expected(const worker *w, int r, uint64_t *v)
{
    uint64_t m = marker(w->index);
    switch (r) {
    case IP_STW_RAX: *v = m + 0; return 1;
    case IP_STW_RBX: *v = m + 1; return 1;
    case IP_STW_RCX: *v = m + 2; return 1;
    case IP_STW_RDX: *v = m + 3; return 1;
    case IP_STW_RSI: *v = m + 4; return 1;
    case IP_STW_RDI: *v = m + 5; return 1;
    case IP_STW_R8: case IP_STW_R9: case IP_STW_R10: case IP_STW_R11:
    case IP_STW_R12: case IP_STW_R13: case IP_STW_R14:
        *v = m + 8 + (uint64_t)(r - IP_STW_R8); return 1;
    case IP_STW_R15: *v = (uint64_t)(uintptr_t)&w->counter; return 1;
    default: return 0;
    }
}

__attribute__((noinline, noclone)) static void busy_asm(volatile uint64_t *counter, uint64_t m)
{
    uint64_t a = m + 0, b = m + 1, c = m + 2, d = m + 3, si = m + 4, di = m + 5;
    register uint64_t r8 __asm__("r8") = m + 8;
    register uint64_t r9 __asm__("r9") = m + 9;
    register uint64_t r10 __asm__("r10") = m + 10;
    register uint64_t r11 __asm__("r11") = m + 11;
    register uint64_t r12 __asm__("r12") = m + 12;
    register uint64_t r13 __asm__("r13") = m + 13;
    register uint64_t r14 __asm__("r14") = m + 14;
    register uint64_t r15 __asm__("r15") = (uint64_t)(uintptr_t)counter;
    /* -120(%rsp), in the red zone: a leaf's local the signal frame must not overwrite. */
    __asm__ volatile("movq %%rax, -120(%%rsp)\n\t"
                     ".globl stw_busy_loop_start\n"
                     "stw_busy_loop_start:\n\t"
                     "1: incq (%%r15)\n\t"
                     "cmpl $0, %[quit]\n\t"
                     "je 1b\n"
                     ".globl stw_busy_loop_end\n"
                     "stw_busy_loop_end:\n\t"
                     : "+a"(a), "+b"(b), "+c"(c), "+d"(d), "+S"(si), "+D"(di), "+r"(r8),
                       "+r"(r9), "+r"(r10), "+r"(r11), "+r"(r12), "+r"(r13), "+r"(r14),
                       "+r"(r15)
                     : [quit] "m"(g_quit)
                     : "memory", "cc");
}

static void setup(worker *w)
{
    w->tid = (int32_t)syscall(SYS_gettid);
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        void *addr;
        size_t size;
        if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
            w->lo = (uint64_t)(uintptr_t)addr;
            w->hi = w->lo + size;
        }
        pthread_attr_destroy(&attr);
    }
}

static void *worker_main(void *p)
{
    worker *w = p;
    setup(w);
    switch (w->kind) {
    case K_BUSY:
        w->ready = 1;
        busy_asm(&w->counter, marker(w->index));
        break;
    case K_ALT: {
        size_t size = 64 * 1024;
        void *alt = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        stack_t ss = {.ss_sp = alt, .ss_size = size, .ss_flags = 0};
        if (alt != MAP_FAILED && sigaltstack(&ss, NULL) == 0) {
            w->alt_lo = (uint64_t)(uintptr_t)alt;
            w->alt_hi = w->alt_lo + size;
        }
        w->ready = 1;
        busy_asm(&w->counter, marker(w->index));
        break;
    }
    case K_READ: {
        w->ready = 1;
        char c;
        for (;;) {
            ssize_t r = read(g_pipe[0], &c, 1);
            if (r < 0 && errno == EINTR) {
                w->eintr++;
                continue;
            }
            break;
        }
        break;
    }
    case K_SLEEP:
        w->ready = 1;
        while (!g_quit) {
            struct timespec ts = {0, 200 * 1000000L};
            if (nanosleep(&ts, NULL) != 0 && errno == EINTR)
                w->eintr++;
            w->counter++;
        }
        break;
    case K_BLOCKED: {
        sigset_t all;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, NULL);
        w->ready = 1;
        while (!w->release) {
            struct timespec ts = {0, 1000000L};
            nanosleep(&ts, NULL);
            w->counter++;
        }
        if (w->release == 2) {
            /* count (and consume) the stop signals queued for this thread */
            sigset_t one;
            sigemptyset(&one);
            sigaddset(&one, g_signo);
            struct timespec zero = {0, 0};
            while (sigtimedwait(&one, NULL, &zero) == g_signo)
                w->eintr++;
        }
        pthread_sigmask(SIG_UNBLOCK, &all, NULL); /* the queued stop signals arrive now */
        w->done = 1;
        while (!g_quit)
            sleep_ms(1);
        break;
    }
    case K_EXIT: {
        sigset_t one, pending;
        sigemptyset(&one);
        sigaddset(&one, g_signo);
        pthread_sigmask(SIG_BLOCK, &one, NULL);
        w->ready = 1;
        while (!g_go)
            sched_yield();
        for (;;) {
            sigpending(&pending);
            if (sigismember(&pending, g_signo))
                break; /* listed and signalled: now exit while the stopper waits for us */
            sched_yield();
        }
        w->done = 1;
        break;
    }
    case K_LATE_INTERNAL: {
        sigset_t one, pending;
        sigemptyset(&one);
        sigaddset(&one, g_signo);
        pthread_sigmask(SIG_BLOCK, &one, NULL);
        w->ready = 1;
        while (!g_go)
            sched_yield();
        for (;;) {
            sigpending(&pending);
            if (sigismember(&pending, g_signo))
                break;
            sched_yield();
        }
        ip_stw_mark_internal();
        pthread_sigmask(SIG_UNBLOCK, &one, NULL);
        while (!g_quit)
            w->counter++;
        ip_stw_unmark_internal();
        break;
    }
    case K_INTERNAL:
        ip_stw_mark_internal();
        w->ready = 1;
        while (!g_quit)
            w->counter++;
        ip_stw_unmark_internal();
        break;
    case K_ERRNO:
        w->ready = 1;
        while (!g_quit) {
            errno = 4242;
            for (volatile int i = 0; i < 2000; i++)
                ;
            __asm__ volatile("" ::: "memory"); /* reload errno: a signal may have run */
            if (errno != 4242)
                w->eintr++;
            w->counter++;
        }
        break;
    case K_CORE:
        w->ready = 1;
        while (!g_quit) {
            /* enter: TLS flag first; leave: shared flag first. So a thread parked where the TLS
               flag is 0 also has the shared flag 0. */
            t_in_core = 1;
            w->in_core = 1;
            uint64_t until = now_ns() + 100000;
            while (now_ns() < until)
                w->counter++;
            w->in_core = 0;
            t_in_core = 0;
            if (w->release == 0)
                ip_stw_poll(); /* park here if a stop vetoed us; release=1: rely on resends */
            until = now_ns() + 100000;
            while (now_ns() < until)
                w->counter++;
        }
        break;
    case K_STUCK:
        t_in_core = 1;
        w->ready = 1;
        while (!g_quit) {
            struct timespec ts = {0, 1000000L};
            nanosleep(&ts, NULL);
            w->counter++;
        }
        break;
    case K_VFORK: {
        w->ready = 1;
        while (!g_go)
            sched_yield();
        /* The parent of a vfork sleeps uninterruptibly until the child execs or exits: it can
           take no signal before that. The child only makes raw syscalls. */
        pid_t pid = vfork();
        if (pid == 0) {
            w->in_core = 1; /* shared memory: tells main the parent is asleep in vfork */
            struct timespec ts = {0, (long)w->release * 1000000L};
            syscall(SYS_nanosleep, &ts, NULL);
            syscall(SYS_exit, 0);
        }
        if (pid > 0)
            waitpid(pid, NULL, 0);
        w->done = 1;
        while (!g_quit)
            sleep_ms(1);
        break;
    }
    }
    return NULL;
}

static worker *spawn(int kind)
{
    worker *w = &g_w[g_nw];
    memset(w, 0, sizeof *w);
    w->kind = kind;
    w->index = g_nw++;
    if (pthread_create(&w->th, NULL, worker_main, w) != 0) {
        perror("pthread_create");
        exit(2);
    }
    return w;
}

static void wait_ready(void)
{
    for (int i = 0; i < g_nw; i++)
        while (!g_w[i].ready)
            sched_yield();
}

static void finish(void)
{
    g_quit = 1;
    for (int i = 0; i < g_nw; i++) {
        g_w[i].release = 1;
        if (g_w[i].kind == K_READ) {
            ssize_t ignored = write(g_pipe[1], "x", 1);
            (void)ignored;
        }
    }
    for (int i = 0; i < g_nw; i++)
        pthread_join(g_w[i].th, NULL);
}

/* 1 if w's counter moves past `before` within 3 s (a loaded machine may starve a thread). */
static int counts_again(const worker *w, uint64_t before)
{
    uint64_t until = now_ns() + 3000000000ull;
    while (w->counter == before && now_ns() < until)
        sleep_ms(1);
    return w->counter != before;
}

static int init_stw(void)
{
    int rc = ip_stw_init(0);
    g_signo = ip_stw_signal();
    printf("init rc=%d signo=%d rtmin=%d\n", rc, g_signo, SIGRTMIN);
    if (pipe(g_pipe) != 0)
        return -1;
    return rc;
}

static const ip_stopped_thread *find_out(const ip_stopped_thread *out, int n, int32_t tid)
{
    for (int i = 0; i < n; i++)
        if (out[i].tid == tid)
            return &out[i];
    return NULL;
}

static int in_range(uint64_t v, uint64_t lo, uint64_t hi) { return v >= lo && v < hi; }

/* Registers of a stopped busy/alt thread: every marker in place, rip in the loop, sp == rsp
   and inside the thread's stack (not the alternate stack), and the red zone below sp intact. */
static int regs_ok(const worker *w, const ip_stopped_thread *o)
{
    for (int r = 0; r < IP_STW_NREGS; r++) {
        uint64_t v;
        if (reg_expected(w, r, &v) && o->regs[r] != v)
            return 0;
    }
    return o->regs[17] == 0 && o->sp >= 120 &&
           *(const volatile uint64_t *)(uintptr_t)(o->sp - 120) == marker(w->index) &&
           in_range(o->regs[IP_STW_RIP], (uint64_t)(uintptr_t)stw_busy_loop_start,
                    (uint64_t)(uintptr_t)stw_busy_loop_end) &&
           o->sp == o->regs[IP_STW_RSP] && in_range(o->sp, w->lo, w->hi);
}

/* Threads of this process, by raw getdents64 (no malloc while the world is stopped). */
static int list_tasks(int32_t *tids, int max)
{
    int fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int n = 0;
    char buf[4096] __attribute__((aligned(8)));
    long len;
    while ((len = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
        for (long off = 0; off < len;) {
            unsigned short reclen = *(unsigned short *)(buf + off + 16);
            const char *name = buf + off + 19;
            off += reclen;
            if (name[0] >= '0' && name[0] <= '9' && n < max)
                tids[n++] = (int32_t)atoi(name); /* atoi: no lock, no allocation */
        }
    }
    close(fd);
    return n;
}

/* ---- basic -------------------------------------------------------------------------------- */

static int mode_basic(void)
{
    if (init_stw() != 0)
        return 1;
    for (int i = 0; i < 6; i++)
        spawn(K_BUSY);
    spawn(K_ALT);
    spawn(K_READ);
    for (int i = 0; i < 3; i++)
        spawn(K_SLEEP);
    worker *blocked = spawn(K_BLOCKED);
    worker *exiting = spawn(K_EXIT);
    spawn(K_INTERNAL);
    spawn(K_ERRNO);
    spawn(K_LATE_INTERNAL);
    wait_ready();
    sleep_ms(20); /* sleepers inside nanosleep, reader inside read */

    static ip_stopped_thread out[MAX_WORKERS];
    uint64_t c1[MAX_WORKERS], c2[MAX_WORKERS], c3[MAX_WORKERS];
    int32_t tasks[256];
    const int timeout_ms = 300;

    g_go = 1;
    uint64_t t0 = now_ns();
    int n = ip_stw_stop(out, MAX_WORKERS, timeout_ms);
    uint64_t t1 = now_ns();
    int stop_errno = errno;
    for (int i = 0; i < g_nw; i++)
        c1[i] = g_w[i].counter;
    int ntasks = list_tasks(tasks, 256);
    int regs_good[MAX_WORKERS]; /* evaluated now: regs_ok reads the stopped thread's stack */
    for (int i = 0; i < g_nw; i++) {
        const ip_stopped_thread *o = n > 0 ? find_out(out, n, g_w[i].tid) : NULL;
        regs_good[i] = (g_w[i].kind == K_BUSY || g_w[i].kind == K_ALT) && o != NULL &&
                       o->state == 0 && regs_ok(&g_w[i], o);
    }
    sleep_ms(50);
    /* the threads that were not stopped must have counted meanwhile (bounded wait: a loaded
       machine may starve one a while); the stopped ones had the whole window to move, too */
    uint64_t window_end = now_ns() + 3000000000ull;
    for (int i = 0; i < g_nw; i++) {
        int runs = g_w[i].kind == K_INTERNAL || g_w[i].kind == K_LATE_INTERNAL ||
                   g_w[i].kind == K_BLOCKED;
        while (runs && g_w[i].counter == c1[i] && now_ns() < window_end)
            sleep_ms(1);
    }
    for (int i = 0; i < g_nw; i++)
        c2[i] = g_w[i].counter;
    uint64_t t2 = now_ns();
    ip_stw_resume();
    uint64_t t3 = now_ns();
    /* every counting thread counts again (bounded: a loaded machine may starve one a while) */
    uint64_t until = now_ns() + 3000000000ull;
    for (int i = 0; i < g_nw; i++) {
        int counts = g_w[i].kind != K_READ && g_w[i].kind != K_EXIT;
        while (counts && g_w[i].counter == c2[i] && now_ns() < until)
            sleep_ms(1);
        c3[i] = g_w[i].counter;
    }

    printf("stop n=%d errno=%d timeout_ms=%d stop_ms=%.3f resume_ms=%.3f\n", n, n < 0 ? stop_errno : 0,
           timeout_ms, (t1 - t0) / 1e6, (t3 - t2) / 1e6);
    if (n < 0)
        return 1;

    /* every tid in /proc/self/task while stopped: self, internal, or listed */
    int32_t self = (int32_t)syscall(SYS_gettid);
    int unaccounted = 0;
    for (int i = 0; i < ntasks; i++) {
        int internal = 0;
        for (int k = 0; k < g_nw; k++)
            internal |= (g_w[k].kind == K_INTERNAL || g_w[k].kind == K_LATE_INTERNAL) &&
                        g_w[k].tid == tasks[i];
        if (tasks[i] != self && !internal && find_out(out, n, tasks[i]) == NULL)
            unaccounted++;
    }
    int extra = 0;
    for (int i = 0; i < n; i++) {
        int mine = 0;
        for (int k = 0; k < g_nw; k++)
            mine |= g_w[k].tid == out[i].tid;
        extra += !mine;
    }
    printf("tasks while_stopped=%d unaccounted=%d extra_listed=%d self_listed=%d\n", ntasks,
           unaccounted, extra, find_out(out, n, self) != NULL);

    blocked->release = 1;
    uint64_t deadline = now_ns() + 3000000000ull;
    while (!blocked->done && now_ns() < deadline)
        sleep_ms(1);
    int blocked_done = blocked->done;

    /* A second stop after the blocked thread unblocked: its stale signal was consumed without
       parking, and it now stops like everybody else. */
    static ip_stopped_thread out2[MAX_WORKERS];
    int n2 = ip_stw_stop(out2, MAX_WORKERS, timeout_ms);
    const ip_stopped_thread *b2 = n2 > 0 ? find_out(out2, n2, blocked->tid) : NULL;
    ip_stw_resume();
    printf("second n=%d blocked_state=%d\n", n2, b2 ? b2->state : -1);

    finish();
    for (int i = 0; i < g_nw; i++) {
        worker *w = &g_w[i];
        const ip_stopped_thread *o = find_out(out, n, w->tid);
        printf("T kind=%s idx=%d tid=%d listed=%d state=%d", kind_names[w->kind], w->index, w->tid,
               o != NULL, o ? o->state : -1);
        if (o != NULL && o->state == IP_STW_STOPPED)
            printf(" sp_in_stack=%d sp_eq_rsp=%d sp_in_alt=%d", in_range(o->sp, w->lo, w->hi),
                   o->sp == o->regs[IP_STW_RSP],
                   w->alt_hi != 0 && in_range(o->sp, w->alt_lo, w->alt_hi));
        if (o != NULL && o->state != IP_STW_STOPPED) {
            int zero = o->sp == 0;
            for (int r = 0; r < 18; r++)
                zero &= o->regs[r] == 0;
            printf(" regs_zero=%d", zero);
        }
        if (w->kind == K_BUSY || w->kind == K_ALT)
            printf(" regs_ok=%d alt_set=%d", regs_good[i], w->alt_hi != 0);
        printf(" frozen=%d resumed=%d eintr=%d done=%d\n", c1[i] == c2[i], c3[i] != c2[i], w->eintr,
               w->kind == K_BLOCKED ? blocked_done : w->done);
    }
    (void)exiting;
    return 0;
}

/* ---- cycles ------------------------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void print_stats(const char *name, uint64_t *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_u64);
    printf("latency name=%s n=%d min_us=%.1f median_us=%.1f p90_us=%.1f max_us=%.1f\n", name, n,
           v[0] / 1e3, v[n / 2] / 1e3, v[(n * 9) / 10] / 1e3, v[n - 1] / 1e3);
}

static int mode_cycles(int nbusy, int nread, int ncycles)
{
    if (init_stw() != 0)
        return 1;
    for (int i = 0; i < nbusy; i++)
        spawn(K_BUSY);
    for (int i = 0; i < nread; i++)
        spawn(K_READ);
    worker *errw = spawn(K_ERRNO);
    wait_ready();
    sleep_ms(20);
    int expected = g_nw;

    static ip_stopped_thread out[MAX_WORKERS];
    static uint64_t stop_ns[10000], resume_ns[10000];
    uint64_t snap[MAX_WORKERS];
    int ok = 0, bad_count = 0, bad_state = 0, bad_regs = 0, not_frozen = 0, not_resumed = 0;
    int errno_moved_while_stopped = 0;
    if (ncycles > 10000)
        ncycles = 10000;
    for (int c = 0; c < ncycles; c++) {
        uint64_t t0 = now_ns();
        int n = ip_stw_stop(out, MAX_WORKERS, 1000);
        uint64_t t1 = now_ns();
        stop_ns[c] = t1 - t0;
        int good = 1;
        if (n != expected) {
            bad_count++;
            good = 0;
        }
        for (int i = 0; i < g_nw; i++)
            snap[i] = g_w[i].counter;
        for (int i = 0; i < g_nw && n > 0; i++) {
            const ip_stopped_thread *o = find_out(out, n, g_w[i].tid);
            if (o == NULL || o->state != IP_STW_STOPPED) {
                bad_state++;
                good = 0;
            } else if (g_w[i].kind == K_BUSY && !regs_ok(&g_w[i], o)) {
                bad_regs++;
                good = 0;
            }
        }
        uint64_t spin_until = now_ns() + 200000; /* 200 us */
        while (now_ns() < spin_until)
            ;
        for (int i = 0; i < g_nw; i++)
            if (g_w[i].counter != snap[i]) {
                not_frozen++;
                good = 0;
                errno_moved_while_stopped += g_w[i].kind == K_ERRNO;
            }
        uint64_t t2 = now_ns();
        if (n >= 0)
            ip_stw_resume();
        resume_ns[c] = now_ns() - t2;
        /* every spinning thread runs again */
        uint64_t deadline = now_ns() + 2000000000ull;
        for (int i = 0; i < g_nw; i++) {
            if (g_w[i].kind == K_READ)
                continue;
            while (g_w[i].counter == snap[i] && now_ns() < deadline)
                sched_yield();
            if (g_w[i].counter == snap[i]) {
                not_resumed++;
                good = 0;
            }
        }
        ok += good;
    }
    finish();
    int read_eintr = 0;
    for (int i = 0; i < g_nw; i++)
        if (g_w[i].kind == K_READ)
            read_eintr += g_w[i].eintr;
    printf("cycles n=%d threads=%d ok=%d bad_count=%d bad_state=%d bad_regs=%d not_frozen=%d "
           "not_resumed=%d errno_clobbered=%d read_eintr=%d\n",
           ncycles, expected, ok, bad_count, bad_state, bad_regs, not_frozen, not_resumed,
           errw->eintr, read_eintr);
    (void)errno_moved_while_stopped;
    print_stats("stop", stop_ns, ncycles);
    print_stats("resume", resume_ns, ncycles);
    return 0;
}

/* ---- blocked: a thread that blocks every signal, over many stops ---------------------------- */

static int sigq_queued(void)
{
    /* "SigQ:\t<queued>/<limit>": signals queued for this real user id */
    int fd = open("/proc/self/status", O_RDONLY);
    char buf[8192];
    ssize_t len = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (len <= 0)
        return -1;
    buf[len] = 0;
    char *p = strstr(buf, "SigQ:");
    return p ? atoi(p + 5) : -1;
}

static int mode_blocked(int ncycles, int timeout_ms)
{
    if (init_stw() != 0)
        return 1;
    worker *b1 = spawn(K_BUSY);
    worker *b2 = spawn(K_BUSY);
    worker *blocked = spawn(K_BLOCKED);
    wait_ready();
    int sigq_before = sigq_queued();
    static ip_stopped_thread out[MAX_WORKERS];
    static uint64_t stop_ns[10000];
    if (ncycles > 10000)
        ncycles = 10000;
    int blocked_running = 0, busy_stopped = 0, bad = 0;
    uint64_t max_ns = 0;
    for (int c = 0; c < ncycles; c++) {
        uint64_t t0 = now_ns();
        int n = ip_stw_stop(out, MAX_WORKERS, timeout_ms);
        stop_ns[c] = now_ns() - t0;
        if (stop_ns[c] > max_ns)
            max_ns = stop_ns[c];
        if (n != 3) {
            bad++;
        } else {
            const ip_stopped_thread *ob = find_out(out, n, blocked->tid);
            const ip_stopped_thread *o1 = find_out(out, n, b1->tid);
            const ip_stopped_thread *o2 = find_out(out, n, b2->tid);
            blocked_running += ob != NULL && ob->state == IP_STW_RUNNING;
            busy_stopped += o1 != NULL && o1->state == 0 && o2 != NULL && o2->state == 0;
        }
        if (n >= 0)
            ip_stw_resume();
    }
    int sigq_during = sigq_queued();
    blocked->release = 2; /* count the queued stop signals, then unblock */
    uint64_t deadline = now_ns() + 3000000000ull;
    while (!blocked->done && now_ns() < deadline)
        sleep_ms(1);
    int done = blocked->done;
    sleep_ms(5);
    int sigq_after = sigq_queued();
    int n = ip_stw_stop(out, MAX_WORKERS, timeout_ms);
    const ip_stopped_thread *ob = n > 0 ? find_out(out, n, blocked->tid) : NULL;
    int state_after = ob ? ob->state : -1;
    if (n >= 0)
        ip_stw_resume();
    finish();
    printf("blocked cycles=%d timeout_ms=%d bad=%d blocked_running=%d busy_stopped=%d "
           "max_stop_ms=%.3f unblocked_done=%d state_after_unblock=%d queued=%d sigq_before=%d "
           "sigq_during=%d sigq_after=%d\n",
           ncycles, timeout_ms, bad, blocked_running, busy_stopped, max_ns / 1e6, done, state_after,
           blocked->eintr, sigq_before, sigq_during, sigq_after);
    print_stats("blocked_stop", stop_ns, ncycles);
    return 0;
}

/* ---- dstate: a thread that cannot take a signal until a vfork child exits --------------- */

static int mode_dstate(int timeout_ms)
{
    if (init_stw() != 0)
        return 1;
    worker *b = spawn(K_BUSY);
    worker *v = spawn(K_VFORK);
    v->release = timeout_ms * 3 + 200; /* the child's sleep, in ms */
    wait_ready();
    g_go = 1;
    while (!v->in_core) /* set by the vfork child: the parent sleeps uninterruptibly now */
        sleep_ms(1);
    sleep_ms(5);
    static ip_stopped_thread out[MAX_WORKERS];
    uint64_t t0 = now_ns();
    int n = ip_stw_stop(out, MAX_WORKERS, timeout_ms);
    uint64_t t1 = now_ns();
    const ip_stopped_thread *ov = n > 0 ? find_out(out, n, v->tid) : NULL;
    const ip_stopped_thread *ob = n > 0 ? find_out(out, n, b->tid) : NULL;
    int vstate = ov ? ov->state : -1, bstate = ob ? ob->state : -1;
    if (n >= 0)
        ip_stw_resume();
    uint64_t deadline = now_ns() + 5000000000ull;
    while (!v->done && now_ns() < deadline)
        sleep_ms(1);
    int done = v->done;
    /* after the child exited, the pending signal ran the handler in no stop: nothing parks */
    n = ip_stw_stop(out, MAX_WORKERS, timeout_ms);
    int n_after = n;
    ov = n > 0 ? find_out(out, n, v->tid) : NULL;
    int vstate_after = ov ? ov->state : -1;
    if (n >= 0)
        ip_stw_resume();
    finish();
    printf("dstate timeout_ms=%d stop_ms=%.3f vfork_state=%d busy_state=%d vfork_done=%d "
           "n_after=%d vfork_state_after=%d\n",
           timeout_ms, (t1 - t0) / 1e6, vstate, bstate, done, n_after, vstate_after);
    return 0;
}

/* ---- spawner: threads created and exiting during stops ------------------------------------ */

static volatile uint64_t g_spawned;

static void *short_main(void *unused)
{
    (void)unused;
    uint64_t until = now_ns() + 300000; /* 300 us of work, then exit */
    while (now_ns() < until)
        ;
    return NULL;
}

static void *spawner_main(void *p)
{
    worker *w = p;
    setup(w);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    w->ready = 1;
    while (!g_quit) {
        pthread_t th;
        if (pthread_create(&th, &attr, short_main, NULL) == 0)
            g_spawned++;
        w->counter++;
        if ((w->counter & 7) == 0)
            sleep_ms(1); /* keep a handful alive, not hundreds */
    }
    pthread_attr_destroy(&attr);
    return NULL;
}

static int mode_spawner(int ncycles)
{
    if (init_stw() != 0)
        return 1;
    spawn(K_BUSY);
    worker *sp = &g_w[g_nw];
    memset(sp, 0, sizeof *sp);
    sp->kind = K_BUSY; /* joined by finish() */
    sp->index = g_nw++;
    pthread_create(&sp->th, NULL, spawner_main, sp);
    wait_ready();
    sleep_ms(20);
    static ip_stopped_thread out[IP_STW_MAX_THREADS];
    int32_t tasks[4096];
    int32_t self = (int32_t)syscall(SYS_gettid);
    int missing = 0, bad = 0, states[3] = {0, 0, 0}, spawner_stopped = 0, max_listed = 0;
    int spawned_during_stop = 0;
    for (int c = 0; c < ncycles; c++) {
        int n = ip_stw_stop(out, IP_STW_MAX_THREADS, 300);
        if (n < 0) {
            bad++;
            continue;
        }
        uint64_t s0 = g_spawned;
        int nt = list_tasks(tasks, 4096);
        for (int i = 0; i < nt; i++)
            if (tasks[i] != self && find_out(out, n, tasks[i]) == NULL)
                missing++;
        for (int i = 0; i < n; i++)
            if (out[i].state >= 0 && out[i].state <= 2)
                states[out[i].state]++;
        const ip_stopped_thread *o = find_out(out, n, sp->tid);
        spawner_stopped += o != NULL && o->state == 0;
        if (n > max_listed)
            max_listed = n;
        uint64_t until = now_ns() + 2000000;
        while (now_ns() < until)
            ;
        spawned_during_stop += g_spawned != s0;
        ip_stw_resume();
        sleep_ms(3);
    }
    finish();
    printf("spawner cycles=%d bad=%d missing=%d spawner_stopped=%d spawned_during_stop=%d "
           "stopped=%d running=%d exited=%d max_listed=%d spawned=%llu\n",
           ncycles, bad, missing, spawner_stopped, spawned_during_stop, states[0], states[1],
           states[2], max_listed, (unsigned long long)g_spawned);
    return 0;
}

/* ---- eintr: the known cost, call by call ------------------------------------------------- */

enum { C_NANOSLEEP, C_USLEEP, C_POLL, C_SELECT, C_EPOLL, C_SEM_TIMEDWAIT, C_READ, C_SEM_WAIT,
       C_COND_WAIT, C_COND_TIMEDWAIT, C_FUTEX, C_WAITPID, C_NCALLS };
static const char *const call_names[] = {"nanosleep", "usleep", "poll", "select", "epoll_wait",
                                         "sem_timedwait", "read", "sem_wait", "cond_wait",
                                         "cond_timedwait", "futex_wait", "waitpid"};
static volatile int g_eintr[C_NCALLS], g_calls_ready[C_NCALLS];
static sem_t g_sem;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static uint32_t g_futex_word;
static int g_epfd, g_quiet_pipe[2];
static pid_t g_child;

static void *call_main(void *p)
{
    int call = (int)(intptr_t)p;
    g_calls_ready[call] = 1;
    while (!g_quit) {
        int r = 0, e = 0;
        struct timespec abs;
        clock_gettime(CLOCK_REALTIME, &abs);
        abs.tv_nsec += 200000000L;
        if (abs.tv_nsec >= 1000000000L) {
            abs.tv_sec++;
            abs.tv_nsec -= 1000000000L;
        }
        switch (call) {
        case C_NANOSLEEP: {
            struct timespec ts = {0, 200000000L};
            r = nanosleep(&ts, NULL);
            break;
        }
        case C_USLEEP: r = usleep(200000); break;
        case C_POLL: {
            struct pollfd pfd = {g_quiet_pipe[0], POLLIN, 0};
            r = poll(&pfd, 1, 200);
            break;
        }
        case C_SELECT: {
            fd_set set;
            FD_ZERO(&set);
            FD_SET(g_quiet_pipe[0], &set);
            struct timeval tv = {0, 200000};
            r = select(g_quiet_pipe[0] + 1, &set, NULL, NULL, &tv);
            break;
        }
        case C_EPOLL: {
            struct epoll_event ev;
            r = epoll_wait(g_epfd, &ev, 1, 200);
            break;
        }
        case C_SEM_TIMEDWAIT: r = sem_timedwait(&g_sem, &abs); break;
        case C_READ: {
            char c;
            r = (int)read(g_pipe[0], &c, 1);
            break;
        }
        case C_SEM_WAIT: r = sem_wait(&g_sem); break;
        case C_COND_WAIT:
            pthread_mutex_lock(&g_mu);
            if (!g_quit)
                r = pthread_cond_wait(&g_cv, &g_mu);
            pthread_mutex_unlock(&g_mu);
            if (r == EINTR)
                e = EINTR;
            r = 0;
            break;
        case C_COND_TIMEDWAIT:
            pthread_mutex_lock(&g_mu);
            if (!g_quit)
                r = pthread_cond_timedwait(&g_cv, &g_mu, &abs);
            pthread_mutex_unlock(&g_mu);
            if (r == EINTR)
                e = EINTR;
            r = 0;
            break;
        case C_FUTEX:
            r = (int)syscall(SYS_futex, &g_futex_word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
            break;
        case C_WAITPID:
            r = waitpid(g_child, NULL, 0);
            if (r == g_child)
                return NULL;
            break;
        }
        if (r < 0)
            e = errno;
        if (e == EINTR)
            g_eintr[call]++;
    }
    return NULL;
}

static int mode_eintr(void)
{
    if (init_stw() != 0)
        return 1;
    if (pipe(g_quiet_pipe) != 0 || sem_init(&g_sem, 0, 0) != 0)
        return 1;
    g_epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    epoll_ctl(g_epfd, EPOLL_CTL_ADD, g_quiet_pipe[0], &ev);
    g_child = fork();
    if (g_child == 0) {
        for (;;)
            pause();
    }
    pthread_t th[C_NCALLS];
    for (int i = 0; i < C_NCALLS; i++)
        pthread_create(&th[i], NULL, call_main, (void *)(intptr_t)i);
    for (int i = 0; i < C_NCALLS; i++)
        while (!g_calls_ready[i])
            sched_yield();
    static ip_stopped_thread out[MAX_WORKERS];
    int stopped_all = 1;
    for (int k = 0; k < 3; k++) {
        sleep_ms(50);
        int n = ip_stw_stop(out, MAX_WORKERS, 500);
        for (int i = 0; i < n; i++)
            stopped_all &= out[i].state == IP_STW_STOPPED;
        stopped_all &= n == C_NCALLS;
        if (n >= 0)
            ip_stw_resume();
    }
    sleep_ms(50);
    g_quit = 1;
    for (int i = 0; i < C_NCALLS; i++)
        sem_post(&g_sem);
    pthread_mutex_lock(&g_mu);
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
    __atomic_store_n(&g_futex_word, 1, __ATOMIC_RELEASE);
    syscall(SYS_futex, &g_futex_word, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
    ssize_t ignored = write(g_pipe[1], "x", 1);
    (void)ignored;
    kill(g_child, SIGKILL);
    for (int i = 0; i < C_NCALLS; i++)
        pthread_join(th[i], NULL);
    printf("eintr stops=3 stopped_all=%d\n", stopped_all);
    for (int i = 0; i < C_NCALLS; i++)
        printf("call name=%s eintr=%d\n", call_names[i], g_eintr[i]);
    return 0;
}

/* ---- veto: the park check -------------------------------------------------------------- */

static int mode_veto(int ncycles)
{
    if (init_stw() != 0)
        return 1;
    ip_stw_set_park_check(may_park);
    worker *busy = spawn(K_BUSY);
    worker *c1 = spawn(K_CORE);
    worker *c2 = spawn(K_CORE);
    c2->release = 1; /* c2 does not call ip_stw_poll: the stopper's resends must catch it */
    worker *stuck = spawn(K_STUCK);
    wait_ready();
    static ip_stopped_thread out[MAX_WORKERS];
    int bad = 0, busy_stopped = 0, polled_stopped = 0, resent_stopped = 0, resent_running = 0;
    int in_core_while_stopped = 0, stuck_running = 0;
    int frozen = 0;
    uint64_t max_ns = 0;
    for (int c = 0; c < ncycles; c++) {
        uint64_t t0 = now_ns();
        int n = ip_stw_stop(out, MAX_WORKERS, 200);
        uint64_t dt = now_ns() - t0;
        if (dt > max_ns)
            max_ns = dt;
        if (n != 4) {
            bad++;
            if (n >= 0)
                ip_stw_resume();
            continue;
        }
        const ip_stopped_thread *ob = find_out(out, n, busy->tid);
        const ip_stopped_thread *o1 = find_out(out, n, c1->tid);
        const ip_stopped_thread *o2 = find_out(out, n, c2->tid);
        const ip_stopped_thread *os = find_out(out, n, stuck->tid);
        busy_stopped += ob && ob->state == 0;
        polled_stopped += o1 && o1->state == 0;
        resent_stopped += o2 && o2->state == 0;
        resent_running += o2 && o2->state == IP_STW_RUNNING;
        in_core_while_stopped += (o1 && o1->state == 0 && c1->in_core) +
                                 (o2 && o2->state == 0 && c2->in_core);
        stuck_running += os && os->state == IP_STW_RUNNING;
        uint64_t k1 = c1->counter, k2 = c2->counter;
        sleep_ms(1);
        frozen += (o1 && o1->state == 0 && c1->counter == k1) +
                  (o2 && o2->state == 0 && c2->counter == k2);
        ip_stw_resume();
        sleep_ms(2);
    }
    ip_stw_set_park_check(NULL);
    finish();
    printf("veto cycles=%d bad=%d busy_stopped=%d polled_stopped=%d resent_stopped=%d "
           "resent_running=%d frozen=%d in_core_while_stopped=%d stuck_running=%d vetoes=%llu "
           "max_stop_ms=%.3f\n",
           ncycles, bad, busy_stopped, polled_stopped, resent_stopped, resent_running, frozen,
           in_core_while_stopped, stuck_running, (unsigned long long)g_vetoes, max_ns / 1e6);
    return 0;
}

/* ---- errors ------------------------------------------------------------------------------- */

static volatile int g_host_hits;
static void host_handler(int sig) { (void)sig; g_host_hits++; }

static int mode_errors(void)
{
    static ip_stopped_thread out[MAX_WORKERS];
    int rc;

    errno = 0;
    rc = ip_stw_stop(out, MAX_WORKERS, 100);
    printf("E before_init rc=%d errno=%d\n", rc, errno);
    printf("E init_rtmin rc=%d\n", ip_stw_init(SIGRTMIN));
    printf("E init_usr2 rc=%d\n", ip_stw_init(SIGUSR2));
    printf("E init_kill rc=%d\n", ip_stw_init(SIGKILL));
    printf("E init_segv rc=%d\n", ip_stw_init(SIGSEGV));
    printf("E init_glibc_internal rc=%d\n", ip_stw_init(32));

    /* a signal the host owns is left alone */
    int host_sig = SIGRTMIN + 5;
    signal(host_sig, host_handler);
    rc = ip_stw_init(host_sig);
    struct sigaction cur;
    sigaction(host_sig, NULL, &cur);
    printf("E init_host_owned rc=%d errno=%d host_kept=%d signal_after=%d\n", rc, errno,
           cur.sa_handler == host_handler, ip_stw_signal());

    rc = ip_stw_init(0);
    g_signo = ip_stw_signal();
    printf("E init_default rc=%d signo=%d rtmin=%d\n", rc, g_signo, SIGRTMIN);
    printf("E init_same rc=%d\n", ip_stw_init(0));
    errno = 0;
    rc = ip_stw_init(SIGRTMIN + 4);
    printf("E init_other rc=%d errno=%d\n", rc, errno);
    if (pipe(g_pipe) != 0)
        return 1;

    worker *a = spawn(K_BUSY);
    worker *b = spawn(K_BUSY);
    wait_ready();

    /* out of room: nothing stays stopped */
    errno = 0;
    rc = ip_stw_stop(out, 1, 100);
    int e = errno;
    uint64_t ca = a->counter, cb = b->counter;
    printf("E small_max rc=%d errno=%d running_after=%d\n", rc, e,
           counts_again(a, ca) && counts_again(b, cb));

    /* a stop in progress refuses a second one */
    rc = ip_stw_stop(out, MAX_WORKERS, 100);
    errno = 0;
    int rc2 = ip_stw_stop(out, MAX_WORKERS, 100);
    e = errno;
    ca = a->counter;
    sleep_ms(10);
    int frozen = a->counter == ca;
    ip_stw_resume();
    ip_stw_resume(); /* a second resume is a no-op */
    printf("E nested rc=%d rc2=%d errno=%d frozen=%d running_after=%d\n", rc, rc2, e, frozen,
           counts_again(a, ca));

    /* the internal mark is per thread: the calling thread is never listed anyway, and marking
       twice is harmless */
    printf("E mark_internal rc=%d again=%d\n", ip_stw_mark_internal(), ip_stw_mark_internal());
    ip_stw_unmark_internal();

    /* fork: the child forgets the parent's stop state and internal threads */
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        ip_stw_after_fork_child();
        g_nw = 0;
        worker *cw = spawn(K_BUSY);
        wait_ready();
        int n = ip_stw_stop(out, MAX_WORKERS, 200);
        int good = n == 1 && out[0].tid == cw->tid && out[0].state == 0 && regs_ok(cw, &out[0]);
        ip_stw_resume();
        _exit(good ? 0 : 1);
    }
    int status = -1;
    waitpid(pid, &status, 0);
    printf("E fork_child exited=%d code=%d\n", WIFEXITED(status), WIFEXITED(status) ? WEXITSTATUS(status) : -1);

    /* the host replaced our handler: refuse rather than send a signal that kills the process */
    signal(g_signo, SIG_DFL);
    errno = 0;
    rc = ip_stw_stop(out, MAX_WORKERS, 100);
    printf("E handler_replaced rc=%d errno=%d alive=1\n", rc, errno);
    finish();
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *mode = argc > 1 ? argv[1] : "basic";
    int a2 = argc > 2 ? atoi(argv[2]) : 0, a3 = argc > 3 ? atoi(argv[3]) : 0;
    int a4 = argc > 4 ? atoi(argv[4]) : 0;
    int rc;
    if (strcmp(mode, "basic") == 0)
        rc = mode_basic();
    else if (strcmp(mode, "cycles") == 0)
        rc = mode_cycles(a2, a3, a4);
    else if (strcmp(mode, "blocked") == 0)
        rc = mode_blocked(a2, a3);
    else if (strcmp(mode, "dstate") == 0)
        rc = mode_dstate(a2);
    else if (strcmp(mode, "spawner") == 0)
        rc = mode_spawner(a2);
    else if (strcmp(mode, "eintr") == 0)
        rc = mode_eintr();
    else if (strcmp(mode, "veto") == 0)
        rc = mode_veto(a2);
    else if (strcmp(mode, "errors") == 0)
        rc = mode_errors();
    else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("end rc=%d\n", rc);
    return rc;
}
