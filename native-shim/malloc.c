/*
 * malloc.c — the exported malloc family. Each function resolves, guards and forwards:
 *     p = real_malloc(n); record(p, n); return p;
 * and keeps glibc's exact semantics (errno, NULL results, malloc(0), realloc edge cases), because
 * the recording never touches errno and never changes a result.
 *
 * INVARIANT (heaptrack's, DESIGN guard rule 5): a block's record is removed *before* the real
 * free/realloc runs. Otherwise another thread can be handed the same address by glibc and insert
 * its record first, and our late removal would delete the new owner's record. The one exception
 * is a batched free (free() below, interposer_abi.h: BATCHED FREES): its removal comes after the
 * real free, but it is stamped before it and only ever removes a record at least as old as the
 * stamp, so a new owner's record is never touched.
 *
 * Cost of the direct path (measured by scripts/bench): one TLS load and two predictable branches
 * in front of the reverse P/Invoke into the core; the unwind and the table insert are the core's.
 * A batched free stays in C: a few TLS loads and stores, one load of its shard's last time, the
 * real free; its removal rides on the thread's next malloc.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include "shim_internal.h"

/* The register state of the allocating function, taken inside the exported function.
   The shim is built with -fno-omit-frame-pointer, so rbp is this frame's base:
   [rbp] = caller's rbp, [rbp+8] = return address, rbp+16 = caller's sp after the return. */
#define IP_CALLER_PC() ((uint64_t)__builtin_return_address(0))
#define IP_CALLER_FP() ((uint64_t)__builtin_frame_address(0))

/* Batched frees (interposer_abi.h: BATCHED FREES). Set once at start-up (ip_batch_init). */
static int s_batch;                     /* 1: frees are batched */
static const uint8_t *s_shards;
static const uint8_t *s_shard_map;      /* region -> 1 + shard (interposer_abi.h: SHARD MAP) */
static const uint64_t *s_applied;       /* the core's count of applied deferred entries */
static const uint64_t *s_enqueued;      /* the deferred log's count of reserved entries */

/* The owner's side of the batch's seqlock (interposer_abi.h): once the core has applied the
   entries, bump gen (readers of the old entries retry), then empty it. The only place that does. */
static inline __attribute__((always_inline)) void batch_applied(ip_thread *t)
{
    __atomic_store_n(&t->frees->gen, t->frees->gen + 1, __ATOMIC_RELEASE);
    __atomic_store_n(&t->frees->count, 0, __ATOMIC_RELEASE);
}

/* STACK NEED. The hook runs on the allocating thread's stack: ~1.4 KB below malloc's frame once
   a call site's unwind rules are cached, ~3.7 KB on a thread's first events (rule misses, the walk
   cache and memo set up), against glibc's 0.25 KB (3.3 KB when it makes the thread's arena). A
   thread with less than IP_HOOK_STACK_NEED left below the exported function's frame logs the
   event instead (IP_DEFER_STACK: a frame-pointer backtrace, like other deferred events), so a
   deep recursion that allocates near the end of a small stack runs as far as without us. Frames
   off the thread's stack (a coroutine's, a sigaltstack) are not judged: as before. */
#define IP_HOOK_STACK_NEED 6144u

static inline __attribute__((always_inline)) int stack_short(const ip_thread *t, uint64_t here)
{
    return here - t->stack_lo < IP_HOOK_STACK_NEED;
}

/* Outcome of routing one event. */
enum ip_route { IP_ROUTE_NONE = 0, IP_ROUTE_DIRECT = 1 };

/* Decide where an event goes; queue it in the deferred log when it may not enter managed code.
   Returns IP_ROUTE_DIRECT when the caller should call the core itself (guard not yet set).
   `fp` is the exported function's frame pointer (0 for frees); `pc` its return address. */
static __attribute__((noinline)) int route_slow(uint16_t kind, uint64_t address, uint64_t size,
                                                uint64_t fp, uint64_t pc)
{
    int mode = __atomic_load_n(&g_ip_mode, __ATOMIC_RELAXED);
    if (mode == IP_MODE_DISABLED)
        return IP_ROUTE_NONE;
    ip_thread *t = &ip_tls;
    if (t->guard != 0) {
        /* Nested: the runtime's own malloc (internal, not recorded) or a signal handler that
           interrupted a hook. Frees are logged so no record outlives its block. */
        if (kind == IP_EV_FREE)
            ip_deferred_push(kind, address, 0, IP_DEFER_NESTED, 0, 0);
        return IP_ROUTE_NONE;
    }
    if (t->state == IP_T_INTERNAL) {
        ip_threads_learn_hook(t); /* start-up only: threads.c learns where a thread's lock is */
        return IP_ROUTE_NONE;
    }
    int unregistrable = t->state == IP_T_NEW && !ip_thread_may_register(pc);
    int short_stack = t->state == IP_T_HOST && stack_short(t, (uint64_t)__builtin_frame_address(0));
    if (t->state == IP_T_EXITING || mode == IP_MODE_EARLY || ip_from_loader(pc) || unregistrable ||
        short_stack) {
        uint64_t caller_fp = fp ? ((const uint64_t *)fp)[0] : 0;
        uint32_t reason = t->state == IP_T_EXITING ? IP_DEFER_EXITING
                        : mode == IP_MODE_EARLY    ? IP_DEFER_EARLY
                        : unregistrable            ? IP_DEFER_UNREGISTERED
                        : short_stack              ? IP_DEFER_STACK
                                                   : IP_DEFER_LOADER;
        ip_deferred_push(kind, address, size, reason, kind == IP_EV_FREE ? 0 : pc, caller_fp);
        return IP_ROUTE_NONE;
    }
    /* IP_T_NEW on an active process: register, then go direct (or log it: now the stack's
       bounds are known). */
    ip_thread_register();
    if (t->state != IP_T_HOST || t->guard != 0)
        return IP_ROUTE_NONE;
    if (stack_short(t, (uint64_t)__builtin_frame_address(0))) {
        ip_deferred_push(kind, address, size, IP_DEFER_STACK, kind == IP_EV_FREE ? 0 : pc,
                         fp ? ((const uint64_t *)fp)[0] : 0);
        return IP_ROUTE_NONE;
    }
    return IP_ROUTE_DIRECT;
}

/* Fast path: a registered host thread, outside any hook, with tracking active, not called by the
   dynamic linker. */
static inline __attribute__((always_inline)) int route(uint16_t kind, uint64_t address,
                                                       uint64_t size, uint64_t fp, uint64_t pc)
{
    const ip_thread *t = &ip_tls;
    if (IP_LIKELY(t->state == IP_T_HOST && t->guard == 0 &&
                  __atomic_load_n(&g_ip_mode, __ATOMIC_RELAXED) == IP_MODE_ACTIVE && !ip_from_loader(pc) &&
                  !stack_short(t, (uint64_t)__builtin_frame_address(0))))
        return IP_ROUTE_DIRECT;
    return route_slow(kind, address, size, fp, pc);
}

/* The fast unwinder's max_frames when the shim may try whole hits itself; 0: never (another
   unwinder, or a depth beyond the walk cache). Set once at start-up (ip_batch_init). */
static int s_whole_hit_frames;

/* WHOLE HIT (interposer_abi.h, above ip_walk_cache): the depot id of this thread's stored walk
   when a walk from (pc, sp, bp) would give exactly its frames, else 0. The same test as the
   core's FastUnwinderCached.Unwind fast path, made here so that a repeated call chain needs no
   unwinder call: one load and compare per word a step of the stored walk loaded, no branch per
   word. The words lie inside this thread's stack (they were checked against its bounds when the
   walk was stored, and the page belongs to this thread), so they are read without a new check.
   callgrind, deep churn (15 frames, 24 words): 210 instructions per malloc in the core's check
   and the call into it. */
static inline __attribute__((always_inline)) uint32_t whole_hit(ip_walk_cache *c, uint64_t pc,
                                                                uint64_t sp, uint64_t bp)
{
    int max = s_whole_hit_frames;
    if (c == NULL || max <= 0 || c->check_valid != 1)
        return 0;
    int b = c->base;
    uint32_t id = c->stack_id;
    int n = c->check_count;
    if (c->pc[b] != pc || c->sp[b] != sp || id == 0 || pc == 0 || c->count <= 0 ||
        (c->count < max && c->complete == 0) || (c->bp[b] != bp && c->bp0_needed != 0) ||
        n < 0 || n > 2 * IP_WALK_LEVELS || (n & 3) != 0)
        return 0;
    const uint64_t *addr = c->check_addr, *val = c->check_val, *end = addr + n;
    uint64_t diff = 0;
    for (; addr < end; addr += 4, val += 4)
        diff |= (*(const uint64_t *)addr[0] ^ val[0]) | (*(const uint64_t *)addr[1] ^ val[1]) |
                (*(const uint64_t *)addr[2] ^ val[2]) | (*(const uint64_t *)addr[3] ^ val[3]);
    if (diff != 0)
        return 0;
    c->bp[b] = bp;
    return id;
}

static inline __attribute__((always_inline)) void record_alloc(void *p, uint64_t size,
                                                               uint16_t kind, uint64_t fp)
{
    if (IP_UNLIKELY(p == NULL))
        return;
    if (route(kind, (uint64_t)p, size, fp, ((const uint64_t *)fp)[1]) != IP_ROUTE_DIRECT)
        return;
    ip_thread *t = &ip_tls;
    int *errno_loc = t->errno_loc; /* registered: route() said direct */
    int saved_errno = *errno_loc;
    const uint64_t *frame = (const uint64_t *)fp;
    /* Field by field: an initializer zeroes the whole struct first (gcc: rep stos, ~30 cycles). */
    ip_alloc_event ev;
    ev.record.address = (uint64_t)p;
    ev.record.size = size;
    ev.record.time_ns = ip_now_ns();
    ev.record.tid = t->tid;
    ev.record.thread_index = t->thread_index;
    ev.record.flags = 0;
    ev.record.min_count = t->lsan_disabled > 0 ? 0 : 1; /* __lsan_disable: never reported */
    ev.pc = frame[1];
    ev.sp = fp + 16;
    ev.bp = frame[0];
    ev.record.stack_id = whole_hit(t->walk_cache, ev.pc, ev.sp, ev.bp);
    ev.stack_lo = t->stack_lo;
    ev.stack_hi = t->stack_hi;
    ev.frames = NULL;
    ev.walk_cache = t->walk_cache;
    ev.frees = s_batch ? t->frees : NULL;
    ev.kind = kind;
    ev.nframes = 0;
    ip_hook_enter(t);
    g_ip_core.on_alloc(&ev);
    if (ev.frees != NULL && ev.frees->count != 0)
        batch_applied(t); /* the core applied them before its insert; still inside the guard */
    ip_hook_leave(t);
    *errno_loc = saved_errno;
}

/* Removes p's record before the real free/realloc (see INVARIANT). Returns 1 when a record was
   stashed (direct path only). */
static inline __attribute__((always_inline)) int record_free(void *p, ip_record *stash, uint64_t pc)
{
    if (route(IP_EV_FREE, (uint64_t)p, 0, 0, pc) != IP_ROUTE_DIRECT)
        return 0;
    int saved_errno = errno;
    ip_thread *t = &ip_tls;
    ip_hook_enter(t);
    int found = g_ip_core.on_free((uint64_t)p, stash);
    ip_hook_leave(t);
    errno = saved_errno;
    return found == 1;
}

static void record_restore(const ip_record *stash)
{
    int saved_errno = errno;
    ip_thread *t = &ip_tls;
    ip_hook_enter(t);
    g_ip_core.on_restore(stash);
    ip_hook_leave(t);
    errno = saved_errno;
}

IP_EXPORT void *malloc(size_t n)
{
    void *p = __libc_malloc(n);
    record_alloc(p, n, IP_EV_MALLOC, IP_CALLER_FP());
    return p;
}

/* ---- batched frees (interposer_abi.h: BATCHED FREES) --------------------------------------- */

void ip_batch_init(const ip_core_config *config)
{
    s_whole_hit_frames = config->whole_hit_frames > 0 && config->whole_hit_frames <= IP_WALK_LEVELS
                             ? config->whole_hit_frames : 0;
    if (!config->batch_frees || config->shards == NULL || config->applied == NULL ||
        config->shard_map == NULL || config->shard_bits <= 0 || config->shard_bits > 8)
        return;
    s_shards = config->shards;
    s_shard_map = config->shard_map;
    s_applied = config->applied;
    s_enqueued = ip_deferred_enqueued_counter();
    s_batch = 1;
}

/* p's shard's last record time (see BATCHED FREES in interposer_abi.h); 0 when no record was ever
   in p's region (SHARD MAP: then p has none, and a removal stamped 0 removes nothing). */
static inline __attribute__((always_inline)) uint64_t free_stamp(uint64_t address)
{
    uint32_t v = __atomic_load_n(&s_shard_map[ip_shard_map_index(address)], __ATOMIC_RELAXED);
    if (v == 0)
        return 0;
    const uint8_t *shard = s_shards + (uint64_t)(v - 1) * IP_SHARD_STRIDE;
    return __atomic_load_n((const uint64_t *)(shard + IP_SHARD_TIME_OFFSET), __ATOMIC_RELAXED);
}

/* A removal waits in the batch only while no deferred entry is waiting for the core: a logged
   insert of p, replayed after the stamp was read, would get a later time and outlive p's free.
   Appending never enters the core, so a free from the dynamic linker or on a short stack may
   append too; only the hand-over of a full batch is refused there (free()). A full batch that
   could not be handed over takes no more entries: the next free goes the direct way (route()),
   the next malloc applies the batch. */
static inline __attribute__((always_inline)) int batchable(const ip_thread *t)
{
    return t->state == IP_T_HOST && t->guard == 0 && t->busy == 0 && s_batch &&
           __atomic_load_n(&g_ip_mode, __ATOMIC_RELAXED) == IP_MODE_ACTIVE &&
           t->frees != NULL && t->frees->count < IP_FREE_BATCH &&
           __atomic_load_n(s_enqueued, __ATOMIC_ACQUIRE) == __atomic_load_n(s_applied, __ATOMIC_ACQUIRE);
}

/* A full batch (IP_FREE_BATCH frees without a malloc in between), or the owner's query. */
void ip_frees_flush(ip_thread *t)
{
    int saved_errno = errno;
    ip_hook_enter(t);
    if (__atomic_load_n(&g_ip_mode, __ATOMIC_RELAXED) == IP_MODE_ACTIVE)
        g_ip_core.on_free_batch(t->frees->entry, (int32_t)t->frees->count);
    batch_applied(t); /* still inside the guard: no stop parks this thread before the reset */
    ip_hook_leave(t);
    errno = saved_errno;
}

/* An exiting thread's batch: it may no longer enter the core. The entries stay in the batch too
   (applying one twice is harmless) until the thread unpublishes itself: an insert that finds one
   of those records still sees its removal pending (ip_pending_free_covers). */
void ip_frees_flush_deferred(ip_thread *t)
{
    uint32_t n = t->frees->count;
    for (uint32_t i = 0; i < n && i < IP_FREE_BATCH; i++)
        if (t->frees->entry[i].address != 0)
            ip_deferred_push(IP_EV_FREE_STAMPED, t->frees->entry[i].address, t->frees->entry[i].stamp,
                             IP_DEFER_EXITING, 0, 0);
}

IP_EXPORT void free(void *p)
{
    if (p == NULL)
        return; /* glibc's free(NULL) does nothing either */
    uint64_t pc = IP_CALLER_PC();
    ip_thread *t = &ip_tls;
    if (IP_LIKELY(batchable(t))) {
        /* busy: a signal handler's free on this thread must not append to a half-written entry
           (it sees busy and takes the direct path), and a stop must not park us here. */
        t->busy = 1;
        __asm__ volatile("" ::: "memory");
        ip_free_batch *b = t->frees;
        uint32_t n = b->count;
        b->entry[n].address = (uint64_t)p;
        b->entry[n].stamp = free_stamp((uint64_t)p); /* before the real free */
        __atomic_store_n(&b->count, n + 1, __ATOMIC_RELEASE);
        __asm__ volatile("" ::: "memory");
        t->busy = 0;
        __asm__ volatile("" ::: "memory");
        __libc_free(p);
        if (IP_UNLIKELY(n + 1 >= IP_FREE_BATCH) && !ip_from_loader(pc) &&
            !stack_short(t, (uint64_t)__builtin_frame_address(0)))
            ip_frees_flush(t);
        else
            ip_stw_poll();
        return;
    }
    record_free(p, NULL, pc);
    __libc_free(p);
}

IP_EXPORT void *calloc(size_t n, size_t size)
{
    void *p = __libc_calloc(n, size);
    record_alloc(p, (uint64_t)n * size, IP_EV_CALLOC, IP_CALLER_FP());
    return p;
}

/* The shared part of realloc and reallocarray: `real` performs the resize. */
static inline __attribute__((always_inline)) void *
resize(void *p, size_t n, uint16_t kind, uint64_t fp, void *(*real)(void *, size_t, size_t),
       size_t a, size_t b)
{
    if (p == NULL) {
        void *q = real(NULL, a, b);
        record_alloc(q, n, kind, fp);
        return q;
    }
    /* busy: between the remove and the re-insert the block is in no record, so a scan would
       neither read it nor see it; the stop-the-world waits for this window to close. */
    ip_thread *t = &ip_tls;
    int was_busy = t->busy;
    t->busy = 1;
    ip_record stash;
    int stashed = record_free(p, &stash, ((const uint64_t *)fp)[1]);
    void *q = real(p, a, b);
    if (q != NULL) {
        record_alloc(q, n, kind, fp);
    } else if (n != 0) {
        /* Failed: p is still live and still the program's. Put its record back. */
        if (stashed)
            record_restore(&stash);
        else
            record_alloc(p, malloc_usable_size(p), kind, fp);
    }
    t->busy = was_busy;
    if (!was_busy)
        ip_stw_poll();
    return q;
}

static void *real_realloc2(void *p, size_t n, size_t unused)
{
    (void)unused;
    return __libc_realloc(p, n);
}

IP_EXPORT void *realloc(void *p, size_t n)
{
    return resize(p, n, IP_EV_REALLOC, IP_CALLER_FP(), real_realloc2, n, 0);
}

static void *real_reallocarray(void *p, size_t nmemb, size_t size)
{
    /* glibc's own reallocarray is __libc_reallocarray (GLIBC_PRIVATE); calling realloc on the
       checked product is exactly what it does. */
    return __libc_realloc(p, nmemb * size);
}

IP_EXPORT void *reallocarray(void *p, size_t nmemb, size_t size)
{
    size_t n;
    if (__builtin_mul_overflow(nmemb, size, &n)) {
        errno = ENOMEM; /* glibc: ENOMEM, p untouched; nothing to record */
        return NULL;
    }
    return resize(p, n, IP_EV_REALLOCARRAY, IP_CALLER_FP(), real_reallocarray, nmemb, size);
}

IP_EXPORT void *memalign(size_t alignment, size_t n)
{
    void *p = __libc_memalign(alignment, n);
    record_alloc(p, n, IP_EV_MEMALIGN, IP_CALLER_FP());
    return p;
}

/* The few entry points glibc has no __libc_ alias for, resolved once with dlsym(RTLD_NEXT).
   dlsym may call calloc, which goes to __libc_calloc: no recursion. */
static void *next_symbol(void **slot, const char *name)
{
    void *f = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (IP_UNLIKELY(f == NULL)) {
        f = dlsym(RTLD_NEXT, name);
        __atomic_store_n(slot, f, __ATOMIC_RELEASE);
    }
    return f;
}

IP_EXPORT void *aligned_alloc(size_t alignment, size_t n)
{
    static void *real;
    void *(*f)(size_t, size_t) = (void *(*)(size_t, size_t))next_symbol(&real, "aligned_alloc");
    void *p = f(alignment, n);
    record_alloc(p, n, IP_EV_ALIGNED_ALLOC, IP_CALLER_FP());
    return p;
}

IP_EXPORT int posix_memalign(void **out, size_t alignment, size_t n)
{
    static void *real;
    int (*f)(void **, size_t, size_t) =
        (int (*)(void **, size_t, size_t))next_symbol(&real, "posix_memalign");
    int rc = f(out, alignment, n);
    if (rc == 0)
        record_alloc(*out, n, IP_EV_POSIX_MEMALIGN, IP_CALLER_FP());
    return rc;
}

IP_EXPORT void *valloc(size_t n)
{
    void *p = __libc_valloc(n);
    record_alloc(p, n, IP_EV_VALLOC, IP_CALLER_FP());
    return p;
}

IP_EXPORT void *pvalloc(size_t n)
{
    void *p = __libc_pvalloc(n);
    record_alloc(p, n, IP_EV_PVALLOC, IP_CALLER_FP());
    return p;
}

IP_EXPORT size_t malloc_usable_size(void *p)
{
    static void *real;
    size_t (*f)(void *) = (size_t(*)(void *))next_symbol(&real, "malloc_usable_size");
    return f(p);
}

/* kmemleak_alloc/kmemleak_free (api.c): a custom allocator's block, recorded like malloc's, with
   the backtrace of kmemleak_alloc's caller (fp: kmemleak_alloc's frame). */
void ip_record_external(void *p, size_t size, uint64_t fp)
{
    record_alloc(p, size, IP_EV_MALLOC, fp);
}

void ip_forget_external(void *p, uint64_t pc)
{
    if (p != NULL)
        record_free(p, NULL, pc);
}
