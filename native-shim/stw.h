/*
 * stw.h — stop the world for the leak scan (DESIGN guard rule 6): signal-based, no ptrace.
 *
 * MECHANISM. ip_stw_stop lists the process's threads from /proc/self/task (open + raw
 * getdents64: opendir would malloc), and sends the stop signal (ip_stw_init) with tgkill to
 * every thread except the caller and the threads marked internal. The handler finds its slot by
 * tid in a fixed table, copies the interrupted registers from its ucontext, counts itself as
 * arrived and parks on a futex until ip_stw_resume moves the generation on; then it acknowledges
 * and returns, errno intact. The stopper waits (futex, bounded by timeout_ms) until every listed
 * thread arrived, exited (state 2) or was given up (state 1), then re-lists /proc/self/task to
 * catch threads created meanwhile (at most IP_STW_PASSES passes). Nothing here allocates, takes a
 * lock, or calls anything that is not async-signal-safe; all state is static (.bss).
 *
 * STRAGGLERS. A listed thread that has not arrived after ~1 ms is inspected through
 * /proc/self/task/<tid>/status: gone or a zombie -> state 2 (exited); the stop signal in SigBlk
 * at two inspections at least max(2 ms, timeout/10) apart -> state 1 right away (a thread that
 * blocks every signal for life would otherwise cost every scan the whole timeout). Anything still
 * missing at the timeout -> state 1. A given-up thread is NOT stopped: it keeps running during
 * the scan, so its registers are unknown and its stack is moving (scan its stack mapping
 * conservatively and accept that a pointer in flight may be missed). When it later unblocks the
 * signal, the handler sees that its stop is over (or that its slot was given up) and returns at
 * once: it never parks in a stale generation. A given-up thread whose stop signal is still
 * pending is not signalled again (real-time signals queue; RLIMIT_SIGPENDING is per user).
 *
 * SIGNAL DISPOSITION. SA_SIGINFO | SA_RESTART | SA_ONSTACK. With SA_ONSTACK the handler runs on
 * the thread's sigaltstack when it has one (a thread near the end of its stack does not overflow
 * in our frame); the saved rsp is the interrupted code's, taken from the ucontext, so it is the
 * thread's own stack pointer either way -- unless the thread was itself inside a handler running
 * on its alternate stack, in which case sp lies in the alternate stack and the caller should scan
 * the thread's normal stack mapping too. While parked, every asynchronous signal is blocked
 * (sa_mask) so no host handler runs on a "stopped" thread; left unblocked are the synchronous
 * fault signals and SIGRTMIN, the NativeAOT runtime's GC activation signal (rule 6).
 *
 * KNOWN COST (EINTR). SA_RESTART makes the kernel restart most interrupted blocking calls (read
 * and write on pipes/sockets/ttys, waitpid, accept/connect/recv without a timeout, open on a FIFO,
 * flock, raw FUTEX_WAIT, so sem_wait, pthread_cond_wait, pthread_cond_timedwait, mutexes ...), but
 * per signal(7) some interfaces are NEVER restarted after a handled signal and fail with EINTR
 * whatever SA_RESTART says: nanosleep, clock_nanosleep, usleep, poll, ppoll, select, pselect,
 * epoll_wait, epoll_pwait, pause, sigsuspend, sigtimedwait, sigwaitinfo, semop/semtimedop,
 * msgrcv/msgsnd, io_getevents, and socket calls on a socket with SO_RCVTIMEO/SO_SNDTIMEO; sleep()
 * returns early with the seconds left. glibc's sem_timedwait/sem_clockwait also return EINTR.
 * (tests/programs/stw/stw_probe.c "eintr" measures this table.) A host thread blocked in one of
 * these sees one EINTR (or a short sleep) per stop. Correct programs retry; keep stops rare.
 *
 * OTHER LIMITS. x86-64 Linux only. Only one stop at a time (a second caller gets -1/EBUSY until
 * ip_stw_resume). The signal must stay ours: if the host replaced its handler, ip_stw_stop
 * returns -1 (EBUSY) rather than send a signal whose default action kills the process. Internal
 * threads are remembered by tid (IP_STW_MAX_INTERNAL slots): call ip_stw_unmark_internal before
 * an internal thread exits, or a later thread that reuses the tid is never stopped.
 */
#ifndef INTERPOSER_STW_H
#define INTERPOSER_STW_H

#include <stdint.h>
#include "interposer_abi.h"

#ifndef IP_HIDDEN
#define IP_HIDDEN __attribute__((visibility("hidden")))
#endif

/* ip_stopped_thread and its enums are in interposer_abi.h (the core reads them). */

#define IP_STW_MAX_THREADS 8192   /* threads one stop can hold */
#define IP_STW_MAX_INTERNAL 1024  /* internal (never stopped) threads */
#define IP_STW_PASSES 4           /* /proc/self/task listings per stop, at most */

/* Installs the stop handler for signo (0 = default, SIGRTMIN+3). Refuses (-1, EINVAL) SIGRTMIN
   (the runtime's GC signal), SIGUSR2 (the scan trigger), signals that cannot be caught and
   synchronous fault signals. Call it once, from normal (non-signal) context. 0 = ok. */
IP_HIDDEN int ip_stw_init(int signo);

/* Stops every thread except the caller and the internal ones; writes one entry per listed thread
   into out (in listing order) and returns their number (<= max). Returns -1 with errno set:
   EINVAL (not initialised, bad arguments), EBUSY (a stop is in progress, or the signal handler
   was replaced), ENOSPC (more threads than max or IP_STW_MAX_THREADS: nothing stays stopped),
   or an error from open/getdents64. Allocates nothing; returns within about timeout_ms + a few
   ms even if some threads never answer (they get state 1). After a return >= 0 the caller must
   call ip_stw_resume. Async-signal-safe, but meant for the scanner thread. */
IP_HIDDEN int ip_stw_stop(ip_stopped_thread *out, int max, int timeout_ms);

/* Optional, before ip_stw_stop on the same thread: reads, while the world still runs, which
   threads may be signalled (stw.c, SECCOMP). Returns 0, or -1 (errno). */
IP_HIDDEN int ip_stw_prepare(void);

/* Resumes every thread stopped by the last ip_stw_stop and waits (bounded by that stop's
   timeout, at least 100 ms) until each has left the handler. No-op when nothing is stopped. */
IP_HIDDEN void ip_stw_resume(void);

/* The calling thread is never stopped (scanner, drainer, runtime threads). Idempotent.
   Returns 0, or -1 when the registry (IP_STW_MAX_INTERNAL) is full. */
IP_HIDDEN int ip_stw_mark_internal(void);

/* Forget the calling thread as internal (call before an internal thread exits). */
IP_HIDDEN void ip_stw_unmark_internal(void);

/* In a fork child: forget the parent's internal threads and any stop in progress (the child has
   only the forking thread, which stays internal if it was). */
IP_HIDDEN void ip_stw_after_fork_child(void);

/* Optional veto, called by the handler on the thread being stopped (so it must be
   async-signal-safe: read TLS, nothing else). Returning 0 means "do not park this thread now":
   the handler returns at once and the stopper signals the thread again ~50 us later, until it
   parks or the timeout (then state 1). Meant for "this thread is inside the managed core": a
   thread parked in cooperative mode would deadlock any GC started while the world is stopped
   (the GC waits for it; the scanner waits for the GC). NULL (the default) = always park.
   Pair it with ip_stw_poll() where the veto ends (right after leaving the core). */
IP_HIDDEN void ip_stw_set_park_check(int (*may_park)(void));

/* Where a vetoed thread may park again, call ip_stw_poll(): one relaxed load and a branch when
   no stop is in progress; during a stop, a thread whose park check said "not now" parks right
   here (it signals itself) instead of waiting ~50 us for the stopper's next signal.
   Async-signal-safe; errno intact. */
IP_HIDDEN extern uint32_t ip_stw_gen; /* odd while the world is stopped */
IP_HIDDEN void ip_stw_poll_slow(void);
static inline void ip_stw_poll(void)
{
    if (__builtin_expect(__atomic_load_n(&ip_stw_gen, __ATOMIC_RELAXED) & 1, 0))
        ip_stw_poll_slow();
}

/* A fork and a stop exclude each other (see stw.c): the fork prepare handler calls
   ip_stw_fork_enter before it takes any lock (it waits while a stop is in progress), the parent
   handler calls ip_stw_fork_leave; the child calls ip_stw_after_fork_child. ip_stw_stop waits,
   bounded by its timeout, for forks in flight, and fails with EAGAIN if one does not finish. */
IP_HIDDEN void ip_stw_fork_enter(void);
IP_HIDDEN void ip_stw_fork_leave(void);

/* The signal installed by ip_stw_init (0 before). */
IP_HIDDEN int ip_stw_signal(void);

#endif /* INTERPOSER_STW_H */
