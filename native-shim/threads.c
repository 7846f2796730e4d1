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

uint64_t ip_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts); /* vDSO, ~5 ns; 1-4 ms resolution is plenty for ages */
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void mark_exiting(void *unused)
{
    (void)unused;
    if (ip_tls.state == IP_T_HOST) {
        /* Maybe after the runtime detached this thread (the pthread key path): no core call. */
        if (ip_tls.frees.count != 0)
            ip_frees_flush_deferred(&ip_tls);
        ip_tls.state = IP_T_EXITING;
        ip_threads_unpublish(&ip_tls); /* its TLS may be unmapped soon: the window opener must not look */
        /* No more walks on this thread (an exiting thread's events go to the deferred log). */
        ip_walk_cache *walk = ip_tls.walk_cache;
        ip_tls.walk_cache = NULL;
        if (walk != NULL) {
            if (walk->memo != NULL)
                ip_own_unmap(walk->memo, IP_WALK_MEMO_BYTES);
            ip_own_unmap(walk, sizeof *walk);
        }
    }
}

void ip_threads_init(void)
{
    pthread_key_create(&s_exit_key, mark_exiting);
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
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        void *addr = NULL;
        size_t size = 0;
        if (pthread_attr_getstack(&attr, &addr, &size) == 0 && addr != NULL) {
            t->stack_lo = (uint64_t)addr;
            t->stack_hi = (uint64_t)addr + size;
        }
        pthread_attr_destroy(&attr);
    }
    char name[17] = {0};
    prctl(PR_GET_NAME, name, 0, 0, 0);
    pthread_setspecific(s_exit_key, (void *)1);
    if (__atomic_load_n(&g_ip_gc_window, __ATOMIC_RELAXED) != 0)
        ip_hook_protect(t); /* attaching to the runtime may wait for a GC */
    uint64_t tcb;
    __asm__("mov %%fs:0, %0" : "=r"(tcb));
    int32_t index = g_ip_core.on_thread_start(t->tid, name, t->stack_lo, t->stack_hi, tcb);
    if (index >= 0) {
        t->walk_cache = (ip_walk_cache *)ip_own_map(sizeof(ip_walk_cache));
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

static void *internal_start(void *p)
{
    ip_start s = *(ip_start *)p;
    __libc_free(p);
    ip_tls.state = IP_T_INTERNAL;
    ip_block_async_signals(); /* the host's signals are never delivered to our threads */
    ip_stw_mark_internal();   /* never stopped, never scanned: the runtime's and our threads */
    void *rv = s.fn(s.arg);
    ip_stw_unmark_internal(); /* a later thread may reuse the tid */
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
    return rc;
}
