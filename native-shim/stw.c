/*
 * stw.c — stop the world with a real-time signal (see stw.h for the contract and its costs).
 *
 * One stop, generation g (ip_stw_gen odd while the world is stopped, even otherwise):
 *
 *   stopper (ip_stw_stop)                         each listed thread (stw_handler)
 *   ─────────────────────                         ─────────────────────────────────
 *   ip_stw_gen = g (odd)
 *   list /proc/self/task; per new tid:
 *     slot = {tid, W(g,PENDING)}, hash[tid] = slot
 *     tgkill(pid, tid, signo)           ──────►   g == ip_stw_gen (odd)? find slot by tid;
 *                                                 CAS W(g,PENDING) -> W(g,CLAIMED), copy regs,
 *                                                 s_arrived++, W(g,ARRIVED), wake s_event
 *   futex-wait on s_event until all arrived,      futex-wait while ip_stw_gen == g
 *   inspect stragglers every ms (exited?
 *   blocking the signal?), deadline -> give up:
 *   CAS W(g,PENDING) -> W(g,ABANDONED)
 *   re-list until no new tid (IP_STW_PASSES)
 *   ...scan...
 *   ip_stw_resume: ip_stw_gen = g+1, wake all  ──────►  CAS W(g,ARRIVED) -> W(g,LEFT), s_left++
 *   wait (bounded) until every ARRIVED is LEFT                      (futex wake), return
 *
 * Park check (optional): a handler whose ip_stw_set_park_check callback says "not now" sets
 * W(g,RETRY) and returns; the thread parks as soon as it calls ip_stw_poll() where parking is
 * allowed (it raises the signal to itself), and otherwise the stopper signals it again 50 us
 * later, until the deadline.
 *
 * The slot word carries the generation, so a handler that runs late (its signal was blocked, it
 * was given up, or its stop is over) fails the CAS and returns at once, and a thread can never
 * park in a stale generation. The hash table is cleared while ip_stw_gen is even (no handler looks at
 * it then), and entries are published after their slot.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#include "stw.h"

#if !defined(__x86_64__)
#error "stw.c captures x86-64 registers"
#endif

enum { PH_FREE = 0, PH_PENDING = 1, PH_CLAIMED = 2, PH_ARRIVED = 3, PH_LEFT = 4,
       PH_ABANDONED = 5, PH_EXITED = 6, PH_RETRY = 7 /* the park check said "not now" */,
       PH_INTERNAL = 8 /* marked internal after it was listed: not reported */,
       PH_SECCOMP = 9 /* under a seccomp filter of its own: never signalled (see SECCOMP) */ };
#define W(g, ph) (((uint64_t)(g) << 32) | (uint64_t)(ph))

typedef struct stw_slot {
    uint64_t word;      /* W(generation, phase); the only field a handler and the stopper race on */
    int32_t tid;        /* written before word becomes PENDING, constant while it is */
    int32_t reserved;
    uint64_t regs[IP_STW_NREGS];
    uint64_t tcb;       /* the thread's fs base (TCB), read by its handler */
} stw_slot;

#define HASH_SIZE (2 * IP_STW_MAX_THREADS) /* power of two, load factor <= 1/2 */
#define MAX_OUTSTANDING 256

static int s_signo;                          /* 0 until ip_stw_init */
uint32_t ip_stw_gen;                         /* futex word: odd while stopped (read by ip_stw_poll) */
static uint32_t s_arrived;                   /* handlers arrived in this stop */
static uint32_t s_event;                     /* futex word: bumped on every arrival and veto */
static uint32_t s_left_seq;                  /* futex word: bumped by every handler that leaves */
static int s_busy;                           /* a stop is in progress (ip_stw_stop .. resume) */
static int s_nslots;
static int s_resume_wait_ms;
static stw_slot s_slots[IP_STW_MAX_THREADS];
static int32_t s_hash[HASH_SIZE];            /* slot index + 1, 0 = empty */
static uint64_t s_blocked_since[IP_STW_MAX_THREADS]; /* stopper only: first time seen blocking */
static int32_t s_internal[IP_STW_MAX_INTERNAL];
static int s_internal_hw;                    /* entries [0, hw) may be non-zero */
static int32_t s_outstanding[MAX_OUTSTANDING]; /* given-up tids whose signal may still be pending */
static int s_noutstanding;
static int (*s_may_park)(void);              /* optional veto, see ip_stw_set_park_check */
static uint32_t s_retry_seq;                 /* bumped by every vetoed handler */
static __thread int s_self_internal __attribute__((tls_model("initial-exec"))); /* slot + 1 */

/* ---- raw helpers (async-signal-safe; callers preserve errno where it matters) -------------- */

static inline int32_t raw_gettid(void) { return (int32_t)syscall(SYS_gettid); }

static inline long futex_wait(uint32_t *addr, uint32_t expected, const struct timespec *rel)
{
    return syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, rel, NULL, 0);
}

static inline void futex_wake(uint32_t *addr, int n)
{
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline struct timespec rel_ts(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    return ts;
}

static inline uint32_t hash_tid(int32_t tid)
{
    return ((uint32_t)tid * 2654435761u) & (HASH_SIZE - 1);
}

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define CAS(p, expp, v) \
    __atomic_compare_exchange_n((p), (expp), (v), 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)

/* ---- the handler -------------------------------------------------------------------------- */

/* The slot of `tid` in stop g, claimed for this handler; NULL if there is none (not listed yet,
   given up, already handled, or the stop is over). A RETRY slot (vetoed earlier) is claimed too:
   the thread raised the signal itself from ip_stw_poll_slow, or the stopper's resend came. */
static stw_slot *claim_slot(int32_t tid, uint32_t g)
{
    uint32_t h = hash_tid(tid);
    for (int n = 0; n < HASH_SIZE; n++, h = (h + 1) & (HASH_SIZE - 1)) {
        int32_t idx = LOAD(&s_hash[h]);
        if (idx == 0)
            return NULL;
        stw_slot *s = &s_slots[idx - 1];
        uint64_t w = LOAD(&s->word);
        if ((w != W(g, PH_PENDING) && w != W(g, PH_RETRY)) ||
            __atomic_load_n(&s->tid, __ATOMIC_RELAXED) != tid)
            continue;
        return CAS(&s->word, &w, W(g, PH_CLAIMED)) ? s : NULL;
    }
    return NULL;
}

static void stw_handler(int sig, siginfo_t *info, void *ucv)
{
    (void)sig;
    (void)info;
    int saved_errno = errno;
    uint32_t g = LOAD(&ip_stw_gen);
    if ((g & 1) == 0)
        goto out; /* no stop in progress: a late or stale signal */
    stw_slot *s = claim_slot(raw_gettid(), g);
    if (s == NULL)
        goto out;
    if (s_self_internal != 0) {
        /* Marked internal after it was listed: never parks, and is left out of the result. */
        __atomic_fetch_add(&s_arrived, 1, __ATOMIC_ACQ_REL);
        STORE(&s->word, W(g, PH_INTERNAL));
        __atomic_fetch_add(&s_event, 1, __ATOMIC_ACQ_REL);
        futex_wake(&s_event, 1);
        goto out;
    }
    int (*may_park)(void) = __atomic_load_n(&s_may_park, __ATOMIC_ACQUIRE);
    if (may_park != NULL && !may_park()) {
        /* Not here (e.g. inside managed code): the stopper signals us again shortly. */
        STORE(&s->word, W(g, PH_RETRY));
        __atomic_fetch_add(&s_retry_seq, 1, __ATOMIC_ACQ_REL);
        __atomic_fetch_add(&s_event, 1, __ATOMIC_ACQ_REL);
        futex_wake(&s_event, 1);
        goto out;
    }
    const greg_t *gr = ((const ucontext_t *)ucv)->uc_mcontext.gregs;
    s->regs[IP_STW_RAX] = (uint64_t)gr[REG_RAX];
    s->regs[IP_STW_RBX] = (uint64_t)gr[REG_RBX];
    s->regs[IP_STW_RCX] = (uint64_t)gr[REG_RCX];
    s->regs[IP_STW_RDX] = (uint64_t)gr[REG_RDX];
    s->regs[IP_STW_RSI] = (uint64_t)gr[REG_RSI];
    s->regs[IP_STW_RDI] = (uint64_t)gr[REG_RDI];
    s->regs[IP_STW_RBP] = (uint64_t)gr[REG_RBP];
    s->regs[IP_STW_R8] = (uint64_t)gr[REG_R8];
    s->regs[IP_STW_R9] = (uint64_t)gr[REG_R9];
    s->regs[IP_STW_R10] = (uint64_t)gr[REG_R10];
    s->regs[IP_STW_R11] = (uint64_t)gr[REG_R11];
    s->regs[IP_STW_R12] = (uint64_t)gr[REG_R12];
    s->regs[IP_STW_R13] = (uint64_t)gr[REG_R13];
    s->regs[IP_STW_R14] = (uint64_t)gr[REG_R14];
    s->regs[IP_STW_R15] = (uint64_t)gr[REG_R15];
    s->regs[IP_STW_RIP] = (uint64_t)gr[REG_RIP];
    s->regs[IP_STW_RSP] = (uint64_t)gr[REG_RSP];
    uint64_t tcb;
    __asm__("mov %%fs:0, %0" : "=r"(tcb)); /* tcbhead_t.tcb: the TCB's own address (x86-64 TLS ABI) */
    s->tcb = tcb;
    /* Count before publishing ARRIVED: a stopper that saw CLAIMED and waits for ARRIVED then
       knows the count includes us (so no late increment can leak into the next stop). */
    __atomic_fetch_add(&s_arrived, 1, __ATOMIC_ACQ_REL);
    STORE(&s->word, W(g, PH_ARRIVED));
    __atomic_fetch_add(&s_event, 1, __ATOMIC_ACQ_REL);
    futex_wake(&s_event, 1);
    while (LOAD(&ip_stw_gen) == g)
        futex_wait(&ip_stw_gen, g, NULL); /* EINTR (GC activation signal) or EAGAIN: re-check */
    uint64_t w = W(g, PH_ARRIVED);
    if (CAS(&s->word, &w, W(g, PH_LEFT))) {
        __atomic_fetch_add(&s_left_seq, 1, __ATOMIC_ACQ_REL);
        futex_wake(&s_left_seq, 1);
    }
out:
    errno = saved_errno;
}

/* ---- initialisation and the internal-thread registry -------------------------------------- */

int ip_stw_signal(void) { return LOAD(&s_signo); }

/* ip_stw_poll's slow path: a stop is in progress. If this thread's park check vetoed it, park
   now (raise the signal to ourselves) instead of waiting for the stopper's next resend. */
void ip_stw_poll_slow(void)
{
    uint32_t g = LOAD(&ip_stw_gen);
    if ((g & 1) == 0 || s_self_internal != 0)
        return;
    int saved_errno = errno;
    int32_t tid = raw_gettid();
    uint32_t h = hash_tid(tid);
    for (int n = 0; n < HASH_SIZE; n++, h = (h + 1) & (HASH_SIZE - 1)) {
        int32_t idx = LOAD(&s_hash[h]);
        if (idx == 0)
            break;
        stw_slot *s = &s_slots[idx - 1];
        if (__atomic_load_n(&s->tid, __ATOMIC_RELAXED) == tid) {
            if (LOAD(&s->word) == W(g, PH_RETRY))
                syscall(SYS_tgkill, getpid(), tid, LOAD(&s_signo));
            break;
        }
    }
    errno = saved_errno;
}

void ip_stw_set_park_check(int (*may_park)(void))
{
    __atomic_store_n(&s_may_park, may_park, __ATOMIC_RELEASE);
}

int ip_stw_init(int signo)
{
    if (signo == 0)
        signo = SIGRTMIN + 3;
    if (signo <= 0 || signo > SIGRTMAX || signo == SIGRTMIN || signo == SIGUSR2 ||
        signo == SIGKILL || signo == SIGSTOP || signo == SIGSEGV || signo == SIGBUS ||
        signo == SIGFPE || signo == SIGILL || signo == SIGTRAP || signo == SIGSYS ||
        (signo > SIGSYS && signo < SIGRTMIN) /* glibc's internal signals */) {
        errno = EINVAL;
        return -1;
    }
    int cur = LOAD(&s_signo);
    if (cur == signo)
        return 0;
    if (cur != 0) {
        errno = EBUSY;
        return -1;
    }
    struct sigaction sa, old;
    if (sigaction(signo, NULL, &old) != 0)
        return -1;
    if ((old.sa_flags & SA_SIGINFO) ? old.sa_sigaction != NULL
                                     : (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN)) {
        errno = EBUSY; /* somebody else's signal: leave it alone */
        return -1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = stw_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
    /* Parked threads run no host handler; faults stay deliverable and the runtime's GC
       activation signal stays unblocked (DESIGN guard rule 6). */
    sigfillset(&sa.sa_mask);
    sigdelset(&sa.sa_mask, SIGSEGV);
    sigdelset(&sa.sa_mask, SIGBUS);
    sigdelset(&sa.sa_mask, SIGFPE);
    sigdelset(&sa.sa_mask, SIGILL);
    sigdelset(&sa.sa_mask, SIGTRAP);
    sigdelset(&sa.sa_mask, SIGSYS);
    sigdelset(&sa.sa_mask, SIGRTMIN);
    if (sigaction(signo, &sa, NULL) != 0)
        return -1;
    STORE(&s_signo, signo);
    return 0;
}

static int is_internal(int32_t tid)
{
    int hw = LOAD(&s_internal_hw);
    for (int i = 0; i < hw; i++)
        if (LOAD(&s_internal[i]) == tid)
            return 1;
    return 0;
}

int ip_stw_mark_internal(void)
{
    if (s_self_internal != 0)
        return 0;
    int32_t tid = raw_gettid();
    for (int i = 0; i < IP_STW_MAX_INTERNAL; i++) {
        int32_t expected = 0;
        if (LOAD(&s_internal[i]) == 0 && CAS(&s_internal[i], &expected, tid)) {
            int hw = LOAD(&s_internal_hw);
            while (hw < i + 1 && !CAS(&s_internal_hw, &hw, i + 1))
                ;
            s_self_internal = i + 1;
            return 0;
        }
    }
    return -1;
}

void ip_stw_unmark_internal(void)
{
    if (s_self_internal == 0)
        return;
    STORE(&s_internal[s_self_internal - 1], 0);
    s_self_internal = 0;
}

/* ---- fork vs stop ----------------------------------------------------------------------------
 * The shim's fork prepare handler takes every metadata lock and holds it across fork(), which
 * then takes glibc's malloc and stdio locks. If the world were stopped meanwhile, a parked thread
 * could hold one of those glibc locks: the forking thread (never parked: it is inside the core's
 * locks) would wait for it forever, and the scan for our locks. So a fork and a stop exclude each
 * other: a fork waits until no stop is in progress before it counts itself in s_forking, and a
 * stop waits (bounded) until s_forking is 0 after it has made ip_stw_gen odd. Both sides publish
 * then check with sequentially consistent atomics (Dekker), so one of them always sees the other. */
static uint32_t s_forking; /* futex word: forks between their prepare and parent handlers */

void ip_stw_fork_enter(void)
{
    for (;;) {
        uint32_t g = __atomic_load_n(&ip_stw_gen, __ATOMIC_SEQ_CST);
        if (g & 1) {
            struct timespec rel = {0, 10000000};
            futex_wait(&ip_stw_gen, g, &rel); /* woken by the resume (or parked by the stop) */
            continue;
        }
        __atomic_add_fetch(&s_forking, 1, __ATOMIC_SEQ_CST);
        if ((__atomic_load_n(&ip_stw_gen, __ATOMIC_SEQ_CST) & 1) == 0)
            return;
        __atomic_sub_fetch(&s_forking, 1, __ATOMIC_SEQ_CST); /* a stop began: let it run first */
        futex_wake(&s_forking, INT_MAX);
    }
}

void ip_stw_fork_leave(void)
{
    __atomic_sub_fetch(&s_forking, 1, __ATOMIC_SEQ_CST);
    futex_wake(&s_forking, INT_MAX);
}

void ip_stw_after_fork_child(void)
{
    __atomic_store_n(&s_forking, 0, __ATOMIC_SEQ_CST);
    int was_internal = s_self_internal != 0;
    memset(s_internal, 0, sizeof s_internal);
    STORE(&s_internal_hw, 0);
    s_self_internal = 0;
    s_noutstanding = 0;
    s_nslots = 0;
    uint32_t g = LOAD(&ip_stw_gen);
    if (g & 1)
        STORE(&ip_stw_gen, g + 1);
    STORE(&s_busy, 0);
    if (was_internal)
        ip_stw_mark_internal();
}

/* ---- /proc/self/task/<tid>/status -------------------------------------------------------- */

typedef struct task_status {
    int found;          /* 0: the task is gone */
    char state;         /* 'R', 'S', 'D', 'T', 't', 'Z', 'X', ... */
    uint64_t sigpnd;    /* thread-directed pending signals */
    uint64_t sigblk;    /* blocked signals */
    int seccomp;        /* Seccomp: 0 off, 1 strict, 2 filter; -1 not shown */
    int filters;        /* Seccomp_filters: (Linux 5.9+); -1 not shown */
} task_status;

static size_t put_uint(char *p, uint32_t v)
{
    char tmp[12];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

static uint64_t parse_hex(const char *p, const char *end)
{
    uint64_t v = 0;
    for (; p < end; p++) {
        char c = *p;
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            break;
        v = v << 4 | (uint64_t)d;
    }
    return v;
}

static uint64_t parse_dec(const char *p, const char *end)
{
    uint64_t v = 0;
    for (; p < end && *p >= '0' && *p <= '9' && v < 1000000000u; p++)
        v = v * 10 + (uint64_t)(*p - '0');
    return v;
}

/* The value after "Key:" and blanks in buf, or NULL. */
static const char *status_field(const char *buf, const char *end, const char *key)
{
    size_t klen = strlen(key);
    for (const char *line = buf; line < end;) {
        if ((size_t)(end - line) > klen && memcmp(line, key, klen) == 0) {
            const char *v = line + klen;
            while (v < end && (*v == ' ' || *v == '\t'))
                v++;
            return v;
        }
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        if (nl == NULL)
            break;
        line = nl + 1;
    }
    return NULL;
}

static void read_task_status(int32_t tid, task_status *st)
{
    char path[48] = "/proc/self/task/";
    size_t n = strlen(path);
    n += put_uint(path + n, (uint32_t)tid);
    memcpy(path + n, "/status", 8);
    st->found = 0;
    st->state = '?';
    st->sigpnd = st->sigblk = 0;
    st->seccomp = st->filters = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char buf[4096];
    ssize_t len = 0, r;
    while (len < (ssize_t)sizeof buf && (r = read(fd, buf + len, sizeof buf - (size_t)len)) > 0)
        len += r;
    close(fd);
    if (len <= 0)
        return;
    const char *end = buf + len;
    const char *v = status_field(buf, end, "State:");
    if (v == NULL || v >= end)
        return;
    st->found = 1;
    st->state = *v;
    if ((v = status_field(buf, end, "SigPnd:")) != NULL)
        st->sigpnd = parse_hex(v, end);
    if ((v = status_field(buf, end, "SigBlk:")) != NULL)
        st->sigblk = parse_hex(v, end);
    if ((v = status_field(buf, end, "Seccomp:")) != NULL && v < end && *v >= '0' && *v <= '9')
        st->seccomp = (int)parse_dec(v, end);
    if ((v = status_field(buf, end, "Seccomp_filters:")) != NULL && v < end && *v >= '0' && *v <= '9')
        st->filters = (int)parse_dec(v, end);
}

/*
 * SECCOMP. A thread that entered strict mode, or stacked a filter of its own after we started,
 * may be killed by the first syscall our stop handler makes (gettid, futex): the program would
 * lose that thread, or die (SECCOMP_RET_KILL_PROCESS). Such a thread is never signalled: it is
 * reported RUNNING with IP_STW_REASON_SECCOMP and its stack is scanned as it runs. "Its own" =
 * strict mode, another mode than the stopping thread's, or more filters (Seccomp_filters:)
 * than it. Filters inherited at exec (a container's profile) are the stopping thread's too, and
 * what runs under them runs us: their threads are stopped as before. A filter applied to every
 * thread at once (SECCOMP_FILTER_FLAG_TSYNC) cannot be told apart this way.
 */
static int seccomp_own(const task_status *t, const task_status *self)
{
    if (!t->found || t->seccomp <= 0)
        return 0;
    return t->seccomp == 1 || t->seccomp != self->seccomp ||
           (t->filters >= 0 && self->filters >= 0 && t->filters > self->filters);
}

static inline uint64_t sigbit(int signo) { return 1ull << (signo - 1); }

/* ---- the stopper ------------------------------------------------------------------------- */

typedef struct stop_ctx {
    pid_t pid;
    int32_t self;
    uint32_t g;
    int signo;
    int cap;            /* slots this stop may use */
    int overflow;       /* more threads than cap */
    uint32_t resolved;  /* slots the stopper closed (exited, given up) */
    int added;          /* list_one: slots added by this listing */
    uint64_t start, deadline, grace;
} stop_ctx;

struct linux_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

static int find_slot_any(int32_t tid)
{
    uint32_t h = hash_tid(tid);
    for (int n = 0; n < HASH_SIZE; n++, h = (h + 1) & (HASH_SIZE - 1)) {
        int32_t idx = s_hash[h];
        if (idx == 0)
            return -1;
        if (s_slots[idx - 1].tid == tid)
            return idx - 1;
    }
    return -1;
}

static int was_outstanding(int32_t tid)
{
    for (int i = 0; i < s_noutstanding; i++)
        if (s_outstanding[i] == tid)
            return 1;
    return 0;
}

/* Closes a slot the stopper decided about (PENDING -> phase). Returns 0 if the thread claimed
   it first (it is arriving). */
static int close_slot(stop_ctx *c, stw_slot *s, int phase)
{
    uint64_t w = W(c->g, PH_PENDING);
    if (!CAS(&s->word, &w, W(c->g, phase)))
        return 0;
    c->resolved++;
    return 1;
}

/* Calls fn(tid, ctx) for every task in /proc/self/task. Returns 0, or -1 (errno) if the
   directory cannot be read. */
static int for_each_task(void (*fn)(int32_t tid, void *ctx), void *ctx)
{
    int fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char buf[4096] __attribute__((aligned(8)));
    for (;;) {
        long n = syscall(SYS_getdents64, fd, buf, sizeof buf);
        if (n < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        if (n == 0)
            break;
        for (long off = 0; off < n;) {
            const struct linux_dirent64 *d = (const struct linux_dirent64 *)(buf + off);
            off += d->d_reclen;
            int32_t tid = 0;
            const char *p = d->d_name;
            if (*p < '0' || *p > '9')
                continue; /* "." and ".." */
            for (; *p >= '0' && *p <= '9'; p++)
                tid = tid * 10 + (*p - '0');
            fn(tid, ctx);
        }
    }
    close(fd);
    return 0;
}

/* SECCOMP, before the stop: each thread's status is read while the world still runs (~8 us a
   thread: reading them inside the stop added 4-5 ms to a 500-thread stop). A thread listed by the
   stop but not here (new since) is read then. s_checked[hash]: tid if it may be signalled, -tid
   if not, 0 empty. A thread that enters seccomp between the two listings is not seen. */
static int32_t s_checked[HASH_SIZE];
static int s_nchecked;
static int s_prepared;                       /* ip_stw_prepare ran since the last stop */
static task_status s_self_st;                /* the preparing thread's own seccomp state */

static void precheck_task(int32_t tid, void *ctx)
{
    int32_t self = *(const int32_t *)ctx;
    if (tid == self || is_internal(tid) || s_nchecked >= IP_STW_MAX_THREADS)
        return;
    task_status st;
    read_task_status(tid, &st);
    uint32_t h = hash_tid(tid);
    while (s_checked[h] != 0)
        h = (h + 1) & (HASH_SIZE - 1);
    s_checked[h] = seccomp_own(&st, &s_self_st) ? -tid : tid;
    s_nchecked++;
}

int ip_stw_prepare(void)
{
    int expected = 0;
    if (!CAS(&s_busy, &expected, 1)) {
        errno = EBUSY;
        return -1;
    }
    int32_t self = raw_gettid();
    read_task_status(self, &s_self_st);
    memset(s_checked, 0, sizeof s_checked);
    s_nchecked = 0;
    int rc = for_each_task(precheck_task, &self);
    s_prepared = rc == 0;
    STORE(&s_busy, 0);
    return rc;
}

/* 1: tid runs under a seccomp filter of its own; 0: it may be signalled. st: its status, when
   this read it (st->found = 0 otherwise). */
static int seccomp_skip(int32_t tid, task_status *st)
{
    st->found = 0;
    for (uint32_t h = hash_tid(tid); s_checked[h] != 0; h = (h + 1) & (HASH_SIZE - 1))
        if (s_checked[h] == tid || s_checked[h] == -tid)
            return s_checked[h] < 0;
    read_task_status(tid, st);
    return seccomp_own(st, &s_self_st);
}

/* Adds a slot for every thread not seen yet and sends it the signal. */
static void list_one(int32_t tid, void *ctx)
{
    stop_ctx *c = (stop_ctx *)ctx;
    if (tid == c->self || is_internal(tid) || find_slot_any(tid) >= 0)
        return;
    if (s_nslots >= c->cap) {
        c->overflow = 1;
        return;
    }
    int i = s_nslots++;
    stw_slot *s = &s_slots[i];
    STORE(&s->word, (uint64_t)PH_FREE);
    s->tid = tid;
    memset(s->regs, 0, sizeof s->regs);
    s_blocked_since[i] = 0;
    STORE(&s->word, W(c->g, PH_PENDING));
    uint32_t h = hash_tid(tid);
    while (s_hash[h] != 0)
        h = (h + 1) & (HASH_SIZE - 1);
    STORE(&s_hash[h], i + 1);
    c->added++;
    task_status st;
    if (seccomp_skip(tid, &st)) {
        close_slot(c, s, PH_SECCOMP);
        return;
    }
    if (was_outstanding(tid)) {
        /* Given up last time: if our signal is still queued for it, do not queue another
           (real-time signals queue without limit but RLIMIT_SIGPENDING). */
        if (!st.found)
            read_task_status(tid, &st);
        if (st.found && (st.sigpnd & sigbit(c->signo)))
            return;
    }
    if (syscall(SYS_tgkill, c->pid, tid, c->signo) != 0)
        close_slot(c, s, errno == ESRCH ? PH_EXITED : PH_ABANDONED);
}

/* Returns the number of threads added, or -1 (errno) if /proc/self/task cannot be read. */
static int list_and_signal(stop_ctx *c)
{
    c->added = 0;
    return for_each_task(list_one, c) != 0 ? -1 : c->added;
}

/* Decides about threads that have not arrived: exited, or blocking the signal for good. */
static void inspect_stragglers(stop_ctx *c, uint64_t now)
{
    for (int i = 0; i < s_nslots; i++) {
        stw_slot *s = &s_slots[i];
        if (LOAD(&s->word) != W(c->g, PH_PENDING))
            continue;
        if (syscall(SYS_tgkill, c->pid, s->tid, 0) != 0 && errno == ESRCH) {
            close_slot(c, s, PH_EXITED);
            continue;
        }
        task_status st;
        read_task_status(s->tid, &st);
        if (!st.found || st.state == 'Z' || st.state == 'X') {
            close_slot(c, s, PH_EXITED);
        } else if ((st.sigblk & sigbit(c->signo)) || st.state == 'T' || st.state == 't') {
            if (s_blocked_since[i] == 0)
                s_blocked_since[i] = now;
            else if (now - s_blocked_since[i] >= c->grace)
                close_slot(c, s, PH_ABANDONED);
        } else {
            s_blocked_since[i] = 0;
        }
    }
}

/* Signals again the threads whose park check vetoed the last signal. */
static void resend_vetoed(stop_ctx *c)
{
    for (int i = 0; i < s_nslots; i++) {
        stw_slot *s = &s_slots[i];
        uint64_t w = W(c->g, PH_RETRY);
        if (LOAD(&s->word) == w && CAS(&s->word, &w, W(c->g, PH_PENDING)) &&
            syscall(SYS_tgkill, c->pid, s->tid, c->signo) != 0)
            close_slot(c, s, errno == ESRCH ? PH_EXITED : PH_ABANDONED);
    }
}

/* Waits until every slot is arrived or closed, or the deadline. */
static void wait_for_arrivals(stop_ctx *c)
{
    const uint64_t check_every = 1000000; /* 1 ms */
    const uint64_t retry_after = 50000;   /* 50 us between a veto and the next signal */
    uint64_t next_check = c->start + check_every;
    uint64_t next_retry = UINT64_MAX;
    uint32_t retry_seen = LOAD(&s_retry_seq);
    for (;;) {
        uint32_t event = LOAD(&s_event);
        uint32_t arrived = LOAD(&s_arrived);
        if (arrived + c->resolved >= (uint32_t)s_nslots)
            return;
        uint64_t t = now_ns();
        if (t >= c->deadline)
            return;
        uint32_t retries = LOAD(&s_retry_seq);
        if (retries != retry_seen) {
            retry_seen = retries;
            if (next_retry == UINT64_MAX)
                next_retry = t + retry_after;
        }
        if (t >= next_retry) {
            next_retry = UINT64_MAX;
            resend_vetoed(c);
            continue;
        }
        if (t >= next_check) {
            inspect_stragglers(c, t);
            next_check = t + check_every;
            continue;
        }
        uint64_t until = next_check < c->deadline ? next_check : c->deadline;
        if (next_retry < until)
            until = next_retry;
        struct timespec rel = rel_ts(until - t);
        futex_wait(&s_event, event, &rel);
    }
}

static void release_world(uint32_t g, int wait_ms)
{
    STORE(&ip_stw_gen, g + 1);
    futex_wake(&ip_stw_gen, INT_MAX);
    uint64_t deadline = now_ns() + (uint64_t)wait_ms * 1000000ull;
    int k = 0;
    for (;;) {
        uint32_t seq = LOAD(&s_left_seq);
        while (k < s_nslots && LOAD(&s_slots[k].word) != W(g, PH_ARRIVED))
            k++;
        if (k >= s_nslots)
            break;
        uint64_t t = now_ns();
        if (t >= deadline)
            break;
        struct timespec rel = rel_ts(deadline - t);
        futex_wait(&s_left_seq, seq, &rel);
    }
}

int ip_stw_stop(ip_stopped_thread *out, int max, int timeout_ms)
{
    int signo = LOAD(&s_signo);
    if (signo == 0 || out == NULL || max < 0 || timeout_ms < 0) {
        errno = EINVAL;
        return -1;
    }
    int expected = 0;
    if (!CAS(&s_busy, &expected, 1)) {
        errno = EBUSY;
        return -1;
    }
    struct sigaction cur;
    if (sigaction(signo, NULL, &cur) != 0 || !(cur.sa_flags & SA_SIGINFO) ||
        cur.sa_sigaction != stw_handler) {
        STORE(&s_busy, 0);
        errno = EBUSY; /* the host took the signal over: sending it could kill the process */
        return -1;
    }

    stop_ctx c;
    memset(&c, 0, sizeof c);
    c.pid = getpid();
    c.self = raw_gettid();
    c.signo = signo;
    c.cap = max < IP_STW_MAX_THREADS ? max : IP_STW_MAX_THREADS;

    /* SECCOMP: who may be signalled, read while the world still runs, by ip_stw_prepare (or
       here, when the caller did not), and used by this stop only. */
    if (!s_prepared) {
        read_task_status(c.self, &s_self_st);
        memset(s_checked, 0, sizeof s_checked);
        s_nchecked = 0;
        for_each_task(precheck_task, &c.self);
    }
    s_prepared = 0;

    c.start = now_ns();
    c.deadline = c.start + (uint64_t)timeout_ms * 1000000ull;
    c.grace = (uint64_t)timeout_ms * 100000ull; /* timeout / 10 */
    if (c.grace < 2000000ull)
        c.grace = 2000000ull;

    /* ip_stw_gen is even: no handler reads the table while it is reset. */
    memset(s_hash, 0, sizeof s_hash);
    s_nslots = 0;
    STORE(&s_arrived, 0);
    c.g = LOAD(&ip_stw_gen) + 1;
    __atomic_store_n(&ip_stw_gen, c.g, __ATOMIC_SEQ_CST);
    s_resume_wait_ms = timeout_ms > 100 ? timeout_ms : 100;

    /* No fork may be between its prepare and parent handlers while the world is stopped (see
       ip_stw_fork_enter): wait for those in flight, bounded; new ones wait for the resume. */
    for (uint32_t f; (f = __atomic_load_n(&s_forking, __ATOMIC_SEQ_CST)) != 0;) {
        if (now_ns() >= c.deadline) {
            __atomic_store_n(&ip_stw_gen, c.g + 1, __ATOMIC_SEQ_CST);
            futex_wake(&ip_stw_gen, INT_MAX);
            STORE(&s_busy, 0);
            errno = EAGAIN;
            return -1;
        }
        struct timespec rel = {0, 1000000};
        futex_wait(&s_forking, f, &rel);
    }

    int err = 0;
    for (int pass = 0; pass < IP_STW_PASSES; pass++) {
        int added = list_and_signal(&c);
        if (added < 0) {
            err = errno;
            break;
        }
        if (c.overflow) {
            err = ENOSPC;
            break;
        }
        if (pass > 0 && added == 0)
            break;
        wait_for_arrivals(&c);
    }

    /* Close what is still pending; a thread caught between CLAIMED and ARRIVED is finishing a
       few stores in its handler: let it. */
    for (int i = 0; i < s_nslots; i++) {
        stw_slot *s = &s_slots[i];
        for (;;) {
            uint64_t w = LOAD(&s->word);
            if (w == W(c.g, PH_CLAIMED)) {
                sched_yield();
            } else if (w == W(c.g, PH_PENDING) || w == W(c.g, PH_RETRY)) {
                if (CAS(&s->word, &w, W(c.g, PH_ABANDONED)))
                    break;
            } else {
                break;
            }
        }
    }

    if (err != 0) {
        release_world(c.g, s_resume_wait_ms);
        STORE(&s_busy, 0);
        errno = err;
        return -1;
    }

    int nout = 0;
    for (int i = 0; i < s_nslots; i++) {
        stw_slot *s = &s_slots[i];
        uint64_t w = LOAD(&s->word);
        if (w == W(c.g, PH_INTERNAL))
            continue;
        ip_stopped_thread *o = &out[nout++];
        memset(o, 0, sizeof *o);
        o->tid = s->tid;
        if (w == W(c.g, PH_ARRIVED)) {
            o->state = IP_STW_STOPPED;
            memcpy(o->regs, s->regs, sizeof s->regs);
            o->sp = s->regs[IP_STW_RSP];
            o->tcb = s->tcb;
        } else if (w == W(c.g, PH_EXITED)) {
            o->state = IP_STW_EXITED;
        } else if (w == W(c.g, PH_SECCOMP)) {
            o->state = IP_STW_RUNNING;
            o->reason = IP_STW_REASON_SECCOMP;
        } else {
            o->state = IP_STW_RUNNING;
        }
    }

    /* Remember who was given up: their signal may still be queued. */
    s_noutstanding = 0;
    for (int i = 0; i < s_nslots && s_noutstanding < MAX_OUTSTANDING; i++)
        if (LOAD(&s_slots[i].word) == W(c.g, PH_ABANDONED))
            s_outstanding[s_noutstanding++] = s_slots[i].tid;
    return nout;
}

void ip_stw_resume(void)
{
    if (LOAD(&s_busy) == 0)
        return;
    uint32_t g = LOAD(&ip_stw_gen);
    if (g & 1)
        release_world(g, s_resume_wait_ms);
    STORE(&s_busy, 0);
}
