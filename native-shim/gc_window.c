/*
 * gc_window.c — keeps pthread cancellation out of malloc while the core may run a GC.
 *
 * The problem: a hook that enters or leaves managed code while the runtime collects waits for
 * the GC in pthread_cond_wait, which is a cancellation point. A deferred pthread_cancel would then
 * act inside malloc/free (never cancellation points in glibc): the block leaks, the program's
 * cleanup handler frees a stale pointer, or the runtime's lock stays held and the process hangs.
 * Disabling cancellation around every hook costs ~32 ns per pthread_setcancelstate pair, more
 * than a whole recorded allocation, so it is done only while a GC is possible.
 *
 * GCs happen only when the core allocates managed memory, which it does outside hooks only in
 * dumps and at exit. Around that work the core opens the window:
 *   opener:  window = 1; membarrier(); wait until no published thread has guard == 1
 *   hook:    guard = 1; (compiler barrier) if (window) { disable cancellation; guard = 2 }
 * membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) makes every running thread execute a full memory
 * barrier, so either the hook sees window == 1, or the opener sees guard == 1 and waits for that
 * hook to leave. Without membarrier (old kernels) the opener falls back to a short sleep: then the
 * guarantee is only probabilistic, and it says so once on stderr with verbosity.
 *
 * The opener waits at most IP_WINDOW_WAIT_NS for straggling hooks (a thread stopped in a
 * debugger inside a hook must not hang a dump), then proceeds.
 *
 * FORK. A fork while a GC runs leaves the child a runtime that believes threads are being
 * suspended by a GC thread the child does not have: the child's first entry into the core waits
 * for that GC forever (seen: a fork child of the forkdl trust load stuck in
 * ReversePInvokeAttachOrTrapThread -> WaitForGC). So fork and the window exclude each other,
 * Dekker-style like fork and the stop (stw.c): fork_prepare raises s_forking and waits for open
 * windows to close; an opener that sees s_forking steps back and waits for the fork. A window
 * that stays open past IP_FORK_WAIT_NS (a long scan) does not hold the fork: the fork goes on and
 * the child disables tracking instead of entering the core (ip_gc_window_fork_enter returns 0).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include "shim_internal.h"

#define IP_MAX_PUBLISHED (1u << 16)            /* the core's thread registry capacity */
#define IP_WINDOW_WAIT_NS (2000000000ull)     /* 2 s */
#define IP_FORK_WAIT_NS (2000000000ull)       /* 2 s */

int g_ip_gc_window;                            /* > 0 while the core may collect */
static ip_thread *s_published[IP_MAX_PUBLISHED]; /* live host threads' TLS, by registry index */
static int32_t s_published_tid[IP_MAX_PUBLISHED]; /* their tids, kept outside their TLS (RAW EXITS) */
static ip_free_batch *s_published_frees[IP_MAX_PUBLISHED]; /* their batches, in their own mappings
                                                  (ip_thread_page), which outlive a raw exit */
static int s_have_membarrier;
static int s_scanning;                         /* an opener is reading s_published (see unpublish) */
static int s_forking;                          /* forks between their prepare and parent handlers */
static uint32_t s_published_end;               /* 1 + the highest index ever published */

void ip_gc_window_init(void)
{
    s_have_membarrier =
        syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
}

void ip_threads_publish(ip_thread *t, uint32_t index)
{
    if (index >= IP_MAX_PUBLISHED)
        return;
    __atomic_store_n(&s_published_tid[index], t->tid, __ATOMIC_RELAXED);
    __atomic_store_n(&s_published_frees[index], t->frees, __ATOMIC_RELEASE);
    __atomic_store_n(&s_published[index], t, __ATOMIC_RELEASE);
    uint32_t end = __atomic_load_n(&s_published_end, __ATOMIC_RELAXED);
    while (end < index + 1 &&
           !__atomic_compare_exchange_n(&s_published_end, &end, index + 1, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
        ;
}

/* An exiting thread leaves the list, then waits while an opener may still hold its pointer:
   its TLS must stay mapped until nobody can read it (seq_cst on both sides: Dekker). */
void ip_threads_unpublish(ip_thread *t)
{
    uint32_t index = t->thread_index;
    if (index >= IP_MAX_PUBLISHED)
        return;
    __atomic_store_n(&s_published[index], NULL, __ATOMIC_SEQ_CST);
    __atomic_store_n(&s_published_frees[index], NULL, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&s_scanning, __ATOMIC_SEQ_CST) != 0)
        sched_yield(); /* then its page may be unmapped (mark_exiting) */
}

/*
 * RAW EXITS. A thread that leaves with the raw exit syscall (the seccomp strict-mode sandbox:
 * only read, write and exit are allowed) runs no destructor, so it never unpublishes itself.
 * Once it is joined, glibc may unmap its stack, TLS included (past its 40 MiB stack cache): the
 * next scan's window opener read its guard and died of SIGSEGV. The window opener (and a fork
 * child's clean-up) first reads each published thread's tid field with process_vm_readv, which
 * fails where a load would fault: unmapped, or now another thread's (glibc reuses cached stacks,
 * zeroed), the entry is dropped. visit_batches (asked on every insert that replaces a record: a
 * producer frees what a consumer allocated) reads no TLS at all: each thread's batch lives in the
 * thread's own mapping (ip_thread_page), which a thread that left this way never unmaps, so its
 * batch stays readable and keeps being asked; what it holds is still true (its pending removals
 * are real frees: an insert at one of those addresses is a reuse, not a stale record). Once the
 * window opener has found such a thread, scans are off anyway (below). Before, the batch was in
 * TLS, and a replacement check after such a thread was joined died of SIGSEGV (raw_exit_reuse.c:
 * 40 threads free 12 blocks each and exit raw, are joined, and 40 more take the same addresses
 * back from the shared arenas; every run). Checking each thread there with a syscall instead
 * made a producer/consumer pair 3.4x slower. Where process_vm_readv is refused (a seccomp
 * filter), the opener's check says yes, as before it existed.
 * Worse, such a thread was attached to the NativeAOT runtime (its first event entered the core)
 * and is never detached: the runtime's Thread lives in that TLS too, and its next GC waits for it
 * for ever (seen: SuspendAllThreads spinning, and every host thread then stuck in a hook waiting
 * for the GC). Hooks never allocate managed memory, so recording goes on; but the work that may
 * collect (scans, dumps, at-exit work, control commands) is refused for good once the window
 * opener finds a registered thread gone: ip_gc_window returns 0 and says why, once.
 */
static int32_t s_raw_exited; /* tid of a registered thread found gone without its destructors */
static int tls_still_of(uint32_t index, ip_thread *t)
{
    int32_t want = __atomic_load_n(&s_published_tid[index], __ATOMIC_RELAXED), seen = 0;
    struct iovec local = {&seen, sizeof seen};
    struct iovec remote = {&t->tid, sizeof seen};
    ssize_t n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
    if (n == (ssize_t)sizeof seen ? seen == want : n < 0 && errno != EFAULT)
        return 1;
    __atomic_compare_exchange_n(&s_published[index], &t, NULL, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
    return 0;
}

/* One seqlock read of t's batch (see ip_free_batch) into out[0, max); returns the entries read,
   or -1 when the owner emptied the batch meanwhile (its removals are applied: nothing to do). */
static int read_batch(const ip_free_batch *b, ip_free_entry *out, int max)
{
    for (int attempt = 0; attempt < 4; attempt++) {
        uint32_t gen = __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE);
        uint32_t n = __atomic_load_n(&b->count, __ATOMIC_ACQUIRE);
        if (n > IP_FREE_BATCH)
            n = IP_FREE_BATCH;
        int k = 0;
        for (uint32_t i = 0; i < n && k < max; i++, k++) {
            out[k].address = __atomic_load_n(&b->entry[i].address, __ATOMIC_RELAXED);
            out[k].stamp = __atomic_load_n(&b->entry[i].stamp, __ATOMIC_RELAXED);
        }
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&b->gen, __ATOMIC_RELAXED) == gen)
            return k;
    }
    return -1;
}

/* Calls visit with each published thread's batch (a seqlock read), with s_scanning raised so none
   of them unmaps its page meanwhile; stops at, and returns, visit's first non-zero answer. */
static int visit_batches(uint32_t end, int (*visit)(const ip_free_entry *, int, void *), void *ctx)
{
    ip_free_entry one[IP_FREE_BATCH];
    int answer = 0;
    __atomic_add_fetch(&s_scanning, 1, __ATOMIC_SEQ_CST);
    for (uint32_t i = 1; i < end; i++) {
        ip_free_batch *b = __atomic_load_n(&s_published_frees[i], __ATOMIC_SEQ_CST);
        if (b == NULL || __atomic_load_n(&b->count, __ATOMIC_RELAXED) == 0)
            continue;
        int n = read_batch(b, one, IP_FREE_BATCH);
        if (n > 0 && (answer = visit(one, n, ctx)) != 0)
            break;
    }
    __atomic_sub_fetch(&s_scanning, 1, __ATOMIC_SEQ_CST);
    return answer;
}

typedef struct copy_ctx {
    ip_free_entry *out;
    int32_t max;
    int32_t total;
} copy_ctx;

static int copy_batch(const ip_free_entry *e, int n, void *ctx)
{
    copy_ctx *c = (copy_ctx *)ctx;
    for (int k = 0; k < n; k++, c->total++)
        if (c->total < c->max)
            c->out[c->total] = e[k];
    return 0;
}

int32_t ip_pending_frees_copy(ip_free_entry *out, int32_t max)
{
    copy_ctx c = {out, max, 0};
    visit_batches(__atomic_load_n(&s_published_end, __ATOMIC_ACQUIRE), copy_batch, &c);
    return c.total;
}

/* In a fork child, before any thread is created: the threads that did not follow leave their
   pending removals in their pages (copied into the child, never unmapped there), and glibc will
   hand their stacks, TLS included, to the child's next threads (which zero it). Apply each batch
   now and forget those threads. Called
   with the core's locks released and this thread's guard held. */
void ip_threads_forget_orphans(ip_thread *self, int32_t (*apply)(const ip_free_entry *, int32_t))
{
    uint32_t end = __atomic_load_n(&s_published_end, __ATOMIC_ACQUIRE);
    for (uint32_t i = 1; i < end; i++) {
        ip_thread *t = s_published[i];
        if (t == self) {
            /* The forking thread lives on with a new tid: its entry (and its events) say so. */
            self->tid = (int)syscall(SYS_gettid);
            __atomic_store_n(&s_published_tid[i], self->tid, __ATOMIC_RELAXED);
            continue;
        }
        ip_free_batch *b = s_published_frees[i];
        uint32_t n = b != NULL ? b->count : 0; /* the page was copied into the child: mapped */
        if (n != 0 && apply != NULL)
            apply(b->entry, (int32_t)(n < IP_FREE_BATCH ? n : IP_FREE_BATCH));
        s_published[i] = NULL;
        s_published_frees[i] = NULL;
    }
}

/* Only asked when an insert replaces a record (rare: another thread's freed address came back
   before that thread applied the removal). Past IP_COVERS_MAX_THREADS registered threads the
   walk would cost too much for a malloc: the answer is then "unknown" (-1). */
#define IP_COVERS_MAX_THREADS 256
typedef struct covers_ctx {
    uint64_t address;
    uint64_t time_ns;
} covers_ctx;

static int batch_covers(const ip_free_entry *e, int n, void *ctx)
{
    const covers_ctx *c = (const covers_ctx *)ctx;
    for (int k = 0; k < n; k++)
        if (e[k].address == c->address && e[k].stamp >= c->time_ns)
            return 1;
    return 0;
}

int32_t ip_pending_free_covers(uint64_t address, uint64_t time_ns)
{
    uint32_t end = __atomic_load_n(&s_published_end, __ATOMIC_ACQUIRE);
    if (end > IP_COVERS_MAX_THREADS)
        return -1;
    covers_ctx c = {address, time_ns};
    return visit_batches(end, batch_covers, &c);
}

void ip_hook_protect(ip_thread *t)
{
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &t->cancel_saved);
    t->guard = 2;
}

void ip_hook_unprotect(ip_thread *t)
{
    pthread_setcancelstate(t->cancel_saved, NULL);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* RAW EXITS: say once why the window stays shut from now on. */
static void note_raw_exit(int32_t tid)
{
    int32_t none = 0;
    if (!__atomic_compare_exchange_n(&s_raw_exited, &none, tid, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return;
    char msg[160];
    snprintf(msg, sizeof msg, "thread %d ended without its destructors (the raw exit syscall, or a "
             "seccomp kill), still attached to the runtime inside the library: ", (int)tid);
    ip_message(msg, "leak scans, dumps and at-exit work are off for this process (recording goes on)");
}

int32_t ip_gc_window(int32_t open)
{
    if (!open) {
        __atomic_sub_fetch(&g_ip_gc_window, 1, __ATOMIC_RELEASE);
        return 1;
    }
    if (__atomic_load_n(&s_raw_exited, __ATOMIC_ACQUIRE) != 0)
        return 0;
    while (1) {
        __atomic_add_fetch(&g_ip_gc_window, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&s_forking, __ATOMIC_SEQ_CST) == 0)
            break;
        __atomic_sub_fetch(&g_ip_gc_window, 1, __ATOMIC_SEQ_CST); /* a fork is under way: let it go first */
        while (__atomic_load_n(&s_forking, __ATOMIC_SEQ_CST) != 0) {
            struct timespec pause = {0, 100000};
            nanosleep(&pause, NULL);
        }
    }
    if (!s_have_membarrier || syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0) {
        struct timespec pause = {0, 1000000}; /* 1 ms: lets in-flight hooks see the window */
        nanosleep(&pause, NULL);
    }
    uint64_t deadline = now_ns() + IP_WINDOW_WAIT_NS;
    pid_t pid = getpid();
    int32_t gone = 0;
    __atomic_add_fetch(&s_scanning, 1, __ATOMIC_SEQ_CST);
    uint32_t end = __atomic_load_n(&s_published_end, __ATOMIC_ACQUIRE);
    for (uint32_t i = 1; i < end; i++) {
        ip_thread *t = __atomic_load_n(&s_published[i], __ATOMIC_SEQ_CST);
        int32_t tid = __atomic_load_n(&s_published_tid[i], __ATOMIC_RELAXED);
        if (t == NULL || t == &ip_tls)
            continue;
        if (!tls_still_of(i, t) || (syscall(SYS_tgkill, pid, tid, 0) != 0 && errno == ESRCH)) {
            gone = tid > 0 ? tid : -1; /* RAW EXITS */
            continue;
        }
        while (__atomic_load_n(&t->guard, __ATOMIC_ACQUIRE) == 1 && now_ns() < deadline)
            sched_yield();
    }
    __atomic_sub_fetch(&s_scanning, 1, __ATOMIC_SEQ_CST);
    if (gone != 0) {
        note_raw_exit(gone);
        __atomic_sub_fetch(&g_ip_gc_window, 1, __ATOMIC_RELEASE); /* shut again: the caller skips its work */
        return 0;
    }
    return 1;
}

int ip_gc_window_fork_enter(void)
{
    __atomic_add_fetch(&s_forking, 1, __ATOMIC_SEQ_CST);
    uint64_t deadline = now_ns() + IP_FORK_WAIT_NS;
    while (__atomic_load_n(&g_ip_gc_window, __ATOMIC_SEQ_CST) != 0 && now_ns() < deadline) {
        struct timespec pause = {0, 100000};
        nanosleep(&pause, NULL);
    }
    return __atomic_load_n(&g_ip_gc_window, __ATOMIC_SEQ_CST) == 0;
}

void ip_gc_window_fork_leave(int child)
{
    if (child)
        __atomic_store_n(&s_forking, 0, __ATOMIC_SEQ_CST); /* the other forking threads stayed behind */
    else
        __atomic_sub_fetch(&s_forking, 1, __ATOMIC_SEQ_CST);
}
