/*
 * deferred_log.c — kmemleak's early_log, generalised to any time.
 *
 * Every event that may not enter managed code right now (before the core is up, on a thread the
 * runtime has detached, nested inside a hook) is queued here and replayed by the core, in order,
 * before its next insert and before any query. Nothing is dropped silently: if the log fills,
 * tracking is switched off with one stderr line (the table is then frozen, never corrupted).
 *
 * The log is a bounded multi-producer / single-consumer queue (Dmitry Vyukov's bounded MPMC
 * queue): lock-free and async-signal-safe for producers. To let untouched mmap pages serve as
 * an initialised queue, each slot stores `seq - slot_index` instead of `seq`, so all-zero means
 * "slot i is free for lap 0".
 *
 * A producer interrupted between reserving and publishing a slot (a signal) blocks the consumer
 * at that slot until it publishes: order is kept, and the consumer simply stops early.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>
#include "shim_internal.h"

#define IP_LOG_CAPACITY (1u << 16) /* 64 Ki entries x 112 B = 7 MiB of address space, lazily touched */
#define IP_LOG_MASK (IP_LOG_CAPACITY - 1)
#define IP_LOG_FULL_WAIT_ROUNDS 200000u /* sched_yield rounds (seconds at most) before giving up */

static ip_deferred_entry *_Atomic s_log;   /* mmap'ed on first push */
static _Atomic uint64_t s_enqueue_pos;     /* next slot a producer reserves */
static _Atomic uint64_t s_dequeue_pos;     /* next slot the consumer reads; consumer-owned */
uint64_t g_ip_deferred_dropped;            /* entries refused because the log was full */

static ip_deferred_entry *log_buffer(void)
{
    ip_deferred_entry *log = atomic_load_explicit(&s_log, memory_order_acquire);
    if (IP_LIKELY(log != NULL))
        return log;
    void *m = mmap(NULL, sizeof(ip_deferred_entry) * IP_LOG_CAPACITY, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    ip_deferred_entry *expected = NULL;
    if (!atomic_compare_exchange_strong(&s_log, &expected, (ip_deferred_entry *)m)) {
        munmap(m, sizeof(ip_deferred_entry) * IP_LOG_CAPACITY); /* another thread won the race */
        return expected;
    }
    return (ip_deferred_entry *)m;
}

/* Bounded frame-pointer walk for a deferred event: frame 0 is the caller of malloc; further
   frames only when this thread's stack bounds are known (never dereference an unchecked rbp:
   frame-pointer-less code uses it as a general register). */
static uint16_t capture_frames(uint64_t *frames, uint64_t pc, uint64_t fp)
{
    uint16_t n = 0;
    frames[n++] = pc;
    uint64_t lo = ip_tls.stack_lo, hi = ip_tls.stack_hi;
    while (n < IP_DEFERRED_FRAMES && lo != 0 && fp >= lo && fp + 16 <= hi && (fp & 7) == 0) {
        uint64_t next = ((const uint64_t *)fp)[0];
        uint64_t ret = ((const uint64_t *)fp)[1];
        if (ret < 4096)
            break;
        frames[n++] = ret;
        if (next <= fp)
            break;
        fp = next;
    }
    return n;
}

/* Whether a push may start a drainer thread (a fork child has none): not from inside a hook or a
   signal handler, the dynamic linker, a thread holding its own pthread lock (threads.c), or one
   short of stack (malloc.c). */
static int may_spawn(uint32_t reason)
{
    return reason != IP_DEFER_NESTED && reason != IP_DEFER_LOADER && reason != IP_DEFER_UNREGISTERED &&
           reason != IP_DEFER_STACK;
}

int ip_deferred_push(uint16_t kind, uint64_t address, uint64_t size, uint32_t reason, uint64_t pc,
                     uint64_t fp)
{
    ip_deferred_entry *log = log_buffer();
    if (log == NULL) {
        __atomic_add_fetch(&g_ip_deferred_dropped, 1, __ATOMIC_RELAXED);
        ip_disable("cannot map the deferred log");
        return -1;
    }
    uint64_t pos = atomic_load_explicit(&s_enqueue_pos, memory_order_relaxed);
    ip_deferred_entry *cell;
    unsigned waited = 0;
    for (;;) {
        cell = &log[pos & IP_LOG_MASK];
        uint64_t stored = __atomic_load_n(&cell->seq, __ATOMIC_ACQUIRE);
        int64_t dif = (int64_t)(stored - (pos & ~(uint64_t)IP_LOG_MASK));
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&s_enqueue_pos, &pos, pos + 1,
                                                      memory_order_relaxed, memory_order_relaxed))
                break;
        } else if (dif < 0) {
            /* Full: wake the drainer and wait for room, for a bounded time. */
            if (ip_drain_request(may_spawn(reason)) && waited < IP_LOG_FULL_WAIT_ROUNDS) {
                waited++;
                sched_yield();
                pos = atomic_load_explicit(&s_enqueue_pos, memory_order_relaxed);
                continue;
            }
            __atomic_add_fetch(&g_ip_deferred_dropped, 1, __ATOMIC_RELAXED);
            ip_disable("the deferred log is full (the core stopped draining it)");
            return -1;
        } else {
            pos = atomic_load_explicit(&s_enqueue_pos, memory_order_relaxed);
        }
    }
    cell->address = address;
    cell->size = size;
    cell->time_ns = ip_now_ns();
    cell->tid = ip_tls.tid != 0 ? ip_tls.tid : (int32_t)gettid();
    cell->kind = kind;
    cell->reason = reason;
    cell->thread_index = ip_tls.thread_index;
    cell->nframes = kind == IP_EV_FREE || kind == IP_EV_FREE_STAMPED ? 0 : capture_frames(cell->frames, pc, fp);
    __atomic_store_n(&cell->seq, (pos + 1) - (pos & IP_LOG_MASK), __ATOMIC_RELEASE);
    /* Half full: ask the drainer to replay (a no-op post when it is already busy). */
    if (IP_UNLIKELY(pos - atomic_load_explicit(&s_dequeue_pos, memory_order_relaxed) == IP_LOG_CAPACITY / 2))
        ip_drain_request(may_spawn(reason));
    return 0;
}

int32_t ip_deferred_pop(ip_deferred_entry *out)
{
    ip_deferred_entry *log = atomic_load_explicit(&s_log, memory_order_acquire);
    if (log == NULL)
        return 0;
    uint64_t pos = atomic_load_explicit(&s_dequeue_pos, memory_order_relaxed);
    ip_deferred_entry *cell = &log[pos & IP_LOG_MASK];
    uint64_t stored = __atomic_load_n(&cell->seq, __ATOMIC_ACQUIRE);
    if (stored != (pos + 1) - (pos & IP_LOG_MASK))
        return 0; /* empty, or the next entry is not published yet: stop to keep order */
    memcpy(out, cell, sizeof *out);
    out->seq = pos;
    __atomic_store_n(&cell->seq, (pos + IP_LOG_CAPACITY) - (pos & IP_LOG_MASK), __ATOMIC_RELEASE);
    atomic_store_explicit(&s_dequeue_pos, pos + 1, memory_order_relaxed);
    return 1;
}

const uint64_t *ip_deferred_enqueued_counter(void)
{
    return (const uint64_t *)&s_enqueue_pos;
}
