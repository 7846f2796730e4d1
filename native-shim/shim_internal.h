/*
 * shim_internal.h — what the shim's C files share. Nothing here crosses into the managed core;
 * that contract is interposer_abi.h.
 *
 * THREAD STATES (ip_thread.state), per thread, initial-exec TLS so reading it never allocates:
 *   IP_T_NEW       no event seen yet on this thread
 *   IP_T_HOST      registered host thread: events go straight into the core
 *   IP_T_INTERNAL  created while a guard was held (runtime / Interposer threads): never recorded
 *   IP_T_EXITING   past the point where the runtime detaches the thread: events are deferred
 *
 * THE GUARD (ip_thread.guard): set around every call into managed code. A malloc-family call
 * that finds it set is nested (the runtime's own malloc, or a signal handler that interrupted a
 * hook): it goes straight to glibc. Nested allocations are treated as internal and not recorded;
 * nested frees go to the deferred log so a recorded block can never outlive its real free.
 */
#ifndef INTERPOSER_SHIM_INTERNAL_H
#define INTERPOSER_SHIM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include "interposer_abi.h"
#include "stw.h"

#define IP_EXPORT __attribute__((visibility("default")))
#define IP_HIDDEN __attribute__((visibility("hidden")))
#define IP_LIKELY(x) __builtin_expect(!!(x), 1)
#define IP_UNLIKELY(x) __builtin_expect(!!(x), 0)

enum ip_thread_state { IP_T_NEW = 0, IP_T_HOST = 1, IP_T_INTERNAL = 2, IP_T_EXITING = 3 };

/* Process-wide mode (g_ip_mode). */
enum ip_mode { IP_MODE_EARLY = 0, IP_MODE_ACTIVE = 1, IP_MODE_DISABLED = 2 };

typedef struct ip_thread {
    int guard;          /* >0 while this thread runs managed code */
    int state;          /* enum ip_thread_state */
    int tid;            /* cached gettid() */
    uint32_t thread_index; /* the core's registry index, once registered */
    int cancel_saved;   /* cancellation state saved by ip_hook_protect */
    int lsan_disabled;  /* __lsan_disable depth: allocations while > 0 are never reported */
    int busy;           /* a record or region update is half done (realloc between its remove
                           and re-insert; the region table locked): the stop-the-world must not
                           park this thread now (see ip_may_park) */
    uint64_t stack_lo;  /* stack bounds, known once registered (0 before) */
    uint64_t stack_hi;
    ip_free_batch *frees; /* frees whose record removals are pending (interposer_abi.h), in the
                             thread's own mapping (ip_thread_page; NULL: none, no batching) */
    ip_walk_cache *walk_cache; /* the core's reuse of this thread's previous backtraces: a zeroed
                                  mapping made when the thread registers, unmapped when it exits
                                  (NULL: none; the core then walks without reuse). Not in TLS:
                                  it is ~3.6 KB, and static TLS comes out of every thread's stack */
    int *errno_loc;     /* &errno, set when the thread registers: the malloc path saves and
                           restores errno without a call to __errno_location */
} ip_thread;

/* A registered thread's own mapping (ip_own_map when it registers, unmapped as it exits): its
   walk cache and its batch of pending removals. The batch is here, not in TLS, because other
   threads read it (gc_window.c: visit_batches, on every insert that replaces a record) without
   checking that the thread is alive: a thread that left with the raw exit syscall never
   unpublishes itself, and once joined glibc may unmap its stack, TLS included (RAW EXITS in
   gc_window.c). This mapping is then simply never unmapped, so its batch stays readable, and
   what it says stays true (those frees happened). */
typedef struct ip_thread_page {
    ip_walk_cache walk;
    ip_free_batch frees;
} ip_thread_page;

extern __thread ip_thread ip_tls __attribute__((tls_model("initial-exec")));
extern int g_ip_mode;

/* glibc's allocator entry points: calling these never re-enters the shim. */
extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

/* gc_window.c: hooks and GCs (see interposer_abi.h, ip_shim_api.gc_window).
   Every call into the core goes through ip_hook_enter/ip_hook_leave. */
extern int g_ip_gc_window;
IP_HIDDEN void ip_hook_protect(ip_thread *t);
IP_HIDDEN void ip_hook_unprotect(ip_thread *t);
IP_HIDDEN int32_t ip_gc_window(int32_t open);
IP_HIDDEN void ip_gc_window_init(void);
/* fork_prepare / fork_parent+child: fork and the GC window exclude each other (gc_window.c).
   enter returns 0 when a window stayed open: the child must not enter the core. */
IP_HIDDEN int ip_gc_window_fork_enter(void);
IP_HIDDEN void ip_gc_window_fork_leave(int child);
IP_HIDDEN void ip_threads_publish(ip_thread *t, uint32_t index);
IP_HIDDEN void ip_threads_unpublish(ip_thread *t);
/* Batched frees of the published threads (gc_window.c keeps the list): see ip_shim_api. */
IP_HIDDEN int32_t ip_pending_frees_copy(ip_free_entry *out, int32_t max);
IP_HIDDEN int32_t ip_pending_free_covers(uint64_t address, uint64_t time_ns);
IP_HIDDEN void ip_threads_forget_orphans(ip_thread *self, int32_t (*apply)(const ip_free_entry *, int32_t));
/* malloc.c: hand this thread's batch to the core (a host thread outside the core), or, for a
   thread that may no longer enter it (exiting), to the deferred log. */
IP_HIDDEN void ip_frees_flush(ip_thread *t);
IP_HIDDEN void ip_frees_flush_deferred(ip_thread *t);
IP_HIDDEN void ip_batch_init(const ip_core_config *config);

/* guard = 1: inside the core, unprotected; 2: inside, cancellation disabled. The compiler barrier
   orders the guard store before the window load for this thread; the CPU side of that ordering
   is the window opener's membarrier(), so the hot path needs no fence. */
static inline __attribute__((always_inline)) void ip_hook_enter(ip_thread *t)
{
    t->guard = 1;
    __asm__ volatile("" ::: "memory");
    if (__builtin_expect(__atomic_load_n(&g_ip_gc_window, __ATOMIC_RELAXED) != 0, 0))
        ip_hook_protect(t);
}

/* Leaving the core: a stop that was vetoed while we were inside (ip_may_park) parks us here
   (one relaxed load when no stop is in progress). */
static inline __attribute__((always_inline)) void ip_hook_leave(ip_thread *t)
{
    __asm__ volatile("" ::: "memory");
    if (__builtin_expect(t->guard == 2, 0))
        ip_hook_unprotect(t);
    t->guard = 0;
    __asm__ volatile("" ::: "memory");
    if (!t->busy)
        ip_stw_poll();
}

/* The dynamic linker's code, [lo, lo + size) (core.c finds it at start-up; 0 before). An event
   whose caller is ld.so goes to the deferred log: ld.so may be inside its TLS bookkeeping
   (_dl_update_slotinfo frees a module's stale TLS block, then clears the DTV entry), and the core
   touches its own dynamic TLS, whose __tls_get_addr would run that same update again, nested,
   and free the block twice (seen with dlopen/dlclose of a library with TLS). */
extern uint64_t g_ip_loader_lo, g_ip_loader_size;
static inline __attribute__((always_inline)) int ip_from_loader(uint64_t pc)
{
    return pc - g_ip_loader_lo < g_ip_loader_size;
}

/* deferred_log.c */
IP_HIDDEN int ip_deferred_push(uint16_t kind, uint64_t address, uint64_t size, uint32_t reason,
                               uint64_t pc, uint64_t fp);
IP_HIDDEN int32_t ip_deferred_pop(ip_deferred_entry *out);
IP_HIDDEN const uint64_t *ip_deferred_enqueued_counter(void);
extern uint64_t g_ip_deferred_dropped;

/* regions.c: our own anonymous memory, outside the program's region table */
IP_HIDDEN void *ip_own_map(size_t len);
IP_HIDDEN void ip_own_unmap(void *p, size_t len);

/* threads.c */
IP_HIDDEN void ip_thread_register(void);
IP_HIDDEN int ip_thread_may_register(uint64_t pc); /* 0: pc allocates under its thread's own lock */
IP_HIDDEN void ip_threads_learn_lock(uint64_t pthread_size); /* constructor, under the guard */
IP_HIDDEN void ip_threads_find_count(void);       /* constructor, before any thread of ours */
IP_HIDDEN void ip_threads_learn_hook(ip_thread *t); /* route_slow, internal threads */
IP_HIDDEN void ip_threads_init(void);
/* The record time: CLOCK_MONOTONIC_COARSE (1-4 ms resolution is plenty for ages; record order
   comes from the table's per-shard times, not from this). g_ip_clock is the vDSO's own
   clock_gettime once ip_threads_init found it (glibc's wrapper until then, or for good when the
   vDSO is absent): ~10 fewer instructions per malloc than the wrapper. */
typedef int (*ip_clock_fn)(clockid_t, struct timespec *);
IP_HIDDEN extern ip_clock_fn g_ip_clock;
static inline __attribute__((always_inline)) uint64_t ip_now_ns(void)
{
    struct timespec ts;
    if (__builtin_expect(g_ip_clock(CLOCK_MONOTONIC_COARSE, &ts) != 0, 0))
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* core.c: the loaded managed core */
typedef struct ip_core {
    int32_t (*on_alloc)(ip_alloc_event *);
    int32_t (*on_free)(uint64_t, ip_record *);
    int32_t (*on_free_batch)(const ip_free_entry *, int32_t);
    int32_t (*on_restore)(const ip_record *);
    int32_t (*on_thread_start)(int32_t, const char *, uint64_t, uint64_t, uint64_t);
    int32_t (*on_fork)(int32_t);
    int32_t (*on_exit)(void);
    int32_t (*on_drain)(void);
    int32_t (*on_scan)(int32_t);
    int32_t (*annotate)(uint64_t, uint64_t, int32_t, int32_t);
    int32_t (*on_control)(const char *, char *, int32_t, int32_t *);
    int64_t (*live_blocks)(void);
    int32_t (*dump)(const char *);
    ip_core_config config;
} ip_core;
extern ip_core g_ip_core;
IP_HIDDEN void ip_disable(const char *reason);
/* Wakes the drainer thread (1) or reports there is none (0). may_spawn: the caller is not in a
   nested context, so a fork child may start its drainer here. */
IP_HIDDEN int ip_drain_request(int may_spawn);
IP_HIDDEN void ip_message(const char *a, const char *b);
/* The stop-the-world park check: a thread may be parked only outside the core (a thread parked
   in managed code would deadlock a GC) and with no half-done update (busy). */
IP_HIDDEN int ip_may_park(void);

/* scan.c: the scan trigger and the scanner thread */
IP_HIDDEN void ip_scan_init(int signo, int interval_s);
IP_HIDDEN void ip_scan_after_fork_child(void);
/* Blocks every asynchronous signal on the calling (internal) thread, so none of the host's
   signals (SIGUSR2 it blocks to sigwait() for, SIGINT, ...) is ever delivered to one of ours.
   Faults and SIGRTMIN (the runtime's GC signal) stay open. */
IP_HIDDEN void ip_block_async_signals(void);

/* regions.c: the program's own mmap regions */
extern int g_ip_track_regions;
extern uint64_t g_ip_regions_dropped;
IP_HIDDEN void ip_regions_resolve(void);
IP_HIDDEN int32_t ip_regions_copy(ip_region *out, int32_t max);
IP_HIDDEN int32_t ip_departed_copy(ip_module *out, int32_t max);

/* fds.c: OUR DESCRIPTORS, kept at high numbers and checked before each use */
typedef struct ip_fd {
    int fd;          /* -1: none */
    uint64_t dev, ino;
} ip_fd;
IP_HIDDEN int ip_fd_adopt(ip_fd *f, int fd);   /* moves fd high, remembers it; -1 on failure */
IP_HIDDEN int ip_fd_ours(const ip_fd *f);      /* 1: f->fd still names the file we opened */
IP_HIDDEN void ip_fd_release(ip_fd *f);        /* closes f->fd only if still ours */
IP_HIDDEN int ip_fds_patch_core(void *handle); /* the core's new descriptors go high too */
IP_HIDDEN void ip_fds_reserve(void);          /* constructor, one thread: grow the fd table now */

/* control.c: the control socket (kmemleak's debugfs file, for one process) */
IP_HIDDEN void ip_control_open(int reopen);
IP_HIDDEN const ip_fd *ip_control_fd(void); /* reopened when the program closed it */
IP_HIDDEN void ip_control_serve(int32_t *scan_interval_s);
IP_HIDDEN void ip_control_close(void);

/* malloc.c: a custom allocator's block (kmemleak_alloc/kmemleak_free) */
IP_HIDDEN void ip_record_external(void *p, size_t size, uint64_t fp);
IP_HIDDEN void ip_forget_external(void *p, uint64_t pc);

/* regions.c: __lsan_register_root_region's table (api.c). add: -1 when full. */
IP_HIDDEN int ip_roots_add(uint64_t lo, uint64_t hi);
IP_HIDDEN void ip_roots_remove(uint64_t lo, uint64_t hi);
IP_HIDDEN int32_t ip_root_regions_copy(ip_region *out, int32_t max);
/* scan.c: runs a scan on the scanner thread and waits; *leaks = blocks found (-1 on failure). */
IP_HIDDEN int32_t ip_scan_and_wait(int32_t *leaks);

#endif
