/*
 * threads.c — thread lifecycle: registration of host threads, internal threads for life
 * (DESIGN guard rule 2), and the two exit hooks that mark a thread as exiting (rule 3).
 *
 * Why two exit hooks. The NativeAOT runtime detaches a thread from a C++ thread_local destructor
 * that it registers (via __cxa_thread_atexit_impl) when the thread first enters managed code.
 * Those destructors run last-in-first-out, before any pthread key destructor. After the detach,
 * entering managed code again aborts the process. So, right after the thread's first call into
 * the core, we register our own thread_local destructor: it runs just *before* the runtime's and
 * flips the thread to IP_T_EXITING; every later event of that thread (host thread_local
 * destructors registered earlier, pthread key destructors, atexit handlers on the main thread)
 * goes to the deferred log. The pthread key, created before the runtime starts, covers a thread
 * whose TLS destructors never ran that path.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>
#include "shim_internal.h"
#include "stw.h"

__thread ip_thread ip_tls __attribute__((tls_model("initial-exec")));

static pthread_key_t s_exit_key;   /* destructor marks the thread exiting; created pre-runtime */
extern void *__dso_handle;
extern int __cxa_thread_atexit_impl(void (*fn)(void *), void *arg, void *dso);

ip_clock_fn g_ip_clock = clock_gettime;

/* The vDSO's clock_gettime, called directly (ip_now_ns). glibc lists the vDSO among the loaded
   objects under its soname, so RTLD_NOLOAD finds it without loading anything. */
static void find_vdso_clock(void)
{
    void *vdso = dlopen("linux-vdso.so.1", RTLD_LAZY | RTLD_NOLOAD);
    if (vdso == NULL)
        return;
    ip_clock_fn f = (ip_clock_fn)dlsym(vdso, "__vdso_clock_gettime");
    struct timespec ts;
    if (f != NULL && f(CLOCK_MONOTONIC_COARSE, &ts) == 0)
        __atomic_store_n(&g_ip_clock, f, __ATOMIC_RELEASE);
    /* No dlclose: the handle only counts a reference to an object that is never unloaded. */
}

static void mark_exiting(void *unused)
{
    (void)unused;
    if (ip_tls.state == IP_T_HOST) {
        /* Maybe after the runtime detached this thread (the pthread key path): no core call. */
        if (ip_tls.frees != NULL && ip_tls.frees->count != 0)
            ip_frees_flush_deferred(&ip_tls);
        ip_tls.state = IP_T_EXITING;
        ip_threads_unpublish(&ip_tls); /* its TLS may be unmapped soon: the window opener must not look */
        /* No more walks and no more batched frees on this thread (an exiting thread's events go to
           the deferred log); nobody reads its page once it is unpublished. */
        ip_walk_cache *walk = ip_tls.walk_cache;
        ip_tls.walk_cache = NULL;
        ip_tls.frees = NULL;
        if (walk != NULL) {
            if (walk->memo != NULL)
                ip_own_unmap(walk->memo, IP_WALK_MEMO_BYTES);
            ip_own_unmap(walk, sizeof(ip_thread_page)); /* walk is the page's first member */
        }
    }
}

/*
 * NO REGISTRATION UNDER THE THREAD'S OWN LOCK. A host thread's first event registers it, and
 * registering calls pthread_getattr_np on the thread (for its stack bounds), here and again in
 * the runtime's thread attach. pthread_getattr_np takes the thread's own lock (struct pthread's
 * `lock`) and reallocs and callocs while it holds it: a thread whose first allocation comes from
 * in there (Rust's std, the JVM and Boehm GC query their own stack as a thread starts) would,
 * registering, wait for itself for ever. So a new thread whose lock is held sends its event to
 * the deferred log and registers at its next one, when the lock is free (ip_thread_may_register).
 * Another thread holding it (pthread_getattr_np on this one) only delays the registration.
 *
 * The lock's place in struct pthread is glibc-internal, so it is learned at start-up
 * (ip_threads_learn_lock): a thread of our own reads its struct pthread (pthread_self()) before, inside (from
 * the hook of the realloc pthread_getattr_np makes under the lock) and after a call of
 * pthread_getattr_np on itself. Exactly one 32-bit word must be 0 before, held (1 or 2, glibc's
 * lll values) inside and 0 after. Else the place stays unknown, and no event whose caller is in
 * libc registers a thread (everything that allocates under that lock is libc's): such a thread
 * registers at its first allocation from the program's own code, and its earlier events carry
 * the deferred log's frame-pointer backtraces.
 */
#define IP_PD_WORDS_MAX 1024u /* 32-bit words of struct pthread compared at most (glibc 2.36: 592) */

static int s_lock_known;                       /* 1: s_lock_word is the lock's index */
static uint32_t s_lock_word;
static uint32_t s_pd_words;                    /* words of struct pthread compared (its size / 4) */
static struct { uint64_t lo, size; } s_libc_text; /* the fallback's code range; {0, 0}: none */
static ip_thread *s_learner;                   /* the learning thread while it learns */
static uint32_t s_inside[IP_PD_WORDS_MAX];     /* its struct pthread, seen from inside */
static int s_inside_seen;

void ip_threads_learn_hook(ip_thread *t)
{
    if (t == __atomic_load_n(&s_learner, __ATOMIC_ACQUIRE) && !s_inside_seen) {
        memcpy(s_inside, (const void *)pthread_self(), s_pd_words * sizeof(uint32_t));
        s_inside_seen = 1;
    }
}

static void *learn_lock_thread(void *unused)
{
    (void)unused;
    static uint32_t before[IP_PD_WORDS_MAX], after[IP_PD_WORDS_MAX];
    const void *pd = (const void *)pthread_self();
    pthread_attr_t attr;
    memcpy(before, pd, s_pd_words * sizeof(uint32_t));
    __atomic_store_n(&s_learner, &ip_tls, __ATOMIC_RELEASE);
    int rc = pthread_getattr_np(pthread_self(), &attr);
    __atomic_store_n(&s_learner, NULL, __ATOMIC_RELEASE);
    memcpy(after, pd, s_pd_words * sizeof(uint32_t));
    if (rc != 0)
        return NULL;
    pthread_attr_destroy(&attr);
    if (!s_inside_seen)
        return NULL;
    int found = 0;
    uint32_t word = 0;
    for (uint32_t i = 0; i < s_pd_words; i++)
        if (before[i] == 0 && after[i] == 0 && (s_inside[i] == 1 || s_inside[i] == 2)) {
            found++;
            word = i;
        }
    if (found == 1) {
        s_lock_word = word;
        __atomic_store_n(&s_lock_known, 1, __ATOMIC_RELEASE);
    }
    return NULL;
}

/* The executable segment of the object holding pthread_getattr_np (libc.so.6). */
static int find_libc_text(struct dl_phdr_info *info, size_t size, void *fn)
{
    (void)size;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uint64_t lo = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X) && (uint64_t)fn - lo < ph->p_memsz) {
            s_libc_text.lo = lo;
            s_libc_text.size = ph->p_memsz;
            return 1;
        }
    }
    return 0;
}

/* Constructor, under the guard: the learning thread is internal (pthread_create below).
   pthread_size: sizeof(struct pthread) (glibc's _thread_db_sizeof_pthread; 0: unknown, then only
   the fallback): no word past it is read. */
void ip_threads_learn_lock(uint64_t pthread_size)
{
    s_pd_words = (uint32_t)(pthread_size / sizeof(uint32_t) < IP_PD_WORDS_MAX ? pthread_size / sizeof(uint32_t)
                                                                             : IP_PD_WORDS_MAX);
    pthread_t th;
    if (s_pd_words != 0 && pthread_create(&th, NULL, learn_lock_thread, NULL) == 0)
        pthread_join(th, NULL);
    if (__atomic_load_n(&s_lock_known, __ATOMIC_ACQUIRE))
        return;
    void *fn = dlsym(RTLD_DEFAULT, "pthread_getattr_np");
    if (fn != NULL)
        dl_iterate_phdr(find_libc_text, fn);
}

int ip_thread_may_register(uint64_t pc)
{
    if (__atomic_load_n(&s_lock_known, __ATOMIC_ACQUIRE))
        return __atomic_load_n((const uint32_t *)pthread_self() + s_lock_word, __ATOMIC_ACQUIRE) == 0;
    return pc - s_libc_text.lo >= s_libc_text.size;
}

void ip_threads_init(void)
{
    pthread_key_create(&s_exit_key, mark_exiting);
    find_vdso_clock();
}

/* The calling thread's stack, [*lo, *hi) (unchanged when pthread_getattr_np fails). */
static void stack_bounds(uint64_t *lo, uint64_t *hi)
{
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        void *addr = NULL;
        size_t size = 0;
        if (pthread_attr_getstack(&attr, &addr, &size) == 0 && addr != NULL) {
            *lo = (uint64_t)addr;
            *hi = (uint64_t)addr + size;
        }
        pthread_attr_destroy(&attr);
    }
}

/* First event of a host thread while the core is active. Everything here may call malloc
   (pthread_getattr_np reads /proc/self/maps on the main thread), so the guard is held: those
   calls are internal and not recorded. */
void ip_thread_register(void)
{
    ip_thread *t = &ip_tls;
    if (t->state != IP_T_NEW || t->guard != 0)
        return;
    t->guard = 1;
    t->tid = (int)gettid();
    t->errno_loc = &errno;
    stack_bounds(&t->stack_lo, &t->stack_hi);
    char name[17] = {0};
    prctl(PR_GET_NAME, name, 0, 0, 0);
    pthread_setspecific(s_exit_key, (void *)1);
    /* Attaching to the runtime may wait for a GC (pthread_cond_wait: a cancellation point), and
       a thread not yet published is one the window opener does not wait for: a GC may start at any
       moment of this call. So cancellation is off for the whole registration, whether a window is
       open or not. It used to be off only when a window was open as this thread looked:
       cancel_during_gc.c (workers cancelled at their first malloc while dumps run) then hung now
       and then, the cancelled thread still holding the runtime's GC-event mutex, or aborted with
       "double free" (the cancel acted inside malloc, whose caller's cleanup freed again). Once per
       thread. */
    ip_hook_protect(t);
    uint64_t tcb;
    __asm__("mov %%fs:0, %0" : "=r"(tcb));
    int32_t index = g_ip_core.on_thread_start(t->tid, name, t->stack_lo, t->stack_hi, tcb);
    if (index >= 0) {
        ip_thread_page *page = (ip_thread_page *)ip_own_map(sizeof(ip_thread_page));
        t->walk_cache = page != NULL ? &page->walk : NULL;
        t->frees = page != NULL ? &page->frees : NULL;
        t->thread_index = (uint32_t)index;
        ip_threads_publish(t, (uint32_t)index);
        /* The runtime attached this thread during the call above; register after it. */
        __cxa_thread_atexit_impl(mark_exiting, NULL, &__dso_handle);
        t->state = IP_T_HOST;
    } else {
        t->state = IP_T_INTERNAL; /* the core refused this thread: leave it alone for life */
    }
    ip_hook_leave(t);
}

/* ---- pthread_create: threads born under a guard are internal for life -------------------- */

typedef struct ip_start {
    void *(*fn)(void *);
    void *arg;
} ip_start;

/*
 * OUR THREADS DO NOT KEEP THE PROCESS ALIVE. glibc counts live threads in __nptl_nthreads; the
 * thread that brings it to 0 as it exits calls exit(0). A program whose main thread calls
 * pthread_exit ends when its last thread does. Counted, our threads (scanner, drainer, the
 * runtime's finalizer) would outlive it: the process hung with a zombie main thread, and as they
 * block every asynchronous signal, SIGTERM stayed pending for ever. So an internal thread is
 * taken out of the count by its creator once pthread_create has counted it, and put back by its
 * own cleanup handler just before glibc counts it out (a return or a pthread_exit). Without the
 * symbol (another libc) nothing changes.
 */
static unsigned int *s_nthreads; /* glibc's __nptl_nthreads (GLIBC_PRIVATE); NULL: not found */

void ip_threads_find_count(void)
{
    s_nthreads = (unsigned int *)dlsym(RTLD_DEFAULT, "__nptl_nthreads");
}

static void internal_end(void *unused)
{
    (void)unused;
    ip_stw_unmark_internal(); /* a later thread may reuse the tid */
    if (s_nthreads != NULL)
        __atomic_add_fetch(s_nthreads, 1, __ATOMIC_ACQ_REL); /* glibc takes it away again */
}

static void *internal_start(void *p)
{
    ip_start s = *(ip_start *)p;
    __libc_free(p);
    ip_tls.state = IP_T_INTERNAL;
    ip_block_async_signals(); /* the host's signals are never delivered to our threads */
    ip_stw_mark_internal();   /* never stopped, never scanned: the runtime's and our threads */
    void *rv;
    pthread_cleanup_push(internal_end, NULL);
    rv = s.fn(s.arg);
    pthread_cleanup_pop(1);
    return rv;
}

IP_EXPORT int pthread_create(pthread_t *thread, const pthread_attr_t *attr,
                             void *(*fn)(void *), void *arg)
{
    static int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
    if (IP_UNLIKELY(real == NULL))
        real = (int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))dlsym(
            RTLD_NEXT, "pthread_create");
    if (ip_tls.guard == 0 && ip_tls.state != IP_T_INTERNAL)
        return real(thread, attr, fn, arg);
    ip_start *s = (ip_start *)__libc_malloc(sizeof *s);
    if (s == NULL)
        return 11; /* EAGAIN, as pthread_create reports a lack of resources */
    s->fn = fn;
    s->arg = arg;
    int rc = real(thread, attr, internal_start, s);
    if (rc != 0)
        __libc_free(s);
    else if (s_nthreads != NULL)
        __atomic_sub_fetch(s_nthreads, 1, __ATOMIC_ACQ_REL); /* counted by pthread_create above */
    return rc;
}
