/*
 * scan.c — what triggers a leak scan, and the thread it runs on (issue 3; DESIGN guard rule 7).
 *
 * The scan signal's handler (SIGUSR2 unless scan_signal says otherwise) only counts the signal
 * and writes a byte to the wake pipe. The scanner thread, internal for life and created at
 * start-up, polls the pipe, the control socket (control.c) and the scan_interval_s timer, and calls the core's interposer_on_scan, which stops the world through
 * ip_shim_api.stw_stop, marks, resumes and writes the report. No scan work happens in signal
 * context: a heap check inside a handler deadlocks on the allocator's locks.
 *
 * The scanner blocks every asynchronous signal, the scan signal too: a program that blocks the
 * signal in all its threads to sigwait() for it keeps getting it. Every 2 s the scanner checks
 * that the signal can still reach it and says once on stderr when it cannot: the program
 * installed its own handler or SIG_IGN, or the signal sits in the process's pending set (every
 * thread blocks it).
 *
 * interposer_scan() (exported for programs and tests) asks for a scan and waits for it: tickets
 * s_requested / s_completed, a futex on s_completed.
 *
 * The pipe and the control socket are OUR DESCRIPTORS (fds.c): at high numbers, checked before
 * each use, re-created by the scanner when the program closed them. The pipe only wakes the
 * scanner; the count (s_signalled) says whether a signal came, so a wake lost while the pipe is
 * being re-created costs at most one 2 s poll timeout.
 *
 * Fork: the child has no scanner thread; the atfork child handler starts a new one, so a child
 * answers the signal with its own report (report_path's %p is its pid).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "shim_internal.h"
#include "stw.h"

static ip_fd s_wake_r = { -1, 0, 0 }; /* the wake pipe, read by the scanner */
static ip_fd s_wake_w = { -1, 0, 0 }; /* written by the signal handler and interposer_scan */
static uint32_t s_signalled;        /* scan signals received (the handler counts them) */
static int s_signo;                 /* the scan signal; 0 = none */
static int s_interval_s;            /* periodic scans; 0 = off */
static int s_scanner_pid;           /* pid whose scanner thread runs */
static uint32_t s_requested;        /* interposer_scan tickets handed out */
static uint32_t s_completed;        /* futex word: tickets served (a scan that started after
                                       the ticket was taken serves it) */
static int s_warned_handler, s_warned_pending;
static int32_t s_last_rc;           /* unreferenced blocks found by the last signal-requested scan, or -1 */

/* Async-signal-safe (fstat, write). A full pipe (EAGAIN) already holds a wake. */
static void wake_scanner(void)
{
    char one = 1;
    if (ip_fd_ours(&s_wake_w)) {
        ssize_t ignored = write(s_wake_w.fd, &one, 1);
        (void)ignored;
    }
}

/* A new wake pipe, both ends ours (fds.c); the old one's ends are closed only if still ours. */
static int open_wake_pipe(void)
{
    ip_fd_release(&s_wake_r);
    ip_fd_release(&s_wake_w);
    int p[2];
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0)
        return -1;
    if (ip_fd_adopt(&s_wake_r, p[0]) != 0) {
        close(p[1]);
        return -1;
    }
    if (ip_fd_adopt(&s_wake_w, p[1]) != 0) {
        ip_fd_release(&s_wake_r);
        return -1;
    }
    return 0;
}

/* Before each poll: re-create what the program closed (or whose number it reused). Said on
   stderr at verbosity >= 1 only: daemons close every descriptor as they start, and nothing is
   lost. */
static void check_descriptors(void)
{
    static int s_said_wake, s_said_control;
    if (!ip_fd_ours(&s_wake_r) || !ip_fd_ours(&s_wake_w)) {
        if (!s_said_wake && g_ip_core.config.verbosity >= 1) {
            s_said_wake = 1;
            ip_message("the program closed the scanner's wake pipe; re-creating it", "");
        }
        open_wake_pipe();
    }
    const ip_fd *control = ip_control_fd();
    if (control->fd >= 0 && !ip_fd_ours(control)) {
        if (!s_said_control && g_ip_core.config.verbosity >= 1) {
            s_said_control = 1;
            ip_message("the program closed the control socket; re-creating it", "");
        }
        ip_control_open(1);
    }
}

static void scan_signal_handler(int sig, siginfo_t *info, void *uc)
{
    (void)sig;
    (void)info;
    (void)uc;
    int saved_errno = errno;
    __atomic_add_fetch(&s_signalled, 1, __ATOMIC_RELEASE);
    wake_scanner();
    errno = saved_errno;
}

static uint64_t now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec;
}

/* The scan signal's bit is set in the process's shared pending set: no thread accepts it. */
static int signal_stuck_pending(void)
{
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    const char *line = strstr(buf, "ShdPnd:");
    if (line == NULL)
        return 0;
    line += 7;
    while (*line == ' ' || *line == '\t')
        line++;
    /* 16 hex digits, signal k is bit k-1 counted from the right. */
    const char *end = line;
    while ((*end >= '0' && *end <= '9') || (*end >= 'a' && *end <= 'f'))
        end++;
    int bit = s_signo - 1;
    const char *digit = end - 1 - bit / 4;
    if (digit < line)
        return 0;
    int v = *digit <= '9' ? *digit - '0' : *digit - 'a' + 10;
    return (v >> (bit % 4)) & 1;
}

static void check_signal(void)
{
    if (s_signo == 0)
        return;
    struct sigaction cur;
    if (!s_warned_handler && sigaction(s_signo, NULL, &cur) == 0 &&
        (!(cur.sa_flags & SA_SIGINFO) || cur.sa_sigaction != scan_signal_handler)) {
        s_warned_handler = 1;
        ip_message(cur.sa_handler == SIG_IGN ? "the program ignores the scan signal " :
                                               "the program installed its own handler for the scan signal ",
                   sigabbrev_np(s_signo) ? sigabbrev_np(s_signo) : "?");
        ip_message("  scans on that signal are off; choose another with INTERPOSER_OPTIONS=scan_signal=...",
                   "");
    }
    if (!s_warned_pending && signal_stuck_pending()) {
        s_warned_pending = 1;
        ip_message("every thread of the program blocks the scan signal, so it cannot start scans: SIG",
                   sigabbrev_np(s_signo) ? sigabbrev_np(s_signo) : "?");
    }
}

static int32_t run_scan(int32_t reason)
{
    if (__atomic_load_n(&g_ip_mode, __ATOMIC_ACQUIRE) != IP_MODE_ACTIVE)
        return -1;
    ip_thread *t = &ip_tls;
    ip_hook_enter(t);
    int32_t rc = g_ip_core.on_scan(reason);
    ip_hook_leave(t);
    return rc;
}

void ip_block_async_signals(void)
{
    sigset_t set;
    sigfillset(&set);
    /* Faults stay deliverable (they are synchronous), and SIGRTMIN: the runtime's GC signal. */
    sigdelset(&set, SIGSEGV);
    sigdelset(&set, SIGBUS);
    sigdelset(&set, SIGFPE);
    sigdelset(&set, SIGILL);
    sigdelset(&set, SIGTRAP);
    sigdelset(&set, SIGRTMIN);
    pthread_sigmask(SIG_SETMASK, &set, NULL);
}

static void *scanner_main(void *unused)
{
    (void)unused;
    ip_block_async_signals();
    ip_stw_mark_internal();
    uint64_t next_periodic = s_interval_s > 0 ? now_s() + (uint64_t)s_interval_s : 0;
    uint32_t signals_served = 0;
    for (;;) {
        check_descriptors();
        const ip_fd *control = ip_control_fd();
        struct pollfd fds[2] = {{s_wake_r.fd, POLLIN, 0}, {control->fd, POLLIN, 0}};
        int n = poll(fds, fds[1].fd >= 0 ? 2 : 1, 2000);
        if (n > 0 && (fds[0].revents & POLLIN) && ip_fd_ours(&s_wake_r)) {
            char drain[64];
            while (read(s_wake_r.fd, drain, sizeof drain) > 0) /* several wakes: one scan */
                ;
        }
        uint32_t signalled = __atomic_load_n(&s_signalled, __ATOMIC_ACQUIRE);
        uint32_t requested = __atomic_load_n(&s_requested, __ATOMIC_ACQUIRE);
        if (signalled != signals_served || requested != __atomic_load_n(&s_completed, __ATOMIC_RELAXED)) {
            signals_served = signalled;
            __atomic_store_n(&s_last_rc, run_scan(IP_SCAN_SIGNAL), __ATOMIC_RELAXED);
            __atomic_store_n(&s_completed, requested, __ATOMIC_RELEASE);
            syscall(SYS_futex, &s_completed, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0);
        }
        if (n > 0 && fds[1].fd >= 0 && (fds[1].revents & POLLIN)) {
            int32_t interval = s_interval_s;
            ip_control_serve(&interval);
            if (interval != s_interval_s) {
                s_interval_s = interval;
                next_periodic = interval > 0 ? now_s() + (uint64_t)interval : 0;
            }
        }
        if (next_periodic != 0 && now_s() >= next_periodic) {
            run_scan(IP_SCAN_PERIODIC);
            next_periodic = now_s() + (uint64_t)s_interval_s;
        } else if (n == 0) {
            check_signal();
        }
    }
    return NULL;
}

static void start_scanner(void)
{
    /* A fork child: the parent's pipe is not ours (open_wake_pipe closes it if still ours). */
    if (open_wake_pipe() != 0) {
        ip_message("cannot create the scanner's wake pipe; leak scans are off", "");
        return;
    }
    ip_control_open(0);
    ip_thread *t = &ip_tls;
    int saved_guard = t->guard;
    t->guard = 1; /* born under the guard: internal for life */
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &attr, scanner_main, NULL) == 0) {
        pthread_setname_np(th, "interposer-scan");
        s_scanner_pid = getpid();
    } else {
        ip_message("cannot start the scanner thread; leak scans are off", "");
    }
    pthread_attr_destroy(&attr);
    t->guard = saved_guard;
}

void ip_scan_init(int signo, int interval_s)
{
    s_interval_s = interval_s;
    start_scanner();
    if (s_scanner_pid == 0 || signo <= 0)
        return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = scan_signal_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(signo, &sa, NULL) != 0) {
        ip_message("cannot install the scan signal handler: ", strerror(errno));
        return;
    }
    s_signo = signo;
}

void ip_scan_after_fork_child(void)
{
    s_scanner_pid = 0;
    s_requested = s_completed = s_signalled = 0;
    if (__atomic_load_n(&g_ip_mode, __ATOMIC_ACQUIRE) == IP_MODE_ACTIVE)
        start_scanner();
}

IP_EXPORT int32_t interposer_scan(void)
{
    int32_t leaks;
    return ip_scan_and_wait(&leaks) == 0 && leaks >= 0 ? 0 : -1;
}

int32_t ip_scan_and_wait(int32_t *leaks)
{
    *leaks = -1;
    if (__atomic_load_n(&g_ip_mode, __ATOMIC_ACQUIRE) != IP_MODE_ACTIVE || s_scanner_pid != getpid() ||
        ip_tls.guard != 0)
        return -1;
    uint32_t ticket = __atomic_add_fetch(&s_requested, 1, __ATOMIC_ACQ_REL);
    wake_scanner();
    struct timespec step = {1, 0};
    uint64_t give_up = now_s() + 120;
    while (now_s() < give_up) {
        uint32_t done = __atomic_load_n(&s_completed, __ATOMIC_ACQUIRE);
        if ((int32_t)(done - ticket) >= 0) {
            *leaks = __atomic_load_n(&s_last_rc, __ATOMIC_RELAXED);
            return *leaks >= 0 ? 0 : -1;
        }
        syscall(SYS_futex, &s_completed, FUTEX_WAIT_PRIVATE, done, &step, NULL, 0);
    }
    ip_message("interposer_scan: no scan finished within 120 s", "");
    return -1;
}
