/*
 * core.c — start-up, fork and exit: loads the managed core and keeps the host unchanged.
 *
 * Start-up order (the constructor below):
 *   1. remember the host's SIGPIPE disposition (the runtime sets SIG_IGN, which would change the
 *      host: `yes | head -1` must still die of SIGPIPE);
 *   2. create the thread-exit key and the fork handlers *before* the runtime exists;
 *   3. with the guard held, dlopen libinterposer_core.so (RTLD_LOCAL, found next to this file):
 *      the NativeAOT runtime starts inside dlopen and its ~220 mallocs are internal;
 *   4. hand the core the shim API, read back its configuration;
 *   5. restore SIGPIPE, switch to ACTIVE (or DISABLED) and replay what was deferred.
 * Any failure disables Interposer with one stderr line; the program runs on untouched.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "shim_internal.h"

int g_ip_mode = IP_MODE_EARLY;
ip_core g_ip_core;
static int s_fork_locked;       /* prepare took the core's locks (this process, this fork) */
static sem_t s_drain_sem;       /* posted (async-signal-safe) to wake the drainer */
static int s_drainer_pid;       /* pid whose drainer thread runs; 0 = none (e.g. in a fork child) */

void ip_message(const char *a, const char *b)
{
    char buf[512];
    size_t n = 0;
    const char *parts[] = {"interposer: ", a, b, "\n"};
    for (size_t i = 0; i < 4; i++)
        for (const char *c = parts[i]; c != NULL && *c != '\0' && n < sizeof buf - 1; c++)
            buf[n++] = *c;
    ssize_t ignored = write(2, buf, n);
    (void)ignored;
}

void ip_disable(const char *reason)
{
    if (__atomic_exchange_n(&g_ip_mode, IP_MODE_DISABLED, __ATOMIC_ACQ_REL) != IP_MODE_DISABLED &&
        reason != NULL)
        ip_message("tracking disabled: ", reason);
}

static void api_disable(const char *reason) { ip_disable(reason); }

static int32_t (*s_unw_backtrace)(void **, int32_t);

static void load_libunwind(void)
{
    /* RTLD_LOCAL: libunwind exports _Unwind_* and backtrace, which must not interpose the
       host's. Absent libunwind is fine: the core has its own unwinder. */
    void *h = dlopen("libunwind.so.8", RTLD_NOW | RTLD_LOCAL);
    if (h != NULL)
        s_unw_backtrace = (int32_t(*)(void **, int32_t))dlsym(h, "unw_backtrace");
}

static const ip_shim_api s_api = {
    .abi_version = IP_ABI_VERSION,
    .struct_size = sizeof(ip_shim_api),
    .deferred_pop = ip_deferred_pop,
    .deferred_enqueued = NULL, /* filled at start-up */
    .disable = api_disable,
    .unw_backtrace = NULL, /* filled at start-up (static const data cannot hold the dlsym) */
    .deferred_dropped = &g_ip_deferred_dropped,
    .gc_window = ip_gc_window,
    .stw_stop = ip_stw_stop,
    .stw_resume = ip_stw_resume,
    .program_regions = ip_regions_copy,
    .static_tls_size = 0, /* filled at start-up */
    .pthread_size = 0,
    .regions_dropped = &g_ip_regions_dropped,
    .departed_modules = ip_departed_copy,
    .root_regions = ip_root_regions_copy,
    .pending_frees = ip_pending_frees_copy,
    .pending_free_covers = ip_pending_free_covers,
    .stw_prepare = ip_stw_prepare,
};
static ip_shim_api s_api_live;

/* Where glibc keeps a thread's static TLS: [tcb - static size, tcb + sizeof(struct pthread)).
   Both come from GLIBC_PRIVATE symbols that libthread_db and LeakSanitizer rely on too. */
static uint64_t s_static_tls_size, s_pthread_size; /* tls_layout's answers, read once */

static void tls_layout(uint64_t *static_size, uint64_t *pthread_size)
{
    void (*info)(size_t *, size_t *) = (void (*)(size_t *, size_t *))dlsym(RTLD_DEFAULT, "_dl_get_tls_static_info");
    if (info != NULL) {
        size_t size = 0, align = 0;
        info(&size, &align);
        *static_size = size;
    }
    const uint32_t *sizeof_pthread = (const uint32_t *)dlsym(RTLD_DEFAULT, "_thread_db_sizeof_pthread");
    if (sizeof_pthread != NULL)
        *pthread_size = *sizeof_pthread;
}

uint64_t g_ip_loader_lo, g_ip_loader_size;

/* The dynamic linker's executable segment (see ip_from_loader). */
static int find_loader(struct dl_phdr_info *info, size_t size, void *unused)
{
    (void)size;
    (void)unused;
    const char *name = info->dlpi_name ? strrchr(info->dlpi_name, '/') : NULL;
    name = name ? name + 1 : info->dlpi_name;
    if (name == NULL || strncmp(name, "ld-linux", 8) != 0)
        return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            g_ip_loader_size = ph->p_memsz;
            g_ip_loader_lo = info->dlpi_addr + ph->p_vaddr;
        }
    }
    return 1;
}

/* Our modules' static TLS blocks, as offsets from the thread pointer (the same in every thread). */
static ip_tls_range s_tls_exclude[4];
static uint64_t s_tls_exclude_count;

static int find_own_tls(struct dl_phdr_info *info, size_t size, void *unused)
{
    (void)size;
    (void)unused;
    const char *name = info->dlpi_name ? strrchr(info->dlpi_name, '/') : NULL;
    name = name ? name + 1 : info->dlpi_name;
    if (name == NULL || (strcmp(name, "libinterposer.so") != 0 && strcmp(name, "libinterposer_core.so") != 0) ||
        info->dlpi_tls_data == NULL || s_tls_exclude_count >= 4)
        return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        if (info->dlpi_phdr[i].p_type != PT_TLS)
            continue;
        uint64_t tp;
        __asm__("mov %%fs:0, %0" : "=r"(tp));
        ip_tls_range *r = &s_tls_exclude[s_tls_exclude_count++];
        r->offset = (int64_t)((uint64_t)info->dlpi_tls_data - tp);
        r->size = (info->dlpi_phdr[i].p_memsz + 7) & ~(uint64_t)7;
    }
    return 0;
}

static int load_core(void)
{
    Dl_info info;
    if (dladdr((void *)load_core, &info) == 0 || info.dli_fname == NULL)
        return ip_message("cannot find libinterposer.so's own path", ""), -1;
    char path[4096];
    const char *slash = strrchr(info.dli_fname, '/');
    size_t dir = slash ? (size_t)(slash - info.dli_fname) + 1 : 0;
    const char *name = "libinterposer_core.so";
    if (dir + strlen(name) + 1 > sizeof path)
        return ip_message("library path too long: ", info.dli_fname), -1;
    memcpy(path, info.dli_fname, dir);
    strcpy(path + dir, name);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        const char *err = dlerror();
        ip_message("cannot load the core: ", err ? err : path);
        return -1;
    }
    if (ip_fds_patch_core(h) != 0)
        ip_message("cannot move the core's descriptors out of the program's way", "");
#define IP_BIND(field, sym)                                                                        \
    if ((*(void **)&g_ip_core.field = dlsym(h, sym)) == NULL)                                      \
        return ip_message("the core lacks ", sym), -1;
    IP_BIND(on_alloc, "interposer_on_alloc")
    IP_BIND(on_free, "interposer_on_free")
    IP_BIND(on_free_batch, "interposer_on_free_batch")
    IP_BIND(on_restore, "interposer_on_restore")
    IP_BIND(on_thread_start, "interposer_on_thread_start")
    IP_BIND(on_fork, "interposer_on_fork")
    IP_BIND(on_exit, "interposer_on_exit")
    IP_BIND(on_drain, "interposer_on_drain")
    IP_BIND(on_scan, "interposer_on_scan")
    IP_BIND(annotate, "interposer_annotate")
    IP_BIND(on_control, "interposer_on_control")
    IP_BIND(live_blocks, "interposer_core_live_blocks")
    IP_BIND(dump, "interposer_core_dump")
#undef IP_BIND
    int32_t (*init)(const ip_shim_api *, ip_core_config *) =
        (int32_t(*)(const ip_shim_api *, ip_core_config *))dlsym(h, "interposer_core_init");
    if (init == NULL)
        return ip_message("the core lacks ", "interposer_core_init"), -1;
    s_api_live = s_api;
    s_api_live.unw_backtrace = s_unw_backtrace;
    s_api_live.deferred_enqueued = ip_deferred_enqueued_counter();
    s_api_live.static_tls_size = s_static_tls_size; /* tls_layout, in ip_init */
    s_api_live.pthread_size = s_pthread_size;
    dl_iterate_phdr(find_own_tls, NULL); /* after the core's dlopen: its TLS exists now */
    s_api_live.tls_exclude = s_tls_exclude;
    s_api_live.tls_exclude_count = s_tls_exclude_count;
    if (init(&s_api_live, &g_ip_core.config) != 0)
        return -1; /* the core said why */
    return 0;
}

/* ---- the drainer: an internal thread that replays the deferred log when producers that may
   not enter managed code (exiting threads, destructors at exit) fill it faster than host
   threads drain it. ------------------------------------------------------------------------ */

static void *drainer_main(void *unused)
{
    (void)unused;
    for (;;) {
        while (sem_wait(&s_drain_sem) != 0)
            ;
        if (__atomic_load_n(&g_ip_mode, __ATOMIC_ACQUIRE) == IP_MODE_ACTIVE)
            g_ip_core.on_drain();
    }
    return NULL;
}

static void start_drainer(void);

int ip_drain_request(int may_spawn)
{
    if (__atomic_load_n(&s_drainer_pid, __ATOMIC_ACQUIRE) != getpid()) {
        /* A fork child inherits no drainer. Start one on first need, but never from a nested
           context (a signal handler may have interrupted malloc: pthread_create is not safe). */
        static int s_spawning;
        if (!may_spawn || __atomic_load_n(&g_ip_mode, __ATOMIC_ACQUIRE) != IP_MODE_ACTIVE ||
            __atomic_exchange_n(&s_spawning, 1, __ATOMIC_ACQ_REL) != 0)
            return 0;
        start_drainer();
        __atomic_store_n(&s_spawning, 0, __ATOMIC_RELEASE);
        if (__atomic_load_n(&s_drainer_pid, __ATOMIC_ACQUIRE) != getpid())
            return 0;
    }
    sem_post(&s_drain_sem);
    return 1;
}

static void start_drainer(void)
{
    if (sem_init(&s_drain_sem, 0, 0) != 0)
        return;
    ip_thread *t = &ip_tls;
    int saved_guard = t->guard;
    t->guard = 1; /* internal for life */
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    if (pthread_create(&th, &attr, drainer_main, NULL) == 0) {
        pthread_setname_np(th, "interposer-drain");
        __atomic_store_n(&s_drainer_pid, getpid(), __ATOMIC_RELEASE);
    }
    pthread_attr_destroy(&attr);
    t->guard = saved_guard;
}

/* ---- fork: the child must not inherit a held metadata lock (DESIGN guard rule 4) ---------- */

static int s_fork_counted; /* this fork passed ip_stw_fork_enter (this process) */
static int s_fork_window_ok; /* no GC window was open when this fork went ahead */

static void fork_prepare(void)
{
    s_fork_locked = 0;
    s_fork_counted = 0;
    /* First, and outside our locks: a scan in progress may need a stop, which waits for nothing
       this thread holds. */
    s_fork_window_ok = ip_gc_window_fork_enter();
    if (ip_stw_signal() != 0 && ip_tls.state != IP_T_INTERNAL) {
        ip_stw_fork_enter(); /* no stop while this fork holds our locks and glibc's */
        s_fork_counted = 1;
    }
    if (__atomic_load_n(&g_ip_mode, __ATOMIC_ACQUIRE) != IP_MODE_ACTIVE)
        return;
    ip_thread_register();
    ip_thread *t = &ip_tls;
    if (t->guard != 0 || t->state != IP_T_HOST)
        return;
    t->guard = 1; /* held until parent/child: mallocs inside fork() must not wait on our locks */
    if (g_ip_core.on_fork(0) == 0)
        s_fork_locked = 1;
    else
        t->guard = 0;
}

static void fork_parent(void)
{
    if (s_fork_locked) {
        g_ip_core.on_fork(1);
        ip_tls.guard = 0;
    }
    if (s_fork_counted)
        ip_stw_fork_leave();
    ip_gc_window_fork_leave(0);
}

static void fork_child(void)
{
    ip_gc_window_fork_leave(1);
    if (!s_fork_window_ok && __atomic_load_n(&g_ip_mode, __ATOMIC_ACQUIRE) == IP_MODE_ACTIVE) {
        /* A scan kept its GC window open through the whole wait: a GC may have been suspending
           threads at the fork, and entering the child's runtime could wait for it forever. */
        ip_disable("this child was forked while a leak scan was running (and could have been collecting)");
        if (s_fork_locked)
            ip_tls.guard = 0;
        return;
    }
    if (!s_fork_locked) {
        /* The locks could not be taken: the child's metadata may be mid-update. */
        if (__atomic_load_n(&g_ip_mode, __ATOMIC_ACQUIRE) == IP_MODE_ACTIVE)
            ip_disable("fork from a thread that could not lock the metadata");
        return;
    }
    g_ip_core.on_fork(2);
    ip_threads_forget_orphans(&ip_tls, g_ip_core.on_free_batch); /* before any thread is created */
    ip_tls.guard = 0;
}

static void fork_child_scanner(void)
{
    ip_stw_after_fork_child();
    ip_scan_after_fork_child();
}

/* The stop-the-world park check (stw.h): only outside the core and outside a half-done update. */
int ip_may_park(void)
{
    const ip_thread *t = &ip_tls;
    return t->guard == 0 && t->busy == 0;
}

/* ---- exit: at-exit work runs on an internal thread, because by the time atexit handlers run
   the main thread has been detached from the runtime (see threads.c). ---------------------- */

static void *exit_worker(void *unused)
{
    (void)unused;
    g_ip_core.on_exit();
    return NULL;
}

static void at_exit(void)
{
    ip_control_close(); /* the socket file goes with the process */
    if (__atomic_load_n(&g_ip_mode, __ATOMIC_ACQUIRE) != IP_MODE_ACTIVE ||
        !g_ip_core.config.exit_work)
        return;
    ip_thread *t = &ip_tls;
    int saved_guard = t->guard;
    t->guard = 1; /* the worker is internal for life */
    pthread_t th;
    int rc = pthread_create(&th, NULL, exit_worker, NULL);
    t->guard = saved_guard;
    if (rc != 0) {
        ip_message("cannot start the exit worker thread", "");
        return;
    }
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 30;
    if (pthread_timedjoin_np(th, NULL, &deadline) != 0)
        ip_message("at-exit work did not finish within 30 s; exiting without it", "");
}

__attribute__((constructor)) static void ip_init(void)
{
    struct sigaction host_sigpipe;
    int have_sigpipe = sigaction(SIGPIPE, NULL, &host_sigpipe) == 0;
    ip_threads_init();
    ip_fds_reserve();        /* before the first thread: growing the fd table then waits for nothing */
    ip_threads_find_count(); /* before the first internal thread (threads.c) */
    ip_gc_window_init();
    ip_regions_resolve();
    dl_iterate_phdr(find_loader, NULL);
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    ip_tls.guard = 1;
    tls_layout(&s_static_tls_size, &s_pthread_size);
    ip_threads_learn_lock(s_pthread_size); /* before any host thread can register (threads.c) */
    load_libunwind();
    int rc = load_core();
    ip_tls.guard = 0;
    if (have_sigpipe)
        sigaction(SIGPIPE, &host_sigpipe, NULL);
    if (rc != 0 || !g_ip_core.config.enabled) {
        ip_disable(rc != 0 ? "the core failed to start" : NULL);
        return;
    }
    ip_batch_init(&g_ip_core.config);
    atexit(at_exit);
    start_drainer();
    if (ip_stw_init(0) != 0) {
        ip_message("cannot install the stop-the-world signal; leak scans are off", "");
    } else {
        ip_stw_set_park_check(ip_may_park);
        pthread_atfork(NULL, NULL, fork_child_scanner);
        __atomic_store_n(&g_ip_track_regions, g_ip_core.config.track_regions, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&g_ip_mode, IP_MODE_ACTIVE, __ATOMIC_RELEASE);
    ip_thread_register(); /* the main thread; the core replays early events on its first insert */
    if (ip_stw_signal() != 0)
        ip_scan_init(g_ip_core.config.scan_signal, g_ip_core.config.scan_interval_s);
}

/* ---- queries for programs and tests ----------------------------------------------------- */

static int enter_query(void)
{
    if (__atomic_load_n(&g_ip_mode, __ATOMIC_ACQUIRE) != IP_MODE_ACTIVE)
        return 0;
    ip_thread_register();
    if (ip_tls.guard != 0 || ip_tls.state != IP_T_HOST)
        return 0;
    if (ip_tls.frees != NULL && ip_tls.frees->count != 0 && ip_tls.busy == 0)
        ip_frees_flush(&ip_tls); /* the caller's own frees, before its question */
    ip_hook_enter(&ip_tls);
    return 1;
}

IP_EXPORT int64_t interposer_live_blocks(void)
{
    if (!enter_query())
        return -1;
    int64_t n = g_ip_core.live_blocks();
    ip_hook_leave(&ip_tls);
    return n;
}

IP_EXPORT int32_t interposer_dump(const char *path)
{
    if (!enter_query())
        return -1;
    int32_t rc = g_ip_core.dump(path);
    ip_hook_leave(&ip_tls);
    return rc;
}
