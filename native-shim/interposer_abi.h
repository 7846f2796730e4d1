/*
 * interposer_abi.h — the one contract between the C shim (libinterposer.so) and the managed
 * core (libinterposer_core.so, C# compiled with NativeAOT).
 *
 * Rules of this header (checked by tests/Interposer.Tests/Abi/AbiLayoutTests.cs, which compiles
 * this file with gcc and compares every struct's size and field offsets with the C# mirror in
 * src/Interposer/Native/Abi.cs):
 *   - fixed-width types only; every struct is explicitly padded to a multiple of 8 bytes;
 *   - every exported function is prefixed "interposer_" and returns an integer status
 *     (0 = ok, negative = error); nothing throws or longjmps across the boundary;
 *   - the core never calls back into the host; it only calls the function pointers in
 *     ip_shim_api, which are async-signal-safe unless noted.
 *
 * Bump IP_ABI_VERSION whenever a struct or signature here changes.
 */
#ifndef INTERPOSER_ABI_H
#define INTERPOSER_ABI_H

#include <stdint.h>

#define IP_ABI_VERSION 11

/* Levels of a thread's previous walk kept for reuse (see src/Interposer/Unwinding/WalkCache.cs). */
#define IP_WALK_LEVELS 32
/* Bytes of a thread's walk memo (ip_walk_cache.memo), mmap'ed by the core, unmapped by the shim. */
#define IP_WALK_MEMO_BYTES 65536

/* Frames kept per deferred-log entry (captured in C with a bounded frame-pointer walk). */
#define IP_DEFERRED_FRAMES 8
/* Frees a host thread collects before it hands their record removals to the core in one call. */
#define IP_FREE_BATCH 16

/* What happened. */
enum ip_event_kind {
    IP_EV_MALLOC = 1,
    IP_EV_CALLOC = 2,
    IP_EV_REALLOC = 3,
    IP_EV_REALLOCARRAY = 4,
    IP_EV_MEMALIGN = 5,
    IP_EV_POSIX_MEMALIGN = 6,
    IP_EV_ALIGNED_ALLOC = 7,
    IP_EV_VALLOC = 8,
    IP_EV_PVALLOC = 9,
    IP_EV_FREE = 16,
    IP_EV_FREE_STAMPED = 17, /* deferred only: a batched free's removal; size holds its stamp */
};

/* Why an event went to the deferred log instead of straight into managed code. */
enum ip_deferred_reason {
    IP_DEFER_EARLY = 1,   /* before the core was initialised */
    IP_DEFER_NESTED = 2,  /* this thread was already inside a hook (or a signal interrupted one) */
    IP_DEFER_EXITING = 4, /* the thread is past its TLS destructors: the runtime detached it */
    IP_DEFER_LOADER = 8,  /* called by the dynamic linker, maybe inside its TLS bookkeeping */
    IP_DEFER_UNREGISTERED = 16, /* a new thread's event where it cannot register yet (threads.c) */
    IP_DEFER_STACK = 32,  /* too little of the thread's stack left for the hook (malloc.c) */
};

/* Block flags kept in ip_record.flags (kmemleak's object flags). */
enum ip_record_flags {
    IP_REC_DEFERRED = 1,  /* recorded through the deferred log (shallow backtrace) */
    IP_REC_REPORTED = 2,  /* kmemleak's OBJECT_REPORTED: listed by a periodic scan already */
    IP_REC_NO_SCAN = 4,   /* kmemleak_no_scan: its contents are never scanned */
};

/* Why a scan runs (interposer_on_scan). */
enum ip_scan_reason {
    IP_SCAN_SIGNAL = 1,   /* scan_signal (SIGUSR2) or an explicit request: list every leak */
    IP_SCAN_PERIODIC = 2, /* scan_interval_s: log only blocks not reported before */
    IP_SCAN_EXIT = 3,     /* report_at_exit */
};

/* ip_stopped_thread.state */
enum ip_stw_state {
    IP_STW_STOPPED = 0,   /* parked in the stop handler; regs/sp/tcb captured */
    IP_STW_RUNNING = 1,   /* could not be stopped in time (signal blocked, uninterruptible, traced) */
    IP_STW_EXITED = 2,    /* exited after it was listed */
};

/* Indices into ip_stopped_thread.regs (from the ucontext's gregs). */
enum ip_stw_reg {
    IP_STW_RAX = 0, IP_STW_RBX, IP_STW_RCX, IP_STW_RDX, IP_STW_RSI, IP_STW_RDI, IP_STW_RBP,
    IP_STW_R8, IP_STW_R9, IP_STW_R10, IP_STW_R11, IP_STW_R12, IP_STW_R13, IP_STW_R14, IP_STW_R15,
    IP_STW_RIP, IP_STW_RSP,
    IP_STW_NREGS = 17     /* regs[17] is reserved and always 0 */
};

/* One thread of a stop-the-world (native-shim/stw.h). */
typedef struct ip_stopped_thread {
    int32_t tid;
    int32_t state;          /* enum ip_stw_state */
    uint64_t sp;            /* saved rsp (0 if state != 0). Scan the stack from sp - 128: the
                               x86-64 red zone below rsp may hold a leaf function's locals (the
                               kernel put the signal frame below it, so [sp-128, sp) is intact) */
    uint64_t regs[18];      /* enum ip_stw_reg order; all 0 if state != 0 */
    uint64_t tcb;           /* the thread's TCB (fs base = pthread_self()); 0 if state != 0 */
    uint64_t reason;        /* enum ip_stw_reason: why a RUNNING thread was not stopped */
} ip_stopped_thread;

/* ip_stopped_thread.reason; 0: stopped, exited, or RUNNING because it did not answer in time */
enum ip_stw_reason {
    IP_STW_REASON_SECCOMP = 1, /* RUNNING: it runs under a seccomp filter the program installed
                                  after we started (or strict mode), so it was not signalled: the
                                  stop handler's syscalls could get it killed */
};

/* Part of every thread's static TLS that belongs to Interposer (the shim's ip_tls with its walk
   cache, the core's thread statics): at tcb + offset, size bytes. Never scanned: it holds stale
   register values of the host's frames. */
typedef struct ip_tls_range {
    int64_t offset;
    uint64_t size;
} ip_tls_range;

/* A library the program dlclose'd (kept so its frames still print as module+offset, or better). */
typedef struct ip_module {
    uint64_t start;         /* its executable segment: [start, end) */
    uint64_t end;
    uint64_t bias;          /* load bias (dlpi_addr) */
    uint64_t file_offset;   /* p_offset of the executable segment */
    char path[224];         /* NUL-terminated, truncated */
} ip_module;

/* A writable anonymous region the program mapped itself (mmap/mremap from a host thread). */
typedef struct ip_region {
    uint64_t start;
    uint64_t end;
} ip_region;

/*
 * A thread's previous stack walk, in a page the shim maps for the thread (ip_thread.walk_cache),
 * owned by the core's unwinder, which reuses its outer levels when they are provably unchanged.
 * Zero-initialised = empty. Level k of
 * the walk is at index base + k of the five level arrays, which are twice the deepest walk so a
 * new walk can reuse the old one's outer levels without moving them (LAYOUT in WalkCache.cs).
 *
 * WHOLE HIT. When check_valid is 1, the stored walk is still exactly what a walk from
 * (pc[base], sp[base], bp) would give iff every *check_addr[i] == check_val[i] (i < check_count,
 * a multiple of 4) and, when bp0_needed, bp == bp[base]; the frames are then stack_id's, provided
 * count >= max_frames or complete. The shim makes this check itself before it enters the core
 * (malloc.c: whole_hit), so a repeated call chain costs no unwinder work; on a hit it sets
 * bp[base] = bp, as the core's own hit does. Everything else in the page is the core's.
 */
typedef struct ip_walk_cache {
    int32_t count;      /* levels stored */
    int32_t complete;   /* 1: the walk ended by itself, not at a limit */
    uint32_t stack_id;  /* depot id of the frames last returned from it; 0 = unknown */
    uint32_t uses_rbp;  /* bit k: step k's CFA is computed from rbp */
    uint64_t pc[2 * IP_WALK_LEVELS];
    uint64_t sp[2 * IP_WALK_LEVELS];
    uint64_t bp[2 * IP_WALK_LEVELS];
    uint64_t ra_slot[2 * IP_WALK_LEVELS];
    uint64_t bp_slot[2 * IP_WALK_LEVELS];
    /* The check of a whole hit at level 0, flattened (built lazily from the arrays above; see
       WalkCache.cs): the walk is unchanged iff *check_addr[i] == check_val[i] for every i. */
    int32_t check_valid;  /* 0: the arrays changed since the check was built */
    int32_t check_count;
    int32_t bp0_needed;   /* level 0's rbp is consumed by a later step: it must match too */
    int32_t base;         /* index of level 0 in pc, sp, bp, ra_slot and bp_slot */
    uint64_t check_addr[2 * IP_WALK_LEVELS];
    uint64_t check_val[2 * IP_WALK_LEVELS];
    /* THE MEMO (WalkCache.cs): the thread's recent whole walks, each with its checks and depot
       id, so a call site that recurs after others is a whole hit too. NULL until the thread has
       walked WalkMemo.After times without a hit; then IP_WALK_MEMO_BYTES from mmap, which the
       shim unmaps when the thread exits. */
    void *memo;
    int32_t walks;        /* before the memo: walks that were no whole hit; then its score */
    int32_t memo_off;     /* > 0: the memo rests for this many more walks */
} ip_walk_cache;

/*
 * BATCHED FREES (PENDING REMOVALS). free(p) on a host thread really frees p at once, so glibc's
 * checks, errors and reuse are exactly what they would be without us; only the removal of p's
 * record waits, in the thread's batch (ip_thread.frees, the shim's TLS). The thread's next
 * malloc applies its pending removals in the same call into the core, under the same shard lock
 * when they share the shard: one managed transition and one lock per malloc+free pair instead of
 * two. A batch that fills up (IP_FREE_BATCH frees in a row) is handed over on its own.
 *
 * EXACT, HOWEVER LATE. Every record's time_ns is strictly increasing within its shard: an insert
 * sets time_ns = max(time_ns, shard's last time + 1) and stores it as the shard's last time,
 * under the shard lock. A free stamps its entry with p's shard's last time, read before the real
 * free. The record the free meant was inserted before (the program got p from it), so its time is
 * <= the stamp; any record inserted at p after the real free (glibc handed p out again, to this
 * or another thread) is > the stamp. A pending removal is applied only to a record whose time is
 * <= its stamp: applying it late, twice, or from another thread is harmless.
 *
 * Who applies them: the owner (next malloc, a full batch, its own queries); the deferred log, when
 * the thread exits (IP_EV_FREE_STAMPED); and every reader that needs the table exact: a scan (the
 * owners are stopped), the live-block queries and dumps, and a fork child (the batches of the
 * threads that did not follow), which read every published batch with a seqlock: the owner
 * writes entry[count], then count; when the batch has been applied it bumps gen, then sets
 * count = 0. A reader reads gen, count, entries [0, count), gen again, and uses them only if gen
 * did not change.
 */
typedef struct ip_free_entry {
    uint64_t address;
    uint64_t stamp;     /* p's shard's last record time, read before the real free */
} ip_free_entry;

typedef struct ip_free_batch {
    uint32_t count;     /* entries in use */
    uint32_t gen;       /* bumped each time the batch is emptied */
    ip_free_entry entry[IP_FREE_BATCH];
} ip_free_batch;

/* The core's allocation table, as far as the shim reads it to stamp a free: shard i's header is
   at shards + i * IP_SHARD_STRIDE and its last record time (uint64_t) at IP_SHARD_TIME_OFFSET.
   SHARD MAP. A block's shard is chosen by its address's 4 MiB region, through a byte map the core
   fills round-robin: shard_map[ip_shard_map_index(address)] is 1 + the shard, or 0 while no record
   was ever inserted in the region (then no record can be there: a free stamps 0 and removes
   nothing). glibc gives each thread's arena its own regions, so until 255 regions have been seen
   no two arenas share a shard lock (a hash of the region, as before, put two of 8 threads' arenas
   on one lock in ~15% of runs). The core writes an entry once (CAS from 0) before the first
   insert in the region; the program's own ordering of malloc(p) before free(p) makes it visible
   to the freeing thread. Addresses above 2^47 fold onto the map (a shared shard, still exact). */
#define IP_SHARD_STRIDE 64
#define IP_SHARD_TIME_OFFSET 32
#define IP_SHARD_REGION_SHIFT 22
#define IP_SHARD_MAP_BITS 25
static inline uint64_t ip_shard_map_index(uint64_t address)
{
    return (address >> IP_SHARD_REGION_SHIFT) & ((1ull << IP_SHARD_MAP_BITS) - 1);
}

/*
 * One live block's metadata, as stored in the core's allocation table. Also used by the shim to
 * stash a record across realloc (removed before the real realloc, restored if it fails).
 */
typedef struct ip_record {
    uint64_t address;
    uint64_t size;
    uint64_t time_ns;   /* allocation time (CLOCK_MONOTONIC_COARSE), strictly increasing within
                           its shard (see BATCHED FREES) */
    int32_t tid;
    uint32_t stack_id;  /* id in the stack depot; 0 = no backtrace */
    uint32_t thread_index; /* index in the core's thread registry (name, tid) */
    uint16_t flags;     /* enum ip_record_flags */
    int16_t min_count;  /* kmemleak min_count: 1 for heap blocks, 0 = never reported, -1 = ignore */
} ip_record;

/*
 * One allocation as the shim sees it, passed by pointer to interposer_on_alloc.
 * The register triple describes the allocating function right after malloc returned into it,
 * so the core's unwinder can walk from there without seeing any shim or runtime frame.
 */
typedef struct ip_alloc_event {
    /* The block's record as the core stores it, filled by the shim: address (never 0), size
       (requested bytes; calloc: n*size), time_ns (CLOCK_MONOTONIC_COARSE), tid, thread_index (from
       interposer_on_thread_start), flags 0, min_count (0 between __lsan_disable and
       __lsan_enable, else 1), and stack_id: non-zero when the shim found a whole hit in walk_cache
       (WHOLE HIT above ip_walk_cache; ip_core_config.whole_hit_frames), else 0 and the core walks
       from pc/sp/bp and writes the id in. The core then inserts it as it stands (no copy). */
    ip_record record;
    uint64_t pc;        /* return address into the allocating function */
    uint64_t sp;        /* its stack pointer after the return (CFA of the shim's frame) */
    uint64_t bp;        /* its rbp */
    uint64_t stack_lo;  /* this thread's stack bounds: the unwinder reads nothing outside */
    uint64_t stack_hi;
    const uint64_t *frames; /* non-NULL: frames already captured (deferred log); pc/sp/bp unused */
    ip_walk_cache *walk_cache; /* this thread's previous walk (NULL: none) */
    ip_free_batch *frees; /* this thread's pending removals, applied before the insert (NULL: none) */
    uint16_t kind;      /* enum ip_event_kind */
    uint16_t nframes;   /* number of entries in frames */
} ip_alloc_event;

/* What interposer_annotate does (kmemleak's and LeakSanitizer's annotation API). */
enum ip_annotation {
    IP_ANN_NOT_LEAK = 1,  /* kmemleak_not_leak, __lsan_ignore_object: min_count 0 (scanned, never reported) */
    IP_ANN_IGNORE = 2,    /* kmemleak_ignore: black (never scanned, never reported) */
    IP_ANN_NO_SCAN = 3,   /* kmemleak_no_scan: never scanned (may be reported) */
    IP_ANN_ALLOC = 4,     /* kmemleak_alloc: the min_count (value) of a block just recorded like malloc's */
    IP_ANN_SCAN_AREA = 5, /* kmemleak_scan_area: scan only [address, address+size) of the block holding it */
};

/*
 * A deferred-log slot. The log is a bounded multi-producer queue (Vyukov): `seq` is the slot's
 * sequence number and publishes the entry; the producer writes the payload, then seq.
 */
typedef struct ip_deferred_entry {
    uint64_t seq;
    uint64_t address;
    uint64_t size;      /* for IP_EV_FREE: 0; IP_EV_FREE_STAMPED: the stamp */
    uint64_t time_ns;
    int32_t tid;
    uint16_t kind;      /* enum ip_event_kind */
    uint16_t nframes;
    uint32_t reason;    /* enum ip_deferred_reason */
    uint32_t thread_index; /* 0 when the thread was not registered yet */
    uint64_t frames[IP_DEFERRED_FRAMES];
} ip_deferred_entry;

/* Services the shim lends the core. All pointers stay valid for the life of the process. */
typedef struct ip_shim_api {
    uint32_t abi_version;   /* IP_ABI_VERSION */
    uint32_t struct_size;   /* sizeof(ip_shim_api) */
    /* Pop the oldest published deferred entry into *out; 1 if one was popped, 0 if empty.
       Single consumer: the core calls it under its replay lock. */
    int32_t (*deferred_pop)(ip_deferred_entry *out);
    /* Entries ever reserved by producers (monotonic). The core compares it with the number it
       has popped and applied to know, with one load, whether a replay is due. */
    const uint64_t *deferred_enqueued;
    /* Turn tracking off for good (the kmemleak "off"): every later call is a pure pass-through.
       `reason` is printed once on stderr. */
    void (*disable)(const char *reason);
    /* libunwind's unw_backtrace, dlopen'ed RTLD_LOCAL; NULL when libunwind is absent.
       Used by the core as the reference/fallback unwinder. */
    int32_t (*unw_backtrace)(void **buffer, int32_t size);
    /* Counters the shim keeps (read by tests and the at-exit summary). */
    const uint64_t *deferred_dropped; /* entries lost because the log was full (tracking then stops) */
    /* open = 1: before managed work that may start a GC (dumps, exit). Marks the window open and
       waits (bounded) until no host thread is inside a hook unprotected; hooks entered from then
       on disable pthread cancellation, because a hook that waits for the GC waits in
       pthread_cond_wait, a cancellation point that malloc must never be. open = 0: close it.
       Returns 1 (opened, or closed), or 0 when open = 1 is refused for good: a registered
       thread ended without its destructors, and the runtime would wait for it at its next GC
       (gc_window.c, RAW EXITS); the caller must then skip the managed work. */
    int32_t (*gc_window)(int32_t open);
    /* Stop every thread except the caller and the internal ones (stw.h: ip_stw_stop). Returns the
       number of entries written to out, or -1 (errno). Must be followed by stw_resume. */
    int32_t (*stw_stop)(ip_stopped_thread *out, int32_t max, int32_t timeout_ms);
    void (*stw_resume)(void);
    /* Copies up to max of the program's own mmap regions into out; returns how many there are
       in all (may exceed max). Safe while the world is stopped (no host thread holds its lock). */
    int32_t (*program_regions)(ip_region *out, int32_t max);
    /* glibc's static TLS size (_dl_get_tls_static_info; it counts the TCB) and sizeof(struct
       pthread) (_thread_db_sizeof_pthread); 0 when unknown. A thread's static TLS blocks and TCB
       are [tcb - (static_tls_size - pthread_size), tcb + pthread_size). */
    uint64_t static_tls_size;
    uint64_t pthread_size;
    /* Counters: program regions that did not fit in the shim's table (not scanned). */
    const uint64_t *regions_dropped;
    /* Interposer's own static TLS, per thread (see ip_tls_range). */
    const ip_tls_range *tls_exclude;
    uint64_t tls_exclude_count;
    /* Copies up to max of the libraries dlclose'd so far (newest last); returns how many. */
    int32_t (*departed_modules)(ip_module *out, int32_t max);
    /* Copies up to max of the regions registered with __lsan_register_root_region; returns how
       many there are. Always scanned (they are the program's explicit roots). */
    int32_t (*root_regions)(ip_region *out, int32_t max);
    /* Copies up to max entries of every live host thread's batched frees (ip_free_batch, a
       seqlock read) into out; returns how many there are in all (may exceed max). */
    int32_t (*pending_frees)(ip_free_entry *out, int32_t max);
    /* 1 when some live host thread's batch holds a free of address stamped >= time_ns: a record
       of that time found at address by an insert is one whose removal is pending, not a stale one.
       0 when none does; -1 when there are too many threads to ask (the answer is unknown). */
    int32_t (*pending_free_covers)(uint64_t address, uint64_t time_ns);
    /* Before stw_stop, while the world still runs: reads which threads may be signalled (stw.c,
       SECCOMP), so that the stop does not. Returns 0, or -1 (errno). Optional: stw_stop does it
       itself when it was not called since the last stop. */
    int32_t (*stw_prepare)(void);
} ip_shim_api;

/* Settings the core hands back to the shim at initialisation. */
typedef struct ip_core_config {
    int32_t enabled;        /* 0: the shim becomes a pure pass-through */
    int32_t max_frames;     /* backtrace depth */
    int32_t verbosity;
    int32_t exit_work;      /* 1: call interposer_on_exit at process exit (something to write) */
    int32_t scan_signal;    /* signal whose handler asks for a scan (0 = none) */
    int32_t scan_interval_s; /* periodic scans every N seconds (0 = off) */
    int32_t track_regions;  /* 1: keep the program's mmap regions (use_mmap_regions) */
    int32_t control;        /* 1: open the control socket at control_path */
    char control_path[112]; /* the control socket's path; %p = pid (expanded by the shim) */
    int32_t batch_frees;    /* 1: frees go through ip_free_batch (see above) */
    int32_t shard_bits;     /* the allocation table has 1 << shard_bits shards */
    const uint8_t *shards;  /* its shard headers (IP_SHARD_STRIDE bytes each) */
    const uint64_t *applied; /* deferred entries the core has applied (compare: deferred_enqueued) */
    const uint8_t *shard_map; /* region -> 1 + shard (SHARD MAP above), 1 << IP_SHARD_MAP_BITS bytes */
    int32_t whole_hit_frames; /* > 0: the fast unwinder's max_frames; the shim tries a walk cache's
                                 whole hit itself (WHOLE HIT above ip_walk_cache). 0: never */
    int32_t reserved;
} ip_core_config;

/* ---- Exports of libinterposer_core.so (the managed side) ------------------------------------ */
int32_t interposer_core_init(const ip_shim_api *api, ip_core_config *config);
int32_t interposer_on_alloc(ip_alloc_event *event); /* may write event->record */
/* Removes the record of `address`; copies it to *stash when stash != NULL. 1 found, 0 unknown. */
int32_t interposer_on_free(uint64_t address, ip_record *stash);
/* Puts a stashed record back (a realloc that failed). */
int32_t interposer_on_restore(const ip_record *record);
/* A thread's first event: its tid, name (comm), stack bounds and TCB, for the thread registry. Returns the thread's
   registry index (>= 0), or a negative value when the core refuses the thread. */
int32_t interposer_on_thread_start(int32_t tid, const char *name, uint64_t stack_lo,
                                   uint64_t stack_hi, uint64_t tcb);
/* fork: phase 0 = prepare (take every metadata lock), 1 = parent, 2 = child (release them). */
int32_t interposer_on_fork(int32_t phase);
/* Process exit, called on an internal thread: flush the deferred log and write at-exit output. */
int32_t interposer_on_exit(void);
/* Run one leak scan now (called on the scanner thread, or the exit worker with IP_SCAN_EXIT);
   writes the report file. Returns the number of unreferenced blocks found (>= 0), or -1. */
int32_t interposer_on_scan(int32_t reason);
/* One control command (kmemleak's debugfs commands: scan, clear, dump=<addr>, stack=on|off,
   scan=on|off|<secs>, off), on the scanner thread. Writes a NUL-terminated answer into out;
   *scan_interval_s is the periodic interval, which the command may change. 0 = ok, -1 = refused. */
int32_t interposer_on_control(const char *command, char *out, int32_t out_size, int32_t *scan_interval_s);
/* An annotation on the block at address (enum ip_annotation). 1 = applied, 0 = no such block. */
int32_t interposer_annotate(uint64_t address, uint64_t size, int32_t op, int32_t value);
/* Replay the deferred log now (called by the shim's drainer thread when the log fills up while
   no host thread enters the core, e.g. exiting threads freeing a long list). */
int32_t interposer_on_drain(void);
/* Applies a full batch of pending removals (ip_free_batch; each only to a record whose time is
   at most its stamp). Returns how many records were removed. */
int32_t interposer_on_free_batch(const ip_free_entry *entries, int32_t count);
/* Test and tooling queries (called with the guard held, like every hook). */
int64_t interposer_core_live_blocks(void);
int32_t interposer_core_dump(const char *path);

/* ---- Exports of libinterposer.so (the shim) for programs and tests --------------------------- */
/* Number of live recorded blocks (flushes the deferred log first). */
int64_t interposer_live_blocks(void);
/* Writes every live block with its symbolized backtrace to `path` ("-" = stderr). */
int32_t interposer_dump(const char *path);
/* Runs a leak scan now, as the scan signal does, and waits for its report. 0 = ok. */
int32_t interposer_scan(void);

#endif /* INTERPOSER_ABI_H */
