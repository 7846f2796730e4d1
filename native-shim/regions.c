/*
 * regions.c — the program's own writable anonymous mappings (issue 3, use_mmap_regions).
 *
 * A program (Python's object arenas, a custom pool allocator, a coroutine library) may keep the
 * only pointer to a heap block in memory it mmap'ed itself. LeakSanitizer does not scan such
 * memory and reports those blocks as leaks; we interpose mmap/mmap64/mremap/munmap and keep the
 * regions so the scan can use them as roots. glibc's own mappings (malloc arenas and large
 * blocks, thread stacks) are made with its internal __mmap, which never reaches these exports;
 * the runtime's and our threads' mappings are skipped by the guard and internal-thread rules.
 *
 * LOCKING
 *   s_lock   guards s_regions and s_count, the departed-library ring and the root regions.
 *            Taken with the thread's `busy` flag set, so the
 *            stop-the-world park check never parks a thread that holds it, and a signal handler
 *            that maps memory while its thread holds it skips the table instead of deadlocking.
 *            A leaf: nothing else is taken under it.
 *
 * Regions are kept unsorted (a map or unmap is rare next to malloc): insert appends; munmap and
 * mremap cut every overlapping region, splitting when the hole is in the middle. A region that no
 * longer fits is counted in g_ip_regions_dropped and not scanned (its pointees may be reported);
 * the scan validates every region against /proc/self/maps before reading it, so a region the
 * program later mprotect()ed to PROT_NONE is skipped, not faulted on.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <string.h>
#include <errno.h>
#include <stdarg.h>
#include <sys/mman.h>
#include "shim_internal.h"

#define IP_MAX_REGIONS 65536

static ip_region s_regions[IP_MAX_REGIONS];
static int32_t s_count;                 /* entries in use, under s_lock */
static int s_lock;                      /* see LOCKING */
uint64_t g_ip_regions_dropped;          /* regions that did not fit (or met a held lock) */
int g_ip_track_regions;                 /* use_mmap_regions, set by the constructor */

static void *(*s_real_mmap)(void *, size_t, int, int, int, off_t);
static int (*s_real_munmap)(void *, size_t);
static void *(*s_real_mremap)(void *, size_t, size_t, int, ...);

static void lock(void)
{
    while (__atomic_exchange_n(&s_lock, 1, __ATOMIC_ACQUIRE) != 0)
        while (__atomic_load_n(&s_lock, __ATOMIC_RELAXED) != 0)
            __builtin_ia32_pause();
}

static void unlock(void) { __atomic_store_n(&s_lock, 0, __ATOMIC_RELEASE); }

void ip_regions_resolve(void)
{
    if (s_real_mmap == NULL)
        *(void **)&s_real_mmap = dlsym(RTLD_NEXT, "mmap");
    if (s_real_munmap == NULL)
        *(void **)&s_real_munmap = dlsym(RTLD_NEXT, "munmap");
    if (s_real_mremap == NULL)
        *(void **)&s_real_mremap = dlsym(RTLD_NEXT, "mremap");
}

/* Cuts [lo, hi) out of every region. Under s_lock. */
static void cut_locked(uint64_t lo, uint64_t hi)
{
    for (int32_t i = 0; i < s_count;) {
        ip_region r = s_regions[i];
        if (r.end <= lo || r.start >= hi) {
            i++;
            continue;
        }
        if (r.start < lo && r.end > hi) { /* a hole in the middle: keep both sides */
            s_regions[i].end = lo;
            if (s_count < IP_MAX_REGIONS)
                s_regions[s_count++] = (ip_region){hi, r.end};
            else
                g_ip_regions_dropped++;
            i++;
        } else if (r.start < lo) {
            s_regions[i++].end = lo;
        } else if (r.end > hi) {
            s_regions[i++].start = hi;
        } else {
            s_regions[i] = s_regions[--s_count]; /* wholly covered: drop (re-examine slot i) */
        }
    }
}

/* Takes s_lock unless this thread is already inside an update (a signal handler interrupted it).
   Returns 0 (nothing taken) then. */
static int enter_any(void)
{
    ip_thread *t = &ip_tls;
    if (t->busy)
        return 0;
    t->busy = 1;
    __asm__ volatile("" ::: "memory");
    lock();
    return 1;
}

/* Takes s_lock when this thread may update the table: a host thread, outside any hook, not
   already inside an update. Returns 0 (nothing taken) otherwise. */
static int enter(void)
{
    ip_thread *t = &ip_tls;
    if (!__atomic_load_n(&g_ip_track_regions, __ATOMIC_RELAXED) || t->guard != 0 ||
        t->state == IP_T_INTERNAL || __atomic_load_n(&g_ip_mode, __ATOMIC_RELAXED) == IP_MODE_DISABLED)
        return 0;
    if (t->busy) { /* a signal handler interrupted this thread's own update */
        __atomic_fetch_add(&g_ip_regions_dropped, 1, __ATOMIC_RELAXED);
        return 0;
    }
    t->busy = 1;
    __asm__ volatile("" ::: "memory");
    lock();
    return 1;
}

static void leave(void)
{
    unlock();
    __asm__ volatile("" ::: "memory");
    ip_tls.busy = 0;
    ip_stw_poll(); /* a stop that was vetoed while we held the lock parks us here */
}

static int is_program_region(int prot, int flags)
{
    return (flags & MAP_ANONYMOUS) != 0 && (prot & PROT_WRITE) != 0 && (prot & PROT_READ) != 0;
}

static void note_map(void *p, size_t len)
{
    uint64_t lo = (uint64_t)p, hi = lo + len;
    if (!enter())
        return;
    cut_locked(lo, hi); /* MAP_FIXED over an older region */
    if (s_count < IP_MAX_REGIONS)
        s_regions[s_count++] = (ip_region){lo, hi};
    else
        g_ip_regions_dropped++;
    leave();
}

static void note_unmap(void *p, size_t len)
{
    uint64_t lo = (uint64_t)p, hi = lo + ((len + 4095) & ~(size_t)4095);
    if (!enter())
        return;
    cut_locked(lo, hi);
    leave();
}

int32_t ip_regions_copy(ip_region *out, int32_t max)
{
    lock();
    int32_t n = s_count;
    for (int32_t i = 0; i < n && i < max; i++)
        out[i] = s_regions[i];
    unlock();
    return n;
}

/* Our own anonymous memory (the per-thread walk cache): the real calls, never a program region,
   so no region bookkeeping or s_lock on the way (thread exit unmaps with guard 0). */
void *ip_own_map(size_t len)
{
    if (IP_UNLIKELY(s_real_mmap == NULL))
        ip_regions_resolve();
    void *p = s_real_mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void ip_own_unmap(void *p, size_t len)
{
    if (IP_UNLIKELY(s_real_munmap == NULL))
        ip_regions_resolve();
    s_real_munmap(p, len);
}

IP_EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (IP_UNLIKELY(s_real_mmap == NULL))
        ip_regions_resolve();
    void *p = s_real_mmap(addr, len, prot, flags, fd, off);
    if (p != MAP_FAILED && is_program_region(prot, flags)) {
        int saved_errno = errno;
        note_map(p, (len + 4095) & ~(size_t)4095);
        errno = saved_errno;
    }
    return p;
}

IP_EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
    __attribute__((alias("mmap")));

IP_EXPORT int munmap(void *addr, size_t len)
{
    if (IP_UNLIKELY(s_real_munmap == NULL))
        ip_regions_resolve();
    /* Forget first: once the real munmap returns, another thread may map the same range. */
    int saved_errno = errno;
    note_unmap(addr, len);
    errno = saved_errno;
    return s_real_munmap(addr, len);
}

IP_EXPORT void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
    if (IP_UNLIKELY(s_real_mremap == NULL))
        ip_regions_resolve();
    void *new_addr = NULL;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        new_addr = va_arg(ap, void *);
        va_end(ap);
    }
    /* Is the old range a program region? Only then is the new one. */
    int tracked = 0;
    if (enter()) {
        uint64_t lo = (uint64_t)old;
        for (int32_t i = 0; i < s_count && !tracked; i++)
            tracked = s_regions[i].start <= lo && lo < s_regions[i].end;
        leave();
    }
    void *p = (flags & MREMAP_FIXED) ? s_real_mremap(old, old_len, new_len, flags, new_addr)
                                     : s_real_mremap(old, old_len, new_len, flags);
    if (tracked && p != MAP_FAILED) {
        int saved_errno = errno;
#ifdef MREMAP_DONTUNMAP
        if (!(flags & MREMAP_DONTUNMAP))
#endif
            note_unmap(old, old_len);
        note_map(p, (new_len + 4095) & ~(size_t)4095);
        errno = saved_errno;
    }
    return p;
}

/* ---- libraries the program dlclose's ---------------------------------------------------------
 * A leak allocated by a library that was dlclose'd before the report has return addresses into
 * memory that is no longer mapped: without a note of where the library was, its frames would
 * print as bare addresses. dlclose is interposed; before the real one runs, the library's
 * executable segment, load bias and path go into a small ring (the newest IP_MAX_DEPARTED).
 * Guarded by s_lock like the regions (busy flag, leaf lock). */

#define IP_MAX_DEPARTED 128
static ip_module s_departed[IP_MAX_DEPARTED];
static int32_t s_ndeparted;          /* total ever noted; the ring holds the last IP_MAX_DEPARTED */

struct closing { uint64_t bias; const char *name; ip_module found; int ok; };

static int find_closing(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct closing *c = arg;
    if (info->dlpi_addr != c->bias || info->dlpi_name == NULL || strcmp(info->dlpi_name, c->name) != 0)
        return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            c->found.start = info->dlpi_addr + ph->p_vaddr;
            c->found.end = c->found.start + ph->p_memsz;
            c->found.bias = info->dlpi_addr;
            c->found.file_offset = ph->p_offset;
            size_t n = strlen(info->dlpi_name);
            if (n >= sizeof c->found.path)
                n = sizeof c->found.path - 1;
            memcpy(c->found.path, info->dlpi_name, n);
            c->found.path[n] = '\0';
            c->ok = 1;
            return 1;
        }
    }
    return 1;
}

static void note_closing(void *handle)
{
    struct link_map *lm = NULL;
    void *volatile h = handle; /* dlclose is declared nonnull; the program may still pass NULL */
    if (h == NULL)
        return;
    if (dlinfo(handle, RTLD_DI_LINKMAP, &lm) != 0 || lm == NULL || lm->l_name == NULL || lm->l_name[0] == '\0')
        return;
    struct closing c;
    memset(&c, 0, sizeof c);
    c.bias = lm->l_addr;
    c.name = lm->l_name;
    dl_iterate_phdr(find_closing, &c);
    if (!c.ok || !enter_any())
        return;
    int32_t live = s_ndeparted < IP_MAX_DEPARTED ? s_ndeparted : IP_MAX_DEPARTED;
    int seen = 0;
    for (int32_t i = 0; i < live && !seen; i++)
        seen = s_departed[i].start == c.found.start && s_departed[i].bias == c.found.bias &&
               strcmp(s_departed[i].path, c.found.path) == 0;
    if (!seen)
        s_departed[s_ndeparted++ % IP_MAX_DEPARTED] = c.found;
    leave();
}

int32_t ip_departed_copy(ip_module *out, int32_t max)
{
    lock();
    int32_t live = s_ndeparted < IP_MAX_DEPARTED ? s_ndeparted : IP_MAX_DEPARTED;
    int32_t first = s_ndeparted - live; /* oldest kept, in ring order */
    int32_t n = 0;
    for (int32_t i = 0; i < live && n < max; i++)
        out[n++] = s_departed[(first + i) % IP_MAX_DEPARTED];
    unlock();
    return n;
}

IP_EXPORT int dlclose(void *handle)
{
    static int (*real)(void *);
    if (IP_UNLIKELY(real == NULL))
        *(void **)&real = dlsym(RTLD_NEXT, "dlclose");
    ip_thread *t = &ip_tls;
    if (t->guard == 0 && t->state != IP_T_INTERNAL &&
        __atomic_load_n(&g_ip_mode, __ATOMIC_RELAXED) == IP_MODE_ACTIVE) {
        int saved_errno = errno;
        note_closing(handle);
        errno = saved_errno;
    }
    return real(handle);
}

/* ---- __lsan_register_root_region (api.c): the program's explicit roots, always scanned.
 * Same lock and busy rule as the regions above. */

#define IP_MAX_ROOTS 256
static ip_region s_roots[IP_MAX_ROOTS];
static int32_t s_nroots;

int ip_roots_add(uint64_t lo, uint64_t hi)
{
    if (!enter_any())
        return 0; /* a signal handler inside our own update: skipped, as for regions */
    int full = s_nroots >= IP_MAX_ROOTS;
    if (!full)
        s_roots[s_nroots++] = (ip_region){lo, hi};
    leave();
    return full ? -1 : 0;
}

void ip_roots_remove(uint64_t lo, uint64_t hi)
{
    if (!enter_any())
        return;
    for (int32_t i = 0; i < s_nroots; i++) {
        if (s_roots[i].start == lo && s_roots[i].end == hi) {
            s_roots[i] = s_roots[--s_nroots];
            break;
        }
    }
    leave();
}

int32_t ip_root_regions_copy(ip_region *out, int32_t max)
{
    lock();
    int32_t n = s_nroots;
    for (int32_t i = 0; i < n && i < max; i++)
        out[i] = s_roots[i];
    unlock();
    return n;
}
